/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch as a user drives it: the vub> prompt on its stdin, several vhost-user ports with
 * DPDK testpmd (net_virtio_user) as the guests, an ethdev port (net_ring), MAC learning,
 * ports added and removed at run time, a guest killed and restarted, bad commands and bad
 * configurations. Every check reads counters (the switch's `show port stats all`, testpmd's)
 * or the switch's tables; none measures a rate.
 *
 * Everything runs on --no-huge (memfd) memory, so no hugepages are needed. On two CPUs the
 * switch's worker lcore polls on the first one and the guests' forwarding lcores on the
 * second; a guest only spins while its forwarding is started, so at most two lcores spin.
 *
 * VUB_SWITCH (set by meson) is the vub-switch binary; without it, or without dpdk-testpmd,
 * the tests skip. VUB_TESTPMD overrides the testpmd binary.
 */
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "switch_harness.h"

namespace vub::test {
namespace {

using namespace std::chrono_literals;

TEST(SwitchCliOutput, ParsesPortInfoAndExitLines)
{
	auto info =
		parsePortInfo("\n********************* Infos for port 0   *********************\n"
			      "Name: port0\nKind: vhost-user\nLink status: down\n"
			      "\n********************* Infos for port 1   *********************\n"
			      "Name: port1\nKind: ethdev\nLink status: up\n");
	ASSERT_EQ(info.size(), 2u);
	EXPECT_EQ(info[0].name, "port0");
	EXPECT_EQ(info[0].kind, "vhost-user");
	EXPECT_FALSE(info[0].linkUp);
	EXPECT_EQ(info[1].name, "port1");
	EXPECT_TRUE(info[1].linkUp);

	auto stats = parseSwitchStats("Bye...\n\nport 0: rx-packets 5 rx-bytes 320 tx-packets 4 "
				      "tx-bytes 256 tx-dropped 1 rx-dropped 2 features 7\nport 1: "
				      "rx-packets 3\n");
	ASSERT_EQ(stats.size(), 1u);
	EXPECT_EQ(stats[0].rxPackets, 5u);
	EXPECT_EQ(stats[0].txPackets, 4u);
	EXPECT_EQ(stats[0].txDropped, 1u);
	EXPECT_EQ(stats[0].rxDropped, 2u);
}

TEST(SwitchCliOutput, ParsesTheMacTable)
{
	auto view = parseMacTable("MAC                port  name          age (s)\n"
				  "02:00:00:00:00:01  0     port0         3\n"
				  "02:00:00:00:0a:02  1     vm2           0\n"
				  "2 of 8192 entries, aging 300 s; flooded 17, hairpin drops 0, "
				  "moves 0, table full 0, learn overflows 0\n");
	ASSERT_EQ(view.entries.size(), 2u);
	EXPECT_EQ(view.entries["02:00:00:00:00:01"].port, 0u);
	EXPECT_EQ(view.entries["02:00:00:00:00:01"].name, "port0");
	EXPECT_EQ(view.entries["02:00:00:00:0A:02"].port, 1u);
	EXPECT_EQ(view.flooded, 17u);
}

TEST(Switch, L2SwitchFloodsUnknownDestinationsThenLearns)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock[3] = { dir.file("g1.sock"), dir.file("g2.sock"),
				      dir.file("g3.sock") };

	auto sw = VubSwitchCli::start(
		binary,
		{ "-i", "--runtime-dir", dir.path(), "--forward-mode=l2switch", "--auto-start",
		  "--port", "vhost-user:path=" + sock[0], "--port", "vhost-user:path=" + sock[1],
		  "--port", "vhost-user:path=" + sock[2] },
		dir.file("switch.log"), &error);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch", sw->process().logPath());
	ASSERT_TRUE(sw->waitForPrompt()) << "no vub> prompt from vub-switch";
	ASSERT_TRUE(sw->process().output().find("vub-switch: forwarding started") !=
		    std::string::npos)
		<< "--auto-start -i did not start forwarding";

	/* Each guest sends to the next one's address; guests 2 and 3 stay idle at first. */
	auto g1 = startGuest(guestOptions(sock[0], kMac1, { std::string("--eth-peer=0,") + kMac2 }),
			     dir.file("guest1.log"), "guest 1 (testpmd)", dump, &error);
	ASSERT_TRUE(g1) << error;
	auto g2 = startGuest(guestOptions(sock[1], kMac2, { std::string("--eth-peer=0,") + kMac1 }),
			     dir.file("guest2.log"), "guest 2 (testpmd)", dump, &error);
	ASSERT_TRUE(g2) << error;
	auto g3 = startGuest(guestOptions(sock[2], kMac3), dir.file("guest3.log"),
			     "guest 3 (testpmd)", dump, &error);
	ASSERT_TRUE(g3) << error;
	ASSERT_TRUE(guestReady(*g1, "guest 1"));
	ASSERT_TRUE(guestReady(*g2, "guest 2"));
	ASSERT_TRUE(guestReady(*g3, "guest 3"));
	ASSERT_TRUE(waitForAllLinksUp(*sw, 3));

