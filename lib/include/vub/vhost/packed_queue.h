/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "vub/base/log.h"
#include "vub/base/result.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/inflight.h"
#include "vub/vhost/split_queue.h"
#include "vub/virtio/packed_ring.h"

namespace vub::vhost {

/**
 * \brief The device side of a packed virtqueue (VIRTIO 1.x "Packed Virtqueues") in guest
 * memory: the twin of SplitQueue, with the same configuration calls, the same pop() contract
 * (DescBuffer, DescriptorChain, ChainError and QueueStats are shared) and the same
 * notification calls.
 *
 * The differences a caller sees:
 * - the size need not be a power of two;
 * - setAddresses() takes the descriptor ring, the driver event suppression area and the
 *   device event suppression area: in SET_VRING_ADDR those are `desc`, `avail` and `used`;
 * - the ring position is a pair (index, wrap counter) per side, carried by base() and
 *   setBase() in vhost-user's SET/GET_VRING_BASE encoding;
 * - a chain is returned with addUsed(id, len, descCount): \a descCount is the number of ring
 *   descriptors the chain took, which pop() reports in lastDescCount() (for refused chains
 *   too: a refused chain is consumed and must be returned with length 0).
 *
 * Every value read from guest memory is validated: a bad chain is refused and counted, a
 * corrupt ring (a buffer id beyond the ring, a chain running into a descriptor that is not
 * available, a descriptor made available while the device still holds it) marks the queue
 * broken. Each descriptor is read once: its flags with an acquire load, then its address,
 * length and id.
 *
 * With an inflight region (setInflight(), recoverInflight()), the queue records in it the
 * chains it takes and the ones it returns, so that the next back-end started on the same
 * rings takes again those this one took and did not return. Not thread-safe: one thread at a
 * time.
 */
class PackedQueue
{
public:
	/** \brief What pop() found; the same values as SplitQueue::PopStatus. */
	enum class PopStatus : uint8_t {
		Ok,	  /**< \a chain holds a valid chain */
		Empty,	  /**< nothing available, or the queue is not ready */
		BadChain, /**< return \a chain.head with length 0 and lastDescCount(); see
			     lastError() */
		Broken,	  /**< the ring is corrupt: stop using it and signal the err eventfd */
		Deferred, /**< the next chain waits for an IOTLB translation: nothing taken */
	};

	/** \param maxSize the largest size setSize() accepts (at most 32768) */
	explicit PackedQueue(uint16_t maxSize) : maxSize_(maxSize) {}

	/* Configuration (control thread, queue not ready). */
	uint16_t maxSize() const { return maxSize_; }
	uint16_t size() const { return size_; }
	/**
	 * \brief Set the ring size. A ring position that no longer fits goes back to the start.
	 * \return EINVAL for 0, above maxSize or above 32768
	 */
	Result<void> setSize(uint32_t size);
	/**
	 * \brief Set the front-end addresses of the three parts.
	 * \param descQva the descriptor ring (SET_VRING_ADDR `desc`), 16-byte aligned
	 * \param driverEventQva the driver event suppression area (SET_VRING_ADDR `avail`),
	 * 4-aligned \param deviceEventQva the device event suppression area (SET_VRING_ADDR
	 * `used`), 4-aligned \return EINVAL when an address is not aligned as the layout requires
	 */
	Result<void> setAddresses(uint64_t descQva, uint64_t driverEventQva,
				  uint64_t deviceEventQva);
	bool hasAddresses() const
	{
		return descQva_ != 0 || driverEventQva_ != 0 || deviceEventQva_ != 0;
	}
	/** \brief Whether setAddresses() was given these. */
	bool sameAddresses(uint64_t descQva, uint64_t driverEventQva, uint64_t deviceEventQva) const
	{
		return descQva == descQva_ && driverEventQva == driverEventQva_ &&
		       deviceEventQva == deviceEventQva_;
	}
	/**
	 * \brief Translate the ring addresses in \a mem over the whole length of each part.
	 * \return EINVAL before setSize(), EFAULT when a part is not wholly inside one region;
	 * the queue then has no ring
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
		writeFlag_ = readsOnly ? 0 : virtio::kPackedDescFWrite;
	}
	/** \brief The queue may be processed (started, in the specification's words). */
	void setReady(bool ready) { ready_ = ready; }
	bool isReady() const { return ready_; }
	bool isBroken() const { return broken_; }

