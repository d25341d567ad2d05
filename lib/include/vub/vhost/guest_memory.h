/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "vub/base/memory_mapping.h"
#include "vub/base/rcu.h"
#include "vub/base/result.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/dirty_log.h"
#include "vub/vhost/iotlb.h"
#include "vub/vhost/message.h"

namespace vub::vhost {

/**
 * \brief One region of guest memory, mmapped from a front-end's fd (hugetlbfs or memfd).
 *
 * Immutable after create(); shared by the snapshots that contain it, and unmapped when the
 * last one is freed. Thread-safe to read.
 */
class MemoryRegion
{
public:
	/**
	 * \brief Map \a fd as the region \a desc describes.
	 *
	 * The fd offset is aligned down to the fd's block size (the huge page size on hugetlbfs),
	 * as mmap requires; the region starts at the residual offset inside the mapping.
	 * \return EINVAL for an empty region, or one whose guest-physical, front-end or fd ranges
	 * overflow 64 bits; the mmap error otherwise.
	 */
	static Result<std::shared_ptr<MemoryRegion>> create(const MemoryRegionMsg &desc, UniqueFd fd);

	uint64_t gpa() const { return gpa_; }
	uint64_t qva() const { return qva_; }
	uint64_t size() const { return size_; }
	uint64_t mmapOffset() const { return mmapOffset_; }
	uint8_t *hva() const { return hva_; }
	/** \brief The block (page) size of the backing file: 2 MiB or 1 GiB on hugetlbfs. */
	size_t pageSize() const { return pageSize_; }
	int fd() const { return fd_.get(); }
	/** \brief The NUMA node of the region's first page, -1 when unknown. */
	int numaNode() const { return numaNode_; }

	bool containsGpa(uint64_t gpa) const { return gpa - gpa_ < size_; }
	bool containsQva(uint64_t qva) const { return qva - qva_ < size_; }

private:
	MemoryRegion() = default;

	uint64_t gpa_ = 0;
	uint64_t qva_ = 0;
	uint64_t size_ = 0;
	uint64_t mmapOffset_ = 0;
	uint8_t *hva_ = nullptr;
	size_t pageSize_ = 0;
	int numaNode_ = -1;
	MemoryMapping mapping_;
	UniqueFd fd_; /**< kept for NUMA queries and for the inflight and log areas' peers */
};

/**
 * \brief An immutable snapshot of the guest memory table: a set of non-overlapping regions,
 * and the address space the rings and descriptors use.
 *
 * That address space is guest-physical, or, while VIRTIO_F_IOMMU_PLATFORM is acked, the I/O
 * virtual addresses of the device IOTLB (createIova()). Either way the data path translates
 * through windows: address ranges mapped to host addresses with the access they allow, sorted
 * by address. Translation checks the whole range, never only its start. Thread-safe: workers
 * read a snapshot through GuestMemoryAtomic while the control thread builds the next one.
 */
class GuestMemory
{
public:
	/** \brief At most this many regions (GET_MAX_MEM_SLOTS). */
	static constexpr unsigned kMaxRegions = 509;

	GuestMemory() = default;

	/**
	 * \brief A snapshot of \a regions, translated by guest-physical address.
	 * \return EINVAL when two regions overlap in guest-physical or front-end address space,
	 * E2BIG with more than kMaxRegions.
	 */
	static Result<std::unique_ptr<GuestMemory>>
	create(std::vector<std::shared_ptr<MemoryRegion>> regions);
	/**
	 * \brief A snapshot of \a regions translated by I/O virtual address through \a iotlb:
	 * each entry's front-end range is cut at the regions' edges (what is in none is left out),
	 * and neighbours contiguous in both spaces with the same access are joined, so a ring over
	 * several IOMMU pages stays one window. A missing translation is posted to \a misses.
	 */
	static Result<std::unique_ptr<GuestMemory>>
	createIova(std::vector<std::shared_ptr<MemoryRegion>> regions, const Iotlb &iotlb,
		   std::shared_ptr<IotlbMisses> misses);