	/* 1. Guest 1 to guest 2, whom the switch does not know yet: flooded to ports 1 and 2. */
	ASSERT_TRUE(sendBriefly(*g1, "guest 1"));
	auto g1Tx = guestTxPackets(*g1);
	ASSERT_TRUE(g1Tx);
	auto stats = waitForSwitchRx(*sw, 0, *g1Tx);
	ASSERT_TRUE(stats);
	EXPECT_EQ((*stats)[0].rxPackets, *g1Tx)
		<< "the switch's port 0 did not receive what guest 1 sent\n"
		<< describe(*stats);
	/* The idle guests' RX rings were empty: some of the flood went into each. */
	EXPECT_GT((*stats)[1].txPackets, 0u) << "unknown destination not flooded to port 1\n"
					     << describe(*stats);
	EXPECT_GT((*stats)[2].txPackets, 0u) << "unknown destination not flooded to port 2\n"
					     << describe(*stats);
	EXPECT_EQ(offered((*stats)[0]), 0u) << "the flood went back out of the ingress port\n"
					    << describe(*stats);
	auto table = waitForMac(*sw, kMac1);
	ASSERT_TRUE(table);
	ASSERT_TRUE(table->entries.count(kMac1)) << kMac1 << " was not learnt";
	EXPECT_EQ(table->entries[kMac1].port, 0u);
	EXPECT_EQ(table->entries[kMac1].name, "port0");
	EXPECT_GT(table->flooded, 0u);

	/* 2. Guest 2 to guest 1, now known on port 0: nothing for port 2. */
	const auto before = *stats;
	ASSERT_TRUE(sendBriefly(*g2, "guest 2"));
	auto g2Tx = guestTxPackets(*g2);
	ASSERT_TRUE(g2Tx);
	stats = waitForSwitchRx(*sw, 1, *g2Tx);
	ASSERT_TRUE(stats);
	EXPECT_EQ((*stats)[1].rxPackets, *g2Tx)
		<< "the switch's port 1 did not receive what guest 2 sent\n"
		<< describe(*stats);
	EXPECT_GT((*stats)[0].txPackets, before.at(0).txPackets)
		<< "guest 2's frames to " << kMac1 << " did not reach port 0\n"
		<< describe(*stats);
	EXPECT_EQ(offered((*stats)[2]), offered(before.at(2)))
		<< "port 2 got some of guest 2's frames to the known " << kMac1 << "\n"
		<< "before:\n"
		<< describe(before) << "after:\n"
		<< describe(*stats);
	table = waitForMac(*sw, kMac2);
	ASSERT_TRUE(table);
	ASSERT_TRUE(table->entries.count(kMac2)) << kMac2 << " was not learnt";
	EXPECT_EQ(table->entries[kMac2].port, 1u);
	EXPECT_EQ(table->entries[kMac1].port, 0u);
	EXPECT_EQ(table->entries.count(kMac3), 0u) << "guest 3 sent nothing";

	/* 3. Guest 1 to guest 2 again, now known on port 1: no flood. */
	auto cleared = sw->command("clear port stats all");
	ASSERT_TRUE(cleared &&
		    cleared->find("NIC statistics for port 2 cleared") != std::string::npos)
		<< "clear port stats all: " << cleared.value_or("no answer");
	auto zero = sw->showPortStats();
	ASSERT_TRUE(zero);
	for (unsigned p = 0; p < 3; p++)
		EXPECT_EQ((*zero)[p].rxPackets + offered((*zero)[p]), 0u)
			<< "port " << p << " not cleared\n"
			<< describe(*zero);
	const uint64_t floodedBefore = table->flooded;
	ASSERT_TRUE(sendBriefly(*g1, "guest 1"));
	auto g1Tx2 = guestTxPackets(*g1);
	ASSERT_TRUE(g1Tx2);
	stats = waitForSwitchRx(*sw, 0, *g1Tx2 - *g1Tx);
	ASSERT_TRUE(stats);
	EXPECT_EQ((*stats)[0].rxPackets, *g1Tx2 - *g1Tx)
		<< "the switch's port 0 did not receive what guest 1 sent\n"
		<< describe(*stats);
	EXPECT_GT(offered((*stats)[1]), 0u)
		<< "frames to the learnt " << kMac2 << " did not go to port 1\n"
		<< describe(*stats);
	EXPECT_EQ(offered((*stats)[2]), 0u)
		<< "frames to the learnt " << kMac2 << " were flooded to port 2\n"
		<< describe(*stats);
	table = sw->showMacTable();
	ASSERT_TRUE(table);
	EXPECT_EQ(table->flooded, floodedBefore) << "a known unicast destination was flooded";

	std::map<unsigned, SwitchPortStats> exitStats;
	auto status = sw->quit(&exitStats);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
	EXPECT_EQ(exitStats.size(), 3u) << "one exit line per port";
}

/* ---- 2. An ethdev port ---- */

TEST(Switch, EthdevRingPortIsSwitchedWithAVhostUserPort)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock = dir.file("g.sock");

