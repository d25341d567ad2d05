/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The harness against DPDK's own vhost-user back-end (testpmd with net_vhost): when this passes
 * and testpmd_sample_test fails, the fault is in vub, not in testpmd or the harness.
 */
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "process.h"
#include "testpmd.h"

namespace vub::test {
namespace {

TEST(TestpmdVirtioUser, DpdkVhostPeerReceivesTxonlyStream)
{
	if (!findTestpmd())
		GTEST_SKIP() << "dpdk-testpmd not found (apt-get install dpdk, or set VUB_TESTPMD)";
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";

	/* Hugepages when there are: EAL starts in well under a second instead of ~5 s. */
	const bool hugepages = hugepagesUsable();
	/* Each side's forwarding lcore on its own CPU (when there are two). */
	const std::vector<int> cpus = allowedCpus(2);
	const std::string a = std::to_string(cpus[0]);
	const std::string b = std::to_string(cpus[1]);
	TempDir dir("vub-testpmd-");
	const std::string socket = dir.file("dpdk-vhost.sock");
	std::string error;

	/* The back-end: net_vhost in server mode, receiving (rxonly) on the other CPU. */
	TestpmdOptions backendOptions;
	backendOptions.vdev = "net_vhost0,iface=" + socket + ",queues=1";
	backendOptions.hugepages = hugepages;
	backendOptions.memoryMb = hugepages ? 256 : 512;
	backendOptions.lcores = "0@" + b + ",1@" + a;
	auto backend = Testpmd::start(backendOptions, dir.file("vhost.log"), &error);
	ASSERT_TRUE(backend) << error;
	ASSERT_TRUE(backend->waitForPrompt()) << tail(backend->process().output(), 40);
	ASSERT_TRUE(backend->setForwardMode("rxonly"));
	ASSERT_TRUE(backend->startForwarding());

	TestpmdOptions frontendOptions;
	frontendOptions.socketPath = socket;
	frontendOptions.lcores = "0@" + a + ",1@" + b;
	frontendOptions.hugepages = hugepages;
	auto frontend = Testpmd::start(frontendOptions, dir.file("virtio-user.log"), &error);
	ASSERT_TRUE(frontend) << error;
	ASSERT_TRUE(frontend->waitForPrompt()) << tail(frontend->process().output(), 40);
	ASSERT_EQ(frontend->portCount(), 1u) << tail(frontend->process().output(), 40);
	ASSERT_TRUE(frontend->setForwardMode("txonly"));
	ASSERT_TRUE(frontend->startForwarding());
	std::this_thread::sleep_for(std::chrono::seconds(2));
	auto sent = frontend->stopForwarding();
	ASSERT_TRUE(sent) << tail(frontend->process().output(), 40);
	EXPECT_GT(sent->txPackets, 0u);

	std::this_thread::sleep_for(std::chrono::milliseconds(500));
	auto received = backend->stopForwarding();
	ASSERT_TRUE(received) << tail(backend->process().output(), 40);
	EXPECT_EQ(received->rxPackets, sent->txPackets);

	auto quit = frontend->quit();
	EXPECT_TRUE(quit && quit->success()) << (quit ? quit->toString() : "still running");
	quit = backend->quit();
	EXPECT_TRUE(quit && quit->success()) << (quit ? quit->toString() : "still running");
}

} /* namespace */
} /* namespace vub::test */
