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

constexpr uint16_t kInflightVersion = 1;

/** \brief The bytes of one split queue's region, rounded up to 64 as QEMU and DPDK do. */
constexpr size_t inflightQueueBytesSplit(uint16_t queueSize)
{
	return (sizeof(InflightQueueSplit) + sizeof(InflightDescSplit) * queueSize + 63) &
	       ~size_t{ 63 };
}

/**
 * \brief The shared memory in which a back-end records the chains it has taken and not yet
 * returned, one region per queue, so that a back-end started again after a crash resubmits
 * them (GET_INFLIGHT_FD, SET_INFLIGHT_FD). The front-end keeps the fd across back-end
 * restarts. Move-only; not thread-safe (the control thread owns it, queues write their
 * region).
 */
class InflightArea
{
public:
	/**
	 * \brief GET_INFLIGHT_FD: a new zeroed area for \a numQueues split queues of \a queueSize,
	 * in a memfd sealed against growing and shrinking.
	 * \return EINVAL for 0 queues or size 0, or the memfd, seal or mmap error.
	 */
	static Result<InflightArea> create(uint16_t numQueues, uint16_t queueSize);
	/**
	 * \brief SET_INFLIGHT_FD: map the area \a msg describes in \a fd, which the front-end kept.
	 * \return EINVAL when the sizes do not match a layout of \a msg's queues, the offset is
	 * not page-aligned, or the fd is smaller than the area or can shrink (no F_SEAL_SHRINK:
	 * a shrunk file would fault the workers); or the mmap error.
	 */
	static Result<InflightArea> adopt(UniqueFd fd, const InflightMsg &msg);

	bool isValid() const { return map_.isValid(); }
	int fd() const { return fd_.get(); }
	uint16_t numQueues() const { return numQueues_; }
	uint16_t queueSize() const { return queueSize_; }
	/** \brief What GET_INFLIGHT_FD answers (the fd goes beside it). */
	InflightMsg describe() const;
	/** \brief Queue \a index's split region; null beyond numQueues(). */
	InflightQueueSplit *splitQueue(uint32_t index) const;

private:
	UniqueFd fd_;
	MemoryMapping map_;
	uint64_t offset_ = 0;
	uint16_t numQueues_ = 0;
	uint16_t queueSize_ = 0;
};

} /* namespace vub::vhost */