	/* io: port 0 (the guest) <-> port 1 (net_ring, whose tx loops back into its rx). */
	auto sw = VubSwitchCli::start(binary,
				      { "-i", "--runtime-dir", dir.path(), "--forward-mode=io",
					"--port", "vhost-user:path=" + sock, "--port",
					"ethdev:net_ring0" },
				      dir.file("switch.log"), &error);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch", sw->process().logPath());
	if (!sw->waitForPrompt()) {
		const std::string &out = sw->process().output();
		if (!sw->process().running() && out.find("port port1") != std::string::npos)
			GTEST_SKIP() << "vub-switch cannot create the net_ring0 port here: "
				     << tail(out, 3);
		FAIL() << "no vub> prompt from vub-switch";
	}
	auto info = sw->showPortInfo();
	ASSERT_TRUE(info);
	ASSERT_EQ(info->size(), 2u);
	EXPECT_EQ((*info)[0].kind, "vhost-user");
	EXPECT_EQ((*info)[1].kind, "ethdev");
	auto started = sw->command("start");
	ASSERT_TRUE(started && started->find("Forwarding started: io") != std::string::npos)
		<< "start: " << started.value_or("no answer");

	auto guest = startGuest(guestOptions(sock, kMac1), dir.file("guest.log"), "guest (testpmd)",
				dump, &error);
	ASSERT_TRUE(guest) << error;
	ASSERT_TRUE(guestReady(*guest, "guest"));
	ASSERT_TRUE(waitForAllLinksUp(*sw, 2));

	ASSERT_TRUE(guest->setForwardMode("io"));
	auto reply = guest->command("start tx_first");
	ASSERT_TRUE(reply && reply->find("packet forwarding - ports=") != std::string::npos)
		<< "start tx_first: " << reply.value_or("no answer");
	std::this_thread::sleep_for(1s);
	ASSERT_TRUE(guest->stopForwarding());
	auto guestRx = guestRxPackets(*guest);
	ASSERT_TRUE(guestRx);
	EXPECT_GT(*guestRx, 0u) << "nothing came back to the guest through net_ring";

	auto guestTx = guestTxPackets(*guest);
	ASSERT_TRUE(guestTx);

	/* Once the guest stopped, what it sent drains: guest -> ring -> ring -> guest's RX ring. */
	auto stats = waitForSwitchStats(*sw, [&](std::map<unsigned, PortStats> &s) {
		return s[0].rxPackets == *guestTx && s[1].txPackets == s[0].rxPackets &&
		       s[1].rxPackets == s[1].txPackets &&
		       s[0].txPackets + s[0].txErrors == s[1].rxPackets;
	});
	ASSERT_TRUE(stats);
	EXPECT_GT((*stats)[1].rxPackets, 0u) << "net_ring received nothing\n" << describe(*stats);
	EXPECT_GT((*stats)[1].txPackets, 0u) << "nothing was sent to net_ring\n"
					     << describe(*stats);
	EXPECT_EQ((*stats)[0].rxPackets, *guestTx) << "the switch did not take all the guest sent\n"
						   << describe(*stats);
	EXPECT_EQ((*stats)[1].txPackets, (*stats)[0].rxPackets)
		<< "io did not send all of port 0's packets to net_ring\n"
		<< describe(*stats);
	EXPECT_EQ((*stats)[1].rxPackets, (*stats)[1].txPackets)
		<< "net_ring did not loop back all it was given\n"
		<< describe(*stats);
	EXPECT_EQ((*stats)[0].txPackets + (*stats)[0].txErrors, (*stats)[1].rxPackets)
		<< "io did not send all of net_ring's packets to port 0\n"
		<< describe(*stats);
	EXPECT_EQ((*stats)[0].txErrors, 0u) << "the guest's RX ring overflowed with only the "
					       "tx_first burst in flight\n"
					    << describe(*stats);

	std::map<unsigned, SwitchPortStats> exitStats;
	auto status = sw->quit(&exitStats);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
	ASSERT_TRUE(exitStats.count(1)) << "no exit line for the net_ring port";
	EXPECT_GT(exitStats[1].txPackets, 0u);
}

/* ---- 3. A guest killed and restarted ---- */

