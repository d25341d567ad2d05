/* SPDX-License-Identifier: Apache-2.0 */
/* The integration harness itself: child processes, and parsing what testpmd prints. */
#include "process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "testpmd.h"

namespace vub::test {
namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<Process> startShell(const TempDir &dir, const std::string &script,
				    std::vector<std::string> env = {})
{
	ProcessOptions options;
	options.argv = { "sh", "-c", script };
	options.logPath = dir.file("sh.log");
	options.env = std::move(env);
	std::string error;
	auto process = Process::create(options, &error);
	EXPECT_TRUE(process) << error;
	return process;
}

TEST(Process, EchoesStdinToTheLog)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "echo ready; read line; echo \"got $line\"; exit 3");
	ASSERT_TRUE(p);
	ASSERT_TRUE(p->waitForOutput("ready", 5000));
	ASSERT_TRUE(p->writeStdin("hello\n"));
	auto m = p->waitForOutput(std::regex("got ([a-z]+)"), 5000);
	ASSERT_TRUE(m);
	EXPECT_EQ(m->groups.at(1), "hello");
	ASSERT_TRUE(p->waitForExit(5000));
	auto status = p->exitStatus();
	ASSERT_TRUE(status);
	EXPECT_TRUE(status->exited);
	EXPECT_EQ(status->code, 3);
}

TEST(Process, WaitForOutputTimesOut)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "sleep 30");
	ASSERT_TRUE(p);
	auto start = Clock::now();
	EXPECT_FALSE(p->waitForOutput("never", 200));
	EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(Process, WaitForOutputReturnsWhenTheChildExits)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "echo bye");
	ASSERT_TRUE(p);
	auto start = Clock::now();
	EXPECT_FALSE(p->waitForOutput("never", 20000));
	EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
	EXPECT_TRUE(p->output().find("bye") != std::string::npos);
}

TEST(Process, WaitForOutputStartsAtTheGivenOffset)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "echo one; echo two; echo one");
	ASSERT_TRUE(p);
	auto first = p->waitForOutput("one", 5000);
	ASSERT_TRUE(first);
	auto second = p->waitForOutput("one", 5000, first->end);
	ASSERT_TRUE(second);
	EXPECT_GT(second->end, first->end);
}

TEST(Process, TerminateEscalatesToSigkill)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "trap '' TERM; echo armed; while :; do sleep 1; done");
	ASSERT_TRUE(p);
	ASSERT_TRUE(p->waitForOutput("armed", 5000));
	auto status = p->terminate(SIGTERM, 300);
	ASSERT_TRUE(status);
	EXPECT_FALSE(status->exited);
	EXPECT_EQ(status->signal, SIGKILL);
}

TEST(Process, TerminateReportsACleanExit)
{
	TempDir dir("vub-process-");
	auto p = startShell(
		dir, "trap 'echo stats; exit 0' TERM; echo armed; while :; do sleep 0.1; done");
	ASSERT_TRUE(p);
	ASSERT_TRUE(p->waitForOutput("armed", 5000));
	auto status = p->terminate(SIGTERM, 5000);
	ASSERT_TRUE(status);
	EXPECT_TRUE(status->success()) << status->toString();
	EXPECT_TRUE(p->output().find("stats") != std::string::npos);
}

TEST(Process, WriteToAClosedStdinFailsWithoutSigpipe)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "exec 0<&-; echo closed; sleep 30");
	ASSERT_TRUE(p);
	ASSERT_TRUE(p->waitForOutput("closed", 5000));
	EXPECT_FALSE(p->writeStdin("anything\n"));
}

