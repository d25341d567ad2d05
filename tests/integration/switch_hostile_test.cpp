/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch against hostile front-ends and guests: the in-tree test front-end breaks the
 * protocol on port 0, one test per class of ../shared/reference/hostile-inputs.md (and section
 * 4.5 of vhost-user-and-virtio.md), in the message, memory, ring and virtio-net-header layers,
 * each for split and packed rings. A well-behaved test front-end on port 1 feeds port 0's RX
 * ring where a case needs the switch to write, and a testpmd guest loops its traffic through
 * port 2 the whole time.
 *
 * After every test: the switch is up, port 0 and port 1 are down again, the guest on port 2
 * kept forwarding, and the switch holds exactly the fds, mappings and mbufs it held at the
 * start of the suite. What the switch may read or write is checked by its own counters, by
 * guard bytes around the guest's buffers, and, in CI's ASan pass, by AddressSanitizer in the
 * switch itself.
 *
 * One switch and one guest serve every test (an EAL start takes seconds). VUB_SWITCH (set by
 * meson) is the vub-switch binary; without it, or without dpdk-testpmd, the tests skip.
 */
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vub/vhost/message.h"
#include "vub/virtio/features.h"
#include "vub/virtio/net_header.h"
#include "vub/virtio/packed_ring.h"
#include "vub/virtio/split_ring.h"

#include "guest_memory_fd.h"
#include "switch_harness.h"
#include "test_frontend.h"

namespace vub::test {
namespace {

using namespace std::chrono_literals;
using vhost::FrontendRequest;

constexpr uint64_t kGpaBase = 0x40000000;
constexpr size_t kMemSize = 8 << 20;
constexpr uint16_t kQueueSize = 256;
/** A frame as the guest sends it: the 12-byte virtio-net header, then 60 bytes of Ethernet. */
constexpr uint32_t kHeader = 12;
constexpr uint32_t kFrame = 60;
/** Guard bytes written around a buffer the switch may fill; it must leave them alone. */
constexpr uint8_t kGuard = 0xa5;
constexpr size_t kGuardBytes = 64;
constexpr int kWaitMs = 5000;

/** The switch, its sockets, and guest A (testpmd on port 2), for the whole suite. */
struct Bench {
	TempDir dir{ "vub-hostile-" };
	std::string sock[3];
	std::unique_ptr<VubSwitchCli> sw;
	std::unique_ptr<Testpmd> guestA;
	Holdings baseline;
	/** Why the suite cannot run (empty when it can). */
	std::string skip;
	std::string failure;
};
Bench *bench = nullptr;

/** The last \a n lines of the switch's own log in \a output (its CLI answers left out). */
std::string logLines(const std::string &output, size_t n)
{
	std::vector<std::string> lines;
	std::istringstream in(output);
	for (std::string line; std::getline(in, line);)
		if (line.find("] vub ") != std::string::npos)
			lines.push_back(line);
	std::string out;
	for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); i++)
		out += lines[i] + "\n";
	return out;
}

/**
 * `show port xstats PORT` once \a done holds for them, or after 2 s: a chain comes back
 * before the worker adds it to the counters.
 */
template <typename Done>
std::map<std::string, uint64_t> xstatsOnce(VubSwitchCli &sw, unsigned port, Done done)
{
	auto deadline = std::chrono::steady_clock::now() + 2s;
	for (;;) {
		auto x = sw.showPortXstats(port);
		if (done(x) || std::chrono::steady_clock::now() >= deadline)
			return x;
		std::this_thread::sleep_for(10ms);
	}
}

/** Port 0's rx_q0_packets once it reached \a want (or after 2 s). */
uint64_t rxPacketsOnce(VubSwitchCli &sw, uint64_t want)
{
	return xstatsOnce(sw, 0,
			  [&](auto &x) { return x["rx_q0_packets"] >= want; })["rx_q0_packets"];
}

/** GET_FEATURES with \a count eventfds attached, written with sendmsg() directly. */
void sendWithFds(int socket, unsigned count)
{
	std::vector<UniqueFd> owned;
	std::vector<int> fds;
	for (unsigned i = 0; i < count; i++) {
		owned.emplace_back(::eventfd(0, EFD_CLOEXEC));
		fds.push_back(owned.back().get());
	}
	vhost::MessageHeader header{ static_cast<uint32_t>(FrontendRequest::GetFeatures),
				     vhost::kVersion, 0 };
	iovec iov{ &header, sizeof(header) };
	std::vector<char> control(CMSG_SPACE(sizeof(int) * count));
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.data();
	msg.msg_controllen = control.size();
	cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
	std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * count);
	ASSERT_EQ(::sendmsg(socket, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof(header)));
}

/**
 * Guest A forwards again: `start tx_first` (a plain `start` flushes its RX queue first, and
 * the burst that was going round is gone).
 */
bool restartGuestA()
{
	auto reply = bench->guestA->command("start tx_first");
	return reply && reply->find("packet forwarding - ports=") != std::string::npos;
}

/** Poll the switch's holdings until they equal the baseline or kSettleTimeoutMs passed. */
std::optional<Holdings> settledHoldings()
{
	std::optional<Holdings> now;
	auto deadline =
		std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs);
	do {
		now = holdings(*bench->sw);
		if (!now || *now == bench->baseline)
			return now;
		std::this_thread::sleep_for(kPollInterval);
	} while (std::chrono::steady_clock::now() < deadline);
	return now;
}

/* Parameter: packed rings (true) or split ones. */
class SwitchHostile : public ::testing::TestWithParam<bool>
{
public:
	/** Start the bench once for both suites; BenchEnvironment ends it. */
	static void SetUpTestSuite();

protected:
	void SetUp() override
	{
		if (!bench)
			GTEST_SKIP() << "the suite did not start";
		if (!bench->skip.empty())
			GTEST_SKIP() << bench->skip;
		ASSERT_TRUE(bench->failure.empty()) << bench->failure;
		ASSERT_TRUE(bench->sw->process().running()) << "vub-switch is gone";
		mem_ = GuestMemoryFd::create(kMemSize, kGpaBase);
		ASSERT_TRUE(mem_);
		auto rx = guestRxPackets(*bench->guestA);
		ASSERT_TRUE(rx) << "guest A does not answer";
		guestARx_ = *rx;
	}

