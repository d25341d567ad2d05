/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vub/virtio/split_ring.h"

namespace vub::test {

class GuestMemoryFd;

/** \brief One buffer of a descriptor chain, as the guest driver posts it. */
struct BufferSpec {
	uint64_t gpa;
	uint32_t len;
	bool writable; /**< device-writable (VIRTQ_DESC_F_WRITE), i.e. an RX / in buffer */
};

/**
 * \brief The driver (guest) side of one split virtqueue living in a GuestMemoryFd.
 *
 * Lays out the descriptor table (16-byte aligned, here page aligned), the avail ring (2) and the
 * used ring (4, or \a usedAlign) for queue size N as VIRTIO 1.x "Split Virtqueues" says, keeps a
 * free list of descriptors, posts chains, publishes avail->idx with a release store and collects
 * used entries. It trusts nothing the device writes: a used id that was not in flight is counted
 * (badUsedIds()) and its descriptors are not recycled; chains are freed from the driver's own
 * shadow links, never from the (device-visible) descriptor table.
 *
 * Ring index and flag fields are accessed through std::atomic_ref. Raw accessors let hostile tests
 * write anything into the ring. Not thread-safe: one test thread drives a queue, the back-end is
 * the only other party.
 */
class SplitDriver
{
public:
	/**
	 * \brief Allocate and zero the rings of a queue of \a queueSize entries in \a mem.
	 *
	 * Throws std::invalid_argument when \a queueSize is 0, not a power of two or above 32768,
	 * std::bad_alloc when \a mem is full. \a mem must outlive the driver.
	 */
	SplitDriver(GuestMemoryFd &mem, uint16_t queueSize,
		    size_t usedAlign = virtio::kSplitUsedAlign);
	SplitDriver(const SplitDriver &) = delete;
	SplitDriver &operator=(const SplitDriver &) = delete;

	uint16_t size() const { return num_; }
	GuestMemoryFd &memory() const { return mem_; }

	uint64_t descGpa() const { return descGpa_; }
	uint64_t availGpa() const { return availGpa_; }
	uint64_t usedGpa() const { return usedGpa_; }
	uint64_t descQva() const;
	uint64_t availQva() const;
	uint64_t usedQva() const;

	/**
	 * \brief Post a chain of \a bufs: descriptors from the free list linked with NEXT, WRITE
	 * where writable, and the head in the next avail ring slot. Not visible to the device
	 * until publish().
	 * \return the head descriptor id, -1 when \a bufs is empty or longer than the free list
	 */
	int addChain(std::span<const BufferSpec> bufs);
	/**
	 * \brief Post \a bufs as one INDIRECT descriptor pointing at a table of bufs.size()
	 * descriptors in guest memory (VIRTIO_F_INDIRECT_DESC). The table of a head is reused
	 * when it is large enough, so repeated posting does not exhaust the memory.
	 * \return the head descriptor id, -1 when \a bufs is empty or no descriptor is free
	 */
	int addIndirectChain(std::span<const BufferSpec> bufs);
	/** \brief The guest physical address of the indirect table last used by \a head. */
	uint64_t indirectTableGpa(uint16_t head) const;

	/**
	 * \brief Make every posted chain visible: release-store avail->idx, then a full fence
	 * (so a following read of used->flags / avail_event is ordered after it, as Linux's
	 * virtqueue_kick_prepare does).
	 */
	void publish();
	/**
	 * \brief Whether the device asked to be kicked for what was published since the last
	 * call: avail_event (when \a eventIdx) or !(used->flags & NO_NOTIFY).
	 */
	bool needsKick(bool eventIdx);

	/** \brief The avail idx the driver will publish next (posted chains included). */
	uint16_t availIdx() const { return availShadow_; }
	/** \brief The used idx up to which collectUsed() has consumed. */
	uint16_t lastUsedIdx() const { return lastUsed_; }
	uint16_t numFree() const { return numFree_; }
	/** \brief Chains posted and not yet returned by the device. */
	unsigned inFlight() const;

	void setAvailFlags(uint16_t flags);
	uint16_t availFlags() const;
	/** \brief Write used_event (avail->ring[N]) (VIRTIO_F_EVENT_IDX). */
	void setUsedEvent(uint16_t idx);
	uint16_t usedEvent() const;
	/** \brief Acquire-load of used->idx. */
	uint16_t usedIdx() const;
	/** \brief Acquire-load of used->flags. */
	uint16_t usedFlags() const;
	/** \brief Acquire-load of avail_event (used->ring[N]). */
	uint16_t availEvent() const;
	/** \brief The used ring entry in \a slot (taken modulo N). */
	virtio::SplitUsedElem usedElem(uint16_t slot) const;

	/**
	 * \brief Return the used entries the device published since the last call, in order,
	 * and put the descriptors of their chains back on the free list. Entries whose id was
	 * not in flight are returned too, but only counted (badUsedIds()), not recycled.
	 */
	std::vector<virtio::SplitUsedElem> collectUsed();
	uint64_t badUsedIds() const { return badUsedIds_; }

	/**
	 * \brief Forget every chain and zero the rings (a driver reset). The indirect tables
	 * already allocated are kept for reuse.
	 */
	void reset();

	/* Raw access for hostile tests: nothing is checked or recorded. */
	/** \brief Descriptor \a i of the table; throws std::out_of_range when i >= N. */
	virtio::SplitDesc *desc(uint16_t i);
	/** \brief Write \a head into avail->ring[\a slot % N]. */
	void setAvailRing(uint16_t slot, uint16_t head);
	uint16_t availRing(uint16_t slot) const;
	/** \brief Release-store \a idx into avail->idx (the shadow index is left alone). */
	void setAvailIdx(uint16_t idx);
	/** \brief Plain load of avail->idx as the device sees it. */
	uint16_t publishedAvailIdx() const;

private:
	struct HeadState {
		bool inFlight = false;
		uint16_t count = 0; /**< ring descriptors the chain took */
		uint64_t indirectGpa = 0;
		uint32_t indirectCap = 0; /**< entries the indirect table holds */
	};

	uint16_t takeFree();
	void freeChain(uint16_t head);
	uint16_t *availField(size_t offset) const;
	uint16_t *availSlot(uint16_t slot) const;
	uint16_t *usedField(size_t offset) const;

	GuestMemoryFd &mem_;
	uint16_t num_;
	uint64_t descGpa_ = 0;
	uint64_t availGpa_ = 0;
	uint64_t usedGpa_ = 0;
	virtio::SplitDesc *descs_ = nullptr;
	uint8_t *avail_ = nullptr;
	uint8_t *used_ = nullptr;

	std::vector<uint16_t> next_; /**< shadow links: chains and the free list */
	std::vector<HeadState> heads_;
	uint16_t freeHead_ = 0;
	uint16_t numFree_ = 0;
	uint16_t availShadow_ = 0;
	uint16_t published_ = 0;
	uint16_t kickChecked_ = 0;
	uint16_t lastUsed_ = 0;
	uint64_t badUsedIds_ = 0;
};

} /* namespace vub::test */
