/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <bit>
#include <cstdint>

/*
 * vub reads and writes virtio structures in host byte order: VIRTIO 1.x rings are little-endian,
 * and vub runs on little-endian hosts only (x86-64, arm64, riscv64).
 */
static_assert(std::endian::native == std::endian::little, "vub supports little-endian hosts only");

namespace vub::virtio {

/** \brief Feature bit \a bit as a mask. */
constexpr uint64_t bit(unsigned bit)
{
	return uint64_t{ 1 } << bit;
}

/* Transport and ring feature bits (VIRTIO 1.x "Reserved Feature Bits"). */
constexpr unsigned kFNotifyOnEmpty = 24;
constexpr unsigned kFAnyLayout = 27;
constexpr unsigned kFIndirectDesc = 28;
constexpr unsigned kFEventIdx = 29;
constexpr unsigned kFVersion1 = 32;
constexpr unsigned kFAccessPlatform = 33;
constexpr unsigned kFRingPacked = 34;
constexpr unsigned kFInOrder = 35;
constexpr unsigned kFOrderPlatform = 36;
constexpr unsigned kFNotificationData = 38;
constexpr unsigned kFRingReset = 40;

/* vhost-specific bits in the virtio feature word. */
constexpr unsigned kVhostFLogAll = 26;
constexpr unsigned kVhostUserFProtocolFeatures = 30;

/* Device status bits. */
constexpr uint8_t kStatusAcknowledge = 1;
constexpr uint8_t kStatusDriver = 2;
constexpr uint8_t kStatusDriverOk = 4;
constexpr uint8_t kStatusFeaturesOk = 8;
constexpr uint8_t kStatusNeedsReset = 64;
constexpr uint8_t kStatusFailed = 128;

/** \brief Largest queue size of the split and packed layouts. */
constexpr uint32_t kMaxQueueSize = 32768;

} /* namespace vub::virtio */
