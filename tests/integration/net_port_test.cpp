/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhost-user net port's data path, bytes compared: the test front-end plays the guest,
 * the test thread plays the switch's lcore (dequeueBurst / enqueueBurst), under a DPDK EAL
 * with --no-huge so it runs anywhere.
 */
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/base/rcu.h"
#include "vub/base/topology.h"
#include "vub/vhost/daemon.h"
#include "vub/virtio/net_header.h"

#include "test_frontend.h"
#include "vhost_net_port.h"

using namespace vub;
using namespace vub::vhost;
using namespace vub::test;
using vub::net::VhostNetPort;

namespace {

constexpr uint64_t kGpaBase = 0x100000;

/** One EAL and one mempool for the whole program. */
class EalEnvironment : public ::testing::Environment
{
public:
	void SetUp() override
	{
		std::string prefix = "--file-prefix=vubnet" + std::to_string(getpid());
		const char *args[] = {
			"net-port-test",  "--no-huge",	       "-m",	      "256", "--no-pci",
			"--no-telemetry", "--log-level=error", prefix.c_str()
		};
		int argc = sizeof(args) / sizeof(args[0]);
		ok = rte_eal_init(argc, const_cast<char **>(args)) >= 0;
		if (ok)
			pool = rte_pktmbuf_pool_create("net_test", 2047, 0, 0,
						       RTE_MBUF_DEFAULT_BUF_SIZE, 0);
	}
	void TearDown() override
	{
		if (ok)
			rte_eal_cleanup();
	}
	static inline bool ok = false;
	static inline rte_mempool *pool = nullptr;
};

/* Parameter: packed rings (true) or split ones. */
class NetPortTest : public ::testing::TestWithParam<bool>
{
protected:
	void SetUp() override
	{
		if (!EalEnvironment::ok || !EalEnvironment::pool)
			GTEST_SKIP() << "DPDK EAL could not start with --no-huge";
		path_ = "/tmp/vub-net-" + std::to_string(getpid()) + ".sock";
		port_ = std::make_shared<VhostNetPort>(1, -1, iommu_);
		DaemonOptions o;
		o.polling = true;
		o.pollThreads = false;
		auto daemon = VhostUserDaemon::create<VringPolled>("net", port_, nullptr, o);
		ASSERT_TRUE(daemon);
		daemon_ = std::move(*daemon);
		ASSERT_TRUE(port_->attach(daemon_->vrings()));
		auto listener = Listener::create(path_);
		ASSERT_TRUE(listener);
		listener_ = std::move(*listener);
		ASSERT_TRUE(daemon_->start(listener_));
		mem_ = GuestMemoryFd::create(8 << 20, kGpaBase);
		frontend_ = TestFrontend::connect(path_);
		ASSERT_TRUE(frontend_);
		/* This thread plays the lcore: an RCU reader, online only while it polls. */
		auto reader = Rcu::global().registerReader();
		ASSERT_TRUE(reader);
		reader_.emplace(std::move(*reader));
		reader_->offline();
	}
	void TearDown() override
	{
		reader_.reset();
		frontend_.reset();
		daemon_.reset();
	}

	void negotiate(bool mergeable, uint64_t moreFeatures = 0)
	{
		NegotiateOptions o;
		o.queues = 2;
		o.memory = { mem_.get() };
		o.packed = GetParam();
		o.features = virtio::bit(virtio::kFVersion1) |
			     (mergeable ? virtio::bit(virtio::kNetFMrgRxbuf) : 0) |
			     (o.packed ? virtio::bit(virtio::kFRingPacked) : 0) | moreFeatures;
		o.protocolFeatures |= protocol::mask(protocol::kRarp);
		ASSERT_TRUE(frontend_->negotiateDpdk(o));
	}

	/** The guest makes a chain available on queue \a q. */
	void addChain(unsigned q, std::span<const BufferSpec> specs)
	{
		if (GetParam()) {
			ASSERT_GE(frontend_->packedQueue(q).addChain(specs), 0);
			return;
		}
		ASSERT_GE(frontend_->queue(q).addChain(specs), 0);
		frontend_->queue(q).publish();
	}

	/** The lengths of the chains the port returned on queue \a q since the last call. */
	std::vector<uint32_t> usedLens(unsigned q)
	{
		std::vector<uint32_t> lens;
		if (GetParam()) {
			for (const auto &u : frontend_->packedQueue(q).collectUsed())
				lens.push_back(u.len);
		} else {
			for (const auto &u : frontend_->queue(q).collectUsed())
				lens.push_back(u.len);
		}
		return lens;
	}

	/** The guest sends \a payload, its 12-byte header split at \a split bytes. */
	void guestSend(const std::vector<uint8_t> &payload, uint32_t split,
		       const virtio::NetHeader &header = {})
	{
		std::vector<uint8_t> frame(12, 0);
		std::memcpy(frame.data(), &header, 12);
		frame.insert(frame.end(), payload.begin(), payload.end());
		uint64_t a = mem_->alloc(split, 16), b = mem_->alloc(frame.size() - split, 16);
		mem_->write(a, frame.data(), split);
		mem_->write(b, frame.data() + split, frame.size() - split);
		BufferSpec specs[] = { { a, split, false },
				       { b, static_cast<uint32_t>(frame.size() - split), false } };
		addChain(1, specs);
	}

	/** Poll like an lcore until \a want packets came, or 2 s passed. */
	uint16_t dequeue(rte_mbuf **pkts, uint16_t want)
	{
		uint16_t got = 0;
		auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
		reader_->online();
		while (got < want && std::chrono::steady_clock::now() < deadline) {
			got += port_->dequeueBurst(0, EalEnvironment::pool, pkts + got, want - got);
			reader_->quiescent();
		}
		reader_->offline();
		return got;
	}

	static std::vector<uint8_t> flatten(const rte_mbuf *m)
	{
		std::vector<uint8_t> out;
		for (const rte_mbuf *seg = m; seg; seg = seg->next) {
			const uint8_t *p = rte_pktmbuf_mtod(seg, const uint8_t *);
			out.insert(out.end(), p, p + seg->data_len);
		}
		return out;
	}

	static std::vector<uint8_t> pattern(size_t len, uint8_t seed)
	{
		std::vector<uint8_t> v(len);
		for (size_t i = 0; i < len; i++)
			v[i] = static_cast<uint8_t>(seed + i * 13);
		return v;
	}