TEST(Switch, KilledClientReconnectsWhileOtherPortsForward)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock[3] = { dir.file("p0.sock"), dir.file("p1.sock"),
				      dir.file("p2.sock") };
	auto sw = startIoSwitchOfThreePorts(binary, dir, sock, dump);
	ASSERT_TRUE(sw);

	auto a = startGuest(guestOptions(sock[2], kMac1), dir.file("guestA.log"),
			    "guest A on port 2 (testpmd)", dump, &error);
	ASSERT_TRUE(a) << error;
	auto b = startGuest(guestOptions(sock[0], kMac2), dir.file("guestB.log"),
			    "guest B on port 0 (testpmd)", dump, &error);
	ASSERT_TRUE(b) << error;
	ASSERT_TRUE(guestReady(*a, "guest A"));
	ASSERT_TRUE(guestReady(*b, "guest B"));
	ASSERT_TRUE(waitForLinks(*sw, { { 0, true }, { 1, false }, { 2, true } }));

	/* Guest A's tx_first burst circles A -> port 2 -> A from now on. */
	ASSERT_TRUE(a->setForwardMode("io"));
	auto reply = a->command("start tx_first");
	ASSERT_TRUE(reply && reply->find("packet forwarding - ports=") != std::string::npos)
		<< "start tx_first: " << reply.value_or("no answer");
	std::vector<std::pair<std::string, uint64_t>> aRx;
	auto sampleA = [&](const char *when) {
		auto rx = guestRxPackets(*a);
		ASSERT_TRUE(rx) << "guest A does not answer " << when;
		aRx.emplace_back(when, *rx);
	};
	auto expectAGrew = [&] {
		ASSERT_GE(aRx.size(), 2u);
		const auto &[prevWhen, prev] = aRx[aRx.size() - 2];
		const auto &[when, now] = aRx.back();
		EXPECT_GT(now, prev) << "guest A's RX-packets stopped growing between " << prevWhen
				     << " (" << prev << ") and " << when << " (" << now << ")";
	};
	ASSERT_TRUE(waitForSwitchRx(*sw, 2, 1));
	ASSERT_NO_FATAL_FAILURE(sampleA("before the kill"));

	/*
	 * Guest B sends (into port 1, which has no guest) and dies mid-traffic, without a word:
	 * the switch must notice and keep forwarding for A.
	 */
	ASSERT_TRUE(b->setForwardMode("txonly"));
	ASSERT_TRUE(b->startForwarding());
	auto sending = waitForSwitchRx(*sw, 0, 1);
	ASSERT_TRUE(sending);
	ASSERT_GT((*sending)[0].rxPackets, 0u) << "guest B's traffic did not reach the switch\n"
					       << describe(*sending);
	auto killed = b->process().terminate(SIGKILL, 5000);
	ASSERT_TRUE(killed && !killed->exited && killed->signal == SIGKILL)
		<< "guest B: " << (killed ? killed->toString() : "not reaped");
	b.reset();
	EXPECT_TRUE(waitForLinks(*sw, { { 0, false }, { 1, false }, { 2, true } }, true,
				 kSettleTimeoutMs))
		<< "port 0's link stayed up after its guest was killed";
	ASSERT_TRUE(sw->process().running()) << "vub-switch died when guest B was killed";
	ASSERT_NO_FATAL_FAILURE(sampleA("after the kill"));
	expectAGrew();

	/* A new guest B on the same socket. */
	b = startGuest(guestOptions(sock[0], kMac2), dir.file("guestB2.log"),
		       "guest B restarted (testpmd)", dump, &error);
	ASSERT_TRUE(b) << error;
	ASSERT_TRUE(guestReady(*b, "restarted guest B"));
	EXPECT_TRUE(waitForLinks(*sw, { { 0, true }, { 1, false }, { 2, true } }))
		<< "port 0's link did not come up again for the restarted guest";
	ASSERT_NO_FATAL_FAILURE(sampleA("after the restart"));
	expectAGrew();

	auto before = sw->showPortStats();
	ASSERT_TRUE(before);
	ASSERT_TRUE(sendBriefly(*b, "restarted guest B"));
	auto bTx = guestTxPackets(*b);
	ASSERT_TRUE(bTx);
	auto after = waitForSwitchRx(*sw, 0, (*before)[0].rxPackets + *bTx);
	ASSERT_TRUE(after);
	EXPECT_EQ((*after)[0].rxPackets, (*before)[0].rxPackets + *bTx)
		<< "the switch did not receive what the restarted guest B sent\n"
		<< describe(*after);
	ASSERT_NO_FATAL_FAILURE(sampleA("after guest B sent"));
	expectAGrew();

	ASSERT_TRUE(a->stopForwarding());
	ASSERT_TRUE(sw->process().running()) << "vub-switch is gone";
	std::map<unsigned, SwitchPortStats> exitStats;
	auto status = sw->quit(&exitStats);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
	EXPECT_EQ(exitStats.size(), 3u) << "one exit line per port";
	EXPECT_GT(exitStats[2].rxPackets, 0u);
}

/**
 * A guest killed with SIGKILL in the middle of its traffic, again and again (VUB_KILL_ROUNDS,
 * 100 by default), alternating split and packed rings: each time the port goes down and serves
 * the next guest, another port keeps forwarding, and in the end the switch holds exactly the
 * fds, mappings and mbufs it held before.
 */
