/* SPDX-License-Identifier: Apache-2.0 */
#include "vhost_net_port.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>

#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_memcpy.h>
#include <rte_mempool.h>

#include "vub/vhost/guest_memory.h"
#include "vub/vhost/message.h"
#include "vub/virtio/net_header.h"

#include "net_offload.h"

namespace vub::net {

using vhost::DescBuffer;
using vhost::DescriptorChain;
using vhost::PackedQueue;
using vhost::SplitQueue;
using vhost::VringState;

namespace {

/**
 * Copy a packet's bytes. DPDK's rte_memcpy is built for Debian's baseline (-march=corei7,
 * 16-byte moves); glibc's memcpy picks the CPU's widest moves at run time, which takes half
 * the instructions or fewer for a full-size frame.
 */
inline void copyBytes(uint8_t *dst, const uint8_t *src, uint32_t len)
{
	if (len <= 256)
		rte_memcpy(dst, src, len);
	else
		std::memcpy(dst, src, len);
}

/**
 * Start loading the first two cache lines of a guest buffer (a virtio-net header and a short
 * frame), for writing when \a write.
 */
inline void prefetchBytes(const DescBuffer &b, bool write)
{
	if (write) {
		__builtin_prefetch(b.hva, 1);
		if (b.len > 64)
			__builtin_prefetch(b.hva + 64, 1);
	} else {
		__builtin_prefetch(b.hva, 0);
		if (b.len > 64)
			__builtin_prefetch(b.hva + 64, 0);
	}
}

/** Whether \a n bytes (a virtio-net header: 10 or 12) at \a a and \a b are the same. */
inline bool sameBytes(const uint8_t *a, const void *b, uint32_t n)
{
	if (n != 12)
		return std::memcmp(a, b, n) == 0;
	uint64_t a8, b8;
	uint32_t a4, b4;
	std::memcpy(&a8, a, 8);
	std::memcpy(&b8, b, 8);
	std::memcpy(&a4, a + 8, 4);
	std::memcpy(&b4, static_cast<const uint8_t *>(b) + 8, 4);
	return ((a8 ^ b8) | (a4 ^ b4)) == 0;
}

/** copyChainToMbuf() for every frame its inline path does not take: any layout, any size. */
bool copyChainToMbufSlow(const DescriptorChain &chain, uint32_t skip, uint32_t len, rte_mbuf *head,
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
			copyBytes(dst + used, piece.hva + off, k);
			used += k;
			off += k;
		}
	}
	seg->data_len = static_cast<uint16_t>(used);
	head->pkt_len = len;
	return true;
}

/**
 * Copy \a len bytes of a chain's device-readable pieces, after skipping the first \a skip
 * (the virtio-net header, which may itself span pieces), into \a head, chaining segments from
 * \a pool as needed. \return false when a segment could not be allocated.
 */
[[gnu::always_inline]] inline bool copyChainToMbuf(const DescriptorChain &chain, uint32_t skip,
						   uint32_t len, rte_mbuf *head, rte_mempool *pool)
{
	/*
	 * The usual frame: its bytes in one piece, after the header in the same piece (DPDK's
	 * virtio pushes it there) or in the piece before; one copy into one segment.
	 */
	const DescBuffer *piece = chain.buffers;
	uint32_t from = skip;
	if (chain.bufferCount > 1 && piece->len == skip) {
		piece++;
		from = 0;
	}
	if (!piece->writable && piece->len >= from + len && len <= rte_pktmbuf_tailroom(head))
		[[likely]] {
		copyBytes(rte_pktmbuf_mtod(head, uint8_t *), piece->hva + from, len);
		head->data_len = static_cast<uint16_t>(len);
		head->pkt_len = len;
		return true;
	}
	return copyChainToMbufSlow(chain, skip, len, head, pool);
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
			copyBytes(piece->hva + off, src, k);
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

/** Copy the first \a len bytes of a chain's device-readable pieces (the virtio-net header). */
void readChainPrefix(const DescriptorChain &chain, void *out, uint32_t len)
{
	auto *dst = static_cast<uint8_t *>(out);
	for (const DescBuffer &piece : chain.pieces()) {
		if (len == 0 || piece.writable)
			break;
		uint32_t k = std::min(len, piece.len);
		std::memcpy(dst, piece.hva, k);
		dst += k;
		len -= k;
	}
}

/** Write bytes [\a off, \a off + \a len) of \a m. */
void writeMbufRange(PieceWriter &writer, const rte_mbuf *m, uint32_t off, uint32_t len)
{
	for (const rte_mbuf *seg = m; seg && len > 0; seg = seg->next) {
		if (off >= seg->data_len) {
			off -= seg->data_len;
			continue;
		}
		uint32_t k = std::min<uint32_t>(len, seg->data_len - off);
		writer.write(rte_pktmbuf_mtod_offset(seg, const uint8_t *, off), k);
		off = 0;
		len -= k;
	}
}

} /* namespace */