	std::string path_;
	bool iommu_ = false; /**< the port offers VIRTIO_F_IOMMU_PLATFORM */
	std::shared_ptr<VhostNetPort> port_;
	std::unique_ptr<VhostUserDaemon> daemon_;
	Listener listener_;
	std::unique_ptr<GuestMemoryFd> mem_;
	std::unique_ptr<TestFrontend> frontend_;
	std::optional<Rcu::Reader> reader_;
};

TEST_P(NetPortTest, GuestFramesArriveByteForByteWhateverTheHeaderSplit)
{
	negotiate(true);
	/* Header in one piece, split inside it, and header plus 3 payload bytes in the first. */
	const uint32_t splits[] = { 12, 5, 1, 15 };
	std::vector<std::vector<uint8_t>> sent;
	for (size_t i = 0; i < 4; i++) {
		sent.push_back(pattern(100 + 300 * i, static_cast<uint8_t>(i)));
		guestSend(sent.back(), splits[i]);
	}
	rte_mbuf *pkts[4];
	ASSERT_EQ(dequeue(pkts, 4), 4);
	for (size_t i = 0; i < 4; i++) {
		EXPECT_EQ(flatten(pkts[i]), sent[i]) << "frame " << i;
		rte_pktmbuf_free(pkts[i]);
	}
	EXPECT_EQ(usedLens(1).size(), 4u);
}

TEST_P(NetPortTest, GetVringBaseStopsTheRingAtWhereTheGuestIs)
{
	negotiate(true);
	for (uint8_t i = 0; i < 3; i++)
		guestSend(pattern(60, i), 5); /* two descriptors each */
	rte_mbuf *pkts[3];
	ASSERT_EQ(dequeue(pkts, 3), 3);
	rte_pktmbuf_free_bulk(pkts, 3);
	auto base = frontend_->getVringBase(1);
	ASSERT_TRUE(base);
	if (GetParam()) {
		/* Avail and used at descriptor 6 of the first lap: both wrap counters still 1. */
		EXPECT_EQ(*base, 6u | 1u << 15 | 6u << 16 | 1u << 31);
	} else {
		EXPECT_EQ(*base, 3u);
	}
}

TEST_P(NetPortTest, CountersSayWhatHappenedToEachQueue)
{
	negotiate(true);
	rte_mbuf *pkts[4];
	reader_->online();
	EXPECT_EQ(port_->dequeueBurst(0, EalEnvironment::pool, pkts, 4), 0);
	reader_->offline();
	guestSend(pattern(100, 1), 12);
	uint64_t a = mem_->alloc(64, 16);
	BufferSpec bad{ a, 0, false }; /* a zero-length buffer: refused */
	addChain(1, std::span(&bad, 1));
	guestSend(pattern(200, 2), 12);
	ASSERT_EQ(dequeue(pkts, 2), 2);
	rte_pktmbuf_free_bulk(pkts, 2);

	auto c = port_->counters(0, true);
	EXPECT_EQ(c.packets, 2u);
	EXPECT_EQ(c.bytes, 300u);
	EXPECT_EQ(c.dropBadChain, 1u);
	EXPECT_EQ(c.badChains[static_cast<int>(ChainError::ZeroLength)], 1u);
	EXPECT_GE(c.emptyPolls, 1u);
	EXPECT_GE(c.notificationsSent + c.notificationsSuppressed, 1u);
	auto rx = port_->counters(0, false);
	EXPECT_EQ(rx.packets, 0u);
}

TEST_P(NetPortTest, DryMempoolLosesNoGuestPacket)
{
	negotiate(true);
	/* A pool of 4 mbufs (no per-lcore cache) for 10 single-buffer frames. */
	std::string name = "net_dry" + std::to_string(GetParam());
	rte_mempool *dry = rte_pktmbuf_pool_create(name.c_str(), 4, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
						   SOCKET_ID_ANY);
	ASSERT_NE(dry, nullptr);
	std::vector<std::vector<uint8_t>> sent;
	for (uint8_t i = 0; i < 10; i++) {
		sent.push_back(pattern(60 + i, i));
		std::vector<uint8_t> frame(12, 0);
		frame.insert(frame.end(), sent.back().begin(), sent.back().end());
		uint64_t a = mem_->alloc(frame.size(), 16);
		mem_->write(a, frame.data(), frame.size());
		BufferSpec spec{ a, static_cast<uint32_t>(frame.size()), false };
		addChain(1, std::span(&spec, 1));
	}
	/* Each burst takes what the pool holds; the rest stays in the ring for the next one. */
	size_t next = 0;
	reader_->online();
	for (int burst = 0; burst < 10 && next < sent.size(); burst++) {
		rte_mbuf *pkts[10];
		uint16_t got = port_->dequeueBurst(0, dry, pkts, 10);
		EXPECT_LE(got, 4u);
		for (uint16_t k = 0; k < got; k++, next++) {
			EXPECT_EQ(flatten(pkts[k]), sent[next]) << "frame " << next;
			rte_pktmbuf_free(pkts[k]);
		}
		reader_->quiescent();
	}
	reader_->offline();
	EXPECT_EQ(next, sent.size()) << "every frame came, in order";
	EXPECT_GE(port_->counters(0, true).dropNoMbuf, 1u);
	EXPECT_EQ(port_->counters(0, true).packets, sent.size());
	EXPECT_EQ(usedLens(1).size(), sent.size());
	rte_mempool_free(dry);
}

TEST_P(NetPortTest, StartedRingsSayTheirNumaNode)
{
	EXPECT_EQ(port_->numaNode(0), -1) << "no ring started yet";
	negotiate(true);
	/* Where this machine's libnuma says the guest memory is, or -1 without libnuma. */
	int expected = Topology::nodeOfAddress(mem_->hostPtr(kGpaBase));
	EXPECT_EQ(port_->numaNode(0), expected);
}

TEST_P(NetPortTest, SendRarpHandsOutARarpFromTheGuestsMac)
{
	negotiate(true);
	const std::array<uint8_t, 6> mac = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
	ASSERT_TRUE(frontend_->sendRarp(mac));
	guestSend(pattern(80, 4), 12);
	rte_mbuf *pkts[4];
	ASSERT_EQ(dequeue(pkts, 2), 2);
	auto rarp = flatten(pkts[0]);
	ASSERT_EQ(rarp.size(), 60u);
	EXPECT_TRUE(
		std::all_of(rarp.begin(), rarp.begin() + 6, [](uint8_t b) { return b == 0xff; }));
	EXPECT_TRUE(std::equal(mac.begin(), mac.end(), rarp.begin() + 6)) << "source MAC";
	EXPECT_EQ(rarp[12], 0x80);
	EXPECT_EQ(rarp[13], 0x35);
	EXPECT_EQ(rarp[21], 3) << "reverse request";
	EXPECT_TRUE(std::equal(mac.begin(), mac.end(), rarp.begin() + 22)) << "sender MAC";
	EXPECT_EQ(flatten(pkts[1]), pattern(80, 4)) << "then the guest's own packet";
	rte_pktmbuf_free_bulk(pkts, 2);
	reader_->online();
	EXPECT_EQ(port_->dequeueBurst(0, EalEnvironment::pool, pkts, 4), 0)
		<< "one RARP per SEND_RARP";
	reader_->offline();
}

TEST_P(NetPortTest, GetQueueNumAnswersQueuePairs)
{
	negotiate(true);
	auto n = frontend_->getQueueNum();
	ASSERT_TRUE(n);
	EXPECT_EQ(*n, 1u) << "QEMU's vhost-user net compares it with its queue pairs";
}

TEST_P(NetPortTest, DisabledTxRingIsConsumedAndDropped)
{
	negotiate(true);
	ASSERT_TRUE(frontend_->setVringEnable(1, false));
	guestSend(pattern(60, 1), 12);
	guestSend(pattern(60, 2), 12);
	rte_mbuf *pkts[2];
	reader_->online();
	EXPECT_EQ(port_->dequeueBurst(0, EalEnvironment::pool, pkts, 2), 0)
		<< "a disabled ring's packets go nowhere";
	reader_->offline();
	EXPECT_EQ(port_->counters(0, true).dropDisabled, 2u);
	EXPECT_EQ(usedLens(1), (std::vector<uint32_t>{ 0, 0 })) << "but its buffers go back";
	ASSERT_TRUE(frontend_->setVringEnable(1, true));
	guestSend(pattern(60, 3), 12);
	ASSERT_EQ(dequeue(pkts, 1), 1);
	EXPECT_EQ(flatten(pkts[0]), pattern(60, 3));
	rte_pktmbuf_free(pkts[0]);
}

TEST_P(NetPortTest, JumboFrameBecomesAnMbufChain)
{
	negotiate(true);
	auto payload = pattern(9000, 7);
	guestSend(payload, 12);
	rte_mbuf *m;
	ASSERT_EQ(dequeue(&m, 1), 1);
	EXPECT_GT(m->nb_segs, 1);
	EXPECT_EQ(m->pkt_len, 9000u);
	EXPECT_EQ(flatten(m), payload);
	rte_pktmbuf_free(m);
}

TEST_P(NetPortTest, ChainsNoLongerThanTheHeaderAreDropped)
{
	negotiate(true);
	uint64_t a = mem_->alloc(12, 16);
	BufferSpec spec{ a, 12, false };
	addChain(1, std::span(&spec, 1));
	guestSend(pattern(60, 1), 12);
	rte_mbuf *pkts[2];
	ASSERT_EQ(dequeue(pkts, 1), 1);
	EXPECT_EQ(pkts[0]->pkt_len, 60u) << "the good frame after the bad one";
	rte_pktmbuf_free(pkts[0]);
	EXPECT_EQ(port_->stats(0, true).dropTooShort.get(), 1u);
	EXPECT_EQ(usedLens(1).size(), 2u) << "both chains go back to the guest";
}

TEST_P(NetPortTest, InOrderTxBurstComesBackWhole)
{
	negotiate(true, virtio::bit(virtio::kFInOrder));
	/* A packed ring's burst comes back in one used descriptor, which an in-order driver reads
	 * as every chain up to its id; a split ring's in one used entry a chain. */
	if (GetParam())
		frontend_->packedQueue(1).setInOrder(true);
	rte_mbuf *pkts[4];
	for (uint8_t round = 0; round < 3; round++) {
		for (uint8_t i = 0; i < 4; i++)
			guestSend(pattern(60, static_cast<uint8_t>(round * 4 + i)),
				  5); /* 2 descs */
		ASSERT_EQ(dequeue(pkts, 4), 4);
		for (uint8_t i = 0; i < 4; i++) {
			EXPECT_EQ(flatten(pkts[i]),
				  pattern(60, static_cast<uint8_t>(round * 4 + i)));
			rte_pktmbuf_free(pkts[i]);
		}
		EXPECT_EQ(usedLens(1).size(), 4u) << "round " << int(round);
		if (GetParam()) {
			EXPECT_EQ(frontend_->packedQueue(1).usedDescsRead(), round + 1u);
			EXPECT_EQ(frontend_->packedQueue(1).inFlight(), 0u);
		}
	}
}
/** The port writes \a payload into the guest's RX buffers; returns what the guest sees. */
struct Received {
	virtio::NetHeader header;
	std::vector<uint8_t> data;
	unsigned buffers;
};

class NetPortRxTest : public NetPortTest
{
protected:
	/** Post \a n RX chains of \a size bytes each. */
	std::vector<uint64_t> postRx(unsigned n, uint32_t size)
	{
		std::vector<uint64_t> gpas;
		for (unsigned i = 0; i < n; i++) {
			uint64_t g = mem_->alloc(size, 64);
			BufferSpec spec{ g, size, true };
			addChain(0, std::span(&spec, 1));
			gpas.push_back(g);
		}
		return gpas;
	}
	/** Offer \a payload as an mbuf chain, retrying for a while when \a retry. */
	uint16_t send(const std::vector<uint8_t> &payload, bool retry = true,
		      const std::function<void(rte_mbuf *)> &setup = {})
	{
		rte_mbuf *m = rte_pktmbuf_alloc(EalEnvironment::pool);
		EXPECT_TRUE(m);
		/* Build it as a chain of 1000-byte segments, as a jumbo from a NIC would be. */
		rte_mbuf *seg = m;
		size_t off = 0;
		while (off < payload.size()) {
			size_t k = std::min<size_t>(1000, payload.size() - off);
			std::memcpy(rte_pktmbuf_mtod(seg, uint8_t *), payload.data() + off, k);
			seg->data_len = static_cast<uint16_t>(k);
			off += k;
			if (off < payload.size()) {
				seg->next = rte_pktmbuf_alloc(EalEnvironment::pool);
				seg = seg->next;
				m->nb_segs++;
			}
		}
		m->pkt_len = static_cast<uint32_t>(payload.size());
		if (setup)
			setup(m);
		uint16_t placed = 0;
		auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
		reader_->online();
		do {
			placed = port_->enqueueBurst(0, &m, 1);
			reader_->quiescent();
		} while (retry && placed == 0 && std::chrono::steady_clock::now() < deadline);
		reader_->offline();
		rte_pktmbuf_free(m);
		return placed;
	}
	Received collect(const std::vector<uint64_t> &gpas)
	{
		Received r{};
		auto used = usedLens(0);
		r.buffers = static_cast<unsigned>(used.size());
		for (size_t i = 0; i < used.size(); i++) {
			const uint8_t *p = mem_->hostPtr(gpas[i]);
			uint32_t len = used[i];
			if (i == 0) {
				std::memcpy(&r.header, p, sizeof(r.header));
				p += 12;
				len -= 12;
			}
			r.data.insert(r.data.end(), p, p + len);
		}
		return r;
	}
};

TEST_P(NetPortRxTest, MergeableFrameSpansBuffersWithNumBuffers)
{
	negotiate(true);
	auto gpas = postRx(8, 1024);
	auto payload = pattern(3000, 3);
	ASSERT_EQ(send(payload), 1);
	Received r = collect(gpas);
	EXPECT_EQ(r.buffers, 3u) << "12 + 3000 bytes in 1024-byte buffers";
	EXPECT_EQ(r.header.numBuffers, 3u);
	EXPECT_EQ(r.header.flags, 0u);
	EXPECT_EQ(r.data, payload);
}

TEST_P(NetPortRxTest, BurstOfMoreBuffersThanTheUsedBatchComesBackWhole)
{
	/*
	 * Four frames of 38 buffers each in one burst: more used descriptors than a packed ring
	 * holds back (128). The guest must still see each frame's buffers used together.
	 */
	negotiate(true);
	constexpr unsigned kFrames = 4;
	auto gpas = postRx(160, 160);
	std::vector<uint8_t> payloads[kFrames];
	rte_mbuf *pkts[kFrames];
	for (unsigned i = 0; i < kFrames; i++) {
		payloads[i] = pattern(6000, static_cast<uint8_t>(i));
		pkts[i] = rte_pktmbuf_alloc(EalEnvironment::pool);
		ASSERT_TRUE(pkts[i]);
		/* 6000 bytes: a chain of 1000-byte segments. */
		rte_mbuf *seg = pkts[i];
		for (size_t off = 0; off < 6000; off += 1000) {
			if (off > 0) {
				seg->next = rte_pktmbuf_alloc(EalEnvironment::pool);
				ASSERT_TRUE(seg->next);
				seg = seg->next;
				pkts[i]->nb_segs++;
			}
			std::memcpy(rte_pktmbuf_mtod(seg, uint8_t *), payloads[i].data() + off,
				    1000);
			seg->data_len = 1000;
		}
		pkts[i]->pkt_len = 6000;
	}
	reader_->online();
	EXPECT_EQ(port_->enqueueBurst(0, pkts, kFrames), kFrames);
	reader_->offline();
	rte_pktmbuf_free_bulk(pkts, kFrames);

	auto used = usedLens(0);
	ASSERT_EQ(used.size(), 38u * kFrames) << "(12 + 6000) / 160 bytes: 38 buffers a frame";
	for (unsigned f = 0; f < kFrames; f++) {
		std::vector<uint8_t> data;
		for (size_t i = 38 * f; i < 38 * (f + 1u); i++) {
			const uint8_t *p = mem_->hostPtr(gpas[i]);
			data.insert(data.end(), p, p + used[i]);
		}
		virtio::NetHeader header;
		std::memcpy(&header, data.data(), 12);
		EXPECT_EQ(header.numBuffers, 38u) << "frame " << f;
		EXPECT_EQ(std::vector<uint8_t>(data.begin() + 12, data.end()), payloads[f])
			<< "frame " << f;
	}
}

TEST_P(NetPortRxTest, WithoutMergeableOneBufferPerFrame)
{
	negotiate(false);
	auto gpas = postRx(2, 2048);
	auto payload = pattern(1500, 9);
	ASSERT_EQ(send(payload), 1);
	Received r = collect(gpas);
	EXPECT_EQ(r.buffers, 1u);
	EXPECT_EQ(r.header.numBuffers, 1u);
	EXPECT_EQ(r.data, payload);
}

TEST_P(NetPortRxTest, FrameLargerThanANonMergeableBufferIsDroppedAndTheBufferKept)
{
	negotiate(false);
	auto gpas = postRx(1, 1024);
	EXPECT_EQ(send(pattern(1500, 1), false), 0);
	EXPECT_EQ(port_->stats(0, false).dropTooLong.get(), 1u);
	auto payload = pattern(500, 2);
	ASSERT_EQ(send(payload), 1) << "the guest's buffer was given back for the next frame";
	EXPECT_EQ(collect(gpas).data, payload);
}

TEST_P(NetPortRxTest, DisabledRxRingGetsNothing)
{
	negotiate(true);
	auto gpas = postRx(1, 2048);
	ASSERT_TRUE(frontend_->setVringEnable(0, false));
	EXPECT_EQ(send(pattern(100, 1), false), 0);
	EXPECT_TRUE(usedLens(0).empty());
	ASSERT_TRUE(frontend_->setVringEnable(0, true));
	auto payload = pattern(100, 2);
	ASSERT_EQ(send(payload), 1);
	EXPECT_EQ(collect(gpas).data, payload);
}

TEST_P(NetPortRxTest, NoBufferMeansNothingWrittenAndCounted)
{
	negotiate(true);
	rte_mbuf *m = rte_pktmbuf_alloc(EalEnvironment::pool);
	ASSERT_TRUE(m);
	m->data_len = m->pkt_len = 64;
	reader_->online();
	EXPECT_EQ(port_->enqueueBurst(0, &m, 1), 0);
	reader_->offline();
	rte_pktmbuf_free(m);
	EXPECT_TRUE(usedLens(0).empty());
}

/*
 * A live migration: with VHOST_F_LOG_ALL acked and a log given (SET_LOG_BASE), every page the
 * port writes is marked (the RX buffers it fills, the used ring or descriptors it returns),
 * and nothing else; once LOG_ALL is cleared, nothing is marked.
 */
TEST_P(NetPortRxTest, MigrationLogsEveryPageThePortWrites)
{
	NegotiateOptions o;
	o.queues = 2;
	o.memory = { mem_.get() };
	o.packed = GetParam();
	o.features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kNetFMrgRxbuf) |
		     (o.packed ? virtio::bit(virtio::kFRingPacked) : 0);
	o.protocolFeatures |= protocol::mask(protocol::kLogShmfd);
	ASSERT_TRUE(frontend_->negotiateDpdk(o));
	/* One bit per 4 KiB page of guest-physical memory, up to the end of mem_. */
	const uint64_t logBytes = (kGpaBase + mem_->size()) / 4096 / 8 + 1;
	UniqueFd logFd(::memfd_create("dirty-log", MFD_CLOEXEC));
	ASSERT_TRUE(logFd.isValid());
	ASSERT_EQ(::ftruncate(logFd.get(), static_cast<off_t>(logBytes)), 0);
	auto logMap = MemoryMapping::mapShared(logFd.get(), logBytes, 0);
	ASSERT_TRUE(logMap);
	const uint8_t *bits = logMap->data();
	auto dirty = [&](uint64_t gpa) { return (bits[gpa / 4096 / 8] >> (gpa / 4096 % 8)) & 1; };
	auto clear = [&] { std::memset(logMap->data(), 0, logBytes); };
	auto dirtyPages = [&] {
		std::vector<uint64_t> pages;
		for (uint64_t page = 0; page < logBytes * 8; page++)
			if (dirty(page * 4096))
				pages.push_back(page);
		return pages;
	};
	ASSERT_TRUE(frontend_->setLogBase({ logBytes, 0 }, logFd.get()));
	uint64_t features = frontend_->features();
	ASSERT_TRUE(frontend_->setFeatures(features | virtio::bit(virtio::kVhostFLogAll)));

