/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhost-user net port's data path on one thread: the test front-end plays a DPDK
 * virtio-user guest (one TX and one RX ring), this thread plays vub-switch's io loopback
 * (dequeueBurst, enqueueBurst, free). It prints the back-end's TSC cycles per packet for
 * split and packed rings at 64 and 1518 bytes, and nothing else; it asserts nothing.
 *
 * The guest's work is not timed, and it is the same for every change of the back-end, so the
 * repeatable figure is an instruction count of the back-end's two calls:
 *   valgrind --tool=callgrind --toggle-collect='*VhostNetPort::dequeueBurst*' \
 *       --toggle-collect='*VhostNetPort::enqueueBurst*' build/tests/perf/perf-net-port 2000
 * split-64 then callgrind_annotate's total divided by the packets it printed. Arguments: rounds of
 * 32 packets (20000), and one case's name to run only that one.
 */
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "vub/base/log.h"
#include "vub/base/rcu.h"
#include "vub/vhost/daemon.h"
#include "vub/virtio/features.h"
#include "vub/virtio/net_header.h"

#include "test_frontend.h"
#include "vhost_net_port.h"

using namespace vub;
using namespace vub::vhost;
using namespace vub::test;
using vub::net::VhostNetPort;

namespace {

constexpr uint64_t kGpaBase = 0x100000;
constexpr uint16_t kBurst = 32;
constexpr uint16_t kRingSize = 256;
constexpr uint32_t kHeaderBytes = 12;
constexpr uint32_t kRxBufferBytes = 2048;

struct Case {
	const char *name;
	bool packed;
	uint32_t frameBytes;
};

/** One guest and one port; \return the back-end's cycles per packet over \a rounds bursts. */
std::optional<double> run(const Case &c, rte_mempool *pool, unsigned rounds, uint64_t *packets)
{
	std::string path = "/tmp/vub-perf-net-" + std::to_string(getpid()) + ".sock";
	auto port = std::make_shared<VhostNetPort>(1);
	DaemonOptions o;
	o.polling = true;
	o.pollThreads = false;
	auto daemon = VhostUserDaemon::create<VringPolled>("bench", port, nullptr, o);
	auto listener = Listener::create(path);
	if (!daemon || !listener || !port->attach((*daemon)->vrings()) ||
	    !(*daemon)->start(*listener))
		return std::nullopt;
	auto mem = GuestMemoryFd::create(16 << 20, kGpaBase);
	auto frontend = TestFrontend::connect(path);
	if (!mem || !frontend)
		return std::nullopt;
	NegotiateOptions n;
	n.queues = 2;
	n.queueSize = kRingSize;
	n.memory = { mem.get() };
	n.packed = c.packed;
	/* What DPDK's virtio-user asks by default: mergeable buffers, version 1. */
	n.features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kNetFMrgRxbuf) |
		     (c.packed ? virtio::bit(virtio::kFRingPacked) : 0);
	if (!frontend->negotiateDpdk(n))
		return std::nullopt;

	/* Fixed guest buffers, reposted every round: a zeroed header and the frame. */
	std::vector<uint64_t> tx, rx;
	std::vector<uint8_t> frame(kHeaderBytes + c.frameBytes, 0);
	for (size_t i = kHeaderBytes; i < frame.size(); i++)
		frame[i] = static_cast<uint8_t>(i);
	for (unsigned i = 0; i < kBurst; i++) {
		tx.push_back(mem->alloc(frame.size(), 64));
		mem->write(tx.back(), frame.data(), frame.size());
		rx.push_back(mem->alloc(kRxBufferBytes, 64));
	}
	auto post = [&](unsigned q, uint64_t gpa, uint32_t len, bool writable) {
		BufferSpec spec[] = { { gpa, len, writable } };
		if (c.packed)
			return frontend->packedQueue(q).addChain(spec) >= 0;
		return frontend->queue(q).addChain(spec) >= 0;
	};
	auto collect = [&](unsigned q) {
		if (c.packed)
			return frontend->packedQueue(q).collectUsed().size();
		return frontend->queue(q).collectUsed().size();
	};

	auto reader = Rcu::global().registerReader();
	if (!reader)
		return std::nullopt;
	rte_mbuf *pkts[kBurst];
	uint64_t cycles = 0;
	*packets = 0;
	for (unsigned r = 0; r < rounds; r++) {
		for (unsigned i = 0; i < kBurst; i++) {
			if (!post(1, tx[i], static_cast<uint32_t>(frame.size()), false) ||
			    !post(0, rx[i], kRxBufferBytes, true))
				return std::nullopt;
		}
		if (!c.packed) {
			frontend->queue(1).publish();
			frontend->queue(0).publish();
		}
		uint64_t start = rte_rdtsc();
		uint16_t got = port->dequeueBurst(0, pool, pkts, kBurst);
		uint16_t sent = port->enqueueBurst(0, pkts, got);
		rte_pktmbuf_free_bulk(pkts, got);
		cycles += rte_rdtsc() - start;
		reader->quiescent();
		if (got != kBurst || sent != kBurst || collect(1) != kBurst ||
		    collect(0) != kBurst) {
			std::fprintf(stderr, "%s: round %u moved %u/%u packets\n", c.name, r, got,
				     sent);
			return std::nullopt;
		}
		*packets += sent;
	}
	reader->offline();
	frontend.reset();
	(*daemon)->stop();
	return static_cast<double>(cycles) / static_cast<double>(*packets);
}

} /* namespace */

int main(int argc, char **argv)
{
	unsigned rounds =
		argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 0)) : 20000;
	Log::setLevelAll(LogLevel::Error);
	std::string prefix = "--file-prefix=vubperfnet" + std::to_string(getpid());
	const char *args[] = {
		"perf-net-port",  "--no-huge",	       "-m",	      "256", "--no-pci",
		"--no-telemetry", "--log-level=error", prefix.c_str()
	};
	if (rte_eal_init(sizeof(args) / sizeof(args[0]), const_cast<char **>(args)) < 0) {
		std::fprintf(stderr, "perf-net-port: EAL did not start with --no-huge\n");
		return 1;
	}
	rte_mempool *pool =
		rte_pktmbuf_pool_create("bench", 4095, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
	if (!pool) {
		std::fprintf(stderr, "perf-net-port: no mbuf pool\n");
		return 1;
	}
	const Case cases[] = {
		{ "split-64", false, 64 },
		{ "split-1518", false, 1518 },
		{ "packed-64", true, 64 },
		{ "packed-1518", true, 1518 },
	};
	int status = 0;
	const char *only = argc > 2 ? argv[2] : nullptr;
	for (const Case &c : cases) {
		if (only && std::strcmp(only, c.name) != 0)
			continue;
		uint64_t packets = 0;
		auto perPacket = run(c, pool, rounds, &packets);
		if (!perPacket) {
			std::printf("%-12s failed to run\n", c.name);
			status = 1;
			continue;
		}
		std::printf("%-12s %10" PRIu64 " packets  %8.1f back-end cycles/packet\n", c.name,
			    packets, *perPacket);
	}
	rte_mempool_free(pool);
	rte_eal_cleanup();
	return status;
}