	void TearDown() override
	{
		if (!bench || !bench->skip.empty() || !bench->failure.empty())
			return;
		evil_.reset();
		peer_.reset();
		VubSwitchCli &sw = *bench->sw;
		ASSERT_TRUE(sw.process().running()) << "vub-switch died";
		EXPECT_TRUE(waitForLinks(sw, { { 0, false }, { 1, false }, { 2, true } }, true,
					 kSettleTimeoutMs))
			<< "the hostile connections did not end";
		auto rx = guestRxPackets(*bench->guestA);
		ASSERT_TRUE(rx) << "guest A does not answer";
		EXPECT_GT(*rx, guestARx_) << "port 2 stopped forwarding for guest A";
		/* Counted with nothing moving: guest A stops while the counts settle. */
		ASSERT_TRUE(bench->guestA->stopForwarding());
		auto now = settledHoldings();
		ASSERT_TRUE(now) << "cannot read vub-switch's /proc entries or `show mempool`";
		EXPECT_EQ(now->toString(), bench->baseline.toString())
			<< "the switch holds more (or less) after this test than before the suite";
		EXPECT_TRUE(restartGuestA()) << "guest A does not forward again";
		if (HasFailure())
			std::fprintf(stderr, "---- vub-switch's last log lines ----\n%s\n",
				     logLines(sw.process().output(), 15).c_str());
	}

	bool packed() const { return GetParam(); }