	const uint64_t rxRing =
		o.packed ? frontend_->packedQueue(0).descGpa() : frontend_->queue(0).usedGpa();
	const uint64_t txRing =
		o.packed ? frontend_->packedQueue(1).descGpa() : frontend_->queue(1).usedGpa();
	/* Pages apart: each buffer's bit says that buffer was written. */
	auto gpas = postRx(2, 3 * 4096);
	clear();
	ASSERT_EQ(send(pattern(100, 1)), 1);
	ASSERT_EQ(usedLens(0).size(), 1u);
	EXPECT_TRUE(dirty(gpas[0])) << "the RX buffer written is not logged";
	EXPECT_FALSE(dirty(gpas[1])) << "an RX buffer not written is logged";
	EXPECT_TRUE(dirty(rxRing)) << "the RX ring's used side is not logged";

	clear();
	guestSend(pattern(60, 2), 12);
	rte_mbuf *pkts[1];
	ASSERT_EQ(dequeue(pkts, 1), 1);
	rte_pktmbuf_free(pkts[0]);
	ASSERT_EQ(usedLens(1).size(), 1u);
	EXPECT_TRUE(dirty(txRing)) << "the TX ring's used side is not logged";
	/* Only the ring's device side: the guest's TX buffers are only read. */
	std::vector<std::pair<uint64_t, uint64_t>> written;
	if (o.packed)
		written = { { txRing, 16 * 256 },
			    { frontend_->packedQueue(1).deviceEventGpa(), 4 } };
	else
		written = { { txRing, 6 + 8 * 256 } };
	for (uint64_t page : dirtyPages()) {
		bool inRing = false;
		for (auto [gpa, len] : written)
			inRing |= page >= gpa / 4096 && page <= (gpa + len - 1) / 4096;
		EXPECT_TRUE(inRing) << "page " << page << " logged on the TX path";
	}

