/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhost-user net port's data path, bytes compared: the test front-end plays the guest,
 * the test thread plays the switch's lcore (dequeueBurst / enqueueBurst), under a DPDK EAL
 * with --no-huge so it runs anywhere.
 */
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <gtest/gtest.h>

#include "test_frontend.h"
#include "vhost_net_port.h"
#include "vub/base/rcu.h"
#include "vub/vhost/daemon.h"
#include "vub/virtio/net_header.h"

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
		const char *args[] = { "net-port-test", "--no-huge", "-m", "256", "--no-pci",
				       "--no-telemetry", "--log-level=error", prefix.c_str() };
		int argc = sizeof(args) / sizeof(args[0]);
		ok = rte_eal_init(argc, const_cast<char **>(args)) >= 0;
		if (ok)
			pool = rte_pktmbuf_pool_create("net_test", 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
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
		port_ = std::make_shared<VhostNetPort>(1);
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

	void negotiate(bool mergeable)
	{
		NegotiateOptions o;
		o.queues = 2;
		o.memory = { mem_.get() };
		o.packed = GetParam();
		o.features = virtio::bit(virtio::kFVersion1) |
			     (mergeable ? virtio::bit(virtio::kNetFMrgRxbuf) : 0) |
			     (o.packed ? virtio::bit(virtio::kFRingPacked) : 0);
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
	void guestSend(const std::vector<uint8_t> &payload, uint32_t split)
	{
		std::vector<uint8_t> frame(12, 0);
		frame.insert(frame.end(), payload.begin(), payload.end());
		uint64_t a = mem_->alloc(split, 16), b = mem_->alloc(frame.size() - split, 16);
		mem_->write(a, frame.data(), split);
		mem_->write(b, frame.data() + split, frame.size() - split);
		BufferSpec specs[] = { { a, split, false }, { b, static_cast<uint32_t>(frame.size() - split), false } };
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
	uint16_t send(const std::vector<uint8_t> &payload, bool retry = true)
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

std::string ringName(const ::testing::TestParamInfo<bool> &info)
{
	return info.param ? "Packed" : "Split";
}

INSTANTIATE_TEST_SUITE_P(Rings, NetPortTest, ::testing::Bool(), ringName);
INSTANTIATE_TEST_SUITE_P(Rings, NetPortRxTest, ::testing::Bool(), ringName);

} /* namespace */

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	::testing::AddGlobalTestEnvironment(new EalEnvironment);
	return RUN_ALL_TESTS();
}
