/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "vub/base/memory_mapping.h"
#include "vub/base/result.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/message.h"

namespace vub::vhost {

/**
 * \brief One descriptor head's state in a split queue's inflight region (vhost-user
 * "Inflight I/O tracking", DescStateSplit).
 */
struct InflightDescSplit {
	uint8_t inflight; /**< 1 from the pop of this head until its used entry is published */
	uint8_t padding[5];
	uint16_t next;	  /**< the previous head of the last batch of used entries */
	uint64_t counter; /**< the order in which heads were popped */
};
static_assert(sizeof(InflightDescSplit) == 16);

/** \brief The header of a split queue's inflight region (QueueRegionSplit); the states follow. */
struct InflightQueueSplit {
	uint64_t features;
	uint16_t version; /**< kInflightVersion; 0 for a region never used */
	uint16_t descNum; /**< the queue size the states were written for */
	uint16_t lastBatchHead;
	uint16_t usedIdx; /**< the used index once the last batch's states were cleared */

	InflightDescSplit *desc() { return reinterpret_cast<InflightDescSplit *>(this + 1); }
};
static_assert(sizeof(InflightQueueSplit) == 16);

/**
 * \brief One descriptor's state in a packed queue's inflight region (vhost-user "Inflight I/O
 * tracking", DescStatePacked). The states form a free list and, for each chain taken and not
 * returned, a list of its descriptors' copies from its head state.
 */
struct InflightDescPacked {
	uint8_t inflight; /**< head states: 1 from the pop until the use is published */
	uint8_t padding;
	uint16_t next;	  /**< the next state of the free list or of the chain */
	uint16_t last;	  /**< head states: the chain's last state */
	uint16_t num;	  /**< head states: the descriptors of the chain */
	uint64_t counter; /**< head states: the order in which chains were taken */
	uint16_t id;	  /**< the copy of the descriptor: its buffer id, flags, length, address */
	uint16_t flags;
	uint32_t len;
	uint64_t addr;
};
static_assert(sizeof(InflightDescPacked) == 32);

/** \brief The header of a packed queue's inflight region (QueueRegionPacked); the states follow. */
struct InflightQueuePacked {
	uint64_t features;
	uint16_t version; /**< kInflightVersion; 0 for a region never used */
	uint16_t descNum; /**< the queue size the states were written for */
	uint16_t freeHead;
	uint16_t oldFreeHead; /**< freeHead once the last pop or used batch was done */
	uint16_t usedIdx;
	uint16_t oldUsedIdx;
	uint8_t usedWrapCounter;
	uint8_t oldUsedWrapCounter;
	uint8_t padding[10]; /**< 7 in the specification, then the alignment of the states */

	InflightDescPacked *desc() { return reinterpret_cast<InflightDescPacked *>(this + 1); }
};
static_assert(sizeof(InflightQueuePacked) == 32);

constexpr uint16_t kInflightVersion = 1;

/** \brief The queue layout an inflight area's regions are written for. */
enum class InflightLayout : uint8_t { Split, Packed };

/** \brief The bytes of one split queue's region, rounded up to 64 as QEMU and DPDK do. */
constexpr size_t inflightQueueBytesSplit(uint16_t queueSize)
{
	return (sizeof(InflightQueueSplit) + sizeof(InflightDescSplit) * queueSize + 63) &
	       ~size_t{ 63 };
}

/** \brief The bytes of one packed queue's region, rounded up to 64 as DPDK does. */
constexpr size_t inflightQueueBytesPacked(uint16_t queueSize)
{
	return (sizeof(InflightQueuePacked) + sizeof(InflightDescPacked) * queueSize + 63) &
	       ~size_t{ 63 };
}

/** \brief The bytes of one region of \a layout. */
constexpr size_t inflightQueueBytes(InflightLayout layout, uint16_t queueSize)
{
	return layout == InflightLayout::Packed ? inflightQueueBytesPacked(queueSize)
						: inflightQueueBytesSplit(queueSize);
}

/**
 * \brief The shared memory in which a back-end records the chains it has taken and not yet
 * returned, one region per queue (all split or all packed), so that a back-end started again after
 * a crash resubmits them (GET_INFLIGHT_FD, SET_INFLIGHT_FD). The front-end keeps the fd across
 * back-end restarts. Move-only; not thread-safe (the control thread owns it, queues write their
 * region).
 */
class InflightArea
{
public:
	/**
	 * \brief GET_INFLIGHT_FD: a new zeroed area for \a numQueues queues of \a queueSize in
	 * \a layout, in a memfd sealed against growing and shrinking.
	 * \return EINVAL for 0 queues or size 0, or the memfd, seal or mmap error.
	 */
	static Result<InflightArea> create(uint16_t numQueues, uint16_t queueSize,
					   InflightLayout layout);
	/**
	 * \brief SET_INFLIGHT_FD: map the area \a msg describes in \a fd, which the front-end kept,
	 * for queues in \a layout.
	 * \return EINVAL when the size is not that of \a layout for \a msg's queues, the offset is
	 * not page-aligned, or the fd is smaller than the area or can shrink (no F_SEAL_SHRINK:
	 * a shrunk file would fault the workers); or the mmap error.
	 */
	static Result<InflightArea> adopt(UniqueFd fd, const InflightMsg &msg,
					  InflightLayout layout);

	bool isValid() const { return map_.isValid(); }
	int fd() const { return fd_.get(); }
	uint16_t numQueues() const { return numQueues_; }
	uint16_t queueSize() const { return queueSize_; }
	InflightLayout layout() const { return layout_; }
	/** \brief What GET_INFLIGHT_FD answers (the fd goes beside it). */
	InflightMsg describe() const;
	/** \brief Queue \a index's split region; null beyond numQueues() or for packed queues. */
	InflightQueueSplit *splitQueue(uint32_t index) const;
	/** \brief Queue \a index's packed region; null beyond numQueues() or for split queues. */
	InflightQueuePacked *packedQueue(uint32_t index) const;

private:
	UniqueFd fd_;
	MemoryMapping map_;
	uint64_t offset_ = 0;
	uint16_t numQueues_ = 0;
	uint16_t queueSize_ = 0;
	InflightLayout layout_ = InflightLayout::Split;
};

} /* namespace vub::vhost */
