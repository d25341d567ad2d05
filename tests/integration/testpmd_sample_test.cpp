/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DPDK testpmd (net_virtio_user) as the front-end of vub-sample-backend: testpmd transmits a
 * txonly stream for two seconds, and every packet it counts as sent must be a chain the sample
 * consumed on virtqueue 1 (the transmit queue of pair 0).
 *
 * VUB_SAMPLE_BACKEND is the sample's path (meson sets it); VUB_TESTPMD overrides the testpmd
 * binary. Needs root or permission for the vhost-user socket directory, nothing else.
 */
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "log_dump.h"
#include "process.h"
#include "testpmd.h"

namespace vub::test {
namespace {

/** Per-queue counters from the sample's exit lines ("queue 1: chains 5 bytes 380 ..."). */
using SampleStats = std::map<unsigned, std::map<std::string, uint64_t>>;

SampleStats parseSampleStats(const std::string &text)
{
	static const std::regex kLine("queue ([0-9]+):((?: [a-z_]+ [0-9]+)+)");
	static const std::regex kPair(" ([a-z_]+) ([0-9]+)");
	SampleStats out;
	for (auto it = std::sregex_iterator(text.begin(), text.end(), kLine);
	     it != std::sregex_iterator(); ++it) {
		auto &queue = out[static_cast<unsigned>(std::stoul((*it)[1].str()))];
		std::string pairs = (*it)[2].str();
		for (auto p = std::sregex_iterator(pairs.begin(), pairs.end(), kPair);
		     p != std::sregex_iterator(); ++p)
			queue[(*p)[1].str()] = std::stoull((*p)[2].str());
	}
	return out;
}

TEST(SampleStatsParser, ReadsEveryQueueLine)
{
	auto stats =
		parseSampleStats("vub-sample-backend: listening on /tmp/x.sock\n"
				 "queue 0: chains 0 bytes 0 notifications 0 bad 0\n"
				 "queue 1: chains 63520 bytes 4827520 notifications 3 kicks 7\n");
	ASSERT_EQ(stats.size(), 2u);
	EXPECT_EQ(stats[0]["chains"], 0u);
	EXPECT_EQ(stats[1]["chains"], 63520u);
	EXPECT_EQ(stats[1]["bytes"], 4827520u);
	EXPECT_EQ(stats[1]["kicks"], 7u);
}

/** How long testpmd transmits. */
constexpr auto kTxDuration = std::chrono::seconds(2);
/** Time the back-end gets to consume the last chains testpmd made available. */
constexpr auto kDrainTime = std::chrono::milliseconds(500);

/*
 * The whole scenario; GTEST_SKIP and ASSERT_* return from here, so each TEST calls it last.
 */
void runTxonlyAgainstSample(bool hugepages)
{
	const char *sample = std::getenv("VUB_SAMPLE_BACKEND");
	if (!sample || !*sample)
		GTEST_SKIP() << "VUB_SAMPLE_BACKEND is not set: the sample back-end is not built";
	ASSERT_EQ(::access(sample, X_OK), 0)
		<< "VUB_SAMPLE_BACKEND=" << sample << " is not an executable";
	if (!findTestpmd())
		GTEST_SKIP() << "dpdk-testpmd not found (apt-get install dpdk, or set VUB_TESTPMD)";
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";
	std::string why;
	if (hugepages && !hugepagesUsable(&why))
		GTEST_SKIP() << "hugepages not usable: " << why;

	TempDir dir("vub-testpmd-");
	const std::string socket = dir.file("vub.sock");
	LogDump dump;

	ProcessOptions sampleOptions;
	sampleOptions.argv = { sample, "--socket", socket };
	sampleOptions.logPath = dir.file("sample.log");
	std::string error;
	auto backend = Process::create(sampleOptions, &error);
	ASSERT_TRUE(backend) << "cannot start " << sample << ": " << error;
	dump.add("vub-sample-backend", sampleOptions.logPath);
	ASSERT_TRUE(backend->waitForOutput("listening on", 10000))
		<< "vub-sample-backend did not print 'listening on' in 10 s";

	TestpmdOptions options;
	options.socketPath = socket;
	options.queues = 1;
	options.queueSize = 256;
	options.hugepages = hugepages;
	auto testpmd = Testpmd::start(options, dir.file("testpmd.log"), &error);
	ASSERT_TRUE(testpmd) << "cannot start testpmd: " << error;
	dump.add("dpdk-testpmd", testpmd->process().logPath());
	ASSERT_TRUE(testpmd->waitForPrompt(60000)) << "no testpmd prompt in 60 s";
	ASSERT_EQ(testpmd->portCount(), 1u) << "virtio-user did not come up on " << socket;

	ASSERT_TRUE(testpmd->setForwardMode("txonly"));
	ASSERT_TRUE(testpmd->startForwarding());
	std::this_thread::sleep_for(kTxDuration);
	auto forwarded = testpmd->stopForwarding();
	ASSERT_TRUE(forwarded) << "no forward statistics after 'stop'";
	EXPECT_GT(forwarded->txPackets, 0u) << "testpmd sent nothing in 2 s";
	auto ports = testpmd->showPortStats();
	ASSERT_TRUE(ports && ports->count(0));
	EXPECT_EQ((*ports)[0].txPackets, forwarded->txPackets);

	/* testpmd stopped: its TX count is final. The sample drains the ring, then stops. */
	std::this_thread::sleep_for(kDrainTime);
	auto status = backend->terminate(SIGTERM, 10000);
	ASSERT_TRUE(status) << "vub-sample-backend did not exit";
	EXPECT_TRUE(status->success()) << "vub-sample-backend: " << status->toString();
	SampleStats stats = parseSampleStats(backend->output());
	ASSERT_TRUE(stats.count(1)) << "no 'queue 1:' line from vub-sample-backend";
	ASSERT_TRUE(stats[1].count("chains")) << "no chain count for queue 1";
	EXPECT_GT(stats[1]["chains"], 0u);
	EXPECT_EQ(stats[1]["chains"], forwarded->txPackets)
		<< "chains consumed on queue 1 != packets testpmd transmitted";

	/* Its back-end is gone; testpmd must still quit (SIGPIPE is ignored in it). */
	auto quit = testpmd->quit(10000);
	EXPECT_TRUE(quit && quit->success())
		<< "testpmd: " << (quit ? quit->toString() : "still running");
}

TEST(TestpmdVirtioUser, TxonlyStreamIsConsumed)
{
	runTxonlyAgainstSample(false);
}

TEST(TestpmdVirtioUser, TxonlyStreamIsConsumedOnHugepages)
{
	runTxonlyAgainstSample(true);
}

} /* namespace */
} /* namespace vub::test */
