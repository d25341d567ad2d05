/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "vub/virtio/packed_ring.h"

#include "split_driver.h"

namespace vub::test {

class GuestMemoryFd;

/** \brief One used descriptor as the driver collects it. */
struct PackedUsedElem {
	uint16_t id;
	uint32_t len;
};

/**
 * \brief The driver (guest) side of one packed virtqueue living in a GuestMemoryFd.
 *
 * Lays out the descriptor ring (16-byte aligned, here page aligned) and the driver and device
 * event suppression areas (4) for queue size N as VIRTIO 1.x "Packed Virtqueues" says (N need
 * not be a power of two), keeps the driver's avail and used positions with their wrap counters
 * (both start at 1) and a free list of buffer ids, posts chains and collects used descriptors.
 *
 * A chain is visible to the device as soon as addChain() returns: the descriptors after the
 * first are written first, the buffer id in the last one, and the first descriptor's flags
 * last, with a release store. It trusts nothing the device writes: a used id that was not in
 * flight is counted (badUsedIds()) and stops collection, as the driver cannot know how far to
 * skip. Raw accessors let hostile tests write anything into the ring. Not thread-safe: one
 * test thread drives a queue, the back-end is the only other party.
 */
class PackedDriver
{
public:
	/**
	 * \brief Allocate and zero the ring and event areas of a queue of \a queueSize entries.
	 *
	 * Throws std::invalid_argument when \a queueSize is 0 or above 32768, std::bad_alloc
	 * when \a mem is full. \a mem must outlive the driver.
	 */
	PackedDriver(GuestMemoryFd &mem, uint16_t queueSize);
	PackedDriver(const PackedDriver &) = delete;
	PackedDriver &operator=(const PackedDriver &) = delete;

	uint16_t size() const { return num_; }
	GuestMemoryFd &memory() const { return mem_; }

	uint64_t descGpa() const { return descGpa_; }
	uint64_t driverEventGpa() const { return driverEventGpa_; }
	uint64_t deviceEventGpa() const { return deviceEventGpa_; }
	uint64_t descQva() const;
	/** \brief What SET_VRING_ADDR carries in `avail`. */
	uint64_t driverEventQva() const;
	/** \brief What SET_VRING_ADDR carries in `used`. */
	uint64_t deviceEventQva() const;

	/** \brief The AVAIL/USED bits that make a descriptor available with wrap counter \a wrap.
	 */
	static uint16_t availFlags(bool wrap);
	/** \brief The AVAIL/USED bits of a used descriptor with wrap counter \a wrap. */
	static uint16_t usedFlags(bool wrap);

	/**
	 * \brief Post a chain of \a bufs at the avail position: WRITE where writable, NEXT on all
	 * but the last, the buffer id in the last, and the first made available last.
	 * \return the buffer id, -1 when \a bufs is empty or longer than the free descriptors
	 */
	int addChain(std::span<const BufferSpec> bufs);
	/**
	 * \brief Post \a bufs as one INDIRECT descriptor pointing at a table of bufs.size()
	 * descriptors in guest memory (VIRTIO_F_INDIRECT_DESC). The table of an id is reused
	 * when it is large enough, so repeated posting does not exhaust the memory.
	 * \return the buffer id, -1 when \a bufs is empty or no descriptor is free
	 */
	int addIndirectChain(std::span<const BufferSpec> bufs);
	/** \brief The guest physical address of the indirect table last used by \a id. */
	uint64_t indirectTableGpa(uint16_t id) const;

	/**
	 * \brief Whether the device asked to be kicked for what was posted since the last call,
	 * from the device event area: ENABLE, DISABLE, or DESC with its offset and wrap counter
	 * (Linux virtqueue_kick_prepare_packed).
	 */
	bool needsKick();

	/** \brief The ring position the next chain goes to, and its wrap counter. */
	uint16_t availIdx() const { return availIdx_; }
	bool availWrap() const { return availWrap_; }
	/** \brief The ring position collectUsed() reads next, and its wrap counter. */
	uint16_t usedIdx() const { return usedIdx_; }
	bool usedWrap() const { return usedWrap_; }
	/** \brief Descriptors not taken by chains in flight. */
	uint16_t numFree() const { return numFree_; }
	/** \brief Chains posted and not yet returned by the device. */
	unsigned inFlight() const;