TEST(Switch, GuestsKilledMidTrafficLeaveNoFdMappingOrMbuf)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	unsigned rounds = 100;
	if (const char *env = std::getenv("VUB_KILL_ROUNDS"); env && *env)
		rounds = static_cast<unsigned>(std::stoul(env));
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock[3] = { dir.file("p0.sock"), dir.file("p1.sock"),
				      dir.file("p2.sock") };
	/* Port 0 takes the guests killed, port 2 guest A. */
	auto sw = startIoSwitchOfThreePorts(binary, dir, sock, dump);
	ASSERT_TRUE(sw);
	auto a = startGuest(guestOptions(sock[2], kMac1), dir.file("guestA.log"),
			    "guest A on port 2 (testpmd)", dump, &error);
	ASSERT_TRUE(a) << error;
	ASSERT_TRUE(guestReady(*a, "guest A"));

	/* One guest that sends from the start and dies; its log is kept only for the last. */
	auto killOne = [&](unsigned round) {
		SCOPED_TRACE("guest " + std::to_string(round));
		const bool packed = round % 2;
		TestpmdOptions options =
			guestOptions(sock[0], kMac2, { "--forward-mode=txonly", "--auto-start" });
		options.vdev = "net_virtio_user0,path=" + sock[0] +
			       ",queues=1,queue_size=256,mrg_rxbuf=1,in_order=0,mac=" + kMac2 +
			       (packed ? ",packed_vq=1" : ",packed_vq=0");
		std::string log = dir.file("guestB.log");
		auto b = Testpmd::start(options, log, &error);
		ASSERT_TRUE(b) << error;
		ASSERT_TRUE(guestReady(*b, packed ? "guest B (packed)" : "guest B (split)"))
			<< b->process().output();
		ASSERT_TRUE(waitForLinks(*sw, { { 0, true } }, false))
			<< "port 0 did not take guest " << round;
		auto before = sw->showPortStats();
		ASSERT_TRUE(before);
		auto sending = waitForSwitchRx(*sw, 0, (*before)[0].rxPackets + 1);
		ASSERT_TRUE(sending);
		ASSERT_GT((*sending)[0].rxPackets, (*before)[0].rxPackets)
			<< "guest " << round << "'s traffic did not reach the switch";
		auto killed = b->process().terminate(SIGKILL, 5000);
		ASSERT_TRUE(killed && killed->signal == SIGKILL)
			<< "guest " << round << ": "
			<< (killed ? killed->toString() : "not reaped");
		b.reset();
		ASSERT_TRUE(waitForLinks(*sw, { { 0, false } }, false, kSettleTimeoutMs))
			<< "port 0's link stayed up after guest " << round << " was killed";
		ASSERT_TRUE(sw->process().running()) << "vub-switch died with guest " << round;
	};
	/* What the first connection sets up once (a worker's queues, pool caches) stays. */
	ASSERT_NO_FATAL_FAILURE(killOne(0));
	/* Nothing moves while we count: guest A is idle and port 0 has no guest. */
	auto baseline = holdings(*sw);
	ASSERT_TRUE(baseline) << "cannot read vub-switch's /proc entries or `show mempool`";
	EXPECT_EQ(baseline->mbufsInUse, 0u)
		<< "mbufs held with no traffic: " << baseline->toString();

	ASSERT_TRUE(a->setForwardMode("io"));
	auto reply = a->command("start tx_first");
	ASSERT_TRUE(reply && reply->find("packet forwarding - ports=") != std::string::npos)
		<< "start tx_first: " << reply.value_or("no answer");
	auto aRx = guestRxPackets(*a);
	ASSERT_TRUE(aRx);
	for (unsigned round = 1; round <= rounds; round++) {
		ASSERT_NO_FATAL_FAILURE(killOne(round));
		if (round % 10 && round != rounds)
			continue;
		auto rx = guestRxPackets(*a);
		ASSERT_TRUE(rx) << "guest A does not answer after guest " << round;
		EXPECT_GT(*rx, *aRx) << "port 2 stopped forwarding for guest A by guest " << round;
		aRx = rx;
	}
	ASSERT_TRUE(a->stopForwarding());

	/* Unmapping waits for the workers' grace period: poll until the counts settle. */
	std::optional<Holdings> now;
	auto deadline =
		std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs);
	do {
		std::this_thread::sleep_for(kPollInterval);
		now = holdings(*sw);
		ASSERT_TRUE(now) << "cannot read vub-switch's /proc entries or `show mempool`";
	} while (!(*now == *baseline) && std::chrono::steady_clock::now() < deadline);
	EXPECT_EQ(now->toString(), baseline->toString())
		<< "after " << rounds << " guests killed mid-traffic";

	std::map<unsigned, SwitchPortStats> exitStats;
	auto status = sw->quit(&exitStats);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
	EXPECT_GT(exitStats[0].rxPackets, rounds) << "what the killed guests sent";
}

/* ---- 3b. A client-mode port: the guest owns the socket ---- */

TEST(Switch, ClientPortWaitsForItsGuestAndReconnectsAfterARestart)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock = dir.file("guest-server.sock");

	/* The switch starts first: nobody listens on the socket yet (OVS's vhostuserclient). */
	auto sw = VubSwitchCli::start(binary,
				      { "-i", "--runtime-dir", dir.path(), "--forward-mode=io",
					"--auto-start", "--port",
					"vhost-user:path=" + sock + ",client=1" },
				      dir.file("switch.log"), &error);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch", sw->process().logPath());
	ASSERT_TRUE(sw->waitForPrompt()) << "no vub> prompt from vub-switch";
	ASSERT_TRUE(waitForLinks(*sw, { { 0, false } }));

	for (int round = 0; round < 2; round++) {
		SCOPED_TRACE("guest " + std::to_string(round));
		TestpmdOptions options = guestOptions(sock, kMac1);
		options.vdev += ",server=1";
		auto guest = startGuest(options, dir.file("guest" + std::to_string(round) + ".log"),
					"guest (testpmd, server=1)", dump, &error);
		ASSERT_TRUE(guest) << error;
		ASSERT_TRUE(guestReady(*guest, "guest"));
		ASSERT_TRUE(waitForLinks(*sw, { { 0, true } }))
			<< "the client port did not connect to the guest's socket";
		ASSERT_TRUE(guest->setForwardMode("io"));
		auto reply = guest->command("start tx_first");
		ASSERT_TRUE(reply && reply->find("packet forwarding - ports=") != std::string::npos)
			<< "start tx_first: " << reply.value_or("no answer");
		std::this_thread::sleep_for(500ms);
		ASSERT_TRUE(guest->stopForwarding());
		auto rx = guestRxPackets(*guest);
		ASSERT_TRUE(rx);
		EXPECT_GT(*rx, 0u) << "nothing came back through the client-mode port";
		/* Killed: the switch must notice and reconnect (with back-off) to the next one. */
		auto killed = guest->process().terminate(SIGKILL, 5000);
		ASSERT_TRUE(killed);
		guest.reset();
		/* A killed server leaves its socket file; the next one cannot bind over it. */
		unlink(sock.c_str());
		ASSERT_TRUE(waitForLinks(*sw, { { 0, false } }, true, kSettleTimeoutMs));
		ASSERT_TRUE(sw->process().running()) << "vub-switch died with its guest";
	}
	auto status = sw->quit(nullptr);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
}

