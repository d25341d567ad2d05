/* SPDX-License-Identifier: Apache-2.0 */
#include <sched.h>

#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/topology.h"

namespace vub {
namespace {

std::set<unsigned> allowedCpus()
{
	std::set<unsigned> out;
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (unsigned cpu = 0; cpu < CPU_SETSIZE; cpu++) {
			if (CPU_ISSET(cpu, &set))
				out.insert(cpu);
		}
	}
	return out;
}

TEST(Topology, DiscoverFindsAtLeastOneCpu)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo) << topo.error().what;
	EXPECT_FALSE(topo->cpus().empty());
	EXPECT_GE(topo->numaNodeCount(), 1u);
}

TEST(Topology, ListsCpusOnceInIdOrder)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo);
	const auto &cpus = topo->cpus();
	for (size_t i = 1; i < cpus.size(); i++)
		EXPECT_LT(cpus[i - 1].cpu, cpus[i].cpu);
}

TEST(Topology, ListsEveryCpuThisProcessMayRunOn)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo);
	std::set<unsigned> listed;
	for (const auto &cpu : topo->cpus())
		listed.insert(cpu.cpu);
	for (unsigned cpu : allowedCpus())
		EXPECT_TRUE(listed.count(cpu)) << "cpu " << cpu << " is missing";
}

TEST(Topology, CpusOfAnUnknownNodeAreAllCpus)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo);
	EXPECT_EQ(topo->cpusOfNode(-1).size(), topo->cpus().size());
	size_t total = 0;
	std::set<int> nodes;
	for (const auto &cpu : topo->cpus())
		nodes.insert(cpu.numaNode);
	if (nodes.count(-1))
		GTEST_SKIP() << "some CPUs have no known NUMA node";
	for (int node : nodes)
		total += topo->cpusOfNode(node).size();
	EXPECT_EQ(total, topo->cpus().size()) << "the nodes partition the CPUs";
}

TEST(Topology, DescribeNamesEveryCpu)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo);
	std::string text = topo->describe();
	EXPECT_NE(text.find("numa node"), std::string::npos) << text;
	EXPECT_NE(text.find(std::to_string(topo->cpus().front().cpu)), std::string::npos) << text;
}

TEST(Topology, PinThisThreadMovesTheThreadToThatCpu)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo);
	std::set<unsigned> allowed = allowedCpus();
	int target = -1;
	for (const auto &cpu : topo->cpus()) {
		if (allowed.count(cpu.cpu)) {
			target = static_cast<int>(cpu.cpu);
			break;
		}
	}
	ASSERT_GE(target, 0) << "no listed CPU is in this process's affinity mask";

	/* On a thread of its own, so that the test thread keeps its affinity. */
	bool pinned = false;
	int runningOn = -1;
	bool onlyThatCpu = false;
	std::thread worker([&] {
		auto r = Topology::pinThisThread(static_cast<unsigned>(target));
		pinned = static_cast<bool>(r);
		runningOn = sched_getcpu();
		cpu_set_t set;
		CPU_ZERO(&set);
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			onlyThatCpu = CPU_COUNT(&set) == 1 && CPU_ISSET(target, &set);
	});
	worker.join();
	EXPECT_TRUE(pinned);
	EXPECT_EQ(runningOn, target);
	EXPECT_TRUE(onlyThatCpu);
}

TEST(Topology, PinThisThreadRejectsACpuThatDoesNotExist)
{
	auto topo = Topology::discover();
	ASSERT_TRUE(topo);
	if (topo->cpus().back().cpu >= CPU_SETSIZE - 1)
		GTEST_SKIP() << "this machine has a CPU " << CPU_SETSIZE - 1;
	Result<void> r;
	std::thread worker([&] { r = Topology::pinThisThread(CPU_SETSIZE - 1); });
	worker.join();
	ASSERT_FALSE(r) << "the machine has no CPU " << CPU_SETSIZE - 1;
	EXPECT_EQ(r.error().code, EINVAL);
}

TEST(Topology, NodeOfATouchedPageIsKnownOrMinusOne)
{
	std::vector<char> page(4096 * 2);
	std::memset(page.data(), 1, page.size());
	int node = Topology::nodeOfAddress(page.data() + 4096);
	EXPECT_GE(node, -1);
}

TEST(Topology, NodeOfAnUnmappedAddressIsUnknown)
{
	EXPECT_EQ(Topology::nodeOfAddress(nullptr), -1);
}

} /* namespace */
} /* namespace vub */