	/* The migration ends: LOG_ALL cleared, nothing more logged. */
	ASSERT_TRUE(frontend_->setFeatures(features));
	clear();
	ASSERT_EQ(send(pattern(100, 3)), 1);
	EXPECT_TRUE(dirtyPages().empty()) << "logged without LOG_ALL";
}

/* ---- vIOMMU ---- */

/*
 * VIRTIO_F_IOMMU_PLATFORM: ring and buffer addresses are I/O virtual, translated through the
 * IOTLB the front-end fills. The test front-end plays QEMU: it answers each miss that comes on
 * the back-end channel with an IOTLB update of the page. Its IOVAs: the rings at their
 * front-end addresses, the buffers at their guest-physical ones.
 */
class NetPortIommuTest : public NetPortRxTest
{
protected:
	void SetUp() override
	{
		iommu_ = true;
		NetPortRxTest::SetUp();
	}

	void negotiateIommu(bool iommu = true)
	{
		NegotiateOptions o;
		o.queues = 2;
		o.memory = { mem_.get() };
		o.packed = GetParam();
		o.features = virtio::bit(virtio::kFVersion1) |
			     (iommu ? virtio::bit(virtio::kFAccessPlatform) : 0) |
			     (o.packed ? virtio::bit(virtio::kFRingPacked) : 0);
		o.protocolFeatures |= protocol::mask(protocol::kBackendReq);
		ASSERT_TRUE(frontend_->negotiateDpdk(o));
		ASSERT_TRUE(frontend_->setBackendReqFd());
	}
	/** Send IOTLB_MSG and read its ack. \return EREMOTEIO when refused. */
	Result<void> iotlb(uint8_t type, uint64_t iova, uint64_t size, uint64_t uaddr,
			   uint8_t perm = kAccessReadWrite)
	{
		IotlbMsg msg{};
		msg.iova = iova;
		msg.size = size;
		msg.uaddr = uaddr;
		msg.perm = perm;
		msg.type = type;
		VUB_TRY(frontend_->sendRaw(static_cast<uint32_t>(FrontendRequest::IotlbMsg), &msg,
					   sizeof(msg), {}, kVersion | kFlagNeedReply));
		auto reply = frontend_->receiveReply();
		if (!reply)
			return reply.error();
		if ((*reply)->size() != sizeof(uint64_t) || (*reply)->payloadAs<uint64_t>() != 0)
			return Error{ EREMOTEIO, "IOTLB_MSG refused" };
		return {};
	}
	Result<void> mapRings()
	{
		return iotlb(iotlb::kUpdate, mem_->qva(), mem_->size(), mem_->qva());
	}
	/**
	 * Call \a step as an lcore polls until it says done, answering each IOTLB miss with its
	 * page meanwhile. \return the misses answered, -1 when not done within 3 s.
	 */
	int serveMisses(const std::function<bool()> &step)
	{
		int answered = 0;
		auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
		while (std::chrono::steady_clock::now() < deadline) {
			reader_->online();
			bool done = step();
			reader_->quiescent();
			reader_->offline();
			if (done)
				return answered;
			auto msg = frontend_->receiveBackendRequest(20);
			if (!msg)
				continue;
			EXPECT_EQ((*msg)->request(), static_cast<uint32_t>(BackendRequest::IotlbMsg));
			auto miss = (*msg)->payloadAs<IotlbMsg>();
			EXPECT_EQ(miss.type, iotlb::kMiss);
			uint64_t page = miss.iova & ~uint64_t{ 4095 };
			if (page - mem_->qva() < mem_->size()) {
				/* A ring's, asked for before mapRings() (no channel yet). */
				if (!iotlb(iotlb::kUpdate, page, 4096, page))
					return -1;
				continue;
			}
			EXPECT_TRUE(mem_->containsGpa(page))
				<< "a miss outside guest memory: 0x" << std::hex << miss.iova;
			lastMiss_ = miss;
			if (!iotlb(iotlb::kUpdate, page, 4096, mem_->gpaToQva(page)))
				return -1;
			answered++;
		}
		return -1;
	}
	/** One mbuf holding \a payload. */
	static rte_mbuf *mbufOf(const std::vector<uint8_t> &payload)
	{
		rte_mbuf *m = rte_pktmbuf_alloc(EalEnvironment::pool);
		if (!m)
			return nullptr;
		std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(payload.size())),
			    payload.data(), payload.size());
		return m;
	}

	IotlbMsg lastMiss_{};
};

