/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>

#include "vub/virtio/net_header.h"

struct rte_mbuf;

/*
 * Checksum and segmentation offloads between the virtio-net header and rte_mbuf offload flags.
 *
 * A guest's TX header becomes DPDK's TX requests (RTE_MBUF_F_TX_*_CKSUM, RTE_MBUF_F_TX_TCP_SEG,
 * l2/l3/l4 lengths), as a NIC driver would receive them from an application. On the way to a
 * guest, those requests become the guest's RX header when it negotiated GUEST_CSUM or
 * GUEST_TSO4/6, or are carried out in software (checksums, TCP segmentation) when it did not.
 */
namespace vub::net {

/** \brief The virtio-net offload features the port offers. */
uint64_t offloadFeatures();

/** \brief Which guest RX offloads the front-end negotiated (a bit set, from the features). */
struct GuestRxOffloads {
	bool csum = false;
	bool tso4 = false;
	bool tso6 = false;

	static GuestRxOffloads fromFeatures(uint64_t features);
};

/**
 * \brief Turn a guest TX header into \a m's offload requests.
 *
 * NEEDS_CSUM over TCP or UDP becomes RTE_MBUF_F_TX_{TCP,UDP}_CKSUM; over anything else the
 * checksum is computed here, in \a m. GSO TCPV4/TCPV6 becomes RTE_MBUF_F_TX_TCP_SEG with
 * tso_segsz. \return false when the header is not one vub honours (a GSO type it did not
 * offer, a GSO without NEEDS_CSUM, a checksum position outside the packet): drop the packet.
 */
bool guestHeaderToMbuf(const virtio::NetHeader &hdr, rte_mbuf *m);

/** \brief Largest frame (Ethernet header included) of a TCP segmentation request. */
constexpr uint32_t kMaxGsoFrameBytes = 65535 + 14 + 8;
/** \brief Room for the headers a software checksum or segmentation rewrites. */
constexpr uint32_t kMaxRewrittenHeaderBytes = 256;

/**
 * \brief How one mbuf goes to a guest: the header it gets and what vub does in software.
 *
 * Filled by planGuestRx(). Without offload requests on the mbuf, or with offloads the guest
 * negotiated, the mbuf's bytes are copied as they are. Otherwise the first prefixBytes()
 * bytes come from rewritten headers: with a checksum filled in (segmentCount() == 1), or, for
 * a TCP segmentation the guest cannot take, rewritten for each of segmentCount() segments.
 */
class GuestRxFrame
{
public:
	/** \return false when the mbuf's offload requests are inconsistent: drop it. */
	bool plan(const rte_mbuf *m, GuestRxOffloads offloads);

	/** \brief The header fields (numBuffers aside) every frame of this mbuf gets. */
	const virtio::NetHeader &header() const { return header_; }
	unsigned segmentCount() const { return segments_; }
	/** \brief Bytes of rewritten headers before the mbuf's bytes; 0: copy the mbuf as is. */
	uint32_t prefixBytes() const { return prefixBytes_; }
	/**
	 * \brief Rewrite the headers of segment \a i (0 when not segmenting) into prefix(),
	 * and say which bytes of the mbuf follow them.
	 */
	void build(unsigned i, uint32_t *payloadOffset, uint32_t *payloadBytes);
	const uint8_t *prefix() const { return prefix_; }

private:
	void buildChecksum();
	void buildSegment(unsigned i, uint32_t *payloadOffset, uint32_t *payloadBytes);

	const rte_mbuf *m_ = nullptr;
	virtio::NetHeader header_{};
	unsigned segments_ = 1;
	uint32_t prefixBytes_ = 0;
	/* What the rewrite needs. */
	uint32_t l2Bytes_ = 0;
	uint32_t l3Bytes_ = 0;
	uint32_t l4Bytes_ = 0;
	uint32_t mss_ = 0;
	uint16_t csumOffset_ = 0;
	bool segmenting_ = false;
	bool ipv4_ = false;
	bool ipChecksum_ = false;
	bool l4Checksum_ = false;
	uint8_t prefix_[kMaxRewrittenHeaderBytes];
};

} /* namespace vub::net */
