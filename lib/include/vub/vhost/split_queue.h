/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "vub/base/counter.h"
#include "vub/base/result.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/inflight.h"
#include "vub/virtio/split_ring.h"

namespace vub::vhost {

/** \brief One contiguous piece of a descriptor chain, translated to a host address. */
struct DescBuffer {
	uint8_t *hva;
	uint32_t len;
	bool writable;
};

/** \brief Why a chain was refused. Each has its own per-queue counter. */
enum class ChainError : uint8_t {
	None = 0,
	NextOutOfRange,     /**< `next` beyond the descriptor table */
	TooLong,            /**< more descriptors than the table holds: a loop */
	BadAddress,         /**< buffer not inside guest memory */
	ZeroLength,         /**< a zero-length buffer */
	ReadAfterWrite,     /**< a device-readable descriptor after a writable one */
	IndirectNotNegotiated,
	IndirectBadLength,  /**< 0, not a multiple of 16, or more entries than allowed */
	IndirectNested,     /**< INDIRECT inside an indirect table */
	IndirectWithNext,   /**< INDIRECT and NEXT on the same descriptor */
	TooManyBuffers,     /**< more pieces than the caller's storage */
	LengthOverflow,     /**< the chain's total length exceeds 32 bits */
	/**
	 * Not a bad chain: a vIOMMU translation is missing and asked for; the chain stays
	 * available and comes again once the front-end sends it. Counts the deferrals.
	 */
	IotlbMiss,
	Count,
};

const char *chainErrorName(ChainError error);

/**
 * \brief A descriptor chain taken from the available ring: its head and its buffers, each
 * read once from guest memory and validated. The buffers live in the caller's storage.
 */
struct DescriptorChain {
	uint16_t head = 0;
	/** Ring descriptors the chain took: 1 on a split ring (its used entry is one whatever). */
	uint16_t descCount = 1;
	uint32_t bufferCount = 0;
	uint32_t readableBytes = 0;
	uint32_t writableBytes = 0;
	DescBuffer *buffers = nullptr;

	std::span<DescBuffer> pieces() const { return { buffers, bufferCount }; }

	/** \brief Make this the chain of one descriptor and one piece, \a buffer. */
	void setSingle(uint16_t id, DescBuffer &buffer)
	{
		head = id;
		descCount = 1;
		bufferCount = 1;
		readableBytes = buffer.writable ? 0 : buffer.len;
		writableBytes = buffer.writable ? buffer.len : 0;
		buffers = &buffer;
	}
};

/**
 * \brief Per-queue counters: written only by the thread that processes the queue, readable
 * from any thread while it runs.
 */
struct QueueStats {
	Counter chains;
	Counter badChains[static_cast<int>(ChainError::Count)];
	Counter notificationsSent;
	Counter notificationsSuppressed;
	Counter kicks;
	Counter emptyPolls;
};

/**
 * \brief The device side of a split virtqueue in guest memory.
 *
 * The control thread configures it (size, addresses, base) while it is not ready; the thread
 * that processes it then calls pop(), addUsed(), publishUsed() and the notification functions.
 * Every value read from guest memory is validated: a bad chain is refused and counted (the
 * caller returns its head with length 0), a corrupt ring (avail index moved by more than the
 * size, a head beyond the table) marks the queue broken. Not thread-safe: one thread at a time.
 */
class SplitQueue
{
public:
	/** \brief What pop() found. */
	enum class PopStatus : uint8_t {
		Ok,       /**< \a chain holds a valid chain */
		Empty,    /**< nothing available, or the queue is not ready */
		BadChain, /**< \a chain.head must be returned with length 0; see lastError() */
		Broken,   /**< the ring is corrupt: stop using it and signal the err eventfd */
		Deferred, /**< the next chain waits for an IOTLB translation: nothing taken */
	};

	explicit SplitQueue(uint16_t maxSize) : maxSize_(maxSize) {}

