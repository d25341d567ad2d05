/* SPDX-License-Identifier: Apache-2.0 */
#include "vhost_net_port.h"

#include <algorithm>
#include <cstring>

#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_memcpy.h>

#include "vub/vhost/guest_memory.h"
#include "vub/vhost/message.h"
#include "vub/virtio/net_header.h"

namespace vub::net {

using vhost::DescBuffer;
using vhost::DescriptorChain;
using vhost::PackedQueue;
using vhost::SplitQueue;
using vhost::VringState;

namespace {

/**
 * Copy \a len bytes of a chain's device-readable pieces, after skipping the first \a skip
 * (the virtio-net header, which may itself span pieces), into \a head, chaining segments from
 * \a pool as needed. \return false when a segment could not be allocated.
 */
bool copyChainToMbuf(const DescriptorChain &chain, uint32_t skip, uint32_t len, rte_mbuf *head,
		     rte_mempool *pool)
{
	rte_mbuf *seg = head;
	uint8_t *dst = rte_pktmbuf_mtod(seg, uint8_t *);
	uint32_t room = rte_pktmbuf_tailroom(seg);
	uint32_t used = 0;
	for (const DescBuffer &piece : chain.pieces()) {
		if (piece.writable)
			break;
		if (skip >= piece.len) {
			skip -= piece.len;
			continue;
		}
		uint32_t off = skip;
		skip = 0;
		while (off < piece.len) {
			if (used == room) {
				seg->data_len = static_cast<uint16_t>(used);
				rte_mbuf *next = rte_pktmbuf_alloc(pool);
				if (!next)
					return false;
				seg->next = next;
				head->nb_segs++;
				seg = next;
				dst = rte_pktmbuf_mtod(seg, uint8_t *);
				room = rte_pktmbuf_tailroom(seg);
				used = 0;
			}
			uint32_t k = std::min(piece.len - off, room - used);
			rte_memcpy(dst + used, piece.hva + off, k);
			used += k;
			off += k;
		}
	}
	seg->data_len = static_cast<uint16_t>(used);
	head->pkt_len = len;
	return true;
}

/** Writes bytes across consecutive device-writable pieces. */
struct PieceWriter {
	DescBuffer *piece;
	DescBuffer *end;
	uint32_t off = 0;

	void write(const uint8_t *src, uint32_t len)
	{
		while (len > 0 && piece != end) {
			uint32_t k = std::min(len, piece->len - off);
			rte_memcpy(piece->hva + off, src, k);
			src += k;
			len -= k;
			off += k;
			if (off == piece->len) {
				piece++;
				off = 0;
			}
		}
	}
};

} /* namespace */

VhostNetPort::VhostNetPort(unsigned queuePairs)
{
	queuePairs = std::clamp(queuePairs, 1u, kMaxQueuePairs);
	for (unsigned i = 0; i < 2 * queuePairs; i++)
		queues_.push_back(std::make_unique<Queue>());
}

VhostNetPort::~VhostNetPort() = default;

uint64_t VhostNetPort::features() const
{
	return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kNetFMrgRxbuf) |
	       virtio::bit(virtio::kFEventIdx) | virtio::bit(virtio::kFIndirectDesc) |
	       virtio::bit(virtio::kFRingPacked) | virtio::bit(virtio::kFInOrder) |
	       virtio::bit(virtio::kNetFMq) | virtio::bit(virtio::kVhostUserFProtocolFeatures);
}

uint64_t VhostNetPort::protocolFeatures() const
{
	using namespace vhost::protocol;
	return mask(kMq) | mask(kReplyAck) | mask(kMtu) | mask(kStatus) | mask(kResetDevice) |
	       mask(kConfigureMemSlots);
}

void VhostNetPort::ackedFeatures(uint64_t features)
{
	features_.store(features, std::memory_order_relaxed);
	headerBytes_.store(static_cast<uint32_t>(virtio::netHeaderSize(features)), std::memory_order_relaxed);
	mergeable_.store((features & virtio::bit(virtio::kNetFMrgRxbuf)) != 0, std::memory_order_relaxed);
}

Result<void> VhostNetPort::setMtu(uint16_t mtu)
{
	if (mtu > kMaxPacketBytes - 18)
		return Error{ EINVAL, "MTU above what vub carries" };
	mtu_.store(mtu, std::memory_order_relaxed);
	return {};
}