TEST_P(NetPortIommuTest, FramesWaitForTheirTranslationsAndArriveWhole)
{
	negotiateIommu();
	ASSERT_TRUE(mapRings());

	/* Guest to port: the TX buffers are asked for, read-only, then the frame comes. */
	auto sent = pattern(100, 1);
	guestSend(sent, 12);
	rte_mbuf *in = nullptr;
	int misses = serveMisses(
		[&] { return port_->dequeueBurst(0, EalEnvironment::pool, &in, 1) == 1; });
	ASSERT_GE(misses, 1);
	EXPECT_EQ(lastMiss_.perm, kAccessRead);
	EXPECT_EQ(flatten(in), sent);
	rte_pktmbuf_free(in);
	EXPECT_EQ(usedLens(1).size(), 1u);

	/* Port to guest: the frame waits for its RX buffer's translation, it is not dropped. */
	const uint64_t rxGpa = mem_->alloc(4096, 4096); /* a page not mapped yet */
	BufferSpec rx{ rxGpa, 2048, true };
	addChain(0, std::span(&rx, 1));
	auto back = pattern(200, 2);
	rte_mbuf *out = mbufOf(back);
	ASSERT_TRUE(out);
	uint16_t waited = 0;
	misses = serveMisses([&] {
		uint16_t waiting = 0;
		uint16_t placed = port_->enqueueBurst(0, &out, 1, &waiting);
		waited += waiting;
		EXPECT_EQ(placed + waiting, 1);
		return placed == 1;
	});
	rte_pktmbuf_free(out);
	ASSERT_GE(misses, 1);
	EXPECT_GE(waited, 1u);
	EXPECT_EQ(lastMiss_.perm, kAccessWrite);
	EXPECT_EQ(usedLens(0), (std::vector<uint32_t>{ 12 + 200 }));
	EXPECT_EQ(std::memcmp(mem_->hostPtr(rxGpa) + 12, back.data(), back.size()), 0);

	/*
	 * The guest flushes its whole IOTLB (Linux's lazy mode does, QEMU passes it on): the
	 * rings run on, the next frame's buffers are asked for again.
	 */
	ASSERT_TRUE(iotlb(iotlb::kInvalidate, 0, UINT64_MAX, 0));
	guestSend(pattern(60, 3), 12);
	misses = serveMisses(
		[&] { return port_->dequeueBurst(0, EalEnvironment::pool, &in, 1) == 1; });
	ASSERT_GE(misses, 1);
	rte_pktmbuf_free(in);
}