	/* Configuration (control thread, queue not ready). */
	uint16_t maxSize() const { return maxSize_; }
	uint16_t size() const { return size_; }
	/** \brief Set the ring size. \return EINVAL for 0, above maxSize or not a power of two. */
	Result<void> setSize(uint32_t size);
	/**
	 * \brief Set the front-end addresses of the three parts.
	 * \return EINVAL when an address is not aligned as the layout requires.
	 */
	Result<void> setAddresses(uint64_t descQva, uint64_t availQva, uint64_t usedQva);
	bool hasAddresses() const { return descQva_ != 0 || availQva_ != 0 || usedQva_ != 0; }
	/** \brief Whether setAddresses() was given these (SET_VRING_ADDR's order: desc, avail, used). */
	bool sameAddresses(uint64_t descQva, uint64_t availQva, uint64_t usedQva) const
	{
		return descQva == descQva_ && availQva == availQva_ && usedQva == usedQva_;
	}
	/**
	 * \brief Translate the ring addresses in \a mem over the whole length of each part.
	 * \return EFAULT when a part is not wholly inside one region; the queue then has no ring.
	 */
	Result<void> translate(const GuestMemory &mem);
	void untranslate();
	bool isTranslated() const { return desc_ != nullptr; }
	/** \brief Where the descriptor ring is mapped (null when not translated). */
	const void *descRing() const { return desc_; }
	void setEventIdx(bool enabled) { eventIdx_ = enabled; }
	void setIndirect(bool enabled) { indirect_ = enabled; }
	bool eventIdx() const { return eventIdx_; }
	/**
	 * \brief A queue the device only reads (a net device's TX queue) takes every buffer as
	 * device-readable: the WRITE flag means nothing there, and DPDK's virtio driver sets it
	 * on the net header of its packed indirect TX tables. Kept by reset().
	 */
	void setDeviceReadsOnly(bool readsOnly)
	{
		writeFlag_ = readsOnly ? 0 : virtio::kDescFWrite;
	}
	/** \brief The queue may be processed (started, in the specification's words). */
	void setReady(bool ready) { ready_ = ready; }
	bool isReady() const { return ready_; }
	bool isBroken() const { return broken_; }
	/** \brief The front-end set the ring up again (SET_VRING_BASE): it may be used again. */
	void clearBroken() { broken_ = false; }
	uint16_t nextAvail() const { return lastAvailIdx_; }
	void setNextAvail(uint16_t idx)
	{
		lastAvailIdx_ = idx;
		availIdxSeen_ = idx;
	}
	uint16_t nextUsed() const { return usedIdx_; }
	void setNextUsed(uint16_t idx) { usedIdx_ = idx; }
	/** \brief The used index the guest sees (0 when not translated). */
	uint16_t guestUsedIdx() const;
	/** \brief Back to the state of a new queue (size and features are kept). */
	void reset();
	/**
	 * \brief Mark the used ring (its entries, index and avail_event) written in \a log, as a
	 * live migration needs after publishUsed() (the whole ring: a few pages, once a burst).
	 */
	void logUsed(const DirtyLog &log) const { log.mark(usedGpa_, virtio::splitUsedSize(size_)); }

	/**
	 * \brief When the ring starts: a next avail position (SET_VRING_BASE) behind the used
	 * index the guest sees, or more than a ring ahead of it, cannot be right (a front-end
	 * that kept its rings while the back-end died and came back sends what it has: DPDK's
	 * virtio-user in server mode sends 0). Take the used index instead, as DPDK's vhost
	 * does; the chains after it are taken again (a TX frame may go out twice, an RX buffer
	 * is filled again). Control thread, translated, not ready. \return whether it moved.
	 */
	bool resumeFromUsedIndex();
	/**
	 * \brief Record in \a region which chains are taken and not yet returned (vhost-user
	 * inflight I/O tracking), or stop recording with null. The region must hold at least
	 * size() states. Control thread, queue not ready.
	 */
	void setInflight(InflightQueueSplit *region) { inflight_ = region; }
	/**
	 * \brief When the queue starts (translated): bring the inflight region up to date with
	 * the used ring, as the specification says, and line up the chains it holds as taken and
	 * not returned (by a back-end that died) to come first from the next pops, in the order
	 * they were taken; the avail position moves past them and the used position follows the
	 * guest's used index. A region that is new, for another size or corrupt is started
	 * afresh. Every value read from the region is validated. Control thread.
	 * \return how many chains are lined up.
	 */
	uint16_t recoverInflight();

	/* Data path (processing thread). */