Result<void> VhostNetPort::attach(const std::vector<vhost::VringT *> &vrings)
{
	if (vrings.size() != queues_.size())
		return Error{ EINVAL, "vring count differs from the port's queues" };
	for (size_t i = 0; i < vrings.size(); i++) {
		vhost::VringPolled *polled = vrings[i]->asPolled();
		if (!polled)
			return Error{ EINVAL, "a vhost-user net port needs VringPolled vrings" };
		queues_[i]->ring = vhost::PolledRing{ polled, 0 };
		/* Odd virtqueues are the guest's TX: the device only reads them. */
		auto state = polled->getMut();
		state->getQueue().setDeviceReadsOnly(i % 2 == 1);
		state->getPackedQueue().setDeviceReadsOnly(i % 2 == 1);
	}
	return {};
}

namespace {

uint16_t availableUpTo(SplitQueue &ring, uint16_t n)
{
	return std::min(n, ring.available());
}

uint16_t availableUpTo(PackedQueue &ring, uint16_t n)
{
	return ring.available(n);
}

/** Give a chain back: a split ring's used entry, or a packed ring's used descriptor. */
void putUsed(SplitQueue &ring, uint16_t head, uint16_t, uint32_t len)
{
	ring.addUsed(head, len);
}

void putUsed(PackedQueue &ring, uint16_t head, uint16_t descCount, uint32_t len)
{
	ring.addUsed(head, len, descCount);
}

} /* namespace */

template <typename Ring>
void VhostNetPort::notify(VringState &state, Ring &ring, NetQueueStats &stats)
{
	ring.publishUsed();
	if (state.needsNotification()) {
		state.signalUsedQueue();
		stats.notifications++;
	}
}

uint16_t VhostNetPort::dequeueBurst(unsigned pair, rte_mempool *pool, rte_mbuf **pkts, uint16_t n)
{
	Queue &q = *queues_[2 * pair + 1];
	VringState *state = q.ring.acquire();
	if (!state)
		return 0;
	if (state->isPacked())
		return dequeue(q, *state, state->getPackedQueue(), pool, pkts, n);
	return dequeue(q, *state, state->getQueue(), pool, pkts, n);
}

template <typename Ring>
uint16_t VhostNetPort::dequeue(Queue &q, VringState &state, Ring &ring, rte_mempool *pool,
			       rte_mbuf **pkts, uint16_t n)
{
	using PopStatus = typename Ring::PopStatus;
	n = availableUpTo(ring, n);
	if (n == 0)
		return 0;
	if (rte_pktmbuf_alloc_bulk(pool, pkts, n) != 0) {
		q.stats.dropNoMbuf++;
		return 0;
	}
	const vhost::GuestMemory *mem = state.memory().memory();
	uint32_t header = headerBytes_.load(std::memory_order_relaxed);
	uint16_t got = 0;
	uint64_t bytes = 0;
	bool taken = false;
	for (uint16_t i = 0; i < n; i++) {
		DescriptorChain chain;
		auto status = ring.pop(*mem, q.storage, chain);
		if (status == PopStatus::Empty)
			break;
		if (status == PopStatus::Broken) {
			state.signalError();
			break;
		}
		taken = true;
		/* The guest's buffer is returned whatever becomes of the packet. */
		putUsed(ring, chain.head, chain.descCount, 0);
		if (status == PopStatus::BadChain) {
			q.stats.dropBadChain++;
			continue;
		}
		if (chain.readableBytes <= header) {
			q.stats.dropTooShort++;
			continue;
		}
		uint32_t len = chain.readableBytes - header;
		if (len > kMaxPacketBytes) {
			q.stats.dropTooLong++;
			continue;
		}
		rte_mbuf *m = pkts[got];
		if (!copyChainToMbuf(chain, header, len, m, pool)) {
			q.stats.dropNoMbuf++;
			rte_pktmbuf_free(m->next);
			m->next = nullptr;
			m->nb_segs = 1;
			continue;
		}
		bytes += len;
		got++;
	}
	if (got < n)
		rte_pktmbuf_free_bulk(pkts + got, n - got);
	if (taken)
		notify(state, ring, q.stats);
	q.stats.packets += got;
	q.stats.bytes += bytes;
	return got;
}