	NegotiateOptions options()
	{
		NegotiateOptions o;
		o.queues = 2;
		o.queueSize = kQueueSize;
		o.packed = packed();
		o.features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kNetFMrgRxbuf) |
			     virtio::bit(virtio::kFIndirectDesc) | virtio::bit(virtio::kNetFCsum) |
			     virtio::bit(virtio::kNetFHostTso4) |
			     (packed() ? virtio::bit(virtio::kFRingPacked) : 0);
		o.memory = { mem_.get() };
		return o;
	}

	/** A front-end connected to \a port, not negotiated. */
	std::unique_ptr<TestFrontend> connectTo(unsigned port)
	{
		auto fe = TestFrontend::connect(bench->sock[port], kWaitMs);
		if (fe)
			fe->setTimeoutMs(kWaitMs);
		return fe;
	}

	/** The hostile front-end on port 0, negotiated like QEMU; its link is up. */
	void startEvil()
	{
		evil_ = connectTo(0);
		ASSERT_TRUE(evil_) << "cannot connect to port 0";
		/* QEMU's sequence: it sends SET_VRING_ERR, DPDK's does not. */
		ASSERT_TRUE(evil_->negotiateQemu(options()));
		ASSERT_TRUE(waitForLinks(*bench->sw, { { 0, true } }, false));
	}

	/** Send \a request raw with NEED_REPLY; the ack must be a refusal. */
	void expectRefused(FrontendRequest request, const void *payload, uint32_t size,
			   std::span<const int> fds = {})
	{
		const char *name = vhost::frontendRequestName(static_cast<uint32_t>(request));
		ASSERT_TRUE(evil_->sendRaw(static_cast<uint32_t>(request), payload, size, fds,
					   vhost::kVersion | vhost::kFlagNeedReply))
			<< name;
		auto reply = evil_->receiveReply();
		ASSERT_TRUE(reply) << name << ": no reply (connection dropped?)";
		ASSERT_EQ((*reply)->size(), 8u) << name;
		EXPECT_NE((*reply)->payloadAs<uint64_t>(), 0u) << name << " was accepted";
	}

	/* ---- The guest side of a queue, split or packed ---- */

	/**
	 * Post \a bufs on queue \a q of \a fe, \a corrupt (when given) applied to the chain
	 * before the device can see it: (driver, head or id).
	 */
	template <typename Corrupt>
	void post(TestFrontend &fe, unsigned q, std::span<const BufferSpec> bufs, bool indirect,
		  Corrupt corrupt)
	{
		if (packed()) {
			PackedDriver &d = fe.packedQueue(q);
			d.holdNextHead();
			int id = indirect ? d.addIndirectChain(bufs) : d.addChain(bufs);
			ASSERT_GE(id, 0);
			corrupt(static_cast<uint16_t>(id));
			d.releaseHeldHead();
			return;
		}
		SplitDriver &d = fe.queue(q);
		int head = indirect ? d.addIndirectChain(bufs) : d.addChain(bufs);
		ASSERT_GE(head, 0);
		corrupt(static_cast<uint16_t>(head));
		d.publish();
	}
	void post(TestFrontend &fe, unsigned q, std::span<const BufferSpec> bufs)
	{
		post(fe, q, bufs, false, [](uint16_t) {});
	}

	/** Wait until \a n chains came back on queue \a q. \return their lengths */
	std::vector<uint32_t> waitUsed(TestFrontend &fe, unsigned q, size_t n)
	{
		std::vector<uint32_t> lens;
		auto deadline =
			std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
		while (lens.size() < n && std::chrono::steady_clock::now() < deadline) {
			if (packed()) {
				for (const auto &u : fe.packedQueue(q).collectUsed())
					lens.push_back(u.len);
			} else {
				for (const auto &u : fe.queue(q).collectUsed())
					lens.push_back(u.len);
			}
			if (lens.size() < n)
				std::this_thread::sleep_for(1ms);
		}
		return lens;
	}

	/** A frame (header + broadcast Ethernet) in guest memory. \return its GPA */
	uint64_t frame(const virtio::NetHeader &header = {}, uint32_t payload = kFrame)
	{
		uint64_t gpa = mem_->alloc(kHeader + payload, 16);
		mem_->write(gpa, &header, kHeader);
		mem_->fill(gpa + kHeader, 0xff, 6);
		mem_->fill(gpa + kHeader + 6, 0x02, 6);
		mem_->fill(gpa + kHeader + 12, 0x08, 1);
		mem_->fill(gpa + kHeader + 13, 0x00, 1);
		mem_->fill(gpa + kHeader + 14, 0x5a, payload - 14);
		return gpa;
	}

	/** The guest on port 0 sends one good frame; the switch takes it. */
	void expectStillServing()
	{
		ASSERT_TRUE(evil_->getFeatures()) << "the connection is gone";
		auto before = bench->sw->showPortXstats(0)["rx_q0_packets"];
		BufferSpec good[] = { { frame(), kHeader + kFrame, false } };
		post(*evil_, 1, good);
		EXPECT_EQ(waitUsed(*evil_, 1, 1).size(), 1u) << "the TX ring stopped";
		EXPECT_EQ(rxPacketsOnce(*bench->sw, before + 1), before + 1)
			<< "the switch did not take the good frame";
	}

	/**
	 * The guest on port 0 sends a chain made of \a bufs and changed by \a corrupt, then a
	 * good frame: the bad chain comes back empty with \a counter (an xstat of port 0) one
	 * higher, and the good frame is taken.
	 */
	template <typename Corrupt>
	void expectTxRefused(const char *counter, std::span<const BufferSpec> bufs, bool indirect,
			     Corrupt corrupt)
	{
		SCOPED_TRACE(counter);
		auto before = bench->sw->showPortXstats(0);
		post(*evil_, 1, bufs, indirect, corrupt);
		BufferSpec good[] = { { frame(), kHeader + kFrame, false } };
		post(*evil_, 1, good);
		auto lens = waitUsed(*evil_, 1, 2);
		ASSERT_EQ(lens.size(), 2u) << "the chains did not come back";
		EXPECT_EQ(lens[0], 0u) << "a TX chain comes back with length 0";
		auto after = xstatsOnce(*bench->sw, 0, [&](auto &x) {
			return x[counter] > before[counter] &&
			       x["rx_q0_packets"] > before["rx_q0_packets"];
		});
		EXPECT_EQ(after[counter], before[counter] + 1) << "counters that moved:" << [&] {
			std::string moved;
			for (const auto &[name, value] : after)
				if (value != before[name] &&
				    name.find("empty_polls") == std::string::npos)
					moved += " " + name;
			return moved;
		}();
		EXPECT_EQ(after["rx_q0_packets"], before["rx_q0_packets"] + 1)
			<< "the good frame after it was not taken";
		EXPECT_FALSE(evil_->waitErr(1, 0)) << "a bad chain does not break the ring";
	}
	void expectTxRefused(const char *counter, std::span<const BufferSpec> bufs)
	{
		expectTxRefused(counter, bufs, false, [](uint16_t) {});
	}

	/** The ring of queue 1 is broken: err eventfd signalled, nothing more taken from it. */
	void expectTxBroken()
	{
		EXPECT_TRUE(evil_->waitErr(1, kWaitMs)) << "the err eventfd was not signalled";
		auto before = bench->sw->showPortXstats(0)["rx_q0_packets"];
		std::this_thread::sleep_for(200ms);
		EXPECT_EQ(bench->sw->showPortXstats(0)["rx_q0_packets"], before)
			<< "the switch still takes frames from a broken ring";
		EXPECT_TRUE(evil_->getFeatures()) << "a broken ring ends only the ring";
	}

	/* ---- Port 0's RX ring, fed by a well-behaved front-end on port 1 ---- */

	/** The peer on port 1 (io forwarding sends its frames to port 0). */
	void startPeer()
	{
		peer_ = connectTo(1);
		ASSERT_TRUE(peer_) << "cannot connect to port 1";
		peerMem_ = GuestMemoryFd::create(kMemSize, kGpaBase);
		ASSERT_TRUE(peerMem_);
		NegotiateOptions o = options();
		o.memory = { peerMem_.get() };
		ASSERT_TRUE(peer_->negotiateDpdk(o));
		ASSERT_TRUE(waitForLinks(*bench->sw, { { 1, true } }, false));
	}

	/** The peer sends \a count frames of \a payload bytes after the header. */
	void peerSends(unsigned count, uint32_t payload = kFrame)
	{
		for (unsigned i = 0; i < count; i++) {
			uint64_t gpa = peerMem_->alloc(kHeader + payload, 16);
			peerMem_->fill(gpa, 0, kHeader);
			peerMem_->fill(gpa + kHeader, 0xff, 6);
			peerMem_->fill(gpa + kHeader + 6, 0x02, 6);
			peerMem_->fill(gpa + kHeader + 12, 0x5a, payload - 12);
			BufferSpec b[] = { { gpa, kHeader + payload, false } };
			if (packed())
				ASSERT_GE(peer_->packedQueue(1).addChain(b), 0);
			else {
				ASSERT_GE(peer_->queue(1).addChain(b), 0);
				peer_->queue(1).publish();
			}
		}
		auto deadline =
			std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
		size_t back = 0;
		while (back < count && std::chrono::steady_clock::now() < deadline) {
			back += packed() ? peer_->packedQueue(1).collectUsed().size()
					 : peer_->queue(1).collectUsed().size();
			std::this_thread::sleep_for(1ms);
		}
		ASSERT_EQ(back, count) << "the switch did not take the peer's frames";
	}

	/** A writable buffer of \a len bytes with guard bytes on both sides. \return its GPA */
	uint64_t guardedBuffer(uint32_t len)
	{
		uint64_t gpa = mem_->alloc(len + 2 * kGuardBytes, 64) + kGuardBytes;
		mem_->fill(gpa - kGuardBytes, kGuard, len + 2 * kGuardBytes);
		guarded_.emplace_back(gpa, len);
		return gpa;
	}

	/** The guard bytes of every guardedBuffer() are intact. */
	void expectGuardsIntact()
	{
		for (auto [gpa, len] : guarded_) {
			std::vector<uint8_t> before(kGuardBytes), after(kGuardBytes);
			mem_->read(gpa - kGuardBytes, before.data(), kGuardBytes);
			mem_->read(gpa + len, after.data(), kGuardBytes);
			for (size_t i = 0; i < kGuardBytes; i++) {
				ASSERT_EQ(before[i], kGuard)
					<< "written before the buffer at " << gpa;
				ASSERT_EQ(after[i], kGuard) << "written past the buffer at " << gpa
							    << " (" << len << " bytes)";
			}
		}
	}

	std::unique_ptr<GuestMemoryFd> mem_;
	std::unique_ptr<GuestMemoryFd> peerMem_;
	std::unique_ptr<TestFrontend> evil_;
	std::unique_ptr<TestFrontend> peer_;
	std::vector<std::pair<uint64_t, uint32_t>> guarded_;
	uint64_t guestARx_ = 0;
};

/** Ends the bench after the last test. */
class BenchEnvironment : public ::testing::Environment
{
public:
	void TearDown() override
	{
		delete bench;
		bench = nullptr;
	}
};
const auto *const kBenchEnvironment = ::testing::AddGlobalTestEnvironment(new BenchEnvironment);

