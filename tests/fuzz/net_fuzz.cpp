/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhost-user net port's data path on guest frames the input writes: each frame's
 * virtio-net header (offload requests: csum_start, csum_offset, gso_type, gso_size...) and
 * bytes, cut into one to four descriptors, go out through dequeueBurst() into mbufs; each
 * mbuf, its offload requests rewritten by the input, comes back through enqueueBurst() into
 * guest RX buffers of the input's sizes. Every offload feature is negotiated, on a split and
 * a packed ring (hostile-inputs.md, bad-input list 9-11, CVE-2022-2132, CVE-2024-11614).
 *
 * Input: [ring: bit 0 packed] then frames: [pieces-1 (bits 0-1), extra writable piece (bit 2)]
 * [bytes lo] [bytes hi] [cut 1] [cut 2] [cut 3] [rx buffer bytes lo] [hi] [offload] [l2]
 * [l3] [l4] [mss lo] [mss hi] [bytes: header and frame].
 */
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "vub/base/log.h"
#include "vub/base/rcu.h"
#include "vub/vhost/daemon.h"
#include "vub/virtio/features.h"
#include "vub/virtio/net_header.h"

#include "net_offload.h"
#include "test_frontend.h"
#include "vhost_net_port.h"

using namespace vub;
using namespace vub::vhost;
using namespace vub::test;
using vub::net::VhostNetPort;

namespace {

constexpr uint16_t kRingSize = 256;
constexpr unsigned kMaxFrames = 16;
constexpr size_t kFrameHeader = 15;

[[noreturn]] void fail(const char *what)
{
	std::fprintf(stderr, "net fuzz: %s\n", what);
	std::abort();
}

/* One guest on one port. */
struct Guest {
	std::string path;
	std::shared_ptr<VhostNetPort> port;
	std::unique_ptr<VhostUserDaemon> daemon;
	Listener listener;
	std::unique_ptr<GuestMemoryFd> rings;
	std::unique_ptr<GuestMemoryFd> buffers;
	std::unique_ptr<TestFrontend> frontend;
	bool packed = false;

	int post(unsigned q, std::span<const BufferSpec> specs)
	{
		return packed ? frontend->packedQueue(q).addChain(specs)
			      : frontend->queue(q).addChain(specs);
	}
	void publish(unsigned q)
	{
		if (!packed)
			frontend->queue(q).publish();
	}
	void collect(unsigned q)
	{
		if (packed)
			frontend->packedQueue(q).collectUsed();
		else
			frontend->queue(q).collectUsed();
	}
};

struct World {
	rte_mempool *pool = nullptr;
	Rcu::Reader reader;
	std::unique_ptr<Guest> guests[2];
};

std::unique_ptr<Guest> makeGuest(bool packed)
{
	auto g = std::make_unique<Guest>();
	g->packed = packed;
	g->path = "/tmp/vub-net-fuzz-" + std::to_string(::getpid()) + (packed ? "-p" : "-s");
	g->port = std::make_shared<VhostNetPort>(1);
	DaemonOptions o;
	o.polling = true;
	o.pollThreads = false;
	auto daemon = VhostUserDaemon::create<VringPolled>("fuzz", g->port, nullptr, o);
	auto listener = Listener::create(g->path);
	if (!daemon || !listener)
		fail("daemon");
	g->daemon = std::move(*daemon);
	g->listener = std::move(*listener);
	if (!g->port->attach(g->daemon->vrings()) || !g->daemon->start(g->listener))
		fail("daemon start");
	g->rings = GuestMemoryFd::create(1 << 20, 0x100000);
	g->buffers = GuestMemoryFd::create(4 << 20, 0x1000000);
	g->frontend = TestFrontend::connect(g->path);
	if (!g->rings || !g->buffers || !g->frontend)
		fail("guest");
	NegotiateOptions n;
	n.queues = 2;
	n.queueSize = kRingSize;
	n.packed = packed;
	n.memory = { g->rings.get(), g->buffers.get() };
	n.ringMemory = g->rings.get();
	n.features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kNetFMrgRxbuf) |
		     net::offloadFeatures() | (packed ? virtio::bit(virtio::kFRingPacked) : 0);
	if (auto negotiated = g->frontend->negotiateDpdk(n); !negotiated) {
		std::fprintf(stderr, "net fuzz: %s\n", negotiated.error().what);
		fail("negotiation");
	}
	return g;
}

