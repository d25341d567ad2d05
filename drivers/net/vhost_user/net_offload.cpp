/* SPDX-License-Identifier: Apache-2.0 */
#include "net_offload.h"

#include <algorithm>
#include <cstring>

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

namespace vub::net {

namespace {

using virtio::bit;

constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeIpv6 = 0x86dd;
constexpr uint16_t kEtherTypeVlan = 0x8100;
constexpr uint16_t kEtherTypeQinq = 0x88a8;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint16_t kTcpCsumOffset = 16;
constexpr uint16_t kUdpCsumOffset = 6;
constexpr uint8_t kTcpFin = 0x01;
constexpr uint8_t kTcpPsh = 0x08;
constexpr uint8_t kTcpCwr = 0x80;
constexpr uint64_t kTxOffloadFlags =
	RTE_MBUF_F_TX_L4_MASK | RTE_MBUF_F_TX_TCP_SEG | RTE_MBUF_F_TX_IP_CKSUM;

uint16_t loadBe16(const uint8_t *p)
{
	return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

void storeBe16(uint8_t *p, uint16_t v)
{
	p[0] = static_cast<uint8_t>(v >> 8);
	p[1] = static_cast<uint8_t>(v);
}

uint32_t loadBe32(const uint8_t *p)
{
	return uint32_t{ p[0] } << 24 | uint32_t{ p[1] } << 16 | uint32_t{ p[2] } << 8 | p[3];
}

void storeBe32(uint8_t *p, uint32_t v)
{
	storeBe16(p, static_cast<uint16_t>(v >> 16));
	storeBe16(p + 2, static_cast<uint16_t>(v));
}

uint16_t fold(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return static_cast<uint16_t>(sum);
}

/** The one's-complement checksum of [\a off, end of packet) of \a m, stored as the guest reads it.
 */
bool finishedChecksum(const rte_mbuf *m, uint32_t off, bool udp, uint16_t *out)
{
	uint16_t raw = 0;
	if (rte_raw_cksum_mbuf(m, off, m->pkt_len - off, &raw) != 0)
		return false;
	uint16_t c = static_cast<uint16_t>(~raw);
	/* UDP sends 0 as "no checksum": a computed 0 goes out as its other form. */
	*out = (udp && c == 0) ? 0xffff : c;
	return true;
}

/** Length of the Ethernet header with up to two VLAN tags, and the EtherType after it. */
uint32_t parseL2(const uint8_t *p, uint32_t avail, uint16_t *etherType)
{
	if (avail < 14)
		return 0;
	uint32_t len = 14;
	uint16_t type = loadBe16(p + 12);
	for (int tags = 0; tags < 2 && (type == kEtherTypeVlan || type == kEtherTypeQinq); tags++) {
		if (avail < len + 4)
			return 0;
		type = loadBe16(p + len + 2);
		len += 4;
	}
	*etherType = type;
	return len;
}

} /* namespace */

uint64_t offloadFeatures()
{
	return bit(virtio::kNetFCsum) | bit(virtio::kNetFGuestCsum) | bit(virtio::kNetFHostTso4) |
	       bit(virtio::kNetFHostTso6) | bit(virtio::kNetFGuestTso4) |
	       bit(virtio::kNetFGuestTso6);
}

GuestRxOffloads GuestRxOffloads::fromFeatures(uint64_t features)
{
	GuestRxOffloads o;
	o.csum = (features & bit(virtio::kNetFGuestCsum)) != 0;
	/* GUEST_TSO without GUEST_CSUM is not a valid combination: take it as none. */
	o.tso4 = o.csum && (features & bit(virtio::kNetFGuestTso4)) != 0;
	o.tso6 = o.csum && (features & bit(virtio::kNetFGuestTso6)) != 0;
	return o;
}

bool guestHeaderToMbuf(const virtio::NetHeader &hdr, rte_mbuf *m)
{
	bool needsCsum = (hdr.flags & virtio::kNetHdrFNeedsCsum) != 0;
	uint8_t gso = hdr.gsoType & static_cast<uint8_t>(~virtio::kNetHdrGsoEcn);
	if (!needsCsum && gso == virtio::kNetHdrGsoNone)
		return true;
	/* The headers sit in the first segment: it holds 2 KiB. */
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	uint32_t avail = m->data_len;
	uint16_t etherType = 0;
	uint32_t l2 = parseL2(p, avail, &etherType);
	bool v4 = etherType == kEtherTypeIpv4;
	bool v6 = etherType == kEtherTypeIpv6;

	if (needsCsum) {
		uint32_t start = hdr.csumStart;
		uint32_t field = start + hdr.csumOffset;
		if (field + 2 > avail || start >= m->pkt_len)
			return false;
		uint8_t proto = 0;
		if (l2 && v4 && avail >= l2 + 20)
			proto = p[l2 + 9];
		else if (l2 && v6 && avail >= l2 + 40)
			proto = p[l2 + 6];
		bool tcp = proto == kProtoTcp && hdr.csumOffset == kTcpCsumOffset;
		bool udp = proto == kProtoUdp && hdr.csumOffset == kUdpCsumOffset;
		uint32_t l3 = start > l2 ? start - l2 : 0;
		if ((tcp || udp) && l3 >= 20 && l3 < 512) {
			m->l2_len = l2;
			m->l3_len = l3;
			m->ol_flags |= (v4 ? RTE_MBUF_F_TX_IPV4 : RTE_MBUF_F_TX_IPV6) |
				       (tcp ? RTE_MBUF_F_TX_TCP_CKSUM : RTE_MBUF_F_TX_UDP_CKSUM);
		} else {
			/* No mbuf flag says "checksum from here to there": do it now. */
			uint16_t c = 0;
			if (!finishedChecksum(m, start, false, &c))
				return false;
			std::memcpy(p + field, &c, sizeof(c));
		}
	}

	if (gso == virtio::kNetHdrGsoNone)
		return true;
	bool tcpCsum = (m->ol_flags & RTE_MBUF_F_TX_L4_MASK) == RTE_MBUF_F_TX_TCP_CKSUM;
	if ((gso != virtio::kNetHdrGsoTcpv4 && gso != virtio::kNetHdrGsoTcpv6) || !tcpCsum ||
	    (gso == virtio::kNetHdrGsoTcpv4) != v4 || hdr.gsoSize == 0)
		return false;
	uint32_t l4Start = m->l2_len + m->l3_len;
	if (avail < l4Start + 20)
		return false;
	uint32_t l4 = uint32_t{ p[l4Start + 12] } >> 4 << 2; /* data offset, in words */
	if (l4 < 20 || avail < l4Start + l4)
		return false;
	m->l4_len = l4;
	m->tso_segsz = hdr.gsoSize;
	m->ol_flags |= RTE_MBUF_F_TX_TCP_SEG;
	return true;
}

bool GuestRxFrame::plan(const rte_mbuf *m, GuestRxOffloads offloads)
{
	m_ = m;
	header_ = {};
	segments_ = 1;
	prefixBytes_ = 0;
	segmenting_ = false;
	ipChecksum_ = false;
	l4Checksum_ = false;
	uint64_t ol = m->ol_flags;
	if (!(ol & kTxOffloadFlags)) {
		if (offloads.csum &&
		    (ol & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
			header_.flags = virtio::kNetHdrFDataValid;
		return true;
	}
	ipv4_ = (ol & RTE_MBUF_F_TX_IPV4) != 0;
	if (!ipv4_ && !(ol & RTE_MBUF_F_TX_IPV6))
		return false;
	l2Bytes_ = m->l2_len;
	l3Bytes_ = m->l3_len;
	uint32_t l4Start = l2Bytes_ + l3Bytes_;
	if (l3Bytes_ < (ipv4_ ? 20u : 40u))
		return false;
	ipChecksum_ = ipv4_ && (ol & RTE_MBUF_F_TX_IP_CKSUM);

	if (ol & RTE_MBUF_F_TX_TCP_SEG) {
		l4Bytes_ = m->l4_len;
		mss_ = m->tso_segsz;
		uint32_t headers = l4Start + l4Bytes_;
		if (mss_ == 0 || l4Bytes_ < 20 || headers > kMaxRewrittenHeaderBytes ||
		    headers > m->data_len || headers > m->pkt_len)
			return false;
		if (ipv4_ ? offloads.tso4 : offloads.tso6) {
			header_.flags = virtio::kNetHdrFNeedsCsum;
			header_.gsoType = ipv4_ ? virtio::kNetHdrGsoTcpv4 : virtio::kNetHdrGsoTcpv6;
			header_.hdrLen = static_cast<uint16_t>(headers);
			header_.gsoSize = static_cast<uint16_t>(mss_);
			header_.csumStart = static_cast<uint16_t>(l4Start);
			header_.csumOffset = kTcpCsumOffset;
			prefixBytes_ = ipChecksum_ ? l4Start : 0;
			return true;
		}
		uint32_t payload = m->pkt_len - headers;
		segments_ = std::max(1u, (payload + mss_ - 1) / mss_);
		prefixBytes_ = headers;
		segmenting_ = true;
		return true;
	}

	uint64_t l4 = ol & RTE_MBUF_F_TX_L4_MASK;
	if (l4 == RTE_MBUF_F_TX_TCP_CKSUM)
		csumOffset_ = kTcpCsumOffset;
	else if (l4 == RTE_MBUF_F_TX_UDP_CKSUM)
		csumOffset_ = kUdpCsumOffset;
	else if (l4 != 0)
		return false; /* SCTP: virtio has no way to carry it */
	if (l4 != 0 && offloads.csum) {
		header_.flags = virtio::kNetHdrFNeedsCsum;
		header_.csumStart = static_cast<uint16_t>(l4Start);
		header_.csumOffset = csumOffset_;
	} else if (l4 != 0) {
		l4Checksum_ = true;
	}
	if (ipChecksum_ || l4Checksum_) {
		prefixBytes_ = l4Checksum_ ? l4Start + csumOffset_ + 2 : l4Start;
		if (prefixBytes_ > m->data_len || prefixBytes_ > kMaxRewrittenHeaderBytes)
			return false;
	}
	return true;
}

void GuestRxFrame::build(unsigned i, uint32_t *payloadOffset, uint32_t *payloadBytes)
{
	if (segmenting_) {
		buildSegment(i, payloadOffset, payloadBytes);
		return;
	}
	buildChecksum();
	*payloadOffset = prefixBytes_;
	*payloadBytes = m_->pkt_len - prefixBytes_;
}

void GuestRxFrame::buildChecksum()
{
	if (prefixBytes_ == 0)
		return;
	std::memcpy(prefix_, rte_pktmbuf_mtod(m_, const uint8_t *), prefixBytes_);
	if (ipChecksum_) {
		auto *ip = reinterpret_cast<rte_ipv4_hdr *>(prefix_ + l2Bytes_);
		ip->hdr_checksum = 0;
		ip->hdr_checksum = rte_ipv4_cksum(ip);
	}
	if (l4Checksum_) {
		uint16_t c = 0;
		/* The field holds the pseudo-header sum (DPDK's and virtio's convention alike). */
		finishedChecksum(m_, l2Bytes_ + l3Bytes_, csumOffset_ == kUdpCsumOffset, &c);
		std::memcpy(prefix_ + l2Bytes_ + l3Bytes_ + csumOffset_, &c, sizeof(c));
	}
}

void GuestRxFrame::buildSegment(unsigned i, uint32_t *payloadOffset, uint32_t *payloadBytes)
{
	uint32_t l4Start = l2Bytes_ + l3Bytes_;
	uint32_t headers = l4Start + l4Bytes_;
	uint32_t offset = headers + i * mss_;
	uint32_t len = std::min(mss_, m_->pkt_len - offset);
	std::memcpy(prefix_, rte_pktmbuf_mtod(m_, const uint8_t *), headers);
	*payloadOffset = offset;
	*payloadBytes = len;

	uint8_t *ip = prefix_ + l2Bytes_;
	uint8_t *tcp = prefix_ + l4Start;
	uint32_t tcpBytes = l4Bytes_ + len;
	uint32_t sum = 0;
	if (ipv4_) {
		storeBe16(ip + 2, static_cast<uint16_t>(l3Bytes_ + tcpBytes));
		storeBe16(ip + 4, static_cast<uint16_t>(loadBe16(ip + 4) + i));
		auto *hdr = reinterpret_cast<rte_ipv4_hdr *>(ip);
		hdr->hdr_checksum = 0;
		hdr->hdr_checksum = rte_ipv4_cksum(hdr);
		sum += rte_raw_cksum(ip + 12, 8); /* source and destination */
	} else {
		/* Payload length counts extension headers too (l3 above 40). */
		storeBe16(ip + 4, static_cast<uint16_t>(l3Bytes_ - 40 + tcpBytes));
		sum += rte_raw_cksum(ip + 8, 32);
	}
	storeBe32(tcp + 4, loadBe32(tcp + 4) + i * mss_);
	uint8_t flags = tcp[13];
	if (i + 1 < segments_)
		flags &= static_cast<uint8_t>(~(kTcpFin | kTcpPsh));
	if (i > 0)
		flags &= static_cast<uint8_t>(~kTcpCwr);
	tcp[13] = flags;
	tcp[16] = tcp[17] = 0;
	/* Pseudo-header: addresses, protocol and TCP length, whatever the field held before. */
	sum += rte_cpu_to_be_16(static_cast<uint16_t>(tcpBytes));
	sum += rte_cpu_to_be_16(kProtoTcp);
	sum += rte_raw_cksum(tcp, l4Bytes_);
	uint16_t payload = 0;
	if (len > 0)
		rte_raw_cksum_mbuf(m_, offset, len, &payload);
	sum += payload;
	uint16_t c = static_cast<uint16_t>(~fold(sum));
	std::memcpy(tcp + 16, &c, sizeof(c));
}

} /* namespace vub::net */