void SwitchHostile::SetUpTestSuite()
{
	if (bench)
		return;
	bench = new Bench();
	std::string why;
	auto binary = switchBinary(&why);
	if (!binary) {
		bench->skip = why;
		return;
	}
	if (!findTestpmd()) {
		bench->skip = "dpdk-testpmd not found (apt-get install dpdk, or set VUB_TESTPMD)";
		return;
	}
	if (!findStdbuf()) {
		bench->skip = "stdbuf not found (coreutils)";
		return;
	}
	for (unsigned p = 0; p < 3; p++)
		bench->sock[p] = bench->dir.file("p" + std::to_string(p) + ".sock");
	LogDump unused;
	bench->sw = startIoSwitchOfThreePorts(*binary, bench->dir, bench->sock, unused);
	if (!bench->sw) {
		bench->failure = "vub-switch did not start";
		return;
	}
	std::string error;
	bench->guestA = Testpmd::start(guestOptions(bench->sock[2], kMac1),
				       bench->dir.file("guestA.log"), &error);
	if (!bench->guestA || !guestReady(*bench->guestA, "guest A") ||
	    !bench->guestA->setForwardMode("io")) {
		bench->failure = "guest A did not start: " + error;
		return;
	}
	/*
	 * What a first connection sets up once stays (a port's queues, pool caches): one
	 * well-behaved front-end on each of ports 0 and 1, with traffic, before the baseline.
	 */
	{
		auto mem0 = GuestMemoryFd::create(kMemSize, kGpaBase);
		auto mem1 = GuestMemoryFd::create(kMemSize, kGpaBase);
		auto fe0 = TestFrontend::connect(bench->sock[0], kWaitMs);
		auto fe1 = TestFrontend::connect(bench->sock[1], kWaitMs);
		NegotiateOptions o;
		o.memory = { mem0.get() };
		if (!fe0 || !fe1) {
			bench->failure = "cannot connect to ports 0 and 1";
			return;
		}
		if (auto r = fe0->negotiateDpdk(o); !r) {
			bench->failure = std::string("a front-end cannot start on port 0: ") +
					 r.error().what;
			return;
		}
		o.memory = { mem1.get() };
		if (auto r = fe1->negotiateDpdk(o); !r) {
			bench->failure = std::string("a front-end cannot start on port 1: ") +
					 r.error().what;
			return;
		}
		waitForLinks(*bench->sw, { { 0, true }, { 1, true } }, false);
		uint64_t gpa = mem0->alloc(kHeader + kFrame, 16);
		mem0->fill(gpa, 0, kHeader + kFrame);
		BufferSpec b[] = { { gpa, kHeader + kFrame, false } };
		for (int i = 0; i < 8; i++) {
			fe0->queue(1).addChain(b);
			fe0->queue(1).publish();
		}
		std::this_thread::sleep_for(500ms);
	}
	if (!waitForLinks(*bench->sw, { { 0, false }, { 1, false }, { 2, true } }, true,
			  kSettleTimeoutMs)) {
		bench->failure = "the warm-up connections did not end";
		return;
	}
	std::optional<Holdings> base;
	for (int i = 0; i < 20; i++) {
		std::this_thread::sleep_for(kPollInterval);
		base = holdings(*bench->sw);
	}
	if (!base) {
		bench->failure = "cannot read vub-switch's /proc entries or `show mempool`";
		return;
	}
	bench->baseline = *base;
	if (!restartGuestA())
		bench->failure = "guest A: start tx_first failed";
}

/* ==== The message layer ==== */

/* CVE-2019-14818, CVE-2022-0669: fds on a message that takes none, or more than it takes. */
TEST_P(SwitchHostile, ExtraFdsAreRefusedAndClosed)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	UniqueFd a(::eventfd(0, EFD_CLOEXEC)), b(::eventfd(0, EFD_CLOEXEC));
	int fds[] = { a.get(), b.get() };
	vhost::VringStateMsg state{ 1, 1 };
	expectRefused(FrontendRequest::SetVringEnable, &state, sizeof(state), fds);
	uint64_t kick = 1;
	expectRefused(FrontendRequest::SetVringKick, &kick, sizeof(kick), fds);
	uint64_t features = evil_->features();
	expectRefused(FrontendRequest::SetFeatures, &features, sizeof(features), fds);
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/* A size that does not match the request, a header past the limit, a header cut short. */
TEST_P(SwitchHostile, MalformedMessagesAreRefusedOrCloseTheConnection)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	uint8_t junk[64] = {};
	expectRefused(FrontendRequest::SetFeatures, junk, 4);
	expectRefused(FrontendRequest::SetVringNum, junk, 12);
	expectRefused(FrontendRequest::SetVringAddr, junk, 32);
	expectRefused(FrontendRequest::SetMemTable, junk, 7);
	expectRefused(static_cast<FrontendRequest>(999), nullptr, 0);
	ASSERT_NO_FATAL_FAILURE(expectStillServing());

	vhost::MessageHeader header{ static_cast<uint32_t>(FrontendRequest::GetFeatures),
				     vhost::kVersion, 1u << 20 };
	ASSERT_EQ(::send(evil_->fd(), &header, sizeof(header), MSG_NOSIGNAL), 12);
	EXPECT_TRUE(evil_->peerClosed()) << "a payload past the limit must end the connection";
	evil_.reset();
	ASSERT_TRUE(waitForLinks(*bench->sw, { { 0, false } }, false, kSettleTimeoutMs));

	/* More fds than a message may carry (MSG_CTRUNC on the switch's side). */
	evil_ = connectTo(0);
	ASSERT_TRUE(evil_);
	ASSERT_TRUE(evil_->negotiateQemu(options()));
	ASSERT_NO_FATAL_FAILURE(sendWithFds(evil_->fd(), 12));
	EXPECT_TRUE(evil_->peerClosed()) << "a message with 12 fds must end the connection";
	evil_.reset();
	ASSERT_TRUE(waitForLinks(*bench->sw, { { 0, false } }, false, kSettleTimeoutMs));

	/* Half a message stalls nobody: port 1 is served meanwhile. */
	evil_ = connectTo(0);
	ASSERT_TRUE(evil_);
	ASSERT_TRUE(evil_->negotiateQemu(options()));
	vhost::MessageHeader partial{ static_cast<uint32_t>(FrontendRequest::SetVringAddr),
				      vhost::kVersion, sizeof(vhost::VringAddrMsg) };
	ASSERT_EQ(::send(evil_->fd(), &partial, sizeof(partial), MSG_NOSIGNAL), 12);
	ASSERT_EQ(::send(evil_->fd(), junk, 8, MSG_NOSIGNAL), 8);
	ASSERT_NO_FATAL_FAILURE(startPeer());
	peer_.reset();
	evil_.reset();
	ASSERT_TRUE(
		waitForLinks(*bench->sw, { { 0, false }, { 1, false } }, false, kSettleTimeoutMs));

	/* Half a header, then the front-end goes away. */
	evil_ = connectTo(0);
	ASSERT_TRUE(evil_);
	ASSERT_TRUE(evil_->negotiateDpdk(options()));
	ASSERT_EQ(::send(evil_->fd(), &header, 6, MSG_NOSIGNAL), 6);
}

