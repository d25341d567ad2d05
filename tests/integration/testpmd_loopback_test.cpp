/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch in io mode, looped back through DPDK testpmd (net_virtio_user) as the guest:
 * testpmd sends one burst (`start tx_first`) and then forwards whatever comes back (io mode),
 * so a fixed number of packets circles guest TX -> switch -> guest RX for a second and a half.
 * Afterwards every counter on both sides must add up to the packet.
 *
 * The peer under test:
 *   VUB_SWITCH=PATH               vub-switch (meson sets it when app/vub-switch is built);
 *   VUB_LOOPBACK_PEER=dpdk-vhost  DPDK's own vhost-user back-end (testpmd with net_vhost in io
 *                                 mode) as a stand-in: when the stand-in passes and vub-switch
 *                                 fails, the fault is in vub, not in testpmd or this test.
 * Without either the tests skip. VUB_TESTPMD overrides the testpmd binary.
 *
 * The rates testpmd reports (Rx-pps) are printed and recorded as test properties; they are
 * never asserted (2 shared CPUs, two busy-polling processes).
 */
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "log_dump.h"
#include "process.h"
#include "testpmd.h"

namespace vub::test {
namespace {

using namespace std::chrono_literals;

/** Descriptors per ring on the guest side (testpmd --rxd/--txd, virtio-user queue_size). */
constexpr unsigned kRingSize = 1024;
/**
 * Packets `start tx_first` sends on each forwarding stream (testpmd's default burst): the
 * packets that circle in the loop. After `stop` they sit in the guest's RX ring, which no one
 * polls any more, so the guest counts them as sent but never as received.
 */
constexpr uint64_t kTxFirstBurst = 32;
/* Virtio feature bits (VIRTIO 1.x and virtio-net), spelt out: this test is a client of vub. */
constexpr unsigned kFeatureMrgRxbuf = 15;
constexpr unsigned kFeatureMq = 22;
constexpr unsigned kFeatureRingPacked = 34;
constexpr unsigned kFeatureInOrder = 35;
/** How long the loop runs. */
constexpr auto kRunTime = 1500ms;
/** Time the switch gets, after testpmd stopped, to move what the guest left in its TX ring. */
constexpr auto kDrainTime = 200ms;

TEST(SwitchStatsParser, ReadsEveryPortLine)
{
	auto stats = parseSwitchStats(
		"vub-switch: port 0 listening on /tmp/a.sock\n"
		"vub-switch: forwarding started\n"
		"port 0: rx-packets 580768 rx-bytes 37169152 tx-packets 580767 tx-bytes 37169088 "
		"tx-dropped 1 rx-dropped 0 features 30601641984\n"
		"port 1: rx-packets 5 rx-bytes 320 tx-packets 4 tx-bytes 256 tx-dropped 0 "
		"rx-dropped 2 rx-broken 0\n"
		"port 2: rx-packets 5\n");
	ASSERT_EQ(stats.size(), 2u);
	EXPECT_EQ(stats[0].rxPackets, 580768u);
	EXPECT_EQ(stats[0].rxBytes, 37169152u);
	EXPECT_EQ(stats[0].txPackets, 580767u);
	EXPECT_EQ(stats[0].txBytes, 37169088u);
	EXPECT_EQ(stats[0].txDropped, 1u);
	EXPECT_EQ(stats[1].rxDropped, 2u);
	EXPECT_EQ(stats[0].features, 30601641984u);
	EXPECT_FALSE(stats[1].features);
}

TEST(TestpmdOutput, ParsesPortRatesAndXstats)
{
	constexpr std::string_view kStats =
		"  ######################## NIC statistics for port 0  ########################\n"
		"  RX-packets: 580704     RX-missed: 0          RX-bytes:  37165056\n"
		"  TX-packets: 580736     TX-errors: 0          TX-bytes:  37167104\n"
		"\n"
		"  Throughput (since last show)\n"
		"  Rx-pps:       287630          Rx-bps:    147266560\n"
		"  Tx-pps:       287631          Tx-bps:    147267072\n"
		"  ############################################################################\n";
	auto rates = parsePortRates(kStats);
	ASSERT_EQ(rates.size(), 1u);
	EXPECT_EQ(rates[0].rxPps, 287630u);
	EXPECT_EQ(rates[0].rxBps, 147266560u);
	EXPECT_EQ(rates[0].txPps, 287631u);
	EXPECT_EQ(rates[0].txBps, 147267072u);

	constexpr std::string_view kXstats = "###### NIC extended statistics for port 0 \n"
					     "rx_good_packets: 10\n"
					     "rx_q1_good_packets: 4\n"
					     "###### NIC extended statistics for port 1 \n"
					     "tx_q0_good_packets: 7\n";
	auto xstats = parsePortXstats(kXstats);
	ASSERT_EQ(xstats.size(), 2u);
	EXPECT_EQ(xstats[0]["rx_good_packets"], 10u);
	EXPECT_EQ(xstats[0]["rx_q1_good_packets"], 4u);
	EXPECT_EQ(xstats[0].count("tx_q0_good_packets"), 0u);
	EXPECT_EQ(xstats[1]["tx_q0_good_packets"], 7u);
}

/** What the switch (or the stand-in) is started with. */
struct SwitchOptions {
	std::string socketPath;
	unsigned queues = 1;
	bool hugepages = false;
	/** "0@B,1@A": its control thread and its worker, the worker not on testpmd's. */
	std::string lcores;
};

/**
 * The vhost-user back-end under test, one port, looping every packet back to the guest that
 * sent it. Not thread-safe.
 */
class SwitchUnderTest
{
public:
	virtual ~SwitchUnderTest() = default;

