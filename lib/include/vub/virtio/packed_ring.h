/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "vub/virtio/features.h"

/* The packed virtqueue layout (VIRTIO 1.x "Packed Virtqueues"): plain data, no I/O. */

namespace vub::virtio {

constexpr uint16_t kPackedDescFNext = 1;
constexpr uint16_t kPackedDescFWrite = 2;
constexpr uint16_t kPackedDescFIndirect = 4;
constexpr uint16_t kPackedDescFAvail = 1 << 7;
constexpr uint16_t kPackedDescFUsed = 1 << 15;

struct PackedDesc {
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);

constexpr uint16_t kPackedEventFlagEnable = 0;
constexpr uint16_t kPackedEventFlagDisable = 1;
constexpr uint16_t kPackedEventFlagDesc = 2;

/** \brief Driver and device event suppression areas. */
struct PackedEventSuppress {
	uint16_t offWrap; /**< bits 0-14 descriptor offset, bit 15 wrap counter */
	uint16_t flags;
};
static_assert(sizeof(PackedEventSuppress) == 4);

constexpr size_t kPackedDescAlign = 16;
constexpr size_t kPackedEventAlign = 4;

constexpr size_t packedDescRingSize(uint32_t num)
{
	return sizeof(PackedDesc) * num;
}

/** \brief Is a descriptor with \a flags available to the device when its wrap counter is \a wrap. */
constexpr bool packedDescIsAvail(uint16_t flags, bool wrap)
{
	/* AVAIL equal to the wrap counter and USED not. */
	return (flags & (kPackedDescFAvail | kPackedDescFUsed)) ==
	       (wrap ? kPackedDescFAvail : kPackedDescFUsed);
}

/* vhost-user's SET/GET_VRING_BASE encoding of a packed ring's state. */
constexpr uint32_t kPackedBaseAvailWrap = 1u << 15;
constexpr uint32_t kPackedBaseUsedWrap = 1u << 31;

} /* namespace vub::virtio */