VhostNetPort::VhostNetPort(unsigned queuePairs, int socket, bool iommu) : iommu_(iommu)
{
	queuePairs = std::clamp(queuePairs, 1u, kMaxQueuePairs);
	for (unsigned i = 0; i < 2 * queuePairs; i++) {
		void *mem =
			rte_zmalloc_socket("vub_net_queue", sizeof(Queue), alignof(Queue), socket);
		Queue *q = mem ? new (mem) Queue() : new Queue();
		q->fromHeap = mem == nullptr;
		queues_.emplace_back(q);
	}
}

void VhostNetPort::QueueDeleter::operator()(Queue *q) const
{
	if (q->fromHeap) {
		delete q;
		return;
	}
	q->~Queue();
	rte_free(q);
}

VhostNetPort::~VhostNetPort() = default;

uint64_t VhostNetPort::features() const
{
	return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kNetFMrgRxbuf) |
	       virtio::bit(virtio::kFEventIdx) | virtio::bit(virtio::kFIndirectDesc) |
	       virtio::bit(virtio::kFRingPacked) | virtio::bit(virtio::kFInOrder) |
	       virtio::bit(virtio::kNetFMq) | virtio::bit(virtio::kVhostUserFProtocolFeatures) |
	       virtio::bit(virtio::kNetFCtrlVq) | virtio::bit(virtio::kNetFGuestAnnounce) |
	       virtio::bit(virtio::kNetFMtu) | virtio::bit(virtio::kVhostFLogAll) |
	       (iommu_ ? virtio::bit(virtio::kFAccessPlatform) : 0) | offloadFeatures();
}

uint64_t VhostNetPort::protocolFeatures() const
{
	using namespace vhost::protocol;
	return mask(kMq) | mask(kRarp) | mask(kReplyAck) | mask(kMtu) | mask(kStatus) |
	       mask(kResetDevice) | mask(kConfigureMemSlots) | mask(kLogShmfd) |
	       (iommu_ ? mask(kBackendReq) : 0);
}

void VhostNetPort::ackedFeatures(uint64_t features)
{
	features_.store(features, std::memory_order_relaxed);
	headerBytes_.store(static_cast<uint32_t>(virtio::netHeaderSize(features)), std::memory_order_relaxed);
	mergeable_.store((features & virtio::bit(virtio::kNetFMrgRxbuf)) != 0, std::memory_order_relaxed);
	inOrder_.store((features & virtio::bit(virtio::kFInOrder)) != 0, std::memory_order_relaxed);
	/* HOST_TSO4/6 need CSUM: without it the guest sends no offload request. */
	guestTxOffloads_.store((features & virtio::bit(virtio::kNetFCsum)) != 0,
			       std::memory_order_relaxed);
	auto rx = GuestRxOffloads::fromFeatures(features);
	guestRxOffloads_.store(static_cast<uint8_t>(rx.csum | rx.tso4 << 1 | rx.tso6 << 2),
			       std::memory_order_relaxed);
}