TEST_P(NetPortIommuTest, BadIotlbMessagesAreRefusedAndTheRingsRunOn)
{
	negotiateIommu();
	ASSERT_TRUE(mapRings());
	ASSERT_TRUE(iotlb(iotlb::kUpdate, mem_->gpa(), mem_->size(), mem_->qva()));
	using iotlb::kUpdate;
	EXPECT_FALSE(iotlb(kUpdate, 0x40000000, 0, mem_->qva())) << "size 0";
	EXPECT_FALSE(iotlb(kUpdate, UINT64_MAX - 4095, 8192, mem_->qva())) << "wraps";
	EXPECT_FALSE(iotlb(kUpdate, 0x40000000, 4096, mem_->qva(), 0)) << "no access";
	EXPECT_FALSE(iotlb(kUpdate, 0x40000000, 4096, mem_->qva(), 7)) << "unknown access bits";
	EXPECT_FALSE(iotlb(iotlb::kMiss, 0x40000000, 4096, mem_->qva())) << "a miss, sent to us";
	EXPECT_FALSE(iotlb(9, 0x40000000, 4096, mem_->qva())) << "no such type";
	/* An update outside guest memory is taken, and translates nothing. */
	EXPECT_TRUE(iotlb(kUpdate, 0x40000000, 4096, 0x10));
	guestSend(pattern(60, 1), 12);
	rte_mbuf *in = nullptr;
	ASSERT_EQ(dequeue(&in, 1), 1);
	rte_pktmbuf_free(in);
}

TEST_P(NetPortIommuTest, AMissNeverAnsweredStallsOnlyItsChainAndIsAskedOnce)
{
	negotiateIommu();
	ASSERT_TRUE(mapRings());
	/* The RX buffers are mapped, the TX ones never will be. */
	const uint64_t rxGpa = mem_->alloc(4096, 4096);
	ASSERT_TRUE(iotlb(iotlb::kUpdate, rxGpa, 4096, mem_->gpaToQva(rxGpa)));
	BufferSpec rx{ rxGpa, 2048, true };
	addChain(0, std::span(&rx, 1));
	guestSend(pattern(60, 1), 12);
	rte_mbuf *in = nullptr;
	reader_->online();
	for (int poll = 0; poll < 10000; poll++) {
		ASSERT_EQ(port_->dequeueBurst(0, EalEnvironment::pool, &in, 1), 0);
		reader_->quiescent();
	}
	reader_->offline();
	int misses = 0;
	while (auto msg = frontend_->receiveBackendRequest(100)) {
		/* Not the rings', which may have been asked for before the channel was there. */
		if (mem_->containsGpa((*msg)->payloadAs<IotlbMsg>().iova))
			misses++;
	}
	/* The walk stops at the first buffer that misses: that one is asked for, once. */
	EXPECT_EQ(misses, 1) << "asked for once, not once a poll";
	EXPECT_TRUE(usedLens(1).empty()) << "the chain stays the guest's";
	/* The other ring of the pair works on. */
	auto back = pattern(80, 2);
	EXPECT_EQ(send(back), 1);
	EXPECT_EQ(usedLens(0), (std::vector<uint32_t>{ 12 + 80 }));
}

TEST_P(NetPortIommuTest, AFloodOfIotlbUpdatesStaysBounded)
{
	negotiateIommu();
	ASSERT_TRUE(mapRings());
	/* More pages than the IOTLB keeps: the oldest go, each costs a miss again. */
	const uint64_t pages = Iotlb::kMaxEntries + 1000;
	for (uint64_t p = 0; p < pages; p++)
		ASSERT_TRUE(iotlb(iotlb::kUpdate, 0x100000000 + p * 4096, 4096,
				  mem_->qva() + (p % 16) * 4096));
	guestSend(pattern(60, 1), 12);
	rte_mbuf *in = nullptr;
	ASSERT_GE(serveMisses(
			  [&] { return port_->dequeueBurst(0, EalEnvironment::pool, &in, 1) == 1; }),
		  1);
	rte_pktmbuf_free(in);
}

TEST_P(NetPortIommuTest, IotlbMessagesWithoutIommuPlatformAreRefused)
{
	negotiateIommu(false);
	EXPECT_FALSE(iotlb(iotlb::kUpdate, mem_->qva(), mem_->size(), mem_->qva()));
	/* Addresses stay what they were: guest-physical buffers work without any IOTLB. */
	guestSend(pattern(60, 1), 12);
	rte_mbuf *in = nullptr;
	ASSERT_EQ(dequeue(&in, 1), 1);
	rte_pktmbuf_free(in);
}

/* ---- Offloads ---- */

/* Internet checksum arithmetic, written out here so that the test does not trust DPDK's. */
uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum = 0)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += uint32_t{ p[i] } << 8 | p[i + 1];
	if (n % 2)
		sum += uint32_t{ p[n - 1] } << 8;
	return sum;
}

uint16_t foldSum(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return static_cast<uint16_t>(sum);
}

constexpr uint32_t kL2 = 14;

struct PacketSpec {
	bool v6 = false;
	bool udp = false;
	uint32_t payload = 100;
	uint32_t seq = 1000;
	uint8_t tcpFlags = 0x19; /* FIN, PSH, ACK: the flags segmentation must split */
};

uint32_t l3Bytes(bool v6)
{
	return v6 ? 40 : 20;
}

uint32_t l4Bytes(bool udp)
{
	return udp ? 8 : 20;
}

/** The pseudo-header sum of the L4 packet of \a frame, \a l4Len bytes long. */
uint32_t pseudoSum(const std::vector<uint8_t> &frame, bool v6, uint8_t proto, uint32_t l4Len)
{
	const uint8_t *ip = frame.data() + kL2;
	uint32_t sum = v6 ? sum16(ip + 8, 32) : sum16(ip + 12, 8);
	return sum + proto + (l4Len & 0xffff) + (l4Len >> 16);
}

/**
 * An Ethernet frame carrying TCP or UDP over IPv4 or IPv6, with its IPv4 header checksum set
 * and its L4 checksum field holding the pseudo-header sum (a partial checksum, as Linux and
 * DPDK leave it for the device to finish).
 */
std::vector<uint8_t> makePacket(const PacketSpec &spec)
{
	uint32_t l3 = l3Bytes(spec.v6), l4 = l4Bytes(spec.udp);
	std::vector<uint8_t> f(kL2 + l3 + l4 + spec.payload, 0);
	for (int i = 0; i < 12; i++)
		f[i] = static_cast<uint8_t>(0x10 + i);
	f[12] = spec.v6 ? 0x86 : 0x08;
	f[13] = spec.v6 ? 0xdd : 0x00;
	uint8_t *ip = f.data() + kL2;
	uint8_t proto = spec.udp ? 17 : 6;
	uint32_t l4Len = l4 + spec.payload;
	if (spec.v6) {
		ip[0] = 0x60;
		ip[4] = static_cast<uint8_t>(l4Len >> 8);
		ip[5] = static_cast<uint8_t>(l4Len);
		ip[6] = proto;
		ip[7] = 64;
		for (int i = 0; i < 32; i++)
			ip[8 + i] = static_cast<uint8_t>(0xa0 + i);
	} else {
		ip[0] = 0x45;
		uint32_t total = l3 + l4Len;
		ip[2] = static_cast<uint8_t>(total >> 8);
		ip[3] = static_cast<uint8_t>(total);
		ip[4] = 0x12;
		ip[5] = 0x34;
		ip[8] = 64;
		ip[9] = proto;
		for (int i = 0; i < 8; i++)
			ip[12 + i] = static_cast<uint8_t>(10 + i);
		uint16_t c = static_cast<uint16_t>(~foldSum(sum16(ip, 20)));
		ip[10] = static_cast<uint8_t>(c >> 8);
		ip[11] = static_cast<uint8_t>(c);
	}
	uint8_t *l4p = ip + l3;
	l4p[0] = 0x30;
	l4p[1] = 0x39;
	l4p[2] = 0x00;
	l4p[3] = 0x50;
	size_t field = spec.udp ? 6 : 16;
	if (spec.udp) {
		l4p[4] = static_cast<uint8_t>(l4Len >> 8);
		l4p[5] = static_cast<uint8_t>(l4Len);
	} else {
		for (int i = 0; i < 4; i++)
			l4p[4 + i] = static_cast<uint8_t>(spec.seq >> (24 - 8 * i));
		l4p[12] = 0x50;
		l4p[13] = spec.tcpFlags;
		l4p[14] = 0xff;
	}
	for (uint32_t i = 0; i < spec.payload; i++)
		l4p[l4 + i] = static_cast<uint8_t>(i * 7 + 3);
	uint16_t partial = foldSum(pseudoSum(f, spec.v6, proto, l4Len));
	l4p[field] = static_cast<uint8_t>(partial >> 8);
	l4p[field + 1] = static_cast<uint8_t>(partial);
	return f;
}