	/**
	 * \brief Take the next available chain into \a chain, its pieces into \a storage.
	 * \param mem the snapshot that descriptor addresses are translated in
	 */
	PopStatus pop(const GuestMemory &mem, std::span<DescBuffer> storage, DescriptorChain &chain)
	{
		if (!storage.empty() && popUsual(mem, storage[0], chain)) [[likely]]
			return PopStatus::Ok;
		return popSlow(mem, storage, chain);
	}
	/**
	 * \brief pop() of the usual chain only, inline: one direct descriptor in one region,
	 * below an avail index already read, its piece in \a buffer. \return false, with nothing
	 * taken or counted, for anything else (then pop() tells what it is).
	 */
	[[gnu::always_inline]] bool popUsual(const GuestMemory &mem, DescBuffer &buffer,
					     DescriptorChain &chain)
	{
		uint16_t id;
		if (popUsualBurst(mem, &buffer, &id, 1,
				  [](uint16_t, const DescBuffer &) { return true; }) == 0)
			return false;
		chain.setSingle(id, buffer);
		return true;
	}
	/**
	 * \brief The usual chains, up to \a max in a row, the ring's state held in registers:
	 * chain k's buffer id in \a ids[k], its one piece in \a buffers[k]. Before a chain is
	 * taken, \a accept(k, piece) may refuse it: it stays for the next pop(). \return how many
	 * were taken; it stops at the first chain that is not usual.
	 */
	template <typename Accept>
	[[gnu::always_inline]] uint16_t popUsualBurst(const GuestMemory &mem, DescBuffer *buffers,
						      uint16_t *ids, uint16_t max, Accept &&accept)
	{
		uint16_t pending = static_cast<uint16_t>(availIdxSeen_ - lastAvailIdx_);
		if (pending > size_ || !ready_ || broken_ || !desc_ || resubmitting_) [[unlikely]]
			return 0;
		virtio::SplitDesc *const desc = desc_;
		uint16_t *const ring = availRing();
		const uint16_t size = size_;
		const uint16_t writeFlag = writeFlag_;
		uint16_t idx = lastAvailIdx_;
		uint32_t hint = regionHint_;
		GuestMemory::Window window = mem.window(hint);
		if (max > pending)
			max = pending;
		uint16_t n = 0;
		for (; n < max; n++) {
			uint16_t head = std::atomic_ref<uint16_t>(ring[idx & (size - 1)])
						.load(std::memory_order_relaxed);
			if (head >= size)
				break;
			virtio::SplitDesc *d = desc + head;
			uint16_t flags =
				std::atomic_ref<uint16_t>(d->flags).load(std::memory_order_relaxed);
			uint32_t len =
				std::atomic_ref<uint32_t>(d->len).load(std::memory_order_relaxed);
			uint64_t gpa =
				std::atomic_ref<uint64_t>(d->addr).load(std::memory_order_relaxed);
			if ((flags & (virtio::kDescFNext | virtio::kDescFIndirect)) || len == 0)
				break;
			bool writable = (flags & writeFlag) != 0;
			uint8_t *hva = mem.translateGpa(gpa, len, &hint, &window,
							writable ? kAccessWrite : kAccessRead);
			if (!hva)
				break;
			DescBuffer buffer{ hva, len, writable };
			if (!accept(n, buffer))
				break;
			buffers[n] = buffer;
			ids[n] = head;
			idx++;
		}
		lastAvailIdx_ = idx;
		regionHint_ = hint;
		stats_.chains += n;
		if (inflight_) [[unlikely]]
			markInflight(ids, n);
		return n;
	}
	ChainError lastError() const { return lastError_; }
	/**
	 * \brief Chains the guest made available and pop() has not taken (one acquire load),
	 * the chains of a back-end that died still to be taken again included.
	 * \return at most the ring size; a corrupt index reads as the size (pop() then breaks it).
	 */
	uint16_t available() const
	{
		if (!ready_ || !avail_ || broken_)
			return 0;
		uint16_t idx =
			std::atomic_ref<uint16_t>(avail_->idx).load(std::memory_order_acquire);
		uint16_t n = static_cast<uint16_t>(idx - lastAvailIdx_);
		if (n > size_)
			return size_;
		availIdxSeen_ = idx; /* pop() needs no second read */
		if (resubmitting_) [[unlikely]]
			n = static_cast<uint16_t>(
				std::min<size_t>(size_, n + (resubmit_.size() - resubmitNext_)));
		return n;
	}
	/** \brief Where pop() reads next, for rewindAvail(). */
	uint32_t availPosition() const { return lastAvailIdx_; }
	/**
	 * \brief Give back every chain pop() took since availPosition() answered \a position
	 * (none of them used yet): they come again.
	 */
	void rewindAvail(uint32_t position) { lastAvailIdx_ = static_cast<uint16_t>(position); }

	/** \brief Put (\a head, \a len) on the used ring; invisible to the guest until publishUsed(). */
	void addUsed(uint16_t head, uint32_t len)
	{
		virtio::SplitUsedElem *elem = usedRing() + (usedIdx_ & (size_ - 1));
		std::atomic_ref<uint32_t>(elem->id).store(head, std::memory_order_relaxed);
		std::atomic_ref<uint32_t>(elem->len).store(len, std::memory_order_relaxed);
		usedIdx_++;
	}
	/** \brief Make every addUsed() so far visible: one release store of used->idx. */
	void publishUsed()
	{
		if (inflight_) [[unlikely]]
			linkInflightBatch();
		std::atomic_ref<uint16_t>(used_->idx).store(usedIdx_, std::memory_order_release);
		if (inflight_) [[unlikely]]
			clearInflightBatch();
	}