	/** \brief Wait until the socket listens and forwarding runs. */
	virtual bool waitReady(std::string *error) = 0;
	/** \brief Stop it (the vub-switch: SIGTERM) and collect its counters, by port. */
	virtual std::optional<std::map<unsigned, SwitchPortStats>> stop(std::string *error) = 0;
	virtual const char *name() const = 0;
	virtual const std::string &logPath() const = 0;
};

/** vub-switch as a child process: the contract in app/vub-switch. */
class VubSwitch final : public SwitchUnderTest
{
public:
	static std::unique_ptr<SwitchUnderTest> start(const std::string &binary,
						      const SwitchOptions &options,
						      const std::string &logPath,
						      std::string *error)
	{
		auto stdbuf = findStdbuf();
		if (!stdbuf) {
			*error = "stdbuf not found (coreutils)";
			return nullptr;
		}
		std::unique_ptr<VubSwitch> sw(new VubSwitch());
		sw->filePrefix_ = uniqueFilePrefix();
		ProcessOptions p;
		/* Line-buffered, like testpmd: its stdout is a file, and the test waits on it. */
		p.argv = { *stdbuf, "-oL", "-eL", binary };
		p.argv.insert(p.argv.end(), { "--no-pci", "--file-prefix=" + sw->filePrefix_,
					      "--lcores", options.lcores });
		if (options.hugepages)
			p.argv.insert(p.argv.end(),
				      { "--in-memory", "--single-file-segments", "-m", "256" });
		else
			p.argv.insert(p.argv.end(), { "--no-huge", "-m", "512" });
		p.argv.insert(p.argv.end(), { "--", "--port",
					      "vhost-user:path=" + options.socketPath +
						      ",queues=" + std::to_string(options.queues),
					      "--forward-mode=io" });
		p.logPath = logPath;
		sw->process_ = Process::create(p, error);
		if (!sw->process_)
			return nullptr;
		return sw;
	}

	~VubSwitch() override
	{
		process_.reset();
		std::error_code ec;
		std::filesystem::remove_all(dpdkRuntimeDir(filePrefix_), ec);
	}

	bool waitReady(std::string *error) override
	{
		/* EAL with --no-huge -m 512 clears its memory first: seconds on a slow machine. */
		if (process_->waitForOutput("vub-switch: forwarding started", 30000))
			return true;
		*error = process_->running()
				 ? "no 'vub-switch: forwarding started' in 30 s"
				 : "vub-switch exited: " + process_->exitStatus()->toString();
		return false;
	}

	std::optional<std::map<unsigned, SwitchPortStats>> stop(std::string *error) override
	{
		auto status = process_->terminate(SIGTERM, 10000);
		if (!status) {
			*error = "vub-switch did not exit after SIGTERM and SIGKILL";
			return std::nullopt;
		}
		if (!status->success()) {
			*error = "vub-switch ended with " + status->toString() +
				 " after SIGTERM (expected exit 0)";
			return std::nullopt;
		}
		return parseSwitchStats(process_->output());
	}