/* CVE-2020-10723: a vring index past the device's queues, and one that truncates to 16 bits. */
TEST_P(SwitchHostile, VringIndexOutOfRangeIsRefused)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	for (uint32_t index : { 2u, 257u, 0x10000u, 0x10001u, 1u << 31, ~0u }) {
		SCOPED_TRACE(index);
		vhost::VringStateMsg state{ index, kQueueSize };
		expectRefused(FrontendRequest::SetVringNum, &state, sizeof(state));
		expectRefused(FrontendRequest::SetVringBase, &state, sizeof(state));
		state.num = 1;
		expectRefused(FrontendRequest::SetVringEnable, &state, sizeof(state));
		vhost::VringAddrMsg addr{};
		addr.index = index;
		expectRefused(FrontendRequest::SetVringAddr, &addr, sizeof(addr));
	}
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/*
 * CVE-2019-14818: sizes that are 0, too large or (split rings) not a power of two, again and
 * again.
 */
TEST_P(SwitchHostile, BadVringSizesAreRefusedWithoutLeaking)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	ASSERT_TRUE(evil_->stopQueue(0));
	std::vector<uint32_t> sizes = { 0u, 65536u, 1u << 31, ~0u };
	if (!packed())
		sizes.insert(sizes.end(), { 3u, 1000u });
	for (int round = 0; round < 100; round++) {
		for (uint32_t num : sizes) {
			vhost::VringStateMsg state{ 0, num };
			ASSERT_NO_FATAL_FAILURE(
				expectRefused(FrontendRequest::SetVringNum, &state, sizeof(state)))
				<< num;
		}
	}
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/*
 * SET_MEM_TABLE (c6420a3632, 0fe99cf73e): more than 8 regions, none, overlapping ones, an
 * offset + size that overflows or lies past the file, a region without its fd, an fd that
 * cannot be mapped.
 */
TEST_P(SwitchHostile, BadMemoryTablesAreRefusedWithoutLeaking)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	vhost::MemoryTableMsg table{};
	int fds[2] = { mem_->fd(), mem_->fd() };
	table.nregions = 9;
	expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(1));
	table.nregions = 0;
	expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(0));
	table.nregions = 2;
	table.regions[0] = mem_->regionMsg();
	table.regions[1] = mem_->regionMsg();
	table.regions[1].userspaceAddr += kMemSize;
	expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(2), fds);
	table.nregions = 1;
	for (auto change : { +[](vhost::MemoryRegionMsg &r) { r.mmapOffset = ~0ull - 10; },
			     +[](vhost::MemoryRegionMsg &r) { r.memorySize = ~0ull; },
			     +[](vhost::MemoryRegionMsg &r) { r.memorySize *= 2; },
			     +[](vhost::MemoryRegionMsg &r) { r.memorySize = 0; },
			     +[](vhost::MemoryRegionMsg &r) { r.guestPhysAddr = ~0ull - 4095; },
			     +[](vhost::MemoryRegionMsg &r) { r.userspaceAddr = ~0ull - 4095; } }) {
		table.regions[0] = mem_->regionMsg();
		change(table.regions[0]);
		expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(1),
			      std::span(fds, 1));
	}
	table.regions[0] = mem_->regionMsg();
	expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(1));
	expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(1), fds);
	int sockets[2];
	ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
	UniqueFd s0(sockets[0]), s1(sockets[1]);
	expectRefused(FrontendRequest::SetMemTable, &table, vhost::memoryTableMsgSize(1),
		      std::span(sockets, 1));
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/*
 * CVE-2020-10722: SET_LOG_BASE with an offset + size that overflows, past the end of its
 * file, of size 0, or before LOG_SHMFD is negotiated; and given again and again, each log
 * replacing the last (the counts after the test show none kept).
 */
TEST_P(SwitchHostile, BadDirtyLogsAreRefusedAndNoneLeaks)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	UniqueFd log(::memfd_create("log", MFD_CLOEXEC));
	ASSERT_TRUE(log.isValid());
	ASSERT_EQ(::ftruncate(log.get(), 8192), 0);
	int fds[] = { log.get() };
	vhost::LogMsg good{ 4096, 0 };
	expectRefused(FrontendRequest::SetLogBase, &good, sizeof(good), fds);
	uint64_t logFd = 0;
	expectRefused(FrontendRequest::SetLogFd, &logFd, sizeof(logFd), fds);
	evil_.reset();
	ASSERT_TRUE(waitForLinks(*bench->sw, { { 0, false } }, false, kSettleTimeoutMs));

	evil_ = connectTo(0);
	ASSERT_TRUE(evil_);
	NegotiateOptions o = options();
	o.protocolFeatures |= vhost::protocol::mask(vhost::protocol::kLogShmfd);
	ASSERT_TRUE(evil_->negotiateQemu(o));
	for (vhost::LogMsg bad :
	     { vhost::LogMsg{ ~0ull - 10, 4096 }, vhost::LogMsg{ 4096, ~0ull - 10 },
	       vhost::LogMsg{ 8192, 1 }, vhost::LogMsg{ 1ull << 40, 0 }, vhost::LogMsg{ 0, 0 } })
		expectRefused(FrontendRequest::SetLogBase, &bad, sizeof(bad), fds);
	expectRefused(FrontendRequest::SetLogBase, &good, sizeof(good));
	for (int i = 0; i < 50; i++)
		ASSERT_TRUE(evil_->setLogBase(good, log.get())) << i;
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/* CVE-2020-10726, CVE-2021-3839, CVE-2022-0669: inflight requests (INFLIGHT_SHMFD not offered). */
TEST_P(SwitchHostile, InflightRequestsAreRefusedWithoutLeaking)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	UniqueFd area(::memfd_create("inflight", MFD_CLOEXEC));
	ASSERT_TRUE(area.isValid());
	int fds[] = { area.get() };
	vhost::InflightMsg msg{ 4096, 0, 0xffff, 0xffff, 0 };
	for (int i = 0; i < 50; i++) {
		/* GET_INFLIGHT_FD always has an answer: an empty one, and no fd. */
		ASSERT_TRUE(evil_->sendRaw(static_cast<uint32_t>(FrontendRequest::GetInflightFd),
					   &msg, sizeof(msg)));
		auto reply = evil_->receiveReply();
		ASSERT_TRUE(reply) << "no answer to GET_INFLIGHT_FD " << i;
		EXPECT_EQ((*reply)->size(), 0u);
		EXPECT_EQ((*reply)->fdCount, 0u);
		ASSERT_NO_FATAL_FAILURE(
			expectRefused(FrontendRequest::SetInflightFd, &msg, sizeof(msg), fds));
	}
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/* SET_VRING_ADDR outside guest memory, straddling its end, misaligned. */
TEST_P(SwitchHostile, RingsOutsideGuestMemoryAreRefused)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	auto base = evil_->stopQueue(0);
	ASSERT_TRUE(base);
	vhost::VringAddrMsg good{};
	good.index = 0;
	if (packed()) {
		good.desc = evil_->packedQueue(0).descQva();
		good.avail = evil_->packedQueue(0).driverEventQva();
		good.used = evil_->packedQueue(0).deviceEventQva();
	} else {
		good.desc = evil_->queue(0).descQva();
		good.avail = evil_->queue(0).availQva();
		good.used = evil_->queue(0).usedQva();
	}
	for (auto change : { +[](vhost::VringAddrMsg &a, uint64_t) { a.desc = 0xdead0000; },
			     +[](vhost::VringAddrMsg &a, uint64_t) { a.used = ~0ull - 3; },
			     +[](vhost::VringAddrMsg &a, uint64_t end) { a.desc = end - 16; },
			     +[](vhost::VringAddrMsg &a, uint64_t end) { a.used = end - 2; },
			     +[](vhost::VringAddrMsg &a, uint64_t) { a.desc += 1; } }) {
		vhost::VringAddrMsg addr = good;
		change(addr, mem_->qva() + kMemSize);
		expectRefused(FrontendRequest::SetVringAddr, &addr, sizeof(addr));
	}
	ASSERT_TRUE(evil_->restartQueue(0, *base));
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/* ==== The ring layer: the guest's TX ring (the switch reads) ==== */

