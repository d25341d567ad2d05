/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "vub/virtio/features.h"

/* The split virtqueue layout (VIRTIO 1.x "Split Virtqueues"): plain data, no I/O. */

namespace vub::virtio {

constexpr uint16_t kDescFNext = 1;
constexpr uint16_t kDescFWrite = 2;
constexpr uint16_t kDescFIndirect = 4;

constexpr uint16_t kAvailFNoInterrupt = 1;
constexpr uint16_t kUsedFNoNotify = 1;

struct SplitDesc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
static_assert(sizeof(SplitDesc) == 16);

/** \brief The available ring header; u16 ring[num] and u16 used_event follow it. */
struct SplitAvail {
	uint16_t flags;
	uint16_t idx;
};
constexpr size_t kSplitAvailRingOffset = 4;

struct SplitUsedElem {
	uint32_t id;
	uint32_t len;
};
static_assert(sizeof(SplitUsedElem) == 8);

/** \brief The used ring header; SplitUsedElem ring[num] and u16 avail_event follow it. */
struct SplitUsed {
	uint16_t flags;
	uint16_t idx;
};
constexpr size_t kSplitUsedRingOffset = 4;

constexpr size_t kSplitDescAlign = 16;
constexpr size_t kSplitAvailAlign = 2;
constexpr size_t kSplitUsedAlign = 4;

constexpr size_t splitDescTableSize(uint32_t num)
{
	return sizeof(SplitDesc) * num;
}
/** \brief Bytes of the avail ring with its used_event field. */
constexpr size_t splitAvailSize(uint32_t num)
{
	return 4 + 2 * size_t{ num } + 2;
}
/** \brief Bytes of the used ring with its avail_event field. */
constexpr size_t splitUsedSize(uint32_t num)
{
	return 4 + 8 * size_t{ num } + 2;
}
/** \brief Offset of used_event in the avail ring. */
constexpr size_t splitUsedEventOffset(uint32_t num)
{
	return 4 + 2 * size_t{ num };
}
/** \brief Offset of avail_event in the used ring. */
constexpr size_t splitAvailEventOffset(uint32_t num)
{
	return 4 + 8 * size_t{ num };
}

/**
 * \brief The event-index test: should the other side be notified after moving its index
 * from \a oldIdx to \a newIdx, given it asked for an event at \a eventIdx.
 */
constexpr bool needEvent(uint16_t eventIdx, uint16_t newIdx, uint16_t oldIdx)
{
	return static_cast<uint16_t>(newIdx - eventIdx - 1) < static_cast<uint16_t>(newIdx - oldIdx);
}

} /* namespace vub::virtio */