	/** \brief Write the driver event area (flags last, with a release store and a full fence).
	 */
	void setDriverEvent(uint16_t flags, uint16_t offWrap = 0);
	uint16_t driverEventFlags() const;
	uint16_t driverEventOffWrap() const;
	/** \brief Acquire-loads of the device event area. */
	uint16_t deviceEventFlags() const;
	uint16_t deviceEventOffWrap() const;

	/**
	 * \brief Return the used descriptors the device published since the last call, in
	 * order, and free their ids and descriptors. Stops at a used id that is not in flight
	 * (counted in badUsedIds(), and collection stays stopped).
	 */
	std::vector<PackedUsedElem> collectUsed();
	uint64_t badUsedIds() const { return badUsedIds_; }
	/**
	 * \brief Collect as a driver that negotiated IN_ORDER (DPDK's virtio
	 * virtio_xmit_cleanup_inorder_packed): a used descriptor returns every chain in flight up
	 * to and including its id, in the order they were posted; the ones before it are
	 * returned with length 0.
	 */
	void setInOrder(bool inOrder) { inOrder_ = inOrder; }
	/** \brief Used descriptors collectUsed() read (fewer than chains with IN_ORDER). */
	uint64_t usedDescsRead() const { return usedDescsRead_; }

	/**
	 * \brief Forget every chain and zero the ring and event areas (a driver reset). The
	 * indirect tables already allocated are kept for reuse.
	 */
	void reset();

	/* Raw access for hostile tests: nothing is checked or recorded. */
	/** \brief Descriptor \a i of the ring; throws std::out_of_range when i >= N. */
	virtio::PackedDesc *desc(uint16_t i);
	/** \brief Release-store \a flags into descriptor \a i's flags. */
	void setDescFlags(uint16_t i, uint16_t flags);
	/** \brief Acquire-load of descriptor \a i's flags. */
	uint16_t descFlags(uint16_t i) const;
	/**
	 * \brief Post the next chain (addChain() or addIndirectChain()) with everything but its
	 * first descriptor's flags written, so a test can change it before the device may see it;
	 * releaseHeldHead() then makes it available. Chains posted meanwhile come after it.
	 */
	void holdNextHead() { holdNextHead_ = true; }
	void releaseHeldHead();

private:
	struct IdState {
		bool inFlight = false;
		uint16_t count = 0; /**< ring descriptors the chain took */
		uint64_t indirectGpa = 0;
		uint32_t indirectCap = 0; /**< entries the indirect table holds */
	};

	int takeId();
	/** \brief Release-store \a flags into descriptor \a idx, or keep them (holdNextHead()). */
	void publishHead(uint16_t idx, uint16_t flags);
	void advance(uint16_t &idx, bool &wrap, uint16_t by) const;
	virtio::PackedEventSuppress *driverEvent() const;
	virtio::PackedEventSuppress *deviceEvent() const;

	GuestMemoryFd &mem_;
	uint16_t num_;
	uint64_t descGpa_ = 0;
	uint64_t driverEventGpa_ = 0;
	uint64_t deviceEventGpa_ = 0;
	virtio::PackedDesc *descs_ = nullptr;

	std::vector<IdState> ids_;
	std::vector<uint16_t> freeIds_;	 /**< a stack */
	std::deque<uint16_t> postedIds_; /**< ids in flight, in the order posted */
	uint16_t numFree_ = 0;
	uint16_t availIdx_ = 0;
	bool availWrap_ = true;
	uint16_t usedIdx_ = 0;
	bool usedWrap_ = true;
	uint16_t numAdded_ = 0; /**< descriptors posted since the last needsKick() */
	bool usedBroken_ = false;
	bool inOrder_ = false;
	uint64_t badUsedIds_ = 0;
	uint64_t usedDescsRead_ = 0;
	bool holdNextHead_ = false;
	std::optional<std::pair<uint16_t, uint16_t>> heldHead_; /**< descriptor, its flags */
};

} /* namespace vub::test */