uint16_t VhostNetPort::enqueueBurst(unsigned pair, rte_mbuf *const *pkts, uint16_t n)
{
	Queue &q = *queues_[2 * pair];
	VringState *state = q.ring.acquire();
	if (!state)
		return 0;
	if (state->isPacked())
		return enqueue(q, *state, state->getPackedQueue(), pkts, n);
	return enqueue(q, *state, state->getQueue(), pkts, n);
}

template <typename Ring>
uint16_t VhostNetPort::enqueue(Queue &q, VringState &state, Ring &ring, rte_mbuf *const *pkts,
			       uint16_t n)
{
	using PopStatus = typename Ring::PopStatus;
	const vhost::GuestMemory *mem = state.memory().memory();
	uint32_t header = headerBytes_.load(std::memory_order_relaxed);
	bool mergeable = mergeable_.load(std::memory_order_relaxed);
	uint16_t sent = 0;
	uint64_t bytes = 0;
	bool taken = false;

	uint16_t heads[kMaxChainsPerPacket];
	uint16_t descCounts[kMaxChainsPerPacket];
	uint32_t capacity[kMaxChainsPerPacket];
	for (uint16_t i = 0; i < n; i++) {
		const rte_mbuf *m = pkts[i];
		uint32_t need = header + m->pkt_len;
		if (m->pkt_len > kMaxPacketBytes) {
			q.stats.dropTooLong++;
			continue;
		}
		/* Gather chains until the packet fits: one without MRG_RXBUF. */
		uint32_t start = ring.availPosition();
		unsigned chains = 0;
		size_t pieces = 0;
		uint32_t total = 0;
		bool refused = false;
		while (total < need) {
			if (chains == kMaxChainsPerPacket || (!mergeable && chains == 1) ||
			    pieces == kMaxPieces)
				break;
			DescriptorChain chain;
			auto status = ring.pop(*mem, std::span(q.storage + pieces, kMaxPieces - pieces), chain);
			if (status == PopStatus::Empty)
				break;
			if (status == PopStatus::Broken) {
				state.signalError();
				break;
			}
			taken = true;
			if (status == PopStatus::BadChain || chain.readableBytes != 0) {
				/*
				 * Refused, or device-readable buffers on a receive queue: the
				 * packet is dropped, and every chain taken for it goes back empty,
				 * in the order taken (IN_ORDER).
				 */
				for (unsigned c = 0; c < chains; c++)
					putUsed(ring, heads[c], descCounts[c], 0);
				putUsed(ring, chain.head, chain.descCount, 0);
				q.stats.dropBadChain++;
				refused = true;
				break;
			}
			heads[chains] = chain.head;
			descCounts[chains] = chain.descCount;
			capacity[chains] = chain.writableBytes;
			chains++;
			pieces += chain.bufferCount;
			total += chain.writableBytes;
		}
		if (refused)
			continue;
		if (total < need) {
			/* Give the chains back: they are the next ones the guest sees used. */
			ring.rewindAvail(start);
			if (!mergeable && chains == 1) {
				/* The guest's buffers are smaller than this packet. */
				q.stats.dropTooLong++;
				continue;
			}
			q.stats.dropNoBuffer += n - i;
			break;
		}

		PieceWriter writer{ q.storage, q.storage + pieces };
		virtio::NetHeader hdr{};
		hdr.numBuffers = static_cast<uint16_t>(chains);
		writer.write(reinterpret_cast<const uint8_t *>(&hdr), header);
		for (const rte_mbuf *seg = m; seg; seg = seg->next)
			writer.write(rte_pktmbuf_mtod(seg, const uint8_t *), seg->data_len);
		uint32_t left = need;
		for (unsigned c = 0; c < chains; c++) {
			uint32_t len = std::min(left, capacity[c]);
			putUsed(ring, heads[c], descCounts[c], len);
			left -= len;
		}
		bytes += m->pkt_len;
		sent++;
	}
	if (taken)
		notify(state, ring, q.stats);
	q.stats.packets += sent;
	q.stats.bytes += bytes;
	return sent;
}

} /* namespace vub::net */