	/**
	 * \brief Should the guest be notified of the used entries published since the last
	 * notification? Honours EVENT_IDX (used_event) or VRING_AVAIL_F_NO_INTERRUPT, and
	 * records the notification as sent when it answers true.
	 */
	bool needsNotification();
	/** \brief Ask the guest not to kick (VRING_USED_F_NO_NOTIFY, or avail_event left behind). */
	void disableNotification();
	/**
	 * \brief Ask the guest to kick again (clear NO_NOTIFY, or avail_event = next avail).
	 * \return true if buffers were made available meanwhile: process them before sleeping.
	 */
	bool enableNotification();

	QueueStats &stats() { return stats_; }
	const QueueStats &stats() const { return stats_; }

private:
	uint16_t *availRing() const
	{
		return reinterpret_cast<uint16_t *>(reinterpret_cast<uint8_t *>(avail_) +
						    virtio::kSplitAvailRingOffset);
	}
	virtio::SplitUsedElem *usedRing() const
	{
		return reinterpret_cast<virtio::SplitUsedElem *>(reinterpret_cast<uint8_t *>(used_) +
								 virtio::kSplitUsedRingOffset);
	}
	uint16_t *usedEvent() const
	{
		return reinterpret_cast<uint16_t *>(reinterpret_cast<uint8_t *>(avail_) +
						    virtio::splitUsedEventOffset(size_));
	}
	uint16_t *availEvent() const
	{
		return reinterpret_cast<uint16_t *>(reinterpret_cast<uint8_t *>(used_) +
						    virtio::splitAvailEventOffset(size_));
	}
	PopStatus refuse(ChainError error);
	/** \brief pop() for every chain its inline path does not take. */
	PopStatus popSlow(const GuestMemory &mem, std::span<DescBuffer> storage,
			  DescriptorChain &chain);
	/** \brief Gather and validate the chain that starts at \a head (below the size). */
	PopStatus walkChain(const GuestMemory &mem, uint16_t head, std::span<DescBuffer> storage,
			    DescriptorChain &chain);
	/** \brief Inflight tracking: \a heads taken, in that order. */
	void markInflight(const uint16_t *heads, uint16_t n);
	/**
	 * \brief Inflight tracking, before the used index moves: the list of the batch's heads
	 * (read back from the used entries written since the last publishUsed()), which recovery
	 * clears if we die before clearInflightBatch() does.
	 */
	void linkInflightBatch();
	/** \brief Inflight tracking: the batch of used entries just published is done. */
	void clearInflightBatch();
	/** \brief Start the inflight region afresh for this ring, at the guest's used index. */
	void restartInflight(uint16_t guestUsed);

	/* Hot, runtime state first. */
	alignas(64) virtio::SplitDesc *desc_ = nullptr;
	virtio::SplitAvail *avail_ = nullptr;
	virtio::SplitUsed *used_ = nullptr;
	uint16_t size_ = 0;
	uint16_t lastAvailIdx_ = 0;
	/*
	 * The avail index as last read: pop() reads the guest's (a cache line the guest writes)
	 * only when it has taken every chain up to this one, so once per burst, not per chain.
	 */
	mutable uint16_t availIdxSeen_ = 0;
	uint16_t usedIdx_ = 0;
	uint16_t signalledUsed_ = 0;
	bool signalledUsedValid_ = false;
	bool eventIdx_ = false;
	bool indirect_ = false;
	bool ready_ = false;
	bool broken_ = false;
	ChainError lastError_ = ChainError::None;
	/** Chains of a back-end that died wait in resubmit_ for pop(). */
	bool resubmitting_ = false;
	uint32_t regionHint_ = 0;
	/** The flag that makes a buffer writable: 0 when the device only reads. */
	uint16_t writeFlag_ = virtio::kDescFWrite;
	/** The inflight region, when the front-end gave one (GET/SET_INFLIGHT_FD). */
	InflightQueueSplit *inflight_ = nullptr;

	/* Configuration. */
	alignas(64) uint64_t descQva_ = 0;
	uint64_t availQva_ = 0;
	uint64_t usedQva_ = 0;
	/** The used ring's guest-physical address, for the dirty log. */
	uint64_t usedGpa_ = 0;
	uint16_t maxSize_;
	/* Inflight tracking: the order of pops, and the heads to take again after a restart. */
	uint64_t inflightCounter_ = 0;
	/** The used index at the last publishUsed(): where the next batch starts. */
	uint16_t inflightUsedIdx_ = 0;
	std::vector<uint16_t> resubmit_;
	size_t resubmitNext_ = 0;

	QueueStats stats_;
};

} /* namespace vub::vhost */