	/** \brief The ring position of the next descriptor the device will read. */
	uint16_t nextAvail() const { return lastAvailIdx_; }
	bool availWrap() const { return availWrap_; }
	/** \brief The ring position of the next used descriptor the device will write. */
	uint16_t nextUsed() const { return usedIdx_; }
	bool usedWrap() const { return usedWrap_; }
	/** \brief Ring descriptors popped and not yet given back with addUsed(). */
	uint16_t inFlight() const
	{
		return availWrap_ == usedWrap_
			       ? static_cast<uint16_t>(lastAvailIdx_ - usedIdx_)
			       : static_cast<uint16_t>(lastAvailIdx_ + size_ - usedIdx_);
	}

	/**
	 * \brief The ring state in vhost-user's encoding (GET_VRING_BASE): bits 0-14 the next
	 * avail index, bit 15 the avail wrap counter, bits 16-30 the used index, bit 31 the used
	 * wrap counter.
	 */
	uint32_t base() const;
	/**
	 * \brief Set the ring state from vhost-user's encoding (SET_VRING_BASE), see base().
	 *
	 * When bits 16-31 are all zero the used half is taken equal to the avail half, as DPDK
	 * does (DPDK's virtio-user sends only the avail half, `num |= 1 << 15` at start-up;
	 * QEMU sends both). Call after setSize(). Leaves the notification tracking reset.
	 * \return EINVAL before setSize(), when an index is not below the size, or when the
	 * used position is ahead of the avail position or more than a ring behind it
	 */
	Result<void> setBase(uint32_t base);
	/** \brief Back to the state of a new queue (size and features are kept). */
	void reset();
	/**
	 * \brief Mark what the device writes in the ring (used descriptors: the whole descriptor
	 * ring, and the device event area) written in \a log, as a live migration needs after
	 * publishUsed().
	 */
	void logUsed(const DirtyLog &log) const
	{
		log.mark(descGpa_, virtio::packedDescRingSize(size_));
		log.mark(deviceEventGpa_, sizeof(virtio::PackedEventSuppress));
	}

	/**
	 * \brief The region in which to record the chains taken and not yet returned (vhost-user
	 * inflight I/O tracking), or null to record nothing; recording starts at the next
	 * recoverInflight(). The region must hold at least size() states. Control thread, queue
	 * not ready.
	 */
	void setInflight(InflightQueuePacked *region)
	{
		inflightRegion_ = region;
		inflight_ = nullptr;
	}
	/**
	 * \brief When the queue starts (translated): bring the inflight region up to date as the
	 * specification says (the last batch of used descriptors is kept if the driver can see
	 * it, rolled back if not), and line up the chains it holds as taken and not returned (by
	 * a back-end that died) to come first from the next pops, in the order they were taken,
	 * from the copies of their descriptors in the region. The used position becomes the
	 * region's, the avail position the used one plus the descriptors of those chains,
	 * overriding setBase(). A region that is new, for another size or whose values do not
	 * hold together (a position beyond the ring, a chain whose states leave the table or
	 * share a state with another) is started afresh at the setBase() positions; a flag other
	 * than 0 or 1 is cleared. Every value is read once and bounded; nothing from the region
	 * is used as an address. Allocates (control thread).
	 * \return how many chains are lined up
	 */
	uint16_t recoverInflight();

	/* Data path (processing thread). */