	const std::vector<std::shared_ptr<MemoryRegion>> &regions() const { return regions_; }
	bool empty() const { return regions_.empty(); }
	/** \brief Whether addresses are I/O virtual (a vIOMMU): a missing one may come later. */
	bool isIova() const { return misses_ != nullptr; }

	/** \brief One window: an address range, its host mapping and the access it allows. */
	struct Window {
		uint64_t gpa = 0;
		uint64_t size = 0;
		uint8_t *hva = nullptr;
		uint8_t perm = 0;

		/** \brief translateGpa() inside this window only: nullptr when not wholly in it. */
		uint8_t *translate(uint64_t addr, uint64_t len, uint8_t access) const
		{
			uint64_t off = addr - gpa;
			return off < size && len <= size - off && (perm & access) == access
				       ? hva + off
				       : nullptr;
		}
	};

	/**
	 * \brief The host address of [gpa, gpa + len) (guest-physical or I/O virtual), for
	 * \a access (kAccessRead, kAccessWrite).
	 *
	 * \a hint, when given, is the caller's own last-hit window index (a queue keeps one: its
	 * IOTLB cache), so a burst of buffers in the same window costs one compare each.
	 * \return nullptr unless the whole range lies in one window that allows \a access (len 0
	 * counts as 1 byte).
	 */
	uint8_t *translateGpa(uint64_t gpa, uint64_t len, uint32_t *hint = nullptr,
			      uint8_t access = kAccessRead) const
	{
		const Window *w = findGpa(gpa, hint);
		return w ? w->translate(gpa, len, access) : nullptr;
	}

	/**
	 * \brief The window a translateGpa() \a hint names, for a caller that translates many
	 * addresses in a row and keeps it in registers; empty when the hint names none.
	 */
	Window window(uint32_t hint) const { return hint < windows_.size() ? windows_[hint] : Window{}; }

	/**
	 * \brief translateGpa() through \a window first, for a caller that keeps the window of
	 * its \a hint in registers; on a miss both move to the window found.
	 */
	uint8_t *translateGpa(uint64_t gpa, uint64_t len, uint32_t *hint, Window *window,
			      uint8_t access) const
	{
		if (uint8_t *hva = window->translate(gpa, len, access)) [[likely]]
			return hva;
		uint8_t *hva = translateGpa(gpa, len, hint, access);
		if (hva)
			*window = this->window(*hint);
		return hva;
	}

	/**
	 * \brief The host address of \a gpa and how many bytes from it are contiguous in its
	 * window, at most \a len: for buffers that cross regions (or IOMMU pages).
	 * \return nullptr when \a gpa is in no window that allows \a access.
	 */
	uint8_t *translateGpaPrefix(uint64_t gpa, uint64_t len, uint64_t *contiguous,
				    uint32_t *hint = nullptr, uint8_t access = kAccessRead) const
	{
		const Window *w = findGpa(gpa, hint);
		if (!w || (w->perm & access) != access)
			return nullptr;
		uint64_t left = w->size - (gpa - w->gpa);
		*contiguous = len < left ? len : left;
		return w->hva + (gpa - w->gpa);
	}

	/**
	 * \brief The first address of [addr, addr + len) that no window maps for \a access,
	 * or UINT64_MAX when every byte is mapped (then a failed translateGpa() means the range
	 * is not contiguous on the host).
	 */
	uint64_t firstUnmapped(uint64_t addr, uint64_t len, uint8_t access) const;
	/**
	 * \brief Ask for the translation of \a addr for \a access (an IOTLB miss, sent to the
	 * front-end by the control thread); nothing outside a vIOMMU. Any thread.
	 */
	void requestTranslation(uint64_t addr, uint8_t access) const;

