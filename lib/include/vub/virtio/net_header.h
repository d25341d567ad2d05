/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "vub/virtio/features.h"

/* The virtio-net device: feature bits and the per-packet header (VIRTIO 1.x "Network Device"). */

namespace vub::virtio {

constexpr unsigned kNetFCsum = 0;
constexpr unsigned kNetFGuestCsum = 1;
constexpr unsigned kNetFCtrlGuestOffloads = 2;
constexpr unsigned kNetFMtu = 3;
constexpr unsigned kNetFMac = 5;
constexpr unsigned kNetFGuestTso4 = 7;
constexpr unsigned kNetFGuestTso6 = 8;
constexpr unsigned kNetFGuestEcn = 9;
constexpr unsigned kNetFGuestUfo = 10;
constexpr unsigned kNetFHostTso4 = 11;
constexpr unsigned kNetFHostTso6 = 12;
constexpr unsigned kNetFHostEcn = 13;
constexpr unsigned kNetFHostUfo = 14;
constexpr unsigned kNetFMrgRxbuf = 15;
constexpr unsigned kNetFStatus = 16;
constexpr unsigned kNetFCtrlVq = 17;
constexpr unsigned kNetFCtrlRx = 18;
constexpr unsigned kNetFCtrlVlan = 19;
constexpr unsigned kNetFGuestAnnounce = 21;
constexpr unsigned kNetFMq = 22;
constexpr unsigned kNetFCtrlMacAddr = 23;

constexpr uint8_t kNetHdrFNeedsCsum = 1;
constexpr uint8_t kNetHdrFDataValid = 2;

constexpr uint8_t kNetHdrGsoNone = 0;
constexpr uint8_t kNetHdrGsoTcpv4 = 1;
constexpr uint8_t kNetHdrGsoUdp = 3;
constexpr uint8_t kNetHdrGsoTcpv6 = 4;
constexpr uint8_t kNetHdrGsoUdpL4 = 5;
constexpr uint8_t kNetHdrGsoEcn = 0x80;

struct NetHeader {
	uint8_t flags;
	uint8_t gsoType;
	uint16_t hdrLen;
	uint16_t gsoSize;
	uint16_t csumStart;
	uint16_t csumOffset;
	uint16_t numBuffers; /**< present with VERSION_1 or MRG_RXBUF */
};
static_assert(sizeof(NetHeader) == 12);

/** \brief Header length for the negotiated \a features: 12 with VERSION_1 or MRG_RXBUF, else 10. */
constexpr size_t netHeaderSize(uint64_t features)
{
	return (features & (bit(kFVersion1) | bit(kNetFMrgRxbuf))) ? 12 : 10;
}

/* Virtqueue numbering: rx_i = 2i, tx_i = 2i + 1. */
constexpr bool isNetRxQueue(unsigned index)
{
	return (index & 1) == 0;
}

} /* namespace vub::virtio */
