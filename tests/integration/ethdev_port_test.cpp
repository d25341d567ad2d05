/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DPDK ethdev port on virtual devices, under an EAL with --no-huge --no-shconf so that it
 * runs anywhere, as any user (DPDK 22.11 refuses --in-memory with --no-huge: "--legacy-mem is
 * not compatible with --in-memory"; --no-shconf is the part of --in-memory that leaves no
 * files): net_ring (hot-plugged; its vdev form loops tx back into rx), net_null (two queues; one
 * probed by the EAL from --vdev), net_tap where the user may create interfaces, and the
 * refusals.
 */
#include "ethdev_port.h"

#include <net/if.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <gtest/gtest.h>

using vub::net::EthdevPort;
using vub::net::EthdevPortOptions;

namespace {

constexpr unsigned kPoolSize = 4095;

/** One EAL and one mempool for the whole program. */
class EalEnvironment : public ::testing::Environment
{
public:
	void SetUp() override
	{
		std::string prefix = "--file-prefix=vub-ethdev-test-" + std::to_string(getpid());
		const char *args[] = { "ethdev-port-test",
				       "--no-huge",
				       "-m",
				       "512",
				       "--no-pci",
				       "--no-shconf",
				       "--no-telemetry",
				       "--log-level=*:warning",
				       "--vdev=net_null1",
				       prefix.c_str() };
		int argc = sizeof(args) / sizeof(args[0]);
		if (rte_eal_init(argc, const_cast<char **>(args)) < 0) {
			reason = std::string("rte_eal_init: ") + rte_strerror(rte_errno);
			return;
		}
		ok = true;
		pool = rte_pktmbuf_pool_create("ethdev_test", kPoolSize, 0, 0,
					       RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
		if (pool == nullptr)
			reason = std::string("rte_pktmbuf_pool_create: ") + rte_strerror(rte_errno);
	}
	void TearDown() override
	{
		if (ok)
			rte_eal_cleanup();
	}
	static inline bool ok = false;
	static inline std::string reason = "EAL not started";
	static inline rte_mempool *pool = nullptr;
};

class EthdevPortTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		if (!EalEnvironment::ok || EalEnvironment::pool == nullptr)
			GTEST_SKIP() << "DPDK EAL with --no-huge: " << EalEnvironment::reason;
		pool_ = EalEnvironment::pool;
		availBefore_ = rte_eth_dev_count_avail();
		totalBefore_ = rte_eth_dev_count_total();
		mbufsBefore_ = rte_mempool_avail_count(pool_);
	}
	void TearDown() override
	{
		if (pool_ == nullptr)
			return;
		/* Every port is gone, every mbuf back. */
		EXPECT_EQ(rte_eth_dev_count_avail(), availBefore_);
		EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_);
		EXPECT_EQ(rte_mempool_avail_count(pool_), mbufsBefore_);
	}

	static bool portNamed(const char *name)
	{
		uint16_t id;
		return rte_eth_dev_get_port_by_name(name, &id) == 0;
	}

	/** A packet of \a len bytes whose bytes depend on \a seed. */
	rte_mbuf *packet(unsigned len, unsigned seed)
	{
		rte_mbuf *m = rte_pktmbuf_alloc(pool_);
		if (m == nullptr)
			return nullptr;
		auto *p = reinterpret_cast<uint8_t *>(
			rte_pktmbuf_append(m, static_cast<uint16_t>(len)));
		if (p == nullptr) {
			rte_pktmbuf_free(m);
			return nullptr;
		}
		for (unsigned i = 0; i < len; i++)
			p[i] = static_cast<uint8_t>(i * 7 + seed * 13);
		return m;
	}

	static bool hasBytes(const rte_mbuf *m, unsigned len, unsigned seed)
	{
		if (rte_pktmbuf_pkt_len(m) != len || m->nb_segs != 1)
			return false;
		const auto *p = rte_pktmbuf_mtod(m, const uint8_t *);
		for (unsigned i = 0; i < len; i++) {
			if (p[i] != static_cast<uint8_t>(i * 7 + seed * 13))
				return false;
		}
		return true;
	}

	rte_mempool *pool_ = nullptr;
	uint16_t availBefore_ = 0;
	uint16_t totalBefore_ = 0;
	unsigned mbufsBefore_ = 0;
};