	const char *name() const override { return "vub-switch"; }
	const std::string &logPath() const override { return process_->logPath(); }

private:
	VubSwitch() = default;

	std::unique_ptr<Process> process_;
	std::string filePrefix_;
};

/** DPDK's net_vhost in testpmd, io mode: what vub-switch is measured against. */
class DpdkVhostStandIn final : public SwitchUnderTest
{
public:
	static std::unique_ptr<SwitchUnderTest>
	start(const SwitchOptions &options, const std::string &logPath, std::string *error)
	{
		TestpmdOptions t;
		t.vdev = "net_vhost0,iface=" + options.socketPath +
			 ",queues=" + std::to_string(options.queues);
		t.queues = options.queues;
		t.queueSize = kRingSize;
		t.hugepages = options.hugepages;
		t.memoryMb = options.hugepages ? 256 : 512;
		t.lcores = options.lcores;
		std::unique_ptr<DpdkVhostStandIn> sw(new DpdkVhostStandIn());
		sw->testpmd_ = Testpmd::start(t, logPath, error);
		if (!sw->testpmd_)
			return nullptr;
		return sw;
	}

	bool waitReady(std::string *error) override
	{
		if (!testpmd_->waitForPrompt(60000)) {
			*error = "no prompt from the stand-in testpmd in 60 s";
			return false;
		}
		if (!testpmd_->setForwardMode("io") || !testpmd_->startForwarding()) {
			*error = "the stand-in testpmd did not start io forwarding";
			return false;
		}
		return true;
	}

	std::optional<std::map<unsigned, SwitchPortStats>> stop(std::string *error) override
	{
		auto reply = testpmd_->command("stop", 20000);
		auto ports = testpmd_->showPortStats();
		if (!reply || !ports) {
			*error = "no statistics from the stand-in testpmd";
			return std::nullopt;
		}
		std::map<unsigned, SwitchPortStats> out;
		for (const auto &[port, fwd] : parsePortForwardStats(*reply)) {
			const PortStats &nic = (*ports)[port];
			out[port] = SwitchPortStats{ fwd.rxPackets, nic.rxBytes,   fwd.txPackets,
						     nic.txBytes,   fwd.txDropped, fwd.rxDropped,
						     std::nullopt };
		}
		auto quit = testpmd_->quit();
		if (!quit || !quit->success()) {
			*error = "the stand-in testpmd did not quit: " +
				 (quit ? quit->toString() : std::string("still running"));
			return std::nullopt;
		}
		return out;
	}

	const char *name() const override { return "dpdk-testpmd net_vhost (stand-in)"; }
	const std::string &logPath() const override { return testpmd_->process().logPath(); }

private:
	DpdkVhostStandIn() = default;