/* CVE-2018-1059, ebd02c060a: buffers outside guest memory, or running past its end. */
TEST_P(SwitchHostile, BuffersOutsideGuestMemoryAreDropped)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	BufferSpec outside[] = { { 0xdead00000000ull, kHeader + kFrame, false } };
	expectTxRefused("rx_q0_chain_bad_address", outside);
	const uint64_t end = kGpaBase + kMemSize;
	BufferSpec straddling[] = { { end - 30, kHeader + kFrame, false } };
	expectTxRefused("rx_q0_chain_bad_address", straddling);
	BufferSpec wrapping[] = { { frame(), kHeader, false }, { ~0ull - 15, 0x100, false } };
	expectTxRefused("rx_q0_chain_bad_address", wrapping);
	BufferSpec below[] = { { kGpaBase - 16, kHeader + kFrame, false } };
	expectTxRefused("rx_q0_chain_bad_address", below);
}

/*
 * CVE-2018-1059: guest memory in two regions, adjacent in guest physical addresses but not in
 * the switch's address space. A frame whose buffer crosses from one into the other arrives
 * whole at port 1, byte for byte: each part is read from its own region.
 */
TEST_P(SwitchHostile, BufferAcrossTwoRegionsArrivesWhole)
{
	auto second = GuestMemoryFd::create(kMemSize, kGpaBase + kMemSize);
	ASSERT_TRUE(second);
	evil_ = connectTo(0);
	ASSERT_TRUE(evil_);
	NegotiateOptions o = options();
	o.memory = { mem_.get(), second.get() };
	ASSERT_TRUE(evil_->negotiateQemu(o));
	ASSERT_TRUE(waitForLinks(*bench->sw, { { 0, true } }, false));
	ASSERT_NO_FATAL_FAILURE(startPeer());
	uint64_t rx = peerMem_->alloc(2048, 64);
	BufferSpec rxBuffer[] = { { rx, 2048, true } };
	post(*peer_, 0, rxBuffer);

	std::vector<uint8_t> bytes(kHeader + 300);
	for (size_t i = kHeader; i < bytes.size(); i++)
		bytes[i] = static_cast<uint8_t>(i * 7 + 1);
	std::memset(bytes.data() + kHeader, 0xff, 6); /* broadcast */
	const uint64_t boundary = kGpaBase + kMemSize;
	const size_t inFirst = 100;
	mem_->write(boundary - inFirst, bytes.data(), inFirst);
	second->write(boundary, bytes.data() + inFirst, bytes.size() - inFirst);
	BufferSpec crossing[] = { { boundary - inFirst, static_cast<uint32_t>(bytes.size()),
				    false } };
	post(*evil_, 1, crossing);
	ASSERT_EQ(waitUsed(*evil_, 1, 1).size(), 1u) << "the crossing chain did not come back";
	auto lens = waitUsed(*peer_, 0, 1);
	ASSERT_EQ(lens.size(), 1u) << "the frame did not reach port 1";
	ASSERT_EQ(lens[0], bytes.size()) << "header and frame, as sent";
	std::vector<uint8_t> got(bytes.size() - kHeader);
	peerMem_->read(rx + kHeader, got.data(), got.size());
	EXPECT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + kHeader))
		<< "the frame changed on its way";
}

/* c687b0b635, 623bc47054: a zero-length buffer, a chain whose lengths overflow 32 bits. */
TEST_P(SwitchHostile, ZeroAndOverflowingLengthsAreDropped)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	BufferSpec zero[] = { { frame(), kHeader, false }, { frame(), 0, false } };
	expectTxRefused("rx_q0_chain_zero_length", zero);
	uint64_t big = mem_->alloc(4096, 64);
	BufferSpec huge[] = { { frame(), kHeader + kFrame, false }, { big, 0xffffffffu, false } };
	expectTxRefused("rx_q0_chain_length_overflow", huge);
}