TEST_F(EthdevPortTest, RingLoopsTxBackToRx)
{
	EthdevPortOptions o;
	o.devargs = "net_ring0";
	std::string why;
	auto created = EthdevPort::create(o, pool_, &why);
	ASSERT_TRUE(created) << why;
	auto &port = *created;
	EXPECT_TRUE(port->hotPlugged());
	EXPECT_TRUE(portNamed("net_ring0"));
	EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_ + 1);
	/* Owned by vub: no longer listed as available. */
	EXPECT_EQ(rte_eth_dev_count_avail(), availBefore_);
	EXPECT_STREQ(port->kind(), "ethdev");
	EXPECT_EQ(port->rxQueues(), 1u);
	EXPECT_EQ(port->txQueues(), 1u);
	EXPECT_TRUE(port->linkUp());
	const std::string line = port->describe();
	EXPECT_NE(line.find("net_ring0"), std::string::npos) << line;
	EXPECT_NE(line.find("port " + std::to_string(port->portId())), std::string::npos) << line;

	const unsigned lens[] = { 60, 64, 128, 511, 1000, 1514, 2000, 42 };
	constexpr uint16_t kCount = sizeof(lens) / sizeof(lens[0]);
	rte_mbuf *tx[kCount];
	uint64_t bytes = 0;
	for (unsigned i = 0; i < kCount; i++) {
		tx[i] = packet(lens[i], i);
		ASSERT_NE(tx[i], nullptr);
		bytes += lens[i];
	}
	ASSERT_EQ(port->txBurst(0, tx, kCount), kCount);

	rte_mbuf *rx[2 * kCount] = {};
	uint16_t got = port->rxBurst(0, nullptr, rx, 2 * kCount);
	ASSERT_EQ(got, kCount);
	for (unsigned i = 0; i < got; i++)
		EXPECT_TRUE(hasBytes(rx[i], lens[i], i)) << "packet " << i;
	rte_pktmbuf_free_bulk(rx, got);
	EXPECT_EQ(port->rxBurst(0, nullptr, rx, 2 * kCount), 0);

	auto s = port->stats();
	EXPECT_EQ(s.rxPackets, kCount);
	EXPECT_EQ(s.txPackets, kCount);
	/* net_ring of DPDK 22.11 counts packets only: bytes are 0 there, exact elsewhere. */
	if (s.rxBytes != 0 || s.txBytes != 0) {
		EXPECT_EQ(s.rxBytes, bytes);
		EXPECT_EQ(s.txBytes, bytes);
	}
	EXPECT_EQ(s.rxMissed + s.rxErrors + s.rxNoMbuf + s.txErrors, 0u);
	std::printf("  %s\n  stats: rx %" PRIu64 " packets %" PRIu64 " bytes, tx %" PRIu64
		    " packets %" PRIu64 " bytes\n",
		    port->describe().c_str(), s.rxPackets, s.rxBytes, s.txPackets, s.txBytes);

	bool goodPackets = false;
	for (const auto &[name, value] : port->xstats()) {
		if (name == "rx_good_packets") {
			goodPackets = true;
			EXPECT_EQ(value, kCount);
		}
	}
	EXPECT_TRUE(goodPackets);
}