/** Whether the L4 checksum of \a frame (no VLAN, no IPv6 extension headers) is complete and right.
 */
bool l4ChecksumValid(const std::vector<uint8_t> &frame, bool v6, bool udp)
{
	uint32_t l4Start = kL2 + l3Bytes(v6);
	uint32_t l4Len = static_cast<uint32_t>(frame.size()) - l4Start;
	uint32_t sum = pseudoSum(frame, v6, udp ? 17 : 6, l4Len);
	return foldSum(sum16(frame.data() + l4Start, l4Len, sum)) == 0xffff;
}

bool ipv4ChecksumValid(const std::vector<uint8_t> &frame)
{
	return foldSum(sum16(frame.data() + kL2, 20)) == 0xffff;
}

uint16_t be16At(const std::vector<uint8_t> &f, size_t off)
{
	return static_cast<uint16_t>(f[off] << 8 | f[off + 1]);
}

uint32_t be32At(const std::vector<uint8_t> &f, size_t off)
{
	return uint32_t{ be16At(f, off) } << 16 | be16At(f, off + 2);
}

/** Sets an mbuf's offload requests as a DPDK application would. */
std::function<void(rte_mbuf *)> requestOffload(bool v6, bool udp, uint16_t mss = 0)
{
	return [=](rte_mbuf *m) {
		m->l2_len = kL2;
		m->l3_len = l3Bytes(v6);
		m->l4_len = l4Bytes(udp);
		m->ol_flags |= v6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4;
		m->ol_flags |= udp ? RTE_MBUF_F_TX_UDP_CKSUM : RTE_MBUF_F_TX_TCP_CKSUM;
		if (mss) {
			m->ol_flags |= RTE_MBUF_F_TX_TCP_SEG;
			m->tso_segsz = mss;
		}
	};
}

virtio::NetHeader checksumHeader(bool v6, bool udp)
{
	virtio::NetHeader h{};
	h.flags = virtio::kNetHdrFNeedsCsum;
	h.csumStart = static_cast<uint16_t>(kL2 + l3Bytes(v6));
	h.csumOffset = udp ? 6 : 16;
	return h;
}

class NetPortOffloadTest : public NetPortRxTest
{
protected:
	/** Every used RX buffer as one frame (buffers big enough for one each): header, data. */
	std::vector<Received> collectFrames(const std::vector<uint64_t> &gpas)
	{
		std::vector<Received> frames;
		auto used = usedLens(0);
		for (size_t i = 0; i < used.size(); i++) {
			Received r{};
			const uint8_t *p = mem_->hostPtr(gpas[i]);
			std::memcpy(&r.header, p, sizeof(r.header));
			r.data.assign(p + 12, p + used[i]);
			r.buffers = 1;
			frames.push_back(std::move(r));
		}
		return frames;
	}

	/** Checks that \a frames are \a original cut into \a mss segments, each correct. */
	void expectSegments(const std::vector<Received> &frames,
			    const std::vector<uint8_t> &original, bool v6, uint32_t mss)
	{
		uint32_t headers = kL2 + l3Bytes(v6) + 20;
		uint32_t payload = static_cast<uint32_t>(original.size()) - headers;
		size_t want = (payload + mss - 1) / mss;
		ASSERT_EQ(frames.size(), want);
		std::vector<uint8_t> joined;
		for (size_t i = 0; i < frames.size(); i++) {
			const std::vector<uint8_t> &f = frames[i].data;
			SCOPED_TRACE("segment " + std::to_string(i));
			EXPECT_EQ(frames[i].header.flags, 0u);
			EXPECT_EQ(frames[i].header.gsoType, 0u);
			ASSERT_GE(f.size(), headers);
			uint32_t len = static_cast<uint32_t>(f.size()) - headers;
			EXPECT_EQ(len, std::min(mss, payload - static_cast<uint32_t>(i) * mss));
			if (v6) {
				EXPECT_EQ(be16At(f, kL2 + 4), 20 + len);
			} else {
				EXPECT_EQ(be16At(f, kL2 + 2), 40 + len);
				EXPECT_EQ(be16At(f, kL2 + 4), 0x1234 + i) << "IPv4 id";
				EXPECT_TRUE(ipv4ChecksumValid(f));
			}
			uint32_t tcp = kL2 + l3Bytes(v6);
			EXPECT_EQ(be32At(f, tcp + 4), 1000 + i * mss) << "sequence number";
			bool last = i + 1 == frames.size();
			EXPECT_EQ(f[tcp + 13], last ? 0x19 : 0x10)
				<< "FIN and PSH only on the last";
			EXPECT_TRUE(l4ChecksumValid(f, v6, false));
			joined.insert(joined.end(), f.begin() + headers, f.end());
		}
		EXPECT_TRUE(std::equal(joined.begin(), joined.end(), original.begin() + headers,
				       original.end()))
			<< "the payloads joined are not the original payload";
	}
};

TEST_P(NetPortOffloadTest, GuestChecksumRequestBecomesMbufFlags)
{
	negotiate(true, virtio::bit(virtio::kNetFCsum));
	auto pkt = makePacket({});
	guestSend(pkt, 12, checksumHeader(false, false));
	rte_mbuf *m;
	ASSERT_EQ(dequeue(&m, 1), 1);
	EXPECT_EQ(m->ol_flags & RTE_MBUF_F_TX_L4_MASK, RTE_MBUF_F_TX_TCP_CKSUM);
	EXPECT_TRUE(m->ol_flags & RTE_MBUF_F_TX_IPV4);
	EXPECT_EQ(m->l2_len, 14u);
	EXPECT_EQ(m->l3_len, 20u);
	EXPECT_EQ(flatten(m), pkt) << "the bytes are left for whoever finishes the checksum";
	rte_pktmbuf_free(m);
}