Result<void> VhostNetPort::setMtu(uint16_t mtu)
{
	if (mtu > kMaxPacketBytes - 18)
		return Error{ EINVAL, "MTU above what vub carries" };
	mtu_.store(mtu, std::memory_order_relaxed);
	return {};
}

Result<void> VhostNetPort::sendRarp(const uint8_t (&mac)[6])
{
	uint64_t packed = 0;
	std::memcpy(&packed, mac, sizeof(mac));
	rarpMac_.store(packed, std::memory_order_relaxed);
	rarpPending_.store(true, std::memory_order_release);
	return {};
}

bool VhostNetPort::takeRarp(rte_mempool *pool, rte_mbuf **out)
{
	if (!rarpPending_.load(std::memory_order_relaxed) ||
	    !rarpPending_.exchange(false, std::memory_order_acquire))
		return false;
	rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (!m) {
		rarpPending_.store(true, std::memory_order_relaxed); /* next burst */
		return false;
	}
	uint64_t packed = rarpMac_.load(std::memory_order_relaxed);
	uint8_t mac[6];
	std::memcpy(mac, &packed, sizeof(mac));
	/* Ethernet broadcast, RARP (0x8035): "reverse request" with the guest's MAC, no IP. */
	uint8_t frame[60] = {};
	std::memset(frame, 0xff, 6);
	std::memcpy(frame + 6, mac, 6);
	const uint8_t rarp[] = { 0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03 };
	std::memcpy(frame + 12, rarp, sizeof(rarp));
	std::memcpy(frame + 22, mac, 6); /* sender hardware address */
	std::memcpy(frame + 32, mac, 6); /* target hardware address */
	std::memcpy(rte_pktmbuf_mtod(m, uint8_t *), frame, sizeof(frame));
	m->data_len = sizeof(frame);
	m->pkt_len = sizeof(frame);
	*out = m;
	return true;
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

/* The mbuf flags that send a packet down the offload path of enqueue. */
constexpr uint64_t kOffloadFlags = RTE_MBUF_F_TX_L4_MASK | RTE_MBUF_F_TX_TCP_SEG |
				   RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_RX_L4_CKSUM_MASK;

/**
 * At most how many chains a burst of \a n may take, 0 when none is available: a split ring's
 * avail index tells; a packed ring tells only descriptor by descriptor, so it is \a n when the
 * next one is available (the burst then stops at the first that is not).
 */
uint16_t burstLimit(SplitQueue &ring, uint16_t n)
{
	return std::min(n, ring.available());
}

uint16_t burstLimit(PackedQueue &ring, uint16_t n)
{
	return ring.available(1) != 0 ? n : 0;
}

/**
 * Take the next chain. \return false when there is none, or when the ring is corrupt (the
 * err eventfd is then signalled); \a refused says that the chain must go back empty, and
 * \a deferred (when given) that the next chain waits for a vIOMMU translation.
 */
template <typename Ring>
bool nextChain(Ring &ring, VringState &state, const vhost::GuestMemory &mem,
	       std::span<DescBuffer> storage, DescriptorChain &chain, bool *refused,
	       bool *deferred = nullptr)
{
	auto status = ring.pop(mem, storage, chain);
	if (status == Ring::PopStatus::Broken)
		state.signalError();
	if (deferred)
		*deferred = status == Ring::PopStatus::Deferred;
	*refused = status == Ring::PopStatus::BadChain;
	return status == Ring::PopStatus::Ok || *refused;
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

int VhostNetPort::numaNode(unsigned pair) const
{
	const Queue &q = *queues_[2 * pair + 1];
	return q.ring.vring ? q.ring.vring->peek().numaNode() : -1;
}

bool VhostNetPort::started(unsigned pair) const
{
	const Queue &q = *queues_[2 * pair + 1];
	return q.ring.vring && q.ring.vring->peek().isStarted();
}

bool VhostNetPort::rxReady(unsigned pair) const
{
	const Queue &q = *queues_[2 * pair];
	if (!q.ring.vring)
		return false;
	const VringState &state = q.ring.vring->peek();
	return state.isStarted() && state.isEnabled();
}

NetQueueCounters VhostNetPort::counters(unsigned pair, bool guestTx) const
{
	const Queue &q = *queues_[2 * pair + (guestTx ? 1 : 0)];
	NetQueueCounters c;
	c.packets = q.stats.packets.get();
	c.bytes = q.stats.bytes.get();
	c.dropNoBuffer = q.stats.dropNoBuffer.get();
	c.dropBadChain = q.stats.dropBadChain.get();
	c.dropTooShort = q.stats.dropTooShort.get();
	c.dropTooLong = q.stats.dropTooLong.get();
	c.dropNoMbuf = q.stats.dropNoMbuf.get();
	c.dropBadOffload = q.stats.dropBadOffload.get();
	c.emptyPolls = q.stats.emptyPolls.get();
	c.dropDisabled = q.stats.dropDisabled.get();
	if (!q.ring.vring)
		return c;
	/* Both layouts' counters: only the negotiated one moves, and no flag needs reading. */
	const VringState &state = q.ring.vring->peek();
	for (const vhost::QueueStats *s :
	     { &state.getQueue().stats(), &state.getPackedQueue().stats() }) {
		c.notificationsSent += s->notificationsSent.get();
		c.notificationsSuppressed += s->notificationsSuppressed.get();
		c.kicks += s->kicks.get();
		for (int e = 0; e < static_cast<int>(vhost::ChainError::Count); e++)
			c.badChains[e] += s->badChains[e].get();
	}
	return c;
}

template <typename Ring>
void VhostNetPort::notify(VringState &state, Ring &ring)
{
	ring.publishUsed();
	/* A live migration: the used ring was written (after the data, which is logged). */
	if (const vhost::DirtyLog *log = state.memory().memory()->dirtyLog()) [[unlikely]]
		ring.logUsed(*log);
	if (state.needsNotification())
		state.signalUsedQueue();
}

uint16_t VhostNetPort::dequeueBurst(unsigned pair, rte_mempool *pool, rte_mbuf **pkts, uint16_t n)
{
	Queue &q = *queues_[2 * pair + 1];
	VringState *state = q.ring.acquire();
	if (!state || n == 0)
		return 0;
	if (!state->isEnabled()) [[unlikely]] {
		if (!state->enabledSinceStop())
			return 0; /* being set up: its enable comes next */
		if (state->isPacked())
			drainDisabled(q, *state, state->getPackedQueue());
		else
			drainDisabled(q, *state, state->getQueue());
		return 0;
	}
	uint16_t rarp = pair == 0 && takeRarp(pool, pkts) ? 1 : 0;
	uint16_t got =
		state->isPacked()
			? dequeue(q, *state, state->getPackedQueue(), pool, pkts + rarp, n - rarp)
			: dequeue(q, *state, state->getQueue(), pool, pkts + rarp, n - rarp);
	return static_cast<uint16_t>(got + rarp);
}

template <typename Ring>
uint16_t VhostNetPort::dequeue(Queue &q, VringState &state, Ring &ring, rte_mempool *pool,
			       rte_mbuf **pkts, uint16_t n)
{
	n = burstLimit(ring, n);
	if (n == 0) {
		q.stats.emptyPolls++;
		return 0;
	}
	const vhost::GuestMemory *mem = state.memory().memory();
	uint32_t header = headerBytes_.load(std::memory_order_relaxed);
	bool txOffloads = guestTxOffloads_.load(std::memory_order_relaxed);
	/*
	 * A packed ring with IN_ORDER takes the burst back in one used descriptor, the last
	 * chain's id over all their descriptors (VIRTIO 1.2, packed virtqueues, "In-order use of
	 * descriptors"; DPDK's vhost does the same):
	 * the driver reads one descriptor, not one a packet. Its TX buffers have no length to
	 * report. (A split ring's driver reads no used entry of its TX ring: nothing to save.)
	 */
	const bool oneUsed =
		std::is_same_v<Ring, PackedQueue> && inOrder_.load(std::memory_order_relaxed);
	uint16_t lastHead = 0;
	uint32_t descsTaken = 0;
	uint16_t got = 0;
	/* pkts[got, ready) hold fresh mbufs, allocated as chains are taken. */
	uint16_t ready = 0;
	uint64_t bytes = 0;
	bool taken = false;
	/*
	 * Make pkts[got, got + count) fresh mbufs, or as many as the pool has left (counted).
	 * \return how many of the \a count there are.
	 */
	auto reserve = [&](uint16_t count) -> uint16_t {
		uint16_t want = static_cast<uint16_t>(got + count);
		if (want > ready) {
			if (rte_pktmbuf_alloc_bulk(pool, pkts + ready, want - ready) == 0) {
				ready = want;
			} else {
				/* The pool has fewer than that: take them one by one. */
				q.stats.dropNoMbuf++;
				while (ready < want && (pkts[ready] = rte_pktmbuf_alloc(pool)))
					ready++;
			}
		}
		return static_cast<uint16_t>(std::min(ready, want) - got);
	};
	/* One chain: give it back to the guest and turn it into pkts[got]. */
	auto take = [&](const DescriptorChain &chain, bool refused) __attribute__((always_inline))
	{
		taken = true;
		/* The guest's buffer is returned whatever becomes of the packet. */
		if (oneUsed) {
			lastHead = chain.head;
			descsTaken += chain.descCount;
		} else {
			putUsed(ring, chain.head, chain.descCount, 0);
		}
		if (refused) {
			q.stats.dropBadChain++;
			return;
		}
		if (chain.readableBytes <= header) {
			q.stats.dropTooShort++;
			return;
		}
		uint32_t len = chain.readableBytes - header;
		virtio::NetHeader hdr{};
		if (txOffloads)
			readChainPrefix(chain, &hdr, std::min<uint32_t>(header, sizeof(hdr)));
		if (len >
		    (hdr.gsoType != virtio::kNetHdrGsoNone ? kMaxGsoFrameBytes : kMaxPacketBytes)) {
			q.stats.dropTooLong++;
			return;
		}
		rte_mbuf *m = pkts[got];
		bool copied = copyChainToMbuf(chain, header, len, m, pool);
		bool offloaded =
			copied && ((hdr.flags | hdr.gsoType) == 0 || guestHeaderToMbuf(hdr, m));
		if (!offloaded) {
			(copied ? q.stats.dropBadOffload : q.stats.dropNoMbuf)++;
			/* The mbuf is reused for the next packet: back to a fresh one. */
			rte_pktmbuf_free(m->next);
			rte_pktmbuf_reset(m);
			return;
		}
		bytes += len;
		got++;
	};
	for (uint16_t i = 0; i < n;) {
		/*
		 * The usual chains a group at a time: take them all and start loading their
		 * bytes, then copy them, so that the group's cache misses overlap.
		 */
		uint16_t ids[kUsualGroup];
		uint16_t groupMax = std::min<uint16_t>(n - i, kUsualGroup);
		auto prefetch = [](uint16_t, const DescBuffer &b) {
			prefetchBytes(b, false);
			return true;
		};
		uint32_t position = ring.availPosition();
		uint16_t group = ring.popUsualBurst(*mem, q.storage, ids, groupMax, prefetch);
		if (uint16_t have = group != 0 ? reserve(group) : 0; have < group) {
			/* The pool ran dry: take one chain per mbuf; the rest come again. */
			ring.rewindAvail(position);
			group = have != 0 ? ring.popUsualBurst(*mem, q.storage, ids, have, prefetch)
					  : 0;
			n = static_cast<uint16_t>(i + group);
		}
		for (uint16_t k = 0; k < group; k++) {
			DescriptorChain chain;
			chain.setSingle(ids[k], q.storage[k]);
			take(chain, false);
		}
		i += group;
		if (i == n || group == groupMax)
			continue;
		/* Anything else, one at a time. */
		DescriptorChain chain;
		bool refused = false;
		position = ring.availPosition();
		if (!nextChain(ring, state, *mem, q.storage, chain, &refused))
			break;
		if (!refused && reserve(1) == 0) {
			ring.rewindAvail(position);
			break;
		}
		take(chain, refused);
		i++;
	}
	if (got < ready)
		rte_pktmbuf_free_bulk(pkts + got, ready - got);
	if (taken) {
		if (oneUsed)
			putUsed(ring, lastHead, static_cast<uint16_t>(descsTaken), 0);
		notify(state, ring);
	}
	q.stats.packets += got;
	q.stats.bytes += bytes;
	return got;
}

uint16_t VhostNetPort::enqueueBurst(unsigned pair, rte_mbuf *const *pkts, uint16_t n,
				   uint16_t *waiting)
{
	if (waiting)
		*waiting = 0;
	Queue &q = *queues_[2 * pair];
	VringState *state = q.ring.acquire();
	/* A stopped or disabled RX ring gets nothing: the guest gave no buffer for it. */
	if (!state || !state->isEnabled()) [[unlikely]] {
		q.stats.dropNoBuffer += n;
		return 0;
	}
	if (state->isPacked())
		return enqueue(q, *state, state->getPackedQueue(), pkts, n, waiting);
	return enqueue(q, *state, state->getQueue(), pkts, n, waiting);
}

template <typename Ring>
void VhostNetPort::drainDisabled(Queue &q, VringState &state, Ring &ring)
{
	const vhost::GuestMemory *mem = state.memory().memory();
	unsigned taken = 0;
	DescriptorChain chain;
	bool refused = false;
	for (; taken < kDrainBurst && nextChain(ring, state, *mem, q.storage, chain, &refused);
	     taken++)
		putUsed(ring, chain.head, chain.descCount, 0);
	if (taken == 0)
		return;
	q.stats.dropDisabled += taken;
	notify(state, ring);
}

template <typename Ring>
uint16_t VhostNetPort::enqueue(Queue &q, VringState &state, Ring &ring, rte_mbuf *const *pkts,
			       uint16_t n, uint16_t *waiting)
{
	/* The guest's RX buffers, read once (a split ring's avail index) for the usual path. */
	if (n != 0 && burstLimit(ring, n) == 0) {
		q.stats.dropNoBuffer += n;
		return 0;
	}
	const vhost::GuestMemory *mem = state.memory().memory();
	uint32_t header = headerBytes_.load(std::memory_order_relaxed);
	bool mergeable = mergeable_.load(std::memory_order_relaxed);
	uint16_t sent = 0;
	uint64_t bytes = 0;
	bool taken = false;

	GuestRxOffloads offloads{};
	uint8_t rxBits = guestRxOffloads_.load(std::memory_order_relaxed);
	offloads.csum = rxBits & 1;
	offloads.tso4 = rxBits & 2;
	offloads.tso6 = rxBits & 4;
	GuestRxFrame frame;

	uint16_t heads[kMaxChainsPerPacket];
	uint16_t descCounts[kMaxChainsPerPacket];
	uint32_t capacity[kMaxChainsPerPacket];
	/*
	 * Put one frame into the guest's buffers: the header, \a prefixBytes rewritten bytes
	 * from \a frame, then bytes [off, off + len) of \a m.
	 */
	enum class Placed : uint8_t { Ok, NoBuffer, TooBig, Refused, Deferred };
	auto place = [&](const rte_mbuf *m, const virtio::NetHeader &fields, uint32_t prefixBytes,
			 uint32_t off, uint32_t len) -> Placed {
		uint32_t need = header + prefixBytes + len;
		/*
		 * Gather chains until the frame fits: one without MRG_RXBUF. They all become
		 * visible at the burst's one publishUsed(): DPDK's virtio drops a merged frame
		 * whose buffers it cannot all see used.
		 */
		uint32_t start = ring.availPosition();
		unsigned chains = 0;
		size_t pieces = 0;
		uint32_t total = 0;
		while (total < need) {
			if (chains == kMaxChainsPerPacket || (!mergeable && chains == 1) ||
			    pieces == kMaxPieces)
				break;
			DescriptorChain chain;
			bool refused = false;
			bool deferred = false;
			if (!nextChain(ring, state, *mem,
				       std::span(q.storage + pieces, kMaxPieces - pieces), chain,
				       &refused, &deferred)) {
				if (deferred && waiting) {
					ring.rewindAvail(start);
					return Placed::Deferred;
				}
				break;
			}
			taken = true;
			if (refused || chain.readableBytes != 0) {
				/*
				 * Refused, or device-readable buffers on a receive queue: the frame
				 * is dropped, and every chain taken for it goes back empty, in the
				 * order taken (IN_ORDER).
				 */
				for (unsigned c = 0; c < chains; c++)
					putUsed(ring, heads[c], descCounts[c], 0);
				putUsed(ring, chain.head, chain.descCount, 0);
				return Placed::Refused;
			}
			heads[chains] = chain.head;
			descCounts[chains] = chain.descCount;
			capacity[chains] = chain.writableBytes;
			chains++;
			pieces += chain.bufferCount;
			total += chain.writableBytes;
		}
		if (total < need) {
			/* Give the chains back: they are the next ones the guest sees used. */
			ring.rewindAvail(start);
			return !mergeable && chains == 1 ? Placed::TooBig : Placed::NoBuffer;
		}
		virtio::NetHeader hdr = fields;
		hdr.numBuffers = static_cast<uint16_t>(chains);
		if (q.storage[0].len >= need && prefixBytes == 0 && m->data_len >= off + len)
			[[likely]] {
			/* The usual frame: one buffer takes it whole, from one segment. */
			uint8_t *dst = q.storage[0].hva;
			/* Written only when it differs: see the usual frames below. */
			if (!sameBytes(dst, &hdr, header))
				std::memcpy(dst, &hdr, header);
			copyBytes(dst + header, rte_pktmbuf_mtod_offset(m, const uint8_t *, off),
				  len);
			if (mem->dirtyLog()) [[unlikely]]
				mem->logWrite(dst, need);
			putUsed(ring, heads[0], descCounts[0], need);
			return Placed::Ok;
		}
		PieceWriter writer{ q.storage, q.storage + pieces };
		writer.write(reinterpret_cast<const uint8_t *>(&hdr), header);
		writer.write(frame.prefix(), prefixBytes);
		writeMbufRange(writer, m, off, len);
		if (mem->dirtyLog()) [[unlikely]] {
			/* Every piece taken, whole: more than written is no harm. */
			for (size_t p = 0; p < pieces; p++)
				mem->logWrite(q.storage[p].hva, q.storage[p].len);
		}
		uint32_t left = need;
		for (unsigned c = 0; c < chains; c++) {
			uint32_t used = std::min(left, capacity[c]);
			putUsed(ring, heads[c], descCounts[c], used);
			left -= used;
		}
		return Placed::Ok;
	};

	static constexpr virtio::NetHeader kNoOffload{};
	/* Any frame, one at a time; false when the guest has no buffer left. */
	auto placeAny = [&](uint16_t i) -> bool {
		const rte_mbuf *m = pkts[i];
		Placed placed;
		if (!(m->ol_flags & kOffloadFlags)) {
			/* The common case: no offload requested, nothing to rewrite. */
			if (m->pkt_len > kMaxPacketBytes) {
				q.stats.dropTooLong++;
				return true;
			}
			placed = place(m, kNoOffload, 0, 0, m->pkt_len);
		} else {
			if (m->pkt_len > kMaxGsoFrameBytes ||
			    (m->pkt_len > kMaxPacketBytes &&
			     !(m->ol_flags & RTE_MBUF_F_TX_TCP_SEG))) {
				q.stats.dropTooLong++;
				return true;
			}
			if (!frame.plan(m, offloads)) {
				q.stats.dropBadOffload++;
				return true;
			}
			placed = Placed::Ok;
			for (unsigned s = 0; s < frame.segmentCount() && placed == Placed::Ok;
			     s++) {
				uint32_t off = 0, len = 0;
				frame.build(s, &off, &len);
				placed = place(m, frame.header(), frame.prefixBytes(), off, len);
				/* Segments went already: offered again, they would go twice. */
				if (placed == Placed::Deferred && s != 0)
					placed = Placed::NoBuffer;
			}
		}
		if (placed == Placed::Refused) {
			q.stats.dropBadChain++;
			return true;
		}
		if (placed == Placed::TooBig) {
			/* The guest's buffers are smaller than this packet. */
			q.stats.dropTooLong++;
			return true;
		}
		if (placed == Placed::NoBuffer) {
			q.stats.dropNoBuffer += n - i;
			return false;
		}
		if (placed == Placed::Deferred) {
			*waiting = static_cast<uint16_t>(n - i);
			return false;
		}
		bytes += m->pkt_len;
		sent++;
		return true;
	};
	virtio::NetHeader usualHeader{};
	usualHeader.numBuffers = 1;
	for (uint16_t i = 0; i < n;) {
		/*
		 * The usual frames a group at a time (no offload, one segment, one buffer of the
		 * guest's that takes it whole): take their buffers and start loading them, then
		 * copy, so that the group's cache misses overlap.
		 */
		uint16_t ids[kUsualGroup];
		uint16_t groupMax = std::min<uint16_t>(n - i, kUsualGroup);
		uint16_t group = ring.popUsualBurst(
			*mem, q.storage, ids, groupMax, [&](uint16_t k, const DescBuffer &b) {
				const rte_mbuf *m = pkts[i + k];
				/* Anything else is left to placeAny(). */
				if ((m->ol_flags & kOffloadFlags) || m->data_len != m->pkt_len ||
				    m->pkt_len > kMaxPacketBytes || !b.writable ||
				    b.len < header + m->pkt_len)
					return false;
				prefetchBytes(b, true);
				return true;
			});
		for (uint16_t k = 0; k < group; k++) {
			const rte_mbuf *m = pkts[i + k];
			uint8_t *dst = q.storage[k].hva;
			/*
			 * The header is nearly always what the buffer holds from its last
			 * frame: written only when it differs, its cache line is not taken
			 * from the guest's CPU (DPDK's vhost does the same, field by field).
			 */
			if (!sameBytes(dst, &usualHeader, header))
				std::memcpy(dst, &usualHeader, header);
			copyBytes(dst + header, rte_pktmbuf_mtod(m, const uint8_t *), m->pkt_len);
			if (mem->dirtyLog()) [[unlikely]]
				mem->logWrite(dst, header + m->pkt_len);
			putUsed(ring, ids[k], 1, header + m->pkt_len);
			bytes += m->pkt_len;
		}
		sent += group;
		taken |= group != 0;
		i += group;
		if (i == n || group == groupMax)
			continue;
		if (!placeAny(i))
			break;
		i++;
	}
	if (taken)
		notify(state, ring);
	q.stats.packets += sent;
	q.stats.bytes += bytes;
	return sent;
}

} /* namespace vub::net */