/* a436f53ebf, cc7301908c: a chain that loops, and one whose next is past the table. */
TEST_P(SwitchHostile, LoopingAndRunawayChainsAreDroppedOrBreakTheRing)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	BufferSpec two[] = { { frame(), kHeader, false }, { frame(), kFrame, false } };
	if (!packed()) {
		SplitDriver &d = evil_->queue(1);
		expectTxRefused("rx_q0_chain_too_long", two, false, [&](uint16_t head) {
			virtio::SplitDesc *second = d.desc(d.desc(head)->next);
			second->flags |= virtio::kDescFNext;
			second->next = head;
		});
		expectTxRefused("rx_q0_chain_next_out_of_range", two, false,
				[&](uint16_t head) { d.desc(head)->next = 999; });
		return;
	}
	/* A packed chain is contiguous: NEXT on its last descriptor runs into the next slot. */
	PackedDriver &d = evil_->packedQueue(1);
	uint16_t last = static_cast<uint16_t>((d.availIdx() + 1) % kQueueSize);
	post(*evil_, 1, two, false, [&](uint16_t) {
		d.desc(last)->flags =
			static_cast<uint16_t>(d.desc(last)->flags | virtio::kPackedDescFNext);
	});
	expectTxBroken();
}

/* Indirect tables: a length that is not a multiple of 16, a nested table, INDIRECT with NEXT. */
TEST_P(SwitchHostile, BadIndirectTablesAreDropped)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	BufferSpec two[] = { { frame(), kHeader, false }, { frame(), kFrame, false } };
	if (packed()) {
		PackedDriver &d = evil_->packedQueue(1);
		uint16_t slot = d.availIdx();
		expectTxRefused("rx_q0_chain_indirect_bad_length", two, true,
				[&](uint16_t) { d.desc(slot)->len = 20; });
		slot = d.availIdx();
		expectTxRefused("rx_q0_chain_indirect_nested", two, true, [&](uint16_t id) {
			auto *table = reinterpret_cast<virtio::PackedDesc *>(
				mem_->hostPtr(d.indirectTableGpa(id)));
			table[1].flags |= virtio::kPackedDescFIndirect;
		});
		slot = d.availIdx();
		expectTxRefused("rx_q0_chain_bad_address", two, true,
				[&](uint16_t) { d.desc(slot)->addr = 0xdead00000000ull; });
		return;
	}
	SplitDriver &d = evil_->queue(1);
	expectTxRefused("rx_q0_chain_indirect_bad_length", two, true,
			[&](uint16_t head) { d.desc(head)->len = 20; });
	expectTxRefused("rx_q0_chain_indirect_nested", two, true, [&](uint16_t head) {
		auto *table = reinterpret_cast<virtio::SplitDesc *>(
			mem_->hostPtr(d.indirectTableGpa(head)));
		table[1].flags |= virtio::kDescFIndirect;
	});
	expectTxRefused("rx_q0_chain_indirect_with_next", two, true,
			[&](uint16_t head) { d.desc(head)->flags |= virtio::kDescFNext; });
	expectTxRefused("rx_q0_chain_bad_address", two, true,
			[&](uint16_t head) { d.desc(head)->addr = 0xdead00000000ull; });
}

/* CVE-2022-2132: the header over three descriptors (legal), and chains no longer than it. */
TEST_P(SwitchHostile, HeaderSplitsAndShortChainsAreHandled)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	uint64_t f = frame();
	BufferSpec threeWay[] = { { f, 4, false },
				  { f + 4, 4, false },
				  { f + 8, 4 + kFrame, false } };
	auto before = bench->sw->showPortXstats(0);
	post(*evil_, 1, threeWay);
	ASSERT_EQ(waitUsed(*evil_, 1, 1).size(), 1u);
	EXPECT_EQ(rxPacketsOnce(*bench->sw, before["rx_q0_packets"] + 1),
		  before["rx_q0_packets"] + 1)
		<< "a header over three descriptors is a legal frame";
	BufferSpec headerOnly[] = { { frame(), kHeader, false } };
	expectTxRefused("rx_q0_drop_too_short", headerOnly);
	BufferSpec shorter[] = { { frame(), 10, false } };
	expectTxRefused("rx_q0_drop_too_short", shorter);
	BufferSpec pieces[] = { { f, 6, false }, { f + 6, 6, false } };
	expectTxRefused("rx_q0_drop_too_short", pieces);
}

/* The guest rewrites its descriptors while the switch reads them (134228ca39, 93ed2f49de). */
TEST_P(SwitchHostile, DescriptorsRewrittenWhileReadAreTakenOnceOrDropped)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	/* 64 chains posted, each rewritten between a good and a bad length by another thread. */
	constexpr int kChains = 64;
	std::vector<uint64_t> frames;
	for (int i = 0; i < kChains; i++)
		frames.push_back(frame());
	std::vector<uint32_t *> lens;
	std::atomic<bool> stop{ false };
	auto before = bench->sw->showPortXstats(0);
	for (int i = 0; i < kChains; i++) {
		BufferSpec b[] = { { frames[i], kHeader + kFrame, false } };
		post(*evil_, 1, b, false, [&](uint16_t head) {
			if (packed()) {
				PackedDriver &d = evil_->packedQueue(1);
				lens.push_back(&d.desc(static_cast<uint16_t>(
							       (d.availIdx() + kQueueSize - 1) %
							       kQueueSize))
							->len);
			} else {
				lens.push_back(&evil_->queue(1).desc(head)->len);
			}
		});
	}
	std::thread flipper([&] {
		uint32_t values[] = { kHeader + kFrame, 0, 0xffffffffu, 4, kHeader + kFrame };
		for (unsigned n = 0; !stop.load(std::memory_order_relaxed); n++)
			for (uint32_t *len : lens)
				std::atomic_ref<uint32_t>(*len).store(values[n % 5],
								      std::memory_order_relaxed);
	});
	auto used = waitUsed(*evil_, 1, kChains);
	stop = true;
	flipper.join();
	ASSERT_EQ(used.size(), static_cast<size_t>(kChains)) << "every chain comes back once";
	uint64_t dropped = 0;
	auto after = xstatsOnce(*bench->sw, 0, [&](auto &x) {
		dropped = 0;
		for (const auto &[name, value] : x)
			if (name.rfind("rx_q0_chain_", 0) == 0 || name == "rx_q0_drop_too_short")
				dropped += value - before[name];
		return x["rx_q0_packets"] - before["rx_q0_packets"] + dropped >= kChains;
	});
	EXPECT_EQ(after["rx_q0_packets"] - before["rx_q0_packets"] + dropped,
		  static_cast<uint64_t>(kChains))
		<< "each chain is either a frame or a counted drop";
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