TEST_F(EthdevPortTest, NullPortRunsTwoQueues)
{
	EthdevPortOptions o;
	o.devargs = "net_null0";
	o.queues = 2;
	o.rxDescriptors = 256;
	o.txDescriptors = 256;
	std::string why;
	auto created = EthdevPort::create(o, pool_, &why);
	ASSERT_TRUE(created) << why;
	auto &port = *created;
	EXPECT_TRUE(port->hotPlugged());
	EXPECT_EQ(port->rxQueues(), 2u);
	EXPECT_EQ(port->txQueues(), 2u);
	EXPECT_NE(port->describe().find("2 rx queues x 256 descriptors"), std::string::npos)
		<< port->describe();

	rte_mbuf *pkts[32];
	uint64_t received = 0;
	for (unsigned q = 0; q < 2; q++) {
		/* net_null makes up packets from the rx queue's pool, and swallows what it gets. */
		uint16_t got = port->rxBurst(q, nullptr, pkts, 32);
		EXPECT_EQ(got, 32);
		received += got;
		EXPECT_EQ(port->txBurst(q, pkts, got), got);
	}
	auto s = port->stats();
	EXPECT_EQ(s.rxPackets, received);
	EXPECT_EQ(s.txPackets, received);
}

TEST_F(EthdevPortTest, NullPortTakesMoreTxQueues)
{
	EthdevPortOptions o;
	o.devargs = "net_null0";
	o.queues = 2;
	o.txQueues = 3;
	std::string why;
	auto created = EthdevPort::create(o, pool_, &why);
	ASSERT_TRUE(created) << why;
	EXPECT_EQ((*created)->rxQueues(), 2u);
	EXPECT_EQ((*created)->txQueues(), 3u);
	rte_mbuf *m = packet(64, 1);
	ASSERT_NE(m, nullptr);
	EXPECT_EQ((*created)->txBurst(2, &m, 1), 1);
}

TEST_F(EthdevPortTest, EalProbedPortIsFoundAndKept)
{
	uint16_t id;
	ASSERT_EQ(rte_eth_dev_get_port_by_name("net_null1", &id), 0) << "--vdev=net_null1";
	for (int round = 0; round < 2; round++) {
		EthdevPortOptions o;
		o.devargs = "net_null1";
		std::string why;
		auto created = EthdevPort::create(o, pool_, &why);
		ASSERT_TRUE(created) << why;
		EXPECT_EQ((*created)->portId(), id);
		EXPECT_FALSE((*created)->hotPlugged());
		EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_);

		/* Owned: a second port on it is refused. */
		why.clear();
		auto twice = EthdevPort::create(o, pool_, &why);
		ASSERT_FALSE(twice);
		EXPECT_EQ(twice.error().code, EBUSY);
		EXPECT_NE(why.find("net_null1"), std::string::npos) << why;

		created->reset(); /* the port goes */
		/* Stopped, not closed nor removed: there to open again. */
		EXPECT_TRUE(portNamed("net_null1"));
		EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_);
	}
}

TEST_F(EthdevPortTest, BadDevargsAreRefused)
{
	for (const char *devargs : { "net_nosuchdriver0", "", "net_null7,nosuchkey=1" }) {
		EthdevPortOptions o;
		o.devargs = devargs;
		std::string why;
		auto created = EthdevPort::create(o, pool_, &why);
		ASSERT_FALSE(created) << devargs;
		EXPECT_GT(created.error().code, 0) << devargs;
		EXPECT_NE(created.error().what, nullptr);
		EXPECT_NE(std::string(created.error().what), "");
		EXPECT_NE(why.find(std::string("'") + devargs + "'"), std::string::npos) << why;
		EXPECT_EQ(rte_eth_dev_count_avail(), availBefore_) << devargs;
		EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_) << devargs;
		std::printf("  %-24s -> %s\n", devargs, why.c_str());
	}
	EXPECT_FALSE(portNamed("net_null7"));

	EthdevPortOptions o;
	o.devargs = "net_null0";
	std::string why;
	auto noPool = EthdevPort::create(o, nullptr, &why);
	ASSERT_FALSE(noPool);
	EXPECT_EQ(noPool.error().code, EINVAL);
	o.queues = 0;
	EXPECT_FALSE(EthdevPort::create(o, pool_, &why));
	EXPECT_FALSE(portNamed("net_null0"));
}