World &world()
{
	static World *w = [] {
		Log::setLevelAll(getenv("VUB_FUZZ_LOG") ? LogLevel::Debug : LogLevel::Error);
		std::string prefix = "--file-prefix=vubfuzznet" + std::to_string(::getpid());
		const char *args[] = {
			"fuzz-net",	  "--no-huge",	       "-m",	      "128", "--no-pci",
			"--no-telemetry", "--log-level=error", prefix.c_str()
		};
		if (rte_eal_init(sizeof(args) / sizeof(args[0]), const_cast<char **>(args)) < 0)
			fail("EAL did not start with --no-huge");
		auto *made = new World;
		made->pool =
			rte_pktmbuf_pool_create("fuzz", 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
		if (!made->pool)
			fail("mbuf pool");
		made->guests[0] = makeGuest(false);
		made->guests[1] = makeGuest(true);
		/* A reader only now: the memory tables above waited for every reader. */
		auto reader = Rcu::global().registerReader();
		if (!reader)
			fail("rcu reader");
		made->reader = std::move(*reader);
		return made;
	}();
	return *w;
}

/* The input's bytes, read front to back; zeros past the end. */
struct Reader {
	const uint8_t *p;
	size_t left;
	uint8_t u8()
	{
		if (left == 0)
			return 0;
		left--;
		return *p++;
	}
	uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
};

/* Offload requests of a packet switched in from elsewhere, as the input says. */
void rewriteOffloads(rte_mbuf *m, uint8_t offload, uint8_t l2, uint8_t l3, uint8_t l4, uint16_t mss)
{
	if (offload == 0)
		return;
	static constexpr uint64_t kFlags[] = {
		RTE_MBUF_F_TX_IPV4,	  RTE_MBUF_F_TX_IPV6,	   RTE_MBUF_F_TX_IP_CKSUM,
		RTE_MBUF_F_TX_TCP_CKSUM,  RTE_MBUF_F_TX_UDP_CKSUM, RTE_MBUF_F_TX_TCP_SEG,
		RTE_MBUF_F_TX_SCTP_CKSUM,
	};
	m->ol_flags = 0;
	for (unsigned i = 0; i < 7; i++)
		if (offload & (1u << i))
			m->ol_flags |= kFlags[i];
	m->l2_len = l2;
	m->l3_len = l3;
	m->l4_len = l4 & 0x7f;
	m->tso_segsz = mss;
}

} /* namespace */

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	World &w = world();
	Reader in{ data + 1, size - 1 };
	Guest &g = *w.guests[data[0] & 1];
	g.buffers->resetAlloc();

	/* The guest's TX frames, and as many RX buffers. */
	unsigned frames = 0;
	struct Rewrite {
		uint8_t offload, l2, l3, l4;
		uint16_t mss;
	} rewrites[kMaxFrames]{};
	while (in.left >= kFrameHeader && frames < kMaxFrames) {
		uint8_t ctl = in.u8();
		uint32_t bytes = in.u16() % 9300;
		uint8_t cuts[3] = { in.u8(), in.u8(), in.u8() };
		uint32_t rxBytes = in.u16() % 9300 + 1;
		Rewrite &r = rewrites[frames];
		r = { in.u8(), in.u8(), in.u8(), in.u8(), in.u16() };
		bytes = std::min<uint32_t>(bytes, static_cast<uint32_t>(in.left));
		uint64_t gpa = g.buffers->alloc(bytes + 1, 64);
		g.buffers->write(gpa, in.p, bytes);
		in.p += bytes;
		in.left -= bytes;

		/* Cut the bytes into pieces at the input's points (empty pieces included). */
		BufferSpec specs[5];
		unsigned pieces = (ctl & 3) + 1, n = 0;
		uint32_t at = 0;
		for (unsigned i = 0; i < pieces; i++) {
			uint32_t end =
				i + 1 == pieces ? bytes : std::max(at, bytes * cuts[i] / 255);
			specs[n++] = { gpa + at, end - at, false };
			at = end;
		}
		if (ctl & 4)
			specs[n++] = { g.buffers->alloc(64, 64), 64, true };
		uint64_t rx = g.buffers->alloc(rxBytes, 64);
		BufferSpec rxSpec[] = { { rx, rxBytes, true } };
		if (g.post(1, std::span(specs, n)) < 0 || g.post(0, rxSpec) < 0)
			break;
		frames++;
	}
	g.publish(1);
	g.publish(0);

	/* The switch's io loop: every frame out of the guest and back in. */
	rte_mbuf *pkts[kMaxFrames + 1];
	for (unsigned round = 0; round < 4; round++) {
		uint16_t got = g.port->dequeueBurst(0, w.pool, pkts, kMaxFrames);
		for (uint16_t i = 0; i < got; i++) {
			const Rewrite &r = rewrites[i];
			rewriteOffloads(pkts[i], r.offload, r.l2, r.l3, r.l4, r.mss);
		}
		g.port->enqueueBurst(0, pkts, got);
		rte_pktmbuf_free_bulk(pkts, got);
		if (got == 0)
			break;
	}
	w.reader.quiescent();
	g.collect(1);
	g.collect(0);
	if (rte_mempool_in_use_count(w.pool) != 0)
		fail("an mbuf leaked");
	return 0;
}