TEST(Process, ReportsAnExecFailure)
{
	TempDir dir("vub-process-");
	ProcessOptions options;
	options.argv = { "/nonexistent/vub-no-such-program" };
	options.logPath = dir.file("x.log");
	std::string error;
	EXPECT_FALSE(Process::create(options, &error));
	EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

TEST(Process, PassesExtraEnvironment)
{
	TempDir dir("vub-process-");
	auto p = startShell(dir, "echo \"value=$VUB_PROCESS_TEST\"", { "VUB_PROCESS_TEST=42" });
	ASSERT_TRUE(p);
	EXPECT_TRUE(p->waitForOutput("value=42", 5000));
}

/** True when \a pid exists and is not a zombie. */
bool alive(pid_t pid)
{
	std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
	std::string line;
	if (!std::getline(stat, line))
		return false;
	size_t paren = line.rfind(')');
	return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

TEST(Process, DestructorKillsTheProcessGroup)
{
	TempDir dir("vub-process-");
	pid_t child = 0;
	{
		auto p = startShell(dir, "sleep 60 & echo \"child $!\"; wait");
		ASSERT_TRUE(p);
		auto m = p->waitForOutput(std::regex("child ([0-9]+)"), 5000);
		ASSERT_TRUE(m);
		child = static_cast<pid_t>(std::stoi(m->groups.at(1)));
	}
	/* The grandchild was reparented: killed, it is gone or a zombie waiting for init. */
	auto deadline = Clock::now() + std::chrono::seconds(5);
	while (alive(child) && Clock::now() < deadline)
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	EXPECT_FALSE(alive(child)) << "pid " << child << " survived";
}

TEST(Process, ChildDiesWithTheTestProgram)
{
	TempDir dir("vub-process-");
	const std::string log = dir.file("sleep.log");
	/* A helper process plays the test program: it starts a child, then dies without cleanup. */
	pid_t helper = ::fork();
	ASSERT_GE(helper, 0);
	if (helper == 0) {
		ProcessOptions options;
		options.argv = { "sh", "-c", "echo \"pid $$\"; exec sleep 60" };
		options.logPath = log;
		auto p = Process::create(options);
		if (p)
			p->waitForOutput("pid", 5000);
		::_exit(p ? 0 : 1);
	}
	int status = 0;
	ASSERT_EQ(::waitpid(helper, &status, 0), helper);
	ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	std::ifstream file(log);
	std::string word;
	pid_t child = 0;
	ASSERT_TRUE(file >> word >> child) << "no pid in " << log;
	auto deadline = Clock::now() + std::chrono::seconds(5);
	while (alive(child) && Clock::now() < deadline)
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	EXPECT_FALSE(alive(child)) << "pid " << child << " outlived its parent";
}

TEST(Tail, KeepsTheLastLines)
{
	EXPECT_EQ(tail("a\nb\nc\n", 2), "b\nc\n");
	EXPECT_EQ(tail("a\nb\nc", 2), "b\nc");
	EXPECT_EQ(tail("a\nb\n", 5), "a\nb\n");
	EXPECT_EQ(tail("", 3), "");
}

/* What DPDK 22.11 testpmd printed for `stop` and `show port stats all` on this harness. */
constexpr const char *kStopOutput = R"(Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 63520          TX-dropped: 32608384      TX-total: 32671904
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 63520          TX-dropped: 32608384      TX-total: 32671904
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
)";

constexpr const char *kPortStatsOutput = R"(
  ######################## NIC statistics for port 0  ########################
  RX-packets: 12         RX-missed: 1          RX-bytes:  768
  RX-errors: 2
  RX-nombuf:  3         
  TX-packets: 63520      TX-errors: 0          TX-bytes:  4065280

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
)";

TEST(TestpmdOutput, ParsesAccumulatedForwardStats)
{
	auto stats = parseForwardStats(kStopOutput);
	ASSERT_TRUE(stats);
	EXPECT_EQ(stats->rxPackets, 0u);
	EXPECT_EQ(stats->txPackets, 63520u);
	EXPECT_EQ(stats->txDropped, 32608384u);
	EXPECT_EQ(stats->txTotal, 32671904u);
	auto ports = parsePortForwardStats(kStopOutput);
	ASSERT_EQ(ports.size(), 1u);
	EXPECT_EQ(ports[0].txPackets, 63520u);
	EXPECT_FALSE(parseForwardStats("Packet forwarding not started\n"));
}

TEST(TestpmdOutput, ParsesPortStats)
{
	auto ports = parsePortStats(kPortStatsOutput);
	ASSERT_EQ(ports.size(), 1u);
	const PortStats &s = ports[0];
	EXPECT_EQ(s.rxPackets, 12u);
	EXPECT_EQ(s.rxMissed, 1u);
	EXPECT_EQ(s.rxBytes, 768u);
	EXPECT_EQ(s.rxErrors, 2u);
	EXPECT_EQ(s.rxNombuf, 3u);
	EXPECT_EQ(s.txPackets, 63520u);
	EXPECT_EQ(s.txErrors, 0u);
	EXPECT_EQ(s.txBytes, 4065280u);
}

TEST(TestpmdArgs, BuildsAVirtioUserClient)
{
	TestpmdOptions o;
	o.socketPath = "/run/vub/x.sock";
	o.queues = 2;
	o.queueSize = 512;
	o.packedVq = true;
	o.mrgRxbuf = false;
	o.inOrder = true;
	o.lcores = "0@0,1@1";
	o.filePrefix = "p";
	auto args = testpmdArgs("dpdk-testpmd", o);
	std::string line;
	for (const auto &a : args)
		line += a + " ";
	EXPECT_EQ(line,
		  "dpdk-testpmd --lcores 0@0,1@1 --no-pci --no-telemetry --file-prefix=p "
		  "--vdev net_virtio_user0,path=/run/vub/x.sock,queues=2,queue_size=512,"
		  "packed_vq=1,mrg_rxbuf=0,in_order=1 --no-huge -m 1024 -- -i --rxq=2 --txq=2 "
		  "--rxd=512 --txd=512 --total-num-mbufs=8192 ");
	o.hugepages = true;
	args = testpmdArgs("dpdk-testpmd", o);
	line.clear();
	for (const auto &a : args)
		line += a + " ";
	EXPECT_NE(line.find(" --in-memory --single-file-segments -m 512 -- "), std::string::npos)
		<< line;
}

} /* namespace */
} /* namespace vub::test */