	/**
	 * \brief Take the next available chain into \a chain, its pieces into \a storage.
	 *
	 * \a chain.head is the buffer id (from the last descriptor of the chain). On Ok and on
	 * BadChain the chain is consumed: the avail position moves by lastDescCount().
	 * \param mem the snapshot that descriptor addresses are translated in
	 */
	PopStatus pop(const GuestMemory &mem, std::span<DescBuffer> storage, DescriptorChain &chain)
	{
		if (!storage.empty() && popUsual(mem, storage[0], chain)) [[likely]]
			return PopStatus::Ok;
		return popSlow(mem, storage, chain);
	}
	/**
	 * \brief pop() of the usual chain only, inline: one available direct descriptor in one
	 * region, with room in the ring, its piece in \a buffer. \return false, with nothing
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
		if (!ready_ || !desc_ || broken_ || resubmitting_) [[unlikely]]
			return 0;
		virtio::PackedDesc *const desc = desc_;
		const uint16_t size = size_;
		const uint16_t writeFlag = writeFlag_;
		uint16_t idx = lastAvailIdx_;
		bool wrap = availWrap_;
		uint32_t hint = regionHint_;
		GuestMemory::Window window = mem.window(hint);
		uint16_t room = static_cast<uint16_t>(size - inFlight());
		if (max > room)
			max = room;
		uint16_t n = 0;
		for (; n < max; n++) {
			virtio::PackedDesc *p = desc + idx;
			uint16_t flags =
				std::atomic_ref<uint16_t>(p->flags).load(std::memory_order_acquire);
			if (!virtio::packedDescIsAvail(flags, wrap) ||
			    (flags & (virtio::kPackedDescFNext | virtio::kPackedDescFIndirect)))
				break;
			uint32_t len =
				std::atomic_ref<uint32_t>(p->len).load(std::memory_order_relaxed);
			uint64_t gpa =
				std::atomic_ref<uint64_t>(p->addr).load(std::memory_order_relaxed);
			uint16_t id =
				std::atomic_ref<uint16_t>(p->id).load(std::memory_order_relaxed);
			if (len == 0 || id >= size) [[unlikely]]
				break;
			bool writable = (flags & writeFlag) != 0;
			uint8_t *hva = mem.translateGpa(gpa, len, &hint, &window,
							writable ? kAccessWrite : kAccessRead);
			if (!hva)
				break;
			DescBuffer buffer{ hva, len, writable };
			if (!accept(n, buffer))
				break;
			if (inflight_) [[unlikely]] {
				uint32_t position = idx | (wrap ? virtio::kPackedBaseAvailWrap : 0);
				if (!takeInflight(virtio::PackedDesc{ gpa, len, id, flags },
						  position))
					break;
			}
			buffers[n] = buffer;
			ids[n] = id;
			if (++idx == size) {
				idx = 0;
				wrap = !wrap;
			}
		}
		lastAvailIdx_ = idx;
		availWrap_ = wrap;
		regionHint_ = hint;
		if (n != 0)
			lastDescCount_ = 1;
		stats_.chains += n;
		return n;
	}
	ChainError lastError() const { return lastError_; }
	/**
	 * \brief Descriptors the driver made available from the next avail position on, plus the
	 * chains of a back-end that died still to be taken again, at most \a max: an upper bound
	 * of the chains pop() would return (a chain may take several).
	 */
	uint16_t available(uint16_t max) const;
	/** \brief Where pop() reads next (index and wrap counter), for rewindAvail(). */
	uint32_t availPosition() const
	{
		return uint32_t{ lastAvailIdx_ } | (availWrap_ ? virtio::kPackedBaseAvailWrap : 0);
	}
	/**
	 * \brief Give back every chain pop() took since availPosition() answered \a position
	 * (none of them used yet): they come again. Not the chains taken again after a restart
	 * (recoverInflight()): those are not on the ring; give them back with addUsed().
	 */
	void rewindAvail(uint32_t position)
	{
		if (inflight_) [[unlikely]]
			rewindInflight(position);
		lastAvailIdx_ = static_cast<uint16_t>(position & 0x7fff);
		availWrap_ = (position & virtio::kPackedBaseAvailWrap) != 0;
	}
	/** \brief Ring descriptors the chain last taken by pop() (Ok or BadChain) occupied. */
	uint16_t lastDescCount() const { return lastDescCount_; }

	/**
	 * \brief Give back the chain (\a id, \a len) at the used position and move that
	 * position by \a descCount (1..size), flipping the used wrap counter at the ring end.
	 *
	 * The used descriptor is written at once, but the first one since the last
	 * publishUsed() keeps its old flags until publishUsed(): the driver reads used
	 * descriptors in ring order, so it sees the whole batch at that one release store, and
	 * each descriptor's cache line is written while it is still held from reading it (DPDK's
	 * vhost does the same). \a len is flagged (VIRTQ_DESC_F_WRITE) when > 0. With IN_ORDER,
	 * one call may give back several chains: the last one's \a id and their \a descCount
	 * together. On a ring that is not mapped (between an untranslate() and the next
	 * translate()) the chains wait in the queue, at most kUsedBatchMax of them, and
	 * publishUsed() writes them once the ring is mapped again.
	 */
	void addUsed(uint16_t id, uint32_t len, uint16_t descCount)
	{
		/* Our own caller's count, taken from lastDescCount(): not guest input. */
		VUB_ASSERT(descCount >= 1 && descCount <= size_);
		if (inflight_) [[unlikely]]
			returnInflight(id, descCount);
		if (!desc_ || waitingCount_ != 0) [[unlikely]]
			addUsedWaiting(id, len, descCount);
		else
			writeUsed(usedIdx_, usedWrap_, id, len);
		uint32_t next = uint32_t{ usedIdx_ } + descCount;
		if (next >= size_) {
			next -= size_;
			usedWrap_ = !usedWrap_;
		}
		usedIdx_ = static_cast<uint16_t>(next);
	}
	/**
	 * \brief Make every addUsed() so far visible to the driver: the first one's flags, with a
	 * release store.
	 */
	void publishUsed()
	{
		if (waitingCount_ != 0) [[unlikely]]
			writeWaiting();
		if (inflight_) [[unlikely]] {
			publishInflight();
			return;
		}
		if (headPending_ && desc_) {
			std::atomic_ref<uint16_t>(desc_[headIdx_].flags)
				.store(headFlags_, std::memory_order_release);
			headPending_ = false;
		}
	}
	/** \brief The most chains given back while the ring is not mapped. */
	static constexpr uint16_t kUsedBatchMax = 128;

