/* SPDX-License-Identifier: Apache-2.0 */
#include <cstddef>
#include <cstdint>

/*
 * The kernel's uapi headers are a second reference beside the numbers from the specification.
 * Their legacy part is C only, and they use flexible array members. linux/virtio_net.h is not
 * valid C++ (a member named `class`): its numbers are written out below.
 */
#define VIRTIO_RING_NO_LEGACY
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#pragma GCC diagnostic pop

#include <gtest/gtest.h>

#include "vub/virtio/features.h"
#include "vub/virtio/net_header.h"
#include "vub/virtio/packed_ring.h"
#include "vub/virtio/split_ring.h"

namespace vub::virtio {
namespace {

constexpr size_t alignUp(size_t value, size_t align)
{
	return (value + align - 1) & ~(align - 1);
}

/* Split layout */

TEST(SplitRing, DescriptorLayoutMatchesTheSpec)
{
	EXPECT_EQ(sizeof(SplitDesc), 16u);
	EXPECT_EQ(offsetof(SplitDesc, addr), 0u);
	EXPECT_EQ(offsetof(SplitDesc, len), 8u);
	EXPECT_EQ(offsetof(SplitDesc, flags), 12u);
	EXPECT_EQ(offsetof(SplitDesc, next), 14u);

	EXPECT_EQ(offsetof(SplitDesc, addr), offsetof(vring_desc, addr));
	EXPECT_EQ(offsetof(SplitDesc, len), offsetof(vring_desc, len));
	EXPECT_EQ(offsetof(SplitDesc, flags), offsetof(vring_desc, flags));
	EXPECT_EQ(offsetof(SplitDesc, next), offsetof(vring_desc, next));
}

TEST(SplitRing, AvailAndUsedHeadersMatchTheSpec)
{
	EXPECT_EQ(offsetof(SplitAvail, flags), 0u);
	EXPECT_EQ(offsetof(SplitAvail, idx), 2u);
	EXPECT_EQ(kSplitAvailRingOffset, offsetof(vring_avail, ring));
	EXPECT_EQ(offsetof(SplitUsed, flags), 0u);
	EXPECT_EQ(offsetof(SplitUsed, idx), 2u);
	EXPECT_EQ(kSplitUsedRingOffset, offsetof(vring_used, ring));

	EXPECT_EQ(sizeof(SplitUsedElem), sizeof(vring_used_elem));
	EXPECT_EQ(offsetof(SplitUsedElem, id), 0u);
	EXPECT_EQ(offsetof(SplitUsedElem, len), 4u);
}

TEST(SplitRing, SizesFollowTheQueueSize)
{
	/* VIRTIO 1.x 2.7 "Split Virtqueues": 16*n, 6+2*n and 6+8*n bytes. */
	for (uint32_t n : { 1u, 2u, 256u, 1024u, kMaxQueueSize }) {
		EXPECT_EQ(splitDescTableSize(n), 16u * n) << n;
		EXPECT_EQ(splitAvailSize(n), 6u + 2u * n) << n;
		EXPECT_EQ(splitUsedSize(n), 6u + 8u * n) << n;
	}
	EXPECT_EQ(splitDescTableSize(256), 4096u);
	EXPECT_EQ(splitAvailSize(256), 518u);
	EXPECT_EQ(splitUsedSize(256), 2054u);
}

TEST(SplitRing, EventFieldsAreTheLastTwoBytesOfEachRing)
{
	for (uint32_t n : { 1u, 64u, 256u, kMaxQueueSize }) {
		EXPECT_EQ(splitUsedEventOffset(n), 4u + 2u * n) << n;
		EXPECT_EQ(splitUsedEventOffset(n) + 2, splitAvailSize(n)) << n;
		EXPECT_EQ(splitAvailEventOffset(n), 4u + 8u * n) << n;
		EXPECT_EQ(splitAvailEventOffset(n) + 2, splitUsedSize(n)) << n;
	}
}

TEST(SplitRing, LegacyRingSizeAddsUpFromTheParts)
{
	/* VIRTIO 1.x 2.7.2 "Legacy Interfaces: A Note on Virtqueue Layout": descriptors and the
	 * avail ring, padded to the alignment, then the used ring. 256 entries at 4096: 10246. */
	auto legacySize = [](uint32_t n, size_t align) {
		return alignUp(splitDescTableSize(n) + splitAvailSize(n), align) + splitUsedSize(n);
	};
	EXPECT_EQ(legacySize(256, 4096), 10246u);
	EXPECT_EQ(legacySize(1024, 4096), 16384u + 4096u + 8198u);
	EXPECT_EQ(legacySize(1, 64), 64u + 14u);
}

TEST(SplitRing, AlignmentsAndFlagsMatchTheSpec)
{
	EXPECT_EQ(kSplitDescAlign, static_cast<size_t>(VRING_DESC_ALIGN_SIZE));
	EXPECT_EQ(kSplitAvailAlign, static_cast<size_t>(VRING_AVAIL_ALIGN_SIZE));
	EXPECT_EQ(kSplitUsedAlign, static_cast<size_t>(VRING_USED_ALIGN_SIZE));
	EXPECT_EQ(kDescFNext, VRING_DESC_F_NEXT);
	EXPECT_EQ(kDescFWrite, VRING_DESC_F_WRITE);
	EXPECT_EQ(kDescFIndirect, VRING_DESC_F_INDIRECT);
	EXPECT_EQ(kAvailFNoInterrupt, VRING_AVAIL_F_NO_INTERRUPT);
	EXPECT_EQ(kUsedFNoNotify, VRING_USED_F_NO_NOTIFY);
}

/* The event index test (VIRTIO 1.x 2.7.7.2 and 2.7.10, vring_need_event) */

TEST(NeedEvent, NotifiesWhenTheIndexMovesPastTheEvent)
{
	/* "if used_event is 0, [the device] would interrupt after the first buffer is used
	 * (when idx goes from 0 to 1)". */
	EXPECT_TRUE(needEvent(0, 1, 0));
	EXPECT_TRUE(needEvent(5, 6, 3));
	EXPECT_TRUE(needEvent(5, 6, 5)) << "old index equal to the event";
	EXPECT_TRUE(needEvent(5, 100, 0)) << "a large batch across the event";
}

TEST(NeedEvent, DoesNotNotifyBeforeTheIndexPassesTheEvent)
{
	EXPECT_FALSE(needEvent(5, 5, 3)) << "reaching the event index is not passing it";
	EXPECT_FALSE(needEvent(10, 8, 3));
	EXPECT_FALSE(needEvent(1, 1, 0));
}

TEST(NeedEvent, DoesNotNotifyTwiceForTheSameEvent)
{
	EXPECT_FALSE(needEvent(5, 9, 7)) << "the event was passed by an earlier batch";
	EXPECT_FALSE(needEvent(5, 7, 6));
}

TEST(NeedEvent, DoesNotNotifyWithoutProgress)
{
	for (uint16_t idx : { 0, 1, 5, 32767, 32768, 65535 }) {
		EXPECT_FALSE(needEvent(idx, idx, idx));
		EXPECT_FALSE(needEvent(static_cast<uint16_t>(idx - 1), idx, idx));
		EXPECT_FALSE(needEvent(static_cast<uint16_t>(idx + 1), idx, idx));
	}
}

TEST(NeedEvent, HandlesWrapAroundAt65535)
{
	/* The index moved 4 entries, from 65534 through 65535, 0 and 1 to 2. */
	EXPECT_TRUE(needEvent(65534, 2, 65534));
	EXPECT_TRUE(needEvent(65535, 2, 65534));
	EXPECT_TRUE(needEvent(0, 2, 65534));
	EXPECT_TRUE(needEvent(1, 2, 65534));
	EXPECT_FALSE(needEvent(2, 2, 65534)) << "the event entry itself is not yet passed";
	EXPECT_FALSE(needEvent(3, 2, 65534));
	EXPECT_FALSE(needEvent(65533, 2, 65534)) << "passed before the batch";

	EXPECT_TRUE(needEvent(65535, 0, 65535)) << "one step across the wrap";
	EXPECT_FALSE(needEvent(0, 0, 65535));
}

/* The definition in words: notify when the entries passed, old .. new-1, include the event. */
bool eventPassed(uint16_t eventIdx, uint16_t newIdx, uint16_t oldIdx)
{
	return static_cast<uint16_t>(eventIdx - oldIdx) < static_cast<uint16_t>(newIdx - oldIdx);
}

TEST(NeedEvent, AgreesWithTheDefinitionAndTheKernel)
{
	/* Around every interesting index, then a pseudo-random sample of the whole space. */
	auto check = [](uint16_t event, uint16_t newIdx, uint16_t oldIdx) {
		bool vub = needEvent(event, newIdx, oldIdx);
		EXPECT_EQ(vub, eventPassed(event, newIdx, oldIdx))
			<< event << " " << newIdx << " " << oldIdx;
		EXPECT_EQ(vub, vring_need_event(event, newIdx, oldIdx) != 0)
			<< event << " " << newIdx << " " << oldIdx;
		return vub == eventPassed(event, newIdx, oldIdx);
	};
	for (uint32_t base : { 0u, 1u, 100u, 32767u, 32768u, 65530u, 65535u }) {
		for (int d = 0; d < 10; d++) {
			for (int e = -4; e < 16; e++) {
				ASSERT_TRUE(check(static_cast<uint16_t>(base + e),
						  static_cast<uint16_t>(base + d),
						  static_cast<uint16_t>(base)));
			}
		}
	}
	uint64_t state = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 100000; i++) {
		state = state * 6364136223846793005ull + 1442695040888963407ull;
		ASSERT_TRUE(check(static_cast<uint16_t>(state >> 16),
				  static_cast<uint16_t>(state >> 32),
				  static_cast<uint16_t>(state >> 48)));
	}
}

/* Packed layout */

TEST(PackedRing, DescriptorLayoutMatchesTheSpec)
{
	EXPECT_EQ(sizeof(PackedDesc), 16u);
	EXPECT_EQ(offsetof(PackedDesc, addr), 0u);
	EXPECT_EQ(offsetof(PackedDesc, len), 8u);
	EXPECT_EQ(offsetof(PackedDesc, id), 12u);
	EXPECT_EQ(offsetof(PackedDesc, flags), 14u);
	EXPECT_EQ(sizeof(PackedDesc), sizeof(vring_packed_desc));
	EXPECT_EQ(offsetof(PackedDesc, id), offsetof(vring_packed_desc, id));
	EXPECT_EQ(offsetof(PackedDesc, flags), offsetof(vring_packed_desc, flags));
	EXPECT_EQ(packedDescRingSize(256), 4096u);
	EXPECT_EQ(packedDescRingSize(kMaxQueueSize), 16u * kMaxQueueSize);
}

TEST(PackedRing, EventSuppressionLayoutMatchesTheSpec)
{
	EXPECT_EQ(sizeof(PackedEventSuppress), sizeof(vring_packed_desc_event));
	EXPECT_EQ(offsetof(PackedEventSuppress, offWrap),
		  offsetof(vring_packed_desc_event, off_wrap));
	EXPECT_EQ(offsetof(PackedEventSuppress, flags), offsetof(vring_packed_desc_event, flags));
	EXPECT_EQ(kPackedEventFlagEnable, VRING_PACKED_EVENT_FLAG_ENABLE);
	EXPECT_EQ(kPackedEventFlagDisable, VRING_PACKED_EVENT_FLAG_DISABLE);
	EXPECT_EQ(kPackedEventFlagDesc, VRING_PACKED_EVENT_FLAG_DESC);
	EXPECT_EQ(kPackedDescAlign, 16u);
	EXPECT_EQ(kPackedEventAlign, 4u);
}

TEST(PackedRing, FlagBitsMatchTheSpec)
{
	EXPECT_EQ(kPackedDescFAvail, 1u << VRING_PACKED_DESC_F_AVAIL);
	EXPECT_EQ(kPackedDescFUsed, 1u << VRING_PACKED_DESC_F_USED);
	EXPECT_EQ(kPackedDescFNext, VRING_DESC_F_NEXT);
	EXPECT_EQ(kPackedDescFWrite, VRING_DESC_F_WRITE);
	EXPECT_EQ(kPackedDescFIndirect, VRING_DESC_F_INDIRECT);
}

TEST(PackedRing, DescriptorIsAvailWhenAvailMatchesAndUsedDiffersFromTheWrapCounter)
{
	const uint16_t avail = kPackedDescFAvail;
	const uint16_t used = kPackedDescFUsed;

	/* Wrap counter 1 (the first lap): the driver makes a descriptor available with AVAIL=1,
	 * USED=0. */
	EXPECT_TRUE(packedDescIsAvail(avail, true));
	EXPECT_FALSE(packedDescIsAvail(avail | used, true)) << "used by the device";
	EXPECT_FALSE(packedDescIsAvail(0, true)) << "never made available";
	EXPECT_FALSE(packedDescIsAvail(used, true)) << "available on the next lap, not this one";

	/* Wrap counter 0 (the second lap): AVAIL=0, USED=1. */
	EXPECT_TRUE(packedDescIsAvail(used, false));
	EXPECT_FALSE(packedDescIsAvail(0, false)) << "used by the device";
	EXPECT_FALSE(packedDescIsAvail(avail | used, false)) << "used on the previous lap";
	EXPECT_FALSE(packedDescIsAvail(avail, false)) << "available on the previous lap";
}

TEST(PackedRing, OtherFlagsDoNotChangeAvailability)
{
	const uint16_t others = kPackedDescFNext | kPackedDescFWrite | kPackedDescFIndirect;
	EXPECT_TRUE(packedDescIsAvail(kPackedDescFAvail | others, true));
	EXPECT_FALSE(packedDescIsAvail(kPackedDescFAvail | kPackedDescFUsed | others, true));
	EXPECT_TRUE(packedDescIsAvail(kPackedDescFUsed | others, false));
	EXPECT_FALSE(packedDescIsAvail(others, false));
}

TEST(PackedRing, VringBaseWrapBits)
{
	/* vhost-user SET_VRING_BASE for packed rings: the avail wrap counter in bit 15, the used
	 * one in bit 31. */
	EXPECT_EQ(kPackedBaseAvailWrap, 1u << 15);
	EXPECT_EQ(kPackedBaseUsedWrap, 1u << 31);
}

/* Feature bits and the virtio-net header */

TEST(Features, BitNumbersMatchTheSpec)
{
	EXPECT_EQ(kFNotifyOnEmpty, static_cast<unsigned>(VIRTIO_F_NOTIFY_ON_EMPTY));
	EXPECT_EQ(kFAnyLayout, static_cast<unsigned>(VIRTIO_F_ANY_LAYOUT));
	EXPECT_EQ(kFIndirectDesc, static_cast<unsigned>(VIRTIO_RING_F_INDIRECT_DESC));
	EXPECT_EQ(kFEventIdx, static_cast<unsigned>(VIRTIO_RING_F_EVENT_IDX));
	EXPECT_EQ(kFVersion1, static_cast<unsigned>(VIRTIO_F_VERSION_1));
	EXPECT_EQ(kFAccessPlatform, static_cast<unsigned>(VIRTIO_F_ACCESS_PLATFORM));
	EXPECT_EQ(kFRingPacked, static_cast<unsigned>(VIRTIO_F_RING_PACKED));
	EXPECT_EQ(kFInOrder, static_cast<unsigned>(VIRTIO_F_IN_ORDER));
	EXPECT_EQ(bit(kFVersion1), uint64_t{ 1 } << 32);
	EXPECT_EQ(bit(0), 1u);
}

TEST(Features, NetBitNumbersMatchTheSpec)
{
	/* VIRTIO 1.x 5.1.3 "Feature bits" of the network device. */
	EXPECT_EQ(kNetFCsum, 0u);
	EXPECT_EQ(kNetFGuestCsum, 1u);
	EXPECT_EQ(kNetFCtrlGuestOffloads, 2u);
	EXPECT_EQ(kNetFMtu, 3u);
	EXPECT_EQ(kNetFMac, 5u);
	EXPECT_EQ(kNetFGuestTso4, 7u);
	EXPECT_EQ(kNetFGuestTso6, 8u);
	EXPECT_EQ(kNetFGuestEcn, 9u);
	EXPECT_EQ(kNetFGuestUfo, 10u);
	EXPECT_EQ(kNetFHostTso4, 11u);
	EXPECT_EQ(kNetFHostTso6, 12u);
	EXPECT_EQ(kNetFHostEcn, 13u);
	EXPECT_EQ(kNetFHostUfo, 14u);
	EXPECT_EQ(kNetFMrgRxbuf, 15u);
	EXPECT_EQ(kNetFStatus, 16u);
	EXPECT_EQ(kNetFCtrlVq, 17u);
	EXPECT_EQ(kNetFCtrlRx, 18u);
	EXPECT_EQ(kNetFCtrlVlan, 19u);
	EXPECT_EQ(kNetFGuestAnnounce, 21u);
	EXPECT_EQ(kNetFMq, 22u);
	EXPECT_EQ(kNetFCtrlMacAddr, 23u);
}

TEST(NetHeader, LayoutMatchesTheSpec)
{
	/* VIRTIO 1.x 5.1.6 struct virtio_net_hdr. */
	EXPECT_EQ(sizeof(NetHeader), 12u);
	EXPECT_EQ(offsetof(NetHeader, flags), 0u);
	EXPECT_EQ(offsetof(NetHeader, gsoType), 1u);
	EXPECT_EQ(offsetof(NetHeader, hdrLen), 2u);
	EXPECT_EQ(offsetof(NetHeader, gsoSize), 4u);
	EXPECT_EQ(offsetof(NetHeader, csumStart), 6u);
	EXPECT_EQ(offsetof(NetHeader, csumOffset), 8u);
	EXPECT_EQ(offsetof(NetHeader, numBuffers), 10u);
	EXPECT_EQ(kNetHdrFNeedsCsum, 1);
	EXPECT_EQ(kNetHdrFDataValid, 2);
	EXPECT_EQ(kNetHdrGsoNone, 0);
	EXPECT_EQ(kNetHdrGsoTcpv4, 1);
	EXPECT_EQ(kNetHdrGsoUdp, 3);
	EXPECT_EQ(kNetHdrGsoTcpv6, 4);
	EXPECT_EQ(kNetHdrGsoUdpL4, 5);
	EXPECT_EQ(kNetHdrGsoEcn, 0x80);
}

TEST(NetHeader, SizeIsTwelveWithVersion1)
{
	EXPECT_EQ(netHeaderSize(bit(kFVersion1)), 12u);
	EXPECT_EQ(netHeaderSize(bit(kFVersion1) | bit(kNetFMrgRxbuf)), 12u);
}

TEST(NetHeader, SizeIsTwelveWithMergeableBuffersOnLegacy)
{
	EXPECT_EQ(netHeaderSize(bit(kNetFMrgRxbuf)), 12u);
}

TEST(NetHeader, SizeIsTenOnLegacyWithoutMergeableBuffers)
{
	EXPECT_EQ(netHeaderSize(0), 10u) << "legacy header without num_buffers";
	uint64_t unrelated = bit(kNetFCsum) | bit(kNetFMq) | bit(kFEventIdx) | bit(kFRingPacked) |
			     bit(kFIndirectDesc) | bit(kNetFCtrlVq);
	EXPECT_EQ(netHeaderSize(unrelated), 10u);
}

TEST(NetHeader, EvenQueuesReceiveAndOddQueuesTransmit)
{
	EXPECT_TRUE(isNetRxQueue(0));
	EXPECT_FALSE(isNetRxQueue(1));
	EXPECT_TRUE(isNetRxQueue(2));
	EXPECT_FALSE(isNetRxQueue(3));
	EXPECT_FALSE(isNetRxQueue(255));
}

} /* namespace */
} /* namespace vub::virtio */