	/**
	 * \brief The host address of ring part [addr, addr + len) for \a access: a front-end
	 * address (SET_VRING_ADDR) or, under a vIOMMU, an I/O virtual one.
	 */
	uint8_t *translateRing(uint64_t addr, uint64_t len, uint8_t access) const
	{
		return isIova() ? translateGpa(addr, len, nullptr, access) : translateQva(addr, len);
	}
	/** \brief Host address of front-end address range [qva, qva + len); nullptr if not in one region. */
	uint8_t *translateQva(uint64_t qva, uint64_t len) const;

	/** \brief Guest-physical address of front-end address \a qva; false if unmapped. */
	bool qvaToGpa(uint64_t qva, uint64_t *gpa) const;
	/** \brief Guest-physical address of host address \a hva; false if in no region. */
	bool hvaToGpa(const void *hva, uint64_t *gpa) const;

	/**
	 * \brief The dirty log to mark guest writes in while a live migration logs them
	 * (VHOST_F_LOG_ALL acked and SET_LOG_BASE given); null otherwise, the usual case.
	 */
	const DirtyLog *dirtyLog() const { return log_.get(); }
	/** \brief Set before the snapshot is published (the control thread's builder). */
	void setDirtyLog(std::shared_ptr<const DirtyLog> log) { log_ = std::move(log); }
	/**
	 * \brief Mark host range [\a hva, \a hva + \a len) of one region written in the dirty
	 * log: nothing without a log, or outside guest memory.
	 */
	void logWrite(const uint8_t *hva, uint64_t len) const;

private:
	/** \brief Check \a regions and make the snapshot that owns them, with no window. */
	static Result<std::unique_ptr<GuestMemory>>
	withRegions(std::vector<std::shared_ptr<MemoryRegion>> regions);

	const Window *findGpa(uint64_t gpa, uint32_t *hint) const
	{
		size_t n = windows_.size();
		size_t start = hint && *hint < n ? *hint : 0;
		if (n != 0 && gpa - windows_[start].gpa < windows_[start].size) [[likely]]
			return &windows_[start];
		return findGpaSlow(gpa, hint);
	}
	/** \brief The region that holds front-end address \a qva, null for none. */
	const MemoryRegion *findQva(uint64_t qva) const;
	/** \brief findGpa() past the hint: a binary search of the sorted windows. */
	const Window *findGpaSlow(uint64_t gpa, uint32_t *hint) const;

	std::vector<std::shared_ptr<MemoryRegion>> regions_;
	std::vector<const MemoryRegion *> regionList_;
	/** Sorted by address, never overlapping. */
	std::vector<Window> windows_;
	std::shared_ptr<const DirtyLog> log_;
	/** Set in a vIOMMU's snapshot: where missing translations go. */
	std::shared_ptr<IotlbMisses> misses_;
};

/**
 * \brief The current GuestMemory snapshot, replaced atomically while workers run.
 *
 * Readers (workers registered with the same Rcu) call memory() and may use the snapshot until
 * their next quiescent state. The control thread calls replace(): it publishes the new
 * snapshot, waits for a grace period, then frees the old one, which unmaps only the regions
 * that no newer snapshot shares. No lock on the read side. replace() is called by one thread.
 */
class GuestMemoryAtomic
{
public:
	explicit GuestMemoryAtomic(Rcu &rcu = Rcu::global());
	~GuestMemoryAtomic();
	GuestMemoryAtomic(const GuestMemoryAtomic &) = delete;
	GuestMemoryAtomic &operator=(const GuestMemoryAtomic &) = delete;

	/** \brief The current snapshot; never null (an empty table before the first update). */
	const GuestMemory *memory() const { return current_.load(std::memory_order_acquire); }

	/**
	 * \brief Publish \a next, wait until no reader can hold the old one, and free it.
	 * \param beforeReclaim called after publication and before the grace period, while the
	 * old snapshot is still mapped: where users of raw pointers (ring addresses) move over
	 */
	void replace(std::unique_ptr<GuestMemory> next,
		     const std::function<void(const GuestMemory &)> &beforeReclaim = {});

	Rcu &rcu() const { return rcu_; }

private:
	Rcu &rcu_;
	std::atomic<const GuestMemory *> current_;
};

} /* namespace vub::vhost */