/*
 * The switch itself killed with SIGKILL under a guest that owns the socket (virtio-user
 * server=1, as QEMU with server=on): each time a new switch connects, takes the rings where
 * the guest left them (virtio-user sends base 0 for rings whose indices stand far beyond), drops
 * nothing the guest had queued while it sets the rings up again (the enable comes after the
 * kick), and forwards. Frames the dead switch held are gone with it: the guest sends anew.
 */
TEST(Switch, RestartedSwitchTakesTheRingsOfAGuestThatOwnsTheSocket)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock = dir.file("guest-server.sock");

	TestpmdOptions options = guestOptions(sock, kMac1);
	options.vdev += ",server=1";
	auto guest = startGuest(options, dir.file("guest.log"), "guest (testpmd, server=1)", dump,
				&error);
	ASSERT_TRUE(guest) << error;
	std::unique_ptr<VubSwitchCli> sw;
	for (int run = 1; run <= 4; run++) {
		SCOPED_TRACE("switch " + std::to_string(run));
		std::string log = "switch" + std::to_string(run) + ".log";
		sw = VubSwitchCli::start(binary,
					 { "-i", "--runtime-dir", dir.path(), "--forward-mode=io",
					   "--auto-start", "--port",
					   "vhost-user:path=" + sock + ",client=1" },
					 dir.file(log), &error);
		ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
		dump.add(log, sw->process().logPath());
		ASSERT_TRUE(sw->waitForPrompt()) << "no vub> prompt from vub-switch";
		/* The guest waits for its first back-end before it prompts. */
		if (run == 1) {
			ASSERT_TRUE(guestReady(*guest, "guest"));
			ASSERT_TRUE(guest->setForwardMode("io"));
		}
		ASSERT_TRUE(waitForLinks(*sw, { { 0, true } }))
			<< "the switch did not connect to the guest's socket";
		/* Not a frame of what the guest queued was dropped while its rings were set up. */
		auto xstats = sw->command("show port xstats 0");
		ASSERT_TRUE(xstats);
		EXPECT_NE(xstats->find("rx_q0_drop_disabled: 0\n"), std::string::npos) << *xstats;

		auto before = guestRxPackets(*guest);
		ASSERT_TRUE(before);
		if (run > 1) {
			ASSERT_TRUE(guest->stopForwarding());
		}
		auto reply = guest->command("start tx_first");
		ASSERT_TRUE(reply && reply->find("packet forwarding - ports=") != std::string::npos)
			<< "start tx_first: " << reply.value_or("no answer");
		auto deadline = std::chrono::steady_clock::now() + 10s;
		std::optional<uint64_t> after;
		do {
			std::this_thread::sleep_for(kPollInterval);
			after = guestRxPackets(*guest);
			ASSERT_TRUE(after);
		} while (*after < *before + 10000 && std::chrono::steady_clock::now() < deadline);
		EXPECT_GE(*after, *before + 10000) << "no traffic through the switch";
		EXPECT_EQ(sw->process().output().find("broken"), std::string::npos)
			<< "the switch found the guest's rings corrupt";
		if (run == 4)
			break;
		auto killed = sw->process().terminate(SIGKILL, 5000);
		ASSERT_TRUE(killed && killed->signal == SIGKILL);
		sw.reset();
		ASSERT_TRUE(guestRxPackets(*guest)) << "the guest died with the switch";
	}
	ASSERT_TRUE(guest->stopForwarding());
	auto status = sw->quit(nullptr);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
}

/* ---- 4. Ports added and removed at run time ---- */

