/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "vub/base/event_fd.h"
#include "vub/base/result.h"
#include "vub/vhost/message.h"

namespace vub::vhost {

/** \brief One translation of the device IOTLB: IOVA range -> front-end address, with access. */
struct IotlbEntry {
	uint64_t iova = 0;
	uint64_t size = 0;
	uint64_t uaddr = 0;
	uint8_t perm = 0; /**< kAccessRead, kAccessWrite or both */
};

/**
 * \brief The device IOTLB that the front-end fills with IOTLB_MSG while VIRTIO_F_IOMMU_PLATFORM
 * is acked: the guest's IOMMU mappings of the device, by I/O virtual address.
 *
 * The control thread's table: the workers see it through the GuestMemory snapshot built from
 * it (GuestMemory::createIova()). Not thread-safe.
 */
class Iotlb
{
public:
	/** \brief At most this many entries; a new one past it evicts another (it misses again). */
	static constexpr size_t kMaxEntries = 4096;

	/**
	 * \brief Add the translation of an UPDATE; entries it overlaps go.
	 * \return EINVAL for size 0, a range that wraps, or a perm with no access or unknown bits.
	 */
	Result<void> update(const IotlbMsg &msg);
	/** \brief Remove every entry that overlaps [iova, iova + size) (INVALIDATE). */
	void invalidate(uint64_t iova, uint64_t size);
	void clear() { entries_.clear(); }

	/** \brief The entries by IOVA; they never overlap. */
	const std::map<uint64_t, IotlbEntry> &entries() const { return entries_; }
	size_t size() const { return entries_.size(); }
	/** \brief Entries evicted to make room since creation. */
	uint64_t evictions() const { return evictions_; }

private:
	/** \brief Remove the entries that overlap [iova, last]. */
	void erase(uint64_t iova, uint64_t last);

	std::map<uint64_t, IotlbEntry> entries_;
	uint64_t evictions_ = 0;
};

/**
 * \brief The IOTLB misses the data path found, for the control thread to ask the front-end
 * to fill (BACKEND_IOTLB_MSG): a worker never blocks on the back-end channel.
 *
 * A worker whose chain missed posts the address and leaves the chain available; it tries it
 * again on later polls. A miss already asked for, in the same page, is asked for again only
 * after the IOTLB changes (forget()), so a waiting queue costs one lookup a poll, with no
 * syscall. Thread-safe.
 */
class IotlbMisses
{
public:
	struct Miss {
		uint64_t iova;
		uint8_t perm;
	};
	/** \brief At most this many misses wait; later ones are dropped and posted again. */
	static constexpr size_t kMaxPending = 1024;

	static Result<std::shared_ptr<IotlbMisses>> create();

	/** \brief A translation of \a iova for \a perm is missing (any thread). */
	void post(uint64_t iova, uint8_t perm);
	/** \brief The misses to ask for now; they count as asked until forget(). Control thread. */
	std::vector<Miss> take();
	/** \brief The IOTLB changed: a miss may be posted and asked for again. */
	void forget();
	/** \brief Readable when take() has something: watch it in the control loop. */
	int fd() const { return event_.fd(); }

private:
	IotlbMisses() = default;

	std::mutex lock_;
	std::vector<Miss> pending_; /**< posted, not taken */
	std::vector<Miss> asked_;   /**< taken since the last forget() */
	EventFd event_;
};

} /* namespace vub::vhost */
