/* SPDX-License-Identifier: Apache-2.0 */
#include "placement.h"

#include <gtest/gtest.h>

using namespace vub::sw;

TEST(GroupStreams, StreamsWritingTheSameQueuePairShareAGroup)
{
	/* Port 0 has 2 pairs, port 1 one: both of port 0's pairs write port 1's pair 0. */
	std::vector<StreamRoute> routes = {
		{ 0, 0, 1, 0 },
		{ 0, 1, 1, 0 },
		{ 1, 0, 0, 0 },
	};
	EXPECT_EQ(groupStreams(routes), (std::vector<unsigned>{ 0, 0, 1 }));
}

TEST(GroupStreams, DistinctDestinationsGetDistinctGroups)
{
	std::vector<StreamRoute> routes = { { 0, 0, 0, 0 }, { 0, 1, 0, 1 } };
	EXPECT_EQ(groupStreams(routes), (std::vector<unsigned>{ 0, 1 }));
}

TEST(PickWorker, TakesTheLeastLoadedWorkerOnTheNode)
{
	std::vector<WorkerLoad> workers = { { 1, 0, 0 }, { 2, 1, 3 }, { 3, 1, 1 }, { 4, 1, 1 } };
	EXPECT_EQ(pickWorker(workers, 1), 2);
	EXPECT_EQ(pickWorker(workers, 0), 0);
}

TEST(PickWorker, NoWorkerOnTheNodeOrAnUnknownNodeKeepsThePlacement)
{
	std::vector<WorkerLoad> workers = { { 1, 0, 0 } };
	EXPECT_EQ(pickWorker(workers, 1), -1);
	EXPECT_EQ(pickWorker(workers, -1), -1);
}