	/**
	 * \brief Should the guest be notified of the used descriptors published since the last
	 * notification? Reads the driver event suppression area: without EVENT_IDX, unless its
	 * flags say DISABLE; with EVENT_IDX and flags DESC, when the used position crossed the
	 * descriptor it names (DPDK's vhost_vring_call_packed). Records the notification as
	 * sent when it answers true.
	 */
	bool needsNotification();
	/** \brief Ask the guest not to kick: device event flags DISABLE. */
	void disableNotification();
	/**
	 * \brief Ask the guest to kick again: device event flags ENABLE, or with EVENT_IDX, DESC
	 * at the next avail position.
	 * \return true if a descriptor was made available meanwhile: process it before sleeping
	 */
	bool enableNotification();

	QueueStats &stats() { return stats_; }
	const QueueStats &stats() const { return stats_; }

private:
	PopStatus refuse(ChainError error);
	PopStatus breakRing(const char *why, uint32_t value);
	/** \brief pop() for every chain its inline path does not take. */
	PopStatus popSlow(const GuestMemory &mem, std::span<DescBuffer> storage,
			  DescriptorChain &chain);
	ChainError takeDesc(const GuestMemory &mem, const virtio::PackedDesc &d, bool alone,
			    std::span<DescBuffer> storage, DescriptorChain &chain);
	/**
	 * Write the used descriptor (\a id, \a len) at \a idx in the lap of \a wrap; the first
	 * one since publishUsed() keeps its old flags until then.
	 */
	void writeUsed(uint16_t idx, bool wrap, uint16_t id, uint32_t len)
	{
		virtio::PackedDesc *d = desc_ + idx;
		std::atomic_ref<uint16_t>(d->id).store(id, std::memory_order_relaxed);
		std::atomic_ref<uint32_t>(d->len).store(len, std::memory_order_relaxed);
		uint16_t flags = (wrap ? virtio::kPackedDescFAvail | virtio::kPackedDescFUsed : 0) |
				 (len > 0 ? virtio::kPackedDescFWrite : 0);
		if (headPending_) {
			std::atomic_ref<uint16_t>(d->flags).store(flags, std::memory_order_relaxed);
		} else {
			headPending_ = true;
			headIdx_ = idx;
			headFlags_ = flags;
		}
	}
	/** addUsed() on a ring that is not mapped, or behind chains that wait already. */
	void addUsedWaiting(uint16_t id, uint32_t len, uint16_t descCount);
	/** Write the chains that wait, once the ring is mapped. */
	void writeWaiting();