TEST_P(NetPortOffloadTest, ChecksumRequestOverAnotherProtocolIsFinishedAtOnce)
{
	negotiate(true, virtio::bit(virtio::kNetFCsum));
	auto pkt = makePacket({});
	pkt[kL2 + 9] = 47;			     /* GRE: no mbuf flag can carry its checksum */
	pkt[kL2 + 20 + 16] = pkt[kL2 + 20 + 17] = 0; /* and it has no pseudo-header */
	virtio::NetHeader h{};
	h.flags = virtio::kNetHdrFNeedsCsum;
	h.csumStart = kL2 + 20;
	h.csumOffset = 16;
	guestSend(pkt, 12, h);
	rte_mbuf *m;
	ASSERT_EQ(dequeue(&m, 1), 1);
	EXPECT_EQ(m->ol_flags & RTE_MBUF_F_TX_L4_MASK, 0u);
	auto got = flatten(m);
	EXPECT_EQ(foldSum(sum16(got.data() + kL2 + 20, got.size() - kL2 - 20)), 0xffff);
	rte_pktmbuf_free(m);
}

TEST_P(NetPortOffloadTest, UnofferedGsoTypeIsDroppedAndCounted)
{
	negotiate(true, virtio::bit(virtio::kNetFCsum) | virtio::bit(virtio::kNetFHostTso4));
	virtio::NetHeader udpGso = checksumHeader(false, true);
	udpGso.gsoType = virtio::kNetHdrGsoUdp;
	udpGso.gsoSize = 1000;
	guestSend(makePacket({ .udp = true, .payload = 3000 }), 12, udpGso);
	virtio::NetHeader noCsum{};
	noCsum.gsoType = virtio::kNetHdrGsoTcpv4;
	noCsum.gsoSize = 1000;
	guestSend(makePacket({ .payload = 3000 }), 12, noCsum);
	guestSend(makePacket({}), 12);
	rte_mbuf *m;
	ASSERT_EQ(dequeue(&m, 1), 1);
	EXPECT_EQ(m->pkt_len, makePacket({}).size()) << "the good packet after the bad ones";
	rte_pktmbuf_free(m);
	EXPECT_EQ(port_->stats(0, true).dropBadOffload.get(), 2u);
	EXPECT_EQ(usedLens(1).size(), 3u) << "every chain goes back to the guest";
}

TEST_P(NetPortOffloadTest, ChecksumIsFinishedForAGuestWithoutGuestCsum)
{
	negotiate(true);
	for (bool v6 : { false, true }) {
		for (bool udp : { false, true }) {
			SCOPED_TRACE(std::string(v6 ? "IPv6 " : "IPv4 ") + (udp ? "UDP" : "TCP"));
			auto gpas = postRx(1, 2048);
			auto pkt = makePacket({ .v6 = v6, .udp = udp, .payload = 1200 });
			ASSERT_EQ(send(pkt, true, requestOffload(v6, udp)), 1);
			Received r = collect(gpas);
			EXPECT_EQ(r.header.flags, 0u);
			ASSERT_EQ(r.data.size(), pkt.size());
			EXPECT_TRUE(l4ChecksumValid(r.data, v6, udp));
			size_t field = kL2 + l3Bytes(v6) + (udp ? 6 : 16);
			r.data[field] = pkt[field];
			r.data[field + 1] = pkt[field + 1];
			EXPECT_EQ(r.data, pkt) << "only the checksum changed";
		}
	}
}

TEST_P(NetPortOffloadTest, ChecksumRequestPassesToAGuestWithGuestCsum)
{
	negotiate(true, virtio::bit(virtio::kNetFGuestCsum));
	auto gpas = postRx(1, 2048);
	auto pkt = makePacket({ .payload = 1200 });
	ASSERT_EQ(send(pkt, true, requestOffload(false, false)), 1);
	Received r = collect(gpas);
	EXPECT_EQ(r.header.flags, virtio::kNetHdrFNeedsCsum);
	EXPECT_EQ(r.header.csumStart, kL2 + 20);
	EXPECT_EQ(r.header.csumOffset, 16u);
	EXPECT_EQ(r.data, pkt);
}

TEST_P(NetPortOffloadTest, SegmentationIsDoneForAGuestWithoutGuestTso)
{
	negotiate(true, virtio::bit(virtio::kNetFGuestCsum));
	for (bool v6 : { false, true }) {
		SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
		/* Exactly the 7 buffers it takes: the next round must not find one left over. */
		auto gpas = postRx(7, 2048);
		auto pkt = makePacket({ .v6 = v6, .payload = 10000 });
		ASSERT_EQ(send(pkt, true, requestOffload(v6, false, 1448)), 1);
		expectSegments(collectFrames(gpas), pkt, v6, 1448);
	}
}

TEST_P(NetPortOffloadTest, SegmentationRequestPassesToAGuestWithGuestTso)
{
	negotiate(true, virtio::bit(virtio::kNetFGuestCsum) | virtio::bit(virtio::kNetFGuestTso4));
	auto gpas = postRx(8, 2048);
	auto pkt = makePacket({ .payload = 10000 });
	ASSERT_EQ(send(pkt, true, requestOffload(false, false, 1448)), 1);
	Received r = collect(gpas);
	EXPECT_EQ(r.header.flags, virtio::kNetHdrFNeedsCsum);
	EXPECT_EQ(r.header.gsoType, virtio::kNetHdrGsoTcpv4);
	EXPECT_EQ(r.header.gsoSize, 1448u);
	EXPECT_EQ(r.header.hdrLen, kL2 + 40);
	EXPECT_EQ(r.header.csumStart, kL2 + 20);
	EXPECT_EQ(r.buffers, 5u) << "12 + 10054 bytes in 2048-byte buffers";
	EXPECT_EQ(r.data, pkt);
}

TEST_P(NetPortOffloadTest, GuestGsoPacketComesBackSegmentedToAGuestWithoutGuestTso)
{
	/* One guest's 64 KiB-style send, switched to a guest that takes only MTU frames. */
	negotiate(true, virtio::bit(virtio::kNetFCsum) | virtio::bit(virtio::kNetFHostTso6));
	auto pkt = makePacket({ .v6 = true, .payload = 5000 });
	virtio::NetHeader h = checksumHeader(true, false);
	h.gsoType = virtio::kNetHdrGsoTcpv6;
	h.gsoSize = 1000;
	h.hdrLen = kL2 + 60;
	guestSend(pkt, 12, h);
	rte_mbuf *m;
	ASSERT_EQ(dequeue(&m, 1), 1);
	EXPECT_TRUE(m->ol_flags & RTE_MBUF_F_TX_TCP_SEG);
	EXPECT_EQ(m->tso_segsz, 1000u);
	EXPECT_EQ(m->l4_len, 20u);
	auto gpas = postRx(8, 2048);
	reader_->online();
	EXPECT_EQ(port_->enqueueBurst(0, &m, 1), 1);
	reader_->offline();
	rte_pktmbuf_free(m);
	expectSegments(collectFrames(gpas), pkt, true, 1000);
}

std::string ringName(const ::testing::TestParamInfo<bool> &info)
{
	return info.param ? "Packed" : "Split";
}

INSTANTIATE_TEST_SUITE_P(Rings, NetPortTest, ::testing::Bool(), ringName);
INSTANTIATE_TEST_SUITE_P(Rings, NetPortIommuTest, ::testing::Bool(), ringName);
INSTANTIATE_TEST_SUITE_P(Rings, NetPortRxTest, ::testing::Bool(), ringName);
INSTANTIATE_TEST_SUITE_P(Rings, NetPortOffloadTest, ::testing::Bool(), ringName);

} /* namespace */

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	::testing::AddGlobalTestEnvironment(new EalEnvironment);
	return RUN_ALL_TESTS();
}