TEST(Switch, PortsAreAddedAndRemovedAtRunTime)
{
	std::string binary;
	requireSwitchAndTestpmd(binary);
	if (IsSkipped())
		return;
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;
	const std::string sock0 = dir.file("port0.sock");
	const std::string added = dir.file("added.sock");

	auto sw =
		VubSwitchCli::start(binary,
				    { "-i", "--runtime-dir", dir.path(), "--forward-mode=l2switch",
				      "--auto-start", "--port", "vhost-user:path=" + sock0 },
				    dir.file("switch.log"), &error);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch", sw->process().logPath());
	ASSERT_TRUE(sw->waitForPrompt()) << "no vub> prompt from vub-switch";
	auto a = startGuest(guestOptions(sock0, kMac1, { "--eth-peer=0,02:00:00:00:00:0a" }),
			    dir.file("guestA.log"), "guest A on port 0 (testpmd)", dump, &error);
	ASSERT_TRUE(a) << error;

	auto reply = sw->command("port add vhost-user:path=" + added);
	ASSERT_TRUE(reply);
	std::smatch m;
	ASSERT_TRUE(std::regex_search(*reply, m, std::regex("Port 1 \\(([^)]+)\\) added")))
		<< "port add: " << *reply;
	const std::string addedName = m[1].str();
	EXPECT_TRUE(std::filesystem::exists(added)) << added << " is not there after port add";

	auto b = startGuest(guestOptions(added, kMac2, { "--eth-peer=0,02:00:00:00:00:0b" }),
			    dir.file("guestB.log"), "guest B on the added port (testpmd)", dump,
			    &error);
	ASSERT_TRUE(b) << error;
	ASSERT_TRUE(guestReady(*a, "guest A"));
	ASSERT_TRUE(guestReady(*b, "guest B"));
	ASSERT_TRUE(waitForAllLinksUp(*sw, 2));

	/* B sends to an unknown MAC: the switch floods it to port 0. */
	ASSERT_TRUE(sendBriefly(*b, "guest B"));
	auto bTx = guestTxPackets(*b);
	ASSERT_TRUE(bTx);
	auto stats = waitForSwitchRx(*sw, 1, *bTx);
	ASSERT_TRUE(stats);
	EXPECT_EQ((*stats)[1].rxPackets, *bTx) << "the added port did not receive what B sent\n"
					       << describe(*stats);
	EXPECT_GT((*stats)[0].txPackets, 0u) << "B's frames were not flooded to port 0\n"
					     << describe(*stats);

	auto table = waitForMac(*sw, kMac2);
	ASSERT_TRUE(table);
	ASSERT_TRUE(table->entries.count(kMac2)) << kMac2 << " was not learnt";
	EXPECT_EQ(table->entries[kMac2].port, 1u);

	reply = sw->command("port del 1");
	ASSERT_TRUE(reply);
	EXPECT_NE(reply->find("Port 1 (" + addedName + ") removed"), std::string::npos)
		<< "port del 1: " << *reply;
	stats = sw->showPortStats();
	ASSERT_TRUE(stats);
	EXPECT_EQ(stats->count(1), 0u) << "port 1 is still listed after port del\n"
				       << describe(*stats);
	EXPECT_EQ(stats->count(0), 1u) << describe(*stats);
	EXPECT_FALSE(std::filesystem::exists(added)) << added << " is still there after port del";
	/* A port added later may get id 1 again: it must not inherit B's address. */
	table = sw->showMacTable();
	ASSERT_TRUE(table);
	EXPECT_EQ(table->entries.count(kMac2), 0u)
		<< kMac2 << " is still learnt on the removed port " << table->entries[kMac2].port;
	/* The switch closed B's connection: virtio-user sees its link go down. */
	std::string guestInfo = "no answer";
	auto deadline =
		std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs);
	for (;;) {
		auto reply = b->command("show port info 0");
		guestInfo = reply.value_or("no answer");
		if (!reply || reply->find("Link status: down") != std::string::npos ||
		    std::chrono::steady_clock::now() >= deadline)
			break;
		std::this_thread::sleep_for(kPollInterval);
	}
	EXPECT_NE(guestInfo.find("Link status: down"), std::string::npos)
		<< "guest B's link is still up after port del:\n"
		<< guestInfo;

	/* Refusals change nothing. */
	auto infoBefore = sw->command("show port info all");
	ASSERT_TRUE(infoBefore);
	reply = sw->command("port add vhost-user:path=" + sock0);
	ASSERT_TRUE(reply);
	EXPECT_NE(reply->find("Port not added"), std::string::npos)
		<< "port add of port 0's socket: " << *reply;
	EXPECT_EQ(reply->find(" added\n"), std::string::npos) << *reply;
	reply = sw->command("port add vhost-user:queues=1");
	ASSERT_TRUE(reply);
	EXPECT_NE(reply->find("Bad port"), std::string::npos)
		<< "port add without path: " << *reply;
	reply = sw->command("port add nosuchkind:x=1");
	ASSERT_TRUE(reply);
	EXPECT_NE(reply->find("Bad port"), std::string::npos) << "port add nosuchkind: " << *reply;
	auto infoAfter = sw->command("show port info all");
	ASSERT_TRUE(infoAfter);
	EXPECT_EQ(*infoAfter, *infoBefore) << "a refused port add changed the ports";
	auto info = parsePortInfo(*infoAfter);
	EXPECT_EQ(info.size(), 1u) << *infoAfter;
	EXPECT_TRUE(info[0].linkUp) << "port 0 lost its guest";
	EXPECT_TRUE(std::filesystem::exists(sock0)) << "port 0's socket is gone";

	/* Port 0 still forwards. */
	auto before = sw->showPortStats();
	ASSERT_TRUE(before);
	auto aTxBefore = guestTxPackets(*a);
	ASSERT_TRUE(aTxBefore);
	ASSERT_TRUE(sendBriefly(*a, "guest A"));
	auto aTx = guestTxPackets(*a);
	ASSERT_TRUE(aTx);
	stats = waitForSwitchRx(*sw, 0, (*before)[0].rxPackets + *aTx - *aTxBefore);
	ASSERT_TRUE(stats);
	EXPECT_EQ((*stats)[0].rxPackets, (*before)[0].rxPackets + *aTx - *aTxBefore)
		<< "port 0 did not receive what A sent after the port changes\n"
		<< describe(*stats);

	std::map<unsigned, SwitchPortStats> exitStats;
	auto status = sw->quit(&exitStats);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
	EXPECT_EQ(exitStats.size(), 1u) << "one exit line per remaining port";
}

/* ---- 5. Bad commands ---- */