TEST_F(EthdevPortTest, TooManyQueuesAreRefused)
{
	EthdevPortOptions o;
	o.devargs = "net_ring1";
	o.queues = 17; /* net_ring has 16 */
	std::string why;
	auto created = EthdevPort::create(o, pool_, &why);
	ASSERT_FALSE(created);
	EXPECT_EQ(created.error().code, E2BIG);
	EXPECT_NE(why.find("net_ring1"), std::string::npos) << why;
	std::printf("  %s\n", why.c_str());
	/* The hot-plugged device went again. */
	EXPECT_FALSE(portNamed("net_ring1"));

	/* Without a string for the reason, it goes to the log. */
	o.queues = 1;
	o.txQueues = 100;
	EXPECT_FALSE(EthdevPort::create(o, pool_));
	EXPECT_FALSE(portNamed("net_ring1"));
}

TEST_F(EthdevPortTest, DestroyingRemovesWhatWasHotPlugged)
{
	for (int round = 0; round < 2; round++) {
		EthdevPortOptions o;
		o.devargs = "net_ring2";
		o.queues = 2;
		std::string why;
		auto created = EthdevPort::create(o, pool_, &why);
		ASSERT_TRUE(created) << "round " << round << ": " << why;
		EXPECT_TRUE((*created)->hotPlugged());
		EXPECT_TRUE(portNamed("net_ring2"));
		EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_ + 1);
		/* Queue 1 loops too. */
		rte_mbuf *m = packet(100, 3);
		ASSERT_NE(m, nullptr);
		ASSERT_EQ((*created)->txBurst(1, &m, 1), 1);
		rte_mbuf *back = nullptr;
		ASSERT_EQ((*created)->rxBurst(1, nullptr, &back, 1), 1);
		EXPECT_TRUE(hasBytes(back, 100, 3));
		rte_pktmbuf_free(back);
		created->reset(); /* the port goes */
		EXPECT_FALSE(portNamed("net_ring2"));
		EXPECT_EQ(rte_eth_dev_count_total(), totalBefore_);
	}
}

TEST_F(EthdevPortTest, TapPortComesUpAndGoes)
{
	const std::string iface = "vubt" + std::to_string(getpid() % 100000);
	EthdevPortOptions o;
	o.devargs = "net_tap9,iface=" + iface;
	std::string why;
	auto created = EthdevPort::create(o, pool_, &why);
	if (!created)
		GTEST_SKIP() << "no net_tap here: " << why;
	auto &port = *created;
	EXPECT_TRUE(port->hotPlugged());
	EXPECT_NE(if_nametoindex(iface.c_str()), 0u);
	uint8_t mac[6];
	port->macAddress(mac);
	EXPECT_NE(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5], 0);
	EXPECT_TRUE(port->linkUp());
	std::printf("  %s\n", port->describe().c_str());
	/* A broadcast frame into the kernel: net_tap counts bytes too. */
	rte_mbuf *m = packet(60, 5);
	ASSERT_NE(m, nullptr);
	memset(rte_pktmbuf_mtod(m, uint8_t *), 0xff, 6);
	memcpy(rte_pktmbuf_mtod(m, uint8_t *) + 6, mac, 6);
	ASSERT_EQ(port->txBurst(0, &m, 1), 1);
	auto s = port->stats();
	EXPECT_EQ(s.txPackets, 1u);
	EXPECT_EQ(s.txBytes, 60u);
	created->reset(); /* the port goes */
	EXPECT_FALSE(portNamed("net_tap9"));
	EXPECT_EQ(if_nametoindex(iface.c_str()), 0u);
}

} /* namespace */

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	::testing::AddGlobalTestEnvironment(new EalEnvironment);
	return RUN_ALL_TESTS();
}