	std::unique_ptr<Testpmd> testpmd_;
};

/** Which peer runs, or why none does (then the test skips). */
struct Peer {
	enum class Kind { VubSwitch, DpdkVhost } kind = Kind::VubSwitch;
	std::string binary;
};

std::optional<Peer> choosePeer(std::string *why)
{
	const char *peer = std::getenv("VUB_LOOPBACK_PEER");
	std::string_view name = peer && *peer ? peer : "vub-switch";
	if (name == "dpdk-vhost")
		return Peer{ Peer::Kind::DpdkVhost, {} };
	if (name != "vub-switch") {
		*why = "VUB_LOOPBACK_PEER=" + std::string(name) +
		       ": expected vub-switch (the default) or dpdk-vhost";
		return std::nullopt;
	}
	const char *binary = std::getenv("VUB_SWITCH");
	if (!binary || !*binary) {
		*why = "VUB_SWITCH is not set: vub-switch is not built (VUB_LOOPBACK_PEER=dpdk-vhost "
		       "runs these tests against DPDK's net_vhost instead)";
		return std::nullopt;
	}
	return Peer{ Peer::Kind::VubSwitch, binary };
}

/** One loopback run. */
struct LoopbackCase {
	bool mrgRxbuf = true;
	bool inOrder = false;
	bool packedVq = false;
	bool hugepages = true;
	unsigned queues = 1;
	/** Worker lcores of the switch, all on the CPU its first one uses. */
	unsigned workers = 1;
	/** `set txpkts` argument; empty = testpmd's default (64 bytes). */
	std::string txpkts;
	/** The frame size \a txpkts makes, for the byte counts. */
	uint64_t frameBytes = 64;
	/** More testpmd arguments (jumbo frames). */
	std::vector<std::string> extraAppArgs;
};

std::string describe(const LoopbackCase &c)
{
	std::string s = "mrg_rxbuf=" + std::to_string(c.mrgRxbuf) +
			" in_order=" + std::to_string(c.inOrder) +
			" packed_vq=" + std::to_string(c.packedVq) +
			" queues=" + std::to_string(c.queues) +
			" frame=" + std::to_string(c.frameBytes) +
			(c.hugepages ? " hugepages" : " no-huge");
	for (const std::string &a : c.extraAppArgs)
		s += " " + a;
	return s;
}

/** Everything a run measured, for the assertions of each test. */
struct LoopbackResult {
	/** testpmd's `show port stats all` after `stop` and the drain. */
	PortStats guest;
	/** testpmd's `stop`: the forwarding counters (drops of io mode). */
	ForwardStats forwarded;
	/** `show port xstats all` of the guest after the drain. */
	std::map<std::string, uint64_t> guestXstats;
	/** The switch's port 0. */
	SwitchPortStats port;
};

/*
 * Starts the peer and testpmd, runs the loop, stops both. GTEST_SKIP and ASSERT_* return from
 * here with \a result unset, so each TEST checks HasFatalFailure() and IsSkipped() after it.
 */
void runLoopback(const LoopbackCase &c, std::optional<LoopbackResult> &result)
{
	std::string why;
	auto peer = choosePeer(&why);
	if (!peer && why.rfind("VUB_LOOPBACK_PEER=", 0) == 0)
		GTEST_FAIL() << why; /* a misspelt choice, not a missing resource */
	if (!peer)
		GTEST_SKIP() << why;
	if (peer->kind == Peer::Kind::VubSwitch) {
		ASSERT_EQ(::access(peer->binary.c_str(), X_OK), 0)
			<< "VUB_SWITCH=" << peer->binary << " is not an executable";
	}
	if (!findTestpmd())
		GTEST_SKIP() << "dpdk-testpmd not found (apt-get install dpdk, or set VUB_TESTPMD)";
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";
	if (c.hugepages && !hugepagesUsable(&why))
		GTEST_SKIP() << "hugepages not usable: " << why;

	/* Each side's busy-polling lcore on its own CPU, each control thread on the other. */
	const std::vector<int> cpus = allowedCpus(2);
	const std::string a = std::to_string(cpus[0]);
	const std::string b = std::to_string(cpus[1]);
	TempDir dir("vub-loopback-");
	LogDump dump;
	const std::string socket = dir.file("switch.sock");
	std::string error;

	SwitchOptions swOptions;
	swOptions.socketPath = socket;
	swOptions.queues = c.queues;
	swOptions.hugepages = c.hugepages;
	swOptions.lcores = "0@" + b;
	for (unsigned w = 1; w <= c.workers; w++)
		swOptions.lcores += "," + std::to_string(w) + "@" + a;
	std::unique_ptr<SwitchUnderTest> sw =
		peer->kind == Peer::Kind::VubSwitch
			? VubSwitch::start(peer->binary, swOptions, dir.file("switch.log"), &error)
			: DpdkVhostStandIn::start(swOptions, dir.file("switch.log"), &error);
	ASSERT_TRUE(sw) << "cannot start the switch: " << error;
	dump.add(sw->name(), sw->logPath());
	ASSERT_TRUE(sw->waitReady(&error)) << sw->name() << ": " << error;

	TestpmdOptions options;
	options.socketPath = socket;
	options.queues = c.queues;
	options.queueSize = kRingSize;
	options.mrgRxbuf = c.mrgRxbuf;
	options.inOrder = c.inOrder;
	options.packedVq = c.packedVq;
	options.hugepages = c.hugepages;
	options.lcores = "0@" + a + ",1@" + b;
	options.extraAppArgs = c.extraAppArgs;
	auto testpmd = Testpmd::start(options, dir.file("testpmd.log"), &error);
	ASSERT_TRUE(testpmd) << "cannot start testpmd: " << error;
	dump.add("dpdk-testpmd (virtio-user)", testpmd->process().logPath());
	ASSERT_TRUE(testpmd->waitForPrompt(60000)) << "no testpmd prompt in 60 s";
	ASSERT_EQ(testpmd->portCount(), 1u)
		<< "virtio-user did not come up on " << socket << " (" << describe(c) << ")";

	ASSERT_TRUE(testpmd->setForwardMode("io"));
	if (!c.txpkts.empty()) {
		/* A length testpmd rejects only prints "... - give up" and keeps the old one. */
		auto reply = testpmd->command("set txpkts " + c.txpkts);
		ASSERT_TRUE(reply && reply->find("give up") == std::string::npos &&
			    reply->find("error") == std::string::npos &&
			    reply->find("Error") == std::string::npos)
			<< "set txpkts " << c.txpkts << ": " << (reply ? *reply : "no reply");
	}
	auto started = testpmd->command("start tx_first");
	ASSERT_TRUE(started && started->find("packet forwarding - ports=") != std::string::npos)
		<< "start tx_first: " << (started ? *started : "no reply");
	/* The first `show port stats` sets the baseline of the rates; the second reads them. */
	ASSERT_TRUE(testpmd->command("show port stats all"));
	std::this_thread::sleep_for(kRunTime);
	auto during = testpmd->command("show port stats all");
	ASSERT_TRUE(during);
	auto forwarded = testpmd->stopForwarding();
	ASSERT_TRUE(forwarded) << "no forward statistics after 'stop'";
	/* The guest polls no more: what it left in its TX ring goes to its RX ring. */
	std::this_thread::sleep_for(kDrainTime);
	auto ports = testpmd->showPortStats();
	ASSERT_TRUE(ports && ports->count(0)) << "no port statistics after 'stop'";
	auto xstats = testpmd->command("show port xstats all");
	ASSERT_TRUE(xstats);

	auto swStats = sw->stop(&error);
	ASSERT_TRUE(swStats) << sw->name() << ": " << error;
	ASSERT_TRUE(swStats->count(0)) << "no 'port 0:' statistics line from " << sw->name();

	auto rates = parsePortRates(*during);
	const PortRates rate = rates.count(0) ? rates[0] : PortRates{};
	/* Informational: meson keeps it in the test log. */
	std::printf("[ rate     ] %s against %s: testpmd Rx-pps %llu (%.3f Mpps), Rx-bps %llu\n",
		    describe(c).c_str(), sw->name(), static_cast<unsigned long long>(rate.rxPps),
		    static_cast<double>(rate.rxPps) / 1e6,
		    static_cast<unsigned long long>(rate.rxBps));
	::testing::Test::RecordProperty("rx_pps", std::to_string(rate.rxPps));
	::testing::Test::RecordProperty("rx_mpps",
					std::to_string(static_cast<double>(rate.rxPps) / 1e6));

	auto quit = testpmd->quit(10000);
	EXPECT_TRUE(quit && quit->success())
		<< "testpmd: " << (quit ? quit->toString() : "still running");

	auto px = parsePortXstats(*xstats);
	result = LoopbackResult{ (*ports)[0], *forwarded, px[0], (*swStats)[0] };
}

/*
 * What every loopback must show: each packet the guest sent went through the switch and came
 * back, except the tx_first bursts that were still circling when the guest stopped polling.
 */
void expectConservation(const LoopbackCase &c, const LoopbackResult &r)
{
	const PortStats &g = r.guest;
	const SwitchPortStats &s = r.port;
	EXPECT_GT(g.rxPackets, 0u) << "nothing came back to the guest";
	/*
	 * With kRingSize descriptors and kTxFirstBurst packets per queue in flight the guest
	 * always has buffers: a drop is a switch bug (or the guest's TX ring was full, which
	 * testpmd counts as TX-dropped), not load.
	 */
	EXPECT_EQ(s.txDropped, 0u) << "the switch dropped packets towards the guest";
	EXPECT_EQ(s.rxDropped, 0u) << "the switch dropped packets from the guest";
	EXPECT_EQ(r.forwarded.txDropped, 0u) << "testpmd's io forwarding found its TX ring full";
	EXPECT_EQ(g.rxNombuf, 0u);
	EXPECT_EQ(s.rxPackets, g.txPackets) << "packets the guest sent != packets the switch got";
	EXPECT_EQ(s.txPackets, s.rxPackets) << "the switch did not send back all it received";
	/*
	 * Not s.txPackets == g.rxPackets: after `stop` the packets of the tx_first bursts, one per
	 * queue, still travel; the switch delivers them to the guest's RX ring, where testpmd no
	 * longer reads them.
	 */
	EXPECT_EQ(s.txPackets, g.rxPackets + kTxFirstBurst * c.queues)
		<< "the guest should have received all but the " << kTxFirstBurst * c.queues
		<< " packets in flight when it stopped";
	/* Bytes are frame bytes, without the virtio-net header (DPDK's convention). */
	EXPECT_EQ(g.txBytes, g.txPackets * c.frameBytes) << "testpmd did not send the frame size";
	EXPECT_EQ(g.rxBytes, g.rxPackets * c.frameBytes) << "frames came back with another size";
	EXPECT_EQ(s.rxBytes, s.rxPackets * c.frameBytes) << "the switch counted other rx-bytes";
	EXPECT_EQ(s.txBytes, s.txPackets * c.frameBytes) << "the switch counted other tx-bytes";
	/* What the guest asked for was negotiated: else this case tested another one. */
	if (s.features) {
		auto has = [&](unsigned bit) { return ((*s.features >> bit) & 1) != 0; };
		EXPECT_EQ(has(kFeatureMrgRxbuf), c.mrgRxbuf) << "features " << *s.features;
		EXPECT_EQ(has(kFeatureInOrder), c.inOrder) << "features " << *s.features;
		EXPECT_EQ(has(kFeatureRingPacked), c.packedVq) << "features " << *s.features;
		EXPECT_EQ(has(kFeatureMq), c.queues > 1) << "features " << *s.features;
	}
	if (c.queues < 2)
		return;
	/* testpmd's one forwarding lcore polls every stream; tx_first fills each. */
	for (unsigned q = 0; q < c.queues; q++) {
		for (const char *dir : { "rx", "tx" }) {
			std::string key =
				std::string(dir) + "_q" + std::to_string(q) + "_good_packets";
			auto it = r.guestXstats.find(key);
			ASSERT_NE(it, r.guestXstats.end()) << "no " << key << " in port 0's xstats";
			EXPECT_GT(it->second, kTxFirstBurst)
				<< key << ": that queue pair carried nothing";
		}
	}
}

/* ---- 1. Feature combinations ---- */

/* mrg_rxbuf, in_order, packed, hugepages, queue pairs */
using FeatureParam = std::tuple<bool, bool, bool, bool, unsigned>;

class SwitchLoopback : public ::testing::TestWithParam<FeatureParam>
{
};

TEST_P(SwitchLoopback, ReturnsEveryPacket)
{
	LoopbackCase c;
	std::tie(c.mrgRxbuf, c.inOrder, c.packedVq, c.hugepages, c.queues) = GetParam();
	std::optional<LoopbackResult> result;
	runLoopback(c, result);
	if (::testing::Test::HasFatalFailure() || ::testing::Test::IsSkipped())
		return;
	expectConservation(c, *result);
}

std::string featureName(const ::testing::TestParamInfo<FeatureParam> &info)
{
	auto [mrg, inOrder, packed, huge, queues] = info.param;
	return std::string("MrgRxbuf") + (mrg ? "1" : "0") + "InOrder" + (inOrder ? "1" : "0") +
	       "PackedVq" + (packed ? "1" : "0") + (huge ? "Hugepages" : "NoHuge") + "Queues" +
	       std::to_string(queues);
}

/*
 * All 8 feature combinations, with one and two queue pairs, on hugepages and on --no-huge
 * (memfd memory) alike: on 2 CPUs a case takes ~2.5 s with hugepages and ~5-7 s without (EAL
 * clears the memfd memory of both processes), ~140 s for the 32.
 */
INSTANTIATE_TEST_SUITE_P(Features, SwitchLoopback,
			 ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Bool(),
					    ::testing::Bool(), ::testing::Values(1u, 2u)),
			 featureName);

/* ---- 2. Frame sizes ---- */

struct SizeParam {
	const char *name;
	const char *txpkts;
	uint64_t frameBytes;
	std::vector<std::string> extraAppArgs;
};

/*
 * Jumbo frames with testpmd 22.11 and virtio-user, two ways (both checked with DPDK's
 * net_vhost):
 *   - One segment: `--max-pkt-len=9600 --mbuf-size=10240`, `set txpkts 9000`. `set txpkts`
 *     refuses a segment longer than the mbuf data room ("length[0]=9000 > mbuf_data_size=2176
 *     - give up"), and virtio's RX queue setup refuses a max-pkt-len larger than one mbuf
 *     without scatter ("Rx scatter is disabled and RxQ mbuf pool object size is too small").
 *     Each frame is one guest buffer each way.
 *   - Chained: `--max-pkt-len=9600 --enable-scatter` with 2 KiB mbufs and `set txpkts
 *     2000,2000,2000,2000,1000`: each frame leaves the guest as a chain of the header and
 *     5 segments (an indirect table when INDIRECT_DESC is negotiated) and comes back merged
 *     into 5 RX buffers of 2 KiB (mrg_rxbuf, num_buffers 5). virtio-user sends multi-segment
 *     mbufs without --tx-offloads=0x8000 (MULTI_SEGS).
 * --max-pkt-len=9600 makes the port MTU 9570 (virtio counts 30 bytes of overhead: Ethernet
 * header, VLAN tag, virtio-net header); virtio enforces no MTU on either path, but the test
 * does not rely on that.
 */
const std::vector<SizeParam> kSizes = {
	{ "Frame64", "64", 64, {} },
	{ "Frame1518", "1518", 1518, {} },
	{ "Jumbo9000OneSegment", "9000", 9000, { "--max-pkt-len=9600", "--mbuf-size=10240" } },
	{ "Jumbo9000Chained",
	  "2000,2000,2000,2000,1000",
	  9000,
	  { "--max-pkt-len=9600", "--enable-scatter" } },
};

void PrintTo(const SizeParam &param, std::ostream *os)
{
	*os << "set txpkts " << param.txpkts;
	for (const std::string &a : param.extraAppArgs)
		*os << " " << a;
}

/* A frame size, on a split (false) or packed (true) ring. */
using FrameParam = std::tuple<SizeParam, bool>;

class SwitchLoopbackFrames : public ::testing::TestWithParam<FrameParam>
{
};

TEST_P(SwitchLoopbackFrames, ReturnsEveryFrameWhole)
{
	const SizeParam &size = std::get<0>(GetParam());
	LoopbackCase c;
	c.mrgRxbuf = true;
	c.packedVq = std::get<1>(GetParam());
	c.hugepages = hugepagesUsable();
	c.txpkts = size.txpkts;
	c.frameBytes = size.frameBytes;
	c.extraAppArgs = size.extraAppArgs;
	std::optional<LoopbackResult> result;
	runLoopback(c, result);
	if (::testing::Test::HasFatalFailure() || ::testing::Test::IsSkipped())
		return;
	/* The byte counts of both sides prove the size in both directions. */
	expectConservation(c, *result);
}

INSTANTIATE_TEST_SUITE_P(Sizes, SwitchLoopbackFrames,
			 ::testing::Combine(::testing::ValuesIn(kSizes), ::testing::Bool()),
			 [](const ::testing::TestParamInfo<FrameParam> &info) {
				 return std::string(std::get<0>(info.param).name) +
					(std::get<1>(info.param) ? "Packed" : "Split");
			 });

/* ---- 3. Several workers ---- */

TEST(SwitchLoopbackWorkers, TwoWorkersEachPollAQueuePair)
{
	/* Both workers share a CPU here: this checks who polls what, not speed. */
	LoopbackCase c;
	c.queues = 2;
	c.workers = 2;
	c.hugepages = hugepagesUsable();
	std::optional<LoopbackResult> result;
	runLoopback(c, result);
	if (::testing::Test::HasFatalFailure() || ::testing::Test::IsSkipped())
		return;
	expectConservation(c, *result);
}

} /* namespace */
} /* namespace vub::test */