TEST(Switch, BadCommandsChangeNothing)
{
	std::string why;
	auto binary = switchBinary(&why);
	if (!binary)
		GTEST_SKIP() << why;
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;

	auto sw = VubSwitchCli::start(*binary,
				      { "-i", "--runtime-dir", dir.path(), "--port",
					"vhost-user:path=" + dir.file("a.sock") },
				      dir.file("switch.log"), &error);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch", sw->process().logPath());
	ASSERT_TRUE(sw->waitForPrompt()) << "no vub> prompt from vub-switch";
	auto infoBefore = sw->command("show port info all");
	ASSERT_TRUE(infoBefore);

	const std::pair<const char *, const char *> bad[] = {
		{ "set fwd nosuchmode", "Unknown forwarding mode nosuchmode" },
		{ "port del 7", "Invalid port 7" },
		{ "set burst 0", "Bad burst 0" },
		{ "show port stats 9", "Invalid port 9" },
		{ "frobnicate the switch", "Bad command" },
	};
	for (const auto &[line, expected] : bad) {
		auto reply = sw->command(line);
		ASSERT_TRUE(reply) << "no prompt after '" << line << "'; vub-switch "
				   << (sw->process().running() ? "runs" : "exited");
		EXPECT_NE(reply->find(expected), std::string::npos)
			<< "'" << line << "' printed: " << *reply;
		EXPECT_EQ(reply->find("NIC statistics"), std::string::npos) << *reply;
		EXPECT_TRUE(sw->process().running()) << "vub-switch exited after '" << line << "'";
	}
	auto infoAfter = sw->command("show port info all");
	ASSERT_TRUE(infoAfter);
	EXPECT_EQ(*infoAfter, *infoBefore) << "a bad command changed the ports";
	/* The mode is still the default. */
	auto started = sw->command("start");
	ASSERT_TRUE(started);
	EXPECT_NE(started->find("Forwarding started: l2switch"), std::string::npos)
		<< "after a bad 'set fwd': " << *started;
	ASSERT_TRUE(sw->command("stop"));

	auto set = sw->command("set fwd io");
	ASSERT_TRUE(set);
	EXPECT_NE(set->find("Set io packet forwarding mode"), std::string::npos)
		<< "set fwd io: " << *set;
	started = sw->command("start");
	ASSERT_TRUE(started);
	EXPECT_NE(started->find("Forwarding started: io"), std::string::npos) << *started;
	ASSERT_TRUE(sw->command("stop"));

	auto status = sw->quit(nullptr);
	ASSERT_TRUE(status && status->success())
		<< "vub-switch on quit: " << (status ? status->toString() : "still running");
}

/* ---- 6. Configuration errors ---- */

TEST(Switch, ConfigErrorStopsStartUp)
{
	std::string why;
	auto binary = switchBinary(&why);
	if (!binary)
		GTEST_SKIP() << why;
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";
	TempDir dir("vub-switch-");
	LogDump dump;
	std::string error;

	const std::string file = dir.file("bad.ini");
	{
		std::ofstream ini(file);
		ini << "[switch]\nforward-mode = io\nno-such-key = 1\n\n"
		    << "[port.vm1]\ntype = vhost-user\npath = " << dir.file("vm1.sock") << "\n";
	}
	auto sw = VubSwitchCli::start(*binary, { "--runtime-dir", dir.path(), "-f", file },
				      dir.file("badkey.log"), &error, 64);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch with a bad key", sw->process().logPath());
	ASSERT_TRUE(sw->process().waitForExit(kStartTimeoutMs))
		<< "vub-switch still runs with a bad key in its file";
	auto status = sw->process().exitStatus();
	ASSERT_TRUE(status);
	EXPECT_TRUE(status->exited && status->code == 2) << status->toString();
	std::string out = sw->process().output();
	EXPECT_NE(out.find(file), std::string::npos) << "the error does not name the file";
	EXPECT_NE(out.find("[switch]"), std::string::npos) << "the error does not name the section";
	EXPECT_NE(out.find("no-such-key"), std::string::npos) << "the error does not name the key";
	EXPECT_EQ(out.find("forwarding started"), std::string::npos);
	EXPECT_FALSE(std::filesystem::exists(dir.file("vm1.sock")))
		<< "a port was opened despite the error";

	const std::string sock = dir.file("twice.sock");
	sw = VubSwitchCli::start(*binary,
				 { "--runtime-dir", dir.path(), "--port", "vhost-user:path=" + sock,
				   "--port", "vhost-user:path=" + sock },
				 dir.file("twice.log"), &error, 64);
	ASSERT_TRUE(sw) << "cannot start vub-switch: " << error;
	dump.add("vub-switch with one socket twice", sw->process().logPath());
	ASSERT_TRUE(sw->process().waitForExit(kStartTimeoutMs))
		<< "vub-switch still runs with two ports on one socket";
	status = sw->process().exitStatus();
	ASSERT_TRUE(status);
	EXPECT_TRUE(status->exited && status->code != 0) << status->toString();
	out = sw->process().output();
	EXPECT_NE(out.find("vub-switch: "), std::string::npos) << "no message";
	EXPECT_NE(out.find(sock), std::string::npos) << "the message does not name the socket";
	EXPECT_EQ(out.find("forwarding started"), std::string::npos);
	EXPECT_FALSE(std::filesystem::exists(sock)) << "a port was opened despite the error";
}

} /* namespace */
} /* namespace vub::test */
