/* SPDX-License-Identifier: Apache-2.0 */
#include "placement.h"

#include <gtest/gtest.h>

using namespace vub::sw;

namespace {

std::vector<int> workersOf(const std::vector<RxqPlace> &places)
{
	std::vector<int> w;
	for (const RxqPlace &p : places)
		w.push_back(p.worker);
	return w;
}

} /* namespace */

TEST(AssignRxqs, SpreadsQueuesOfUnknownLoadRoundRobin)
{
	std::vector<RxqLoad> rxqs = { { 0, 0 }, { 0, 1 }, { 1, 0 }, { 1, 1 } };
	std::vector<WorkerSlot> workers = { { 1, 0 }, { 2, 0 } };
	EXPECT_EQ(workersOf(assignRxqs(rxqs, workers)), (std::vector<int>{ 0, 1, 0, 1 }));
}

TEST(AssignRxqs, KeepsAQueueOnItsMemorysNode)
{
	std::vector<RxqLoad> rxqs = { { 0, 0, 1 }, { 1, 0, 0 }, { 2, 0, 1 } };
	std::vector<WorkerSlot> workers = { { 1, 0 }, { 2, 1 }, { 3, 1 } };
	auto places = assignRxqs(rxqs, workers);
	EXPECT_EQ(workersOf(places), (std::vector<int>{ 1, 0, 2 }));
	for (const RxqPlace &p : places)
		EXPECT_FALSE(p.remote);
}

TEST(AssignRxqs, UsesARemoteWorkerWhenNoneRunsOnTheNodeAndSaysSo)
{
	std::vector<RxqLoad> rxqs = { { 0, 0, 1 } };
	std::vector<WorkerSlot> workers = { { 1, 0 } };
	auto places = assignRxqs(rxqs, workers);
	EXPECT_EQ(places[0].worker, 0);
	EXPECT_TRUE(places[0].remote);
}

TEST(AssignRxqs, BalancesByMeasuredCyclesBusiestFirst)
{
	/* 100 + 10 + 10 + 10 on two workers: the busy queue alone, the three light together. */
	std::vector<RxqLoad> rxqs = { { 0, 0, 0, 10 },
				      { 0, 1, 0, 100 },
				      { 1, 0, 0, 10 },
				      { 1, 1, 0, 10 } };
	std::vector<WorkerSlot> workers = { { 1, 0 }, { 2, 0 } };
	auto places = assignRxqs(rxqs, workers);
	EXPECT_EQ(workersOf(places), (std::vector<int>{ 1, 0, 1, 1 }));
	EXPECT_EQ(maxWorkerCycles(rxqs, places, workers.size()), 100u);
}

TEST(AssignRxqs, PinnedQueueIsolatesItsWorker)
{
	std::vector<RxqLoad> rxqs = { { 0, 0, 0, 0, 2 }, { 0, 1 }, { 1, 0 } };
	std::vector<WorkerSlot> workers = { { 1, 0 }, { 2, 0 } };
	EXPECT_EQ(workersOf(assignRxqs(rxqs, workers)), (std::vector<int>{ 1, 0, 0 }));
}

TEST(AssignRxqs, WhenEveryWorkerIsPinnedTheOthersShareThem)
{
	std::vector<RxqLoad> rxqs = { { 0, 0, 0, 0, 1 }, { 0, 1 } };
	std::vector<WorkerSlot> workers = { { 1, 0 } };
	EXPECT_EQ(workersOf(assignRxqs(rxqs, workers)), (std::vector<int>{ 0, 0 }));
}

TEST(AssignRxqs, PinningToALcoreThatIsNoWorkerFallsBackToAutomatic)
{
	std::vector<RxqLoad> rxqs = { { 0, 0, 0, 0, 7 } };
	std::vector<WorkerSlot> workers = { { 1, 0 } };
	EXPECT_EQ(workersOf(assignRxqs(rxqs, workers)), (std::vector<int>{ 0 }));
}

TEST(AssignRxqs, NoWorkerNoPlace)
{
	std::vector<RxqLoad> rxqs = { { 0, 0 } };
	EXPECT_EQ(workersOf(assignRxqs(rxqs, {})), (std::vector<int>{ -1 }));
}