	/* Inflight tracking: out of line, reached only with a region. */
	/** No state in the shadow lists. */
	static constexpr uint16_t kNoState = 0xffff;
	/** The region's lists as this queue wrote them: the data path never reads the region. */
	struct InflightState {
		uint16_t next;	/**< the free list or the chain, as desc[].next */
		uint16_t last;	/**< a chain's head: its last state */
		uint16_t num;	/**< a chain's head: its descriptors */
		uint16_t id;	/**< a chain's head: its buffer id */
		uint16_t older; /**< a chain's head: the chains in flight, in the order taken */
		uint16_t newer;
		/** A chain's head: availPosition() when it was taken; kNoPosition: taken again. */
		uint32_t position;
	};
	static constexpr uint32_t kNoPosition = UINT32_MAX;
	/** A chain of a back-end that died, to be taken again: its copies in resubmitDescs_. */
	struct Resubmit {
		uint32_t first;
		uint16_t num;
		uint16_t id;
	};
	/**
	 * Record the chain of one descriptor \a d just taken. \return false when the region has
	 * no free state until the next publishUsed(): the chain must not be taken yet.
	 */
	bool takeInflight(const virtio::PackedDesc &d, uint32_t position);
	/**
	 * Copy \a d, the next descriptor of a chain being taken, into the free state \a state
	 * (\a last then), and move \a state along the free list. \return false when none is left.
	 */
	bool stageInflight(uint16_t &state, uint16_t &last, const virtio::PackedDesc &d);
	/**
	 * Record the chain staged from the free head to \a last, of \a num descriptors, taken at
	 * ring position \a position; not when a chain with its buffer id \a id is in flight.
	 */
	void commitInflight(uint16_t last, uint16_t num, uint16_t id, uint32_t position);
	/** The chain \a id went back (\a descCount descriptors: more means IN_ORDER's batch). */
	void returnInflight(uint16_t id, uint16_t descCount);
	/** publishUsed() with the region: free the batch, publish, then clear and commit. */
	void publishInflight();
	/** rewindAvail(): forget the chains taken since \a position. */
	void rewindInflight(uint32_t position);
	/** The taken-order list: \a head out of it (and its id), or in as the newest. */
	void unlinkInflight(uint16_t head);
	void linkNewest(uint16_t head);
	/** The region's free heads and used positions, current and old alike. */
	void settleInflight(uint16_t freeLink, uint16_t used, bool usedWrap);
	/** The next resubmitted chain, from its copies. */
	PopStatus popResubmitted(const GuestMemory &mem, std::span<DescBuffer> storage,
				 DescriptorChain &chain);
	/** Start the region afresh at the current positions. */
	void restartInflight();
	/** After a recovery: no used flags on the \a descs descriptors in flight. */
	void scrubUnpublished(uint32_t descs);
	/** Set up the shadow lists of a region the queue has just validated or started. */
	void adoptInflight(uint16_t freeHead);

	/* Hot, runtime state first: one cache line. */
	alignas(64) virtio::PackedDesc *desc_ = nullptr;
	virtio::PackedEventSuppress *driverEvent_ = nullptr;
	virtio::PackedEventSuppress *deviceEvent_ = nullptr;
	/** The inflight region being recorded, when the front-end gave one. */
	InflightQueuePacked *inflight_ = nullptr;
	uint32_t regionHint_ = 0;
	uint16_t size_ = 0;
	uint16_t lastAvailIdx_ = 0;
	uint16_t usedIdx_ = 0;
	uint16_t signalledUsed_ = 0;
	uint16_t lastDescCount_ = 0;
	/** The first used descriptor not yet published: its index and the flags it will get. */
	uint16_t headIdx_ = 0;
	uint16_t headFlags_ = 0;
	/** Chains that wait for the ring to be mapped (waiting_). */
	uint16_t waitingCount_ = 0;
	/** The flag that makes a buffer writable: 0 when the device only reads. */
	uint16_t writeFlag_ = virtio::kPackedDescFWrite;
	bool availWrap_ = true;
	bool usedWrap_ = true;
	bool headPending_ = false;
	bool signalledUsedValid_ = false;
	bool eventIdx_ = false;
	bool indirect_ = false;
	bool ready_ = false;
	bool broken_ = false;
	/** Chains of a back-end that died wait in resubmit_ for pop(). */
	bool resubmitting_ = false;
	ChainError lastError_ = ChainError::None;

	/** Where the first waiting chain goes, and its lap. */
	uint16_t waitingIdx_ = 0;
	bool waitingWrap_ = true;
	/** A chain given back while the ring was not mapped. */
	struct UsedEntry {
		uint16_t id;
		uint16_t descCount;
		uint32_t len;
	};
	UsedEntry waiting_[kUsedBatchMax];

	/* Configuration. */
	alignas(64) uint64_t descQva_ = 0;
	uint64_t driverEventQva_ = 0;
	uint64_t deviceEventQva_ = 0;
	/** Guest-physical addresses of what the device writes, for the dirty log. */
	uint64_t descGpa_ = 0;
	uint64_t deviceEventGpa_ = 0;
	uint16_t maxSize_;
	InflightQueuePacked *inflightRegion_ = nullptr;

	/* Inflight tracking (cold). */
	std::vector<InflightState> inflightStates_;
	/** By buffer id: the head state of the chain in flight with that id, or kNoState. */
	std::vector<uint16_t> inflightHeadOfId_;
	/** The head states of the chains returned since the last publishUsed(). */
	std::vector<uint16_t> inflightBatch_;
	uint16_t inflightBatchCount_ = 0;
	uint16_t inflightFreeHead_ = kNoState;
	uint16_t inflightOldest_ = kNoState;
	uint16_t inflightNewest_ = kNoState;
	uint64_t inflightCounter_ = 0;
	std::vector<virtio::PackedDesc> resubmitDescs_;
	std::vector<Resubmit> resubmit_;
	size_t resubmitNext_ = 0;

	QueueStats stats_;
};

} /* namespace vub::vhost */