/* A head past the table, an avail index that jumps by more than the ring: the ring breaks. */
TEST_P(SwitchHostile, CorruptAvailRingBreaksOnlyThatRing)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	if (packed()) {
		/* A buffer id past the ring. */
		BufferSpec one[] = { { frame(), kHeader + kFrame, false } };
		PackedDriver &d = evil_->packedQueue(1);
		uint16_t slot = d.availIdx();
		post(*evil_, 1, one, false, [&](uint16_t) { d.desc(slot)->id = 999; });
	} else {
		SplitDriver &d = evil_->queue(1);
		d.setAvailRing(d.availIdx(), 300);
		d.setAvailIdx(static_cast<uint16_t>(d.availIdx() + 1));
	}
	ASSERT_NO_FATAL_FAILURE(expectTxBroken());
	/* The guest resets the ring: it works again. */
	ASSERT_TRUE(evil_->stopQueue(1));
	if (packed())
		evil_->packedQueue(1).reset();
	else
		evil_->queue(1).reset();
	/* A packed ring starts with its wrap counter set (bit 15 of the base). */
	ASSERT_TRUE(evil_->restartQueue(1, packed() ? 0x8000 : 0));
	ASSERT_NO_FATAL_FAILURE(expectStillServing());

	if (!packed()) {
		SplitDriver &d = evil_->queue(1);
		d.setAvailIdx(static_cast<uint16_t>(d.availIdx() + 1000));
		ASSERT_NO_FATAL_FAILURE(expectTxBroken());
	}
}

/* Packed rings only. */
class SwitchHostilePacked : public SwitchHostile
{
};

/* Packed: a descriptor whose AVAIL and USED bits say "used" is not taken until made available. */
TEST_P(SwitchHostilePacked, DescriptorsWithTheWrongWrapAreNotTaken)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	PackedDriver &d = evil_->packedQueue(1);
	uint16_t slot = d.availIdx();
	auto before = bench->sw->showPortXstats(0)["rx_q0_packets"];
	BufferSpec one[] = { { frame(), kHeader + kFrame, false } };
	d.holdNextHead();
	ASSERT_GE(d.addChain(one), 0);
	/* AVAIL and USED both set (or both clear): used in either wrap, never available. */
	for (uint16_t wrong :
	     { uint16_t(virtio::kPackedDescFAvail | virtio::kPackedDescFUsed), uint16_t(0) }) {
		d.setDescFlags(slot, wrong);
		std::this_thread::sleep_for(200ms);
		EXPECT_EQ(bench->sw->showPortXstats(0)["rx_q0_packets"], before)
			<< "taken with flags " << wrong;
	}
	d.releaseHeldHead();
	EXPECT_EQ(waitUsed(*evil_, 1, 1).size(), 1u);
	EXPECT_EQ(rxPacketsOnce(*bench->sw, before + 1), before + 1);
}

/* ==== The ring layer: the guest's RX ring (the switch writes) ==== */

/*
 * RX buffers outside guest memory, of length 0, read-only, or too small: nothing is written
 * outside the buffers (guard bytes), and the frames that fit arrive.
 */
TEST_P(SwitchHostile, BadRxBuffersAreNeverWrittenOutside)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	ASSERT_NO_FATAL_FAILURE(startPeer());
	auto before = bench->sw->showPortXstats(0);
	BufferSpec outside[] = { { 0xdead00000000ull, 2048, true } };
	post(*evil_, 0, outside);
	ASSERT_NO_FATAL_FAILURE(peerSends(1));
	auto lens = waitUsed(*evil_, 0, 1);
	ASSERT_EQ(lens.size(), 1u) << "a bad RX chain comes back";
	EXPECT_EQ(lens[0], 0u);
	BufferSpec small[] = { { guardedBuffer(kHeader + 20), kHeader + 20, true } };
	post(*evil_, 0, small);
	BufferSpec readOnly[] = { { guardedBuffer(2048), 2048, false } };
	post(*evil_, 0, readOnly);
	ASSERT_NO_FATAL_FAILURE(peerSends(4));
	std::this_thread::sleep_for(300ms);
	ASSERT_NO_FATAL_FAILURE(expectGuardsIntact());
	BufferSpec good[] = { { guardedBuffer(2048), 2048, true } };
	for (int i = 0; i < 8; i++)
		post(*evil_, 0, good);
	ASSERT_NO_FATAL_FAILURE(peerSends(8));
	std::this_thread::sleep_for(300ms);
	ASSERT_NO_FATAL_FAILURE(expectGuardsIntact());
	auto after = bench->sw->showPortXstats(0);
	EXPECT_GE(after["tx_q0_chain_bad_address"], before["tx_q0_chain_bad_address"] + 1);
	EXPECT_GT(after["tx_q0_packets"], before["tx_q0_packets"])
		<< "no frame reached the good RX buffers";
}

/* ==== The virtio-net header layer ==== */

/* CVE-2024-11614, 706ba48665: csum_start/csum_offset past the frame, GSO without a size. */
TEST_P(SwitchHostile, BadOffloadRequestsAreDropped)
{
	ASSERT_NO_FATAL_FAILURE(startEvil());
	virtio::NetHeader h{};
	h.flags = virtio::kNetHdrFNeedsCsum;
	h.csumStart = 2000;
	h.csumOffset = 16;
	BufferSpec past[] = { { frame(h), kHeader + kFrame, false } };
	expectTxRefused("rx_q0_drop_bad_offload", past);
	h.csumStart = kFrame - 1;
	h.csumOffset = 6;
	BufferSpec field[] = { { frame(h), kHeader + kFrame, false } };
	expectTxRefused("rx_q0_drop_bad_offload", field);
	h = {};
	h.gsoType = virtio::kNetHdrGsoTcpv4;
	h.gsoSize = 0;
	BufferSpec gso[] = { { frame(h), kHeader + kFrame, false } };
	expectTxRefused("rx_q0_drop_bad_offload", gso);
	h.gsoType = 0x33;
	h.gsoSize = 1400;
	BufferSpec unknown[] = { { frame(h), kHeader + kFrame, false } };
	expectTxRefused("rx_q0_drop_bad_offload", unknown);
	ASSERT_NO_FATAL_FAILURE(expectStillServing());
}

INSTANTIATE_TEST_SUITE_P(Rings, SwitchHostilePacked, ::testing::Values(true),
			 [](const ::testing::TestParamInfo<bool> &) { return "packed"; });
INSTANTIATE_TEST_SUITE_P(Rings, SwitchHostile, ::testing::Bool(),
			 [](const ::testing::TestParamInfo<bool> &info) {
				 return info.param ? "packed" : "split";
			 });

} /* namespace */
} /* namespace vub::test */
