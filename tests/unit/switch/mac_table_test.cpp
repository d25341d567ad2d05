/* SPDX-License-Identifier: Apache-2.0 */
#include "mac_table.h"

#include <gtest/gtest.h>

using namespace vub::sw;

namespace {

constexpr uint8_t kMacA[6] = { 0x02, 0, 0, 0, 0, 0x0a };
constexpr uint8_t kMacB[6] = { 0x02, 0, 0, 0, 0, 0x0b };
constexpr uint8_t kBroadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
constexpr uint8_t kMulticast[6] = { 0x01, 0x00, 0x5e, 0, 0, 1 };

} /* namespace */

TEST(MacKey, KeepsTheAddressBytesInOrder)
{
	EXPECT_EQ(macKey(kMacA), 0x02000000000aull);
	EXPECT_TRUE(isGroupMac(macKey(kBroadcast)));
	EXPECT_TRUE(isGroupMac(macKey(kMulticast)));
	EXPECT_FALSE(isGroupMac(macKey(kMacA)));
}

TEST(MacTable, FindsWhatWasInsertedAndNothingElse)
{
	MacTable table(4);
	EXPECT_EQ(table.find(macKey(kMacA)), nullptr);
	ASSERT_TRUE(table.insert(macKey(kMacA), 3, 100));
	ASSERT_NE(table.find(macKey(kMacA)), nullptr);
	EXPECT_EQ(table.find(macKey(kMacA))->port, 3u);
	EXPECT_EQ(table.find(macKey(kMacB)), nullptr);
	EXPECT_EQ(table.size(), 1u);
}

TEST(MacTable, RefusesMoreThanItsMaximum)
{
	MacTable table(2);
	EXPECT_TRUE(table.insert(1, 0, 0));
	EXPECT_TRUE(table.insert(2, 0, 0));
	EXPECT_FALSE(table.insert(3, 0, 0));
	EXPECT_TRUE(table.insert(2, 1, 0)) << "moving a known MAC needs no room";
	EXPECT_EQ(table.size(), 2u);
}

TEST(MacTable, FindsEveryKeyOfAFullTable)
{
	MacTable table(1000);
	for (uint64_t k = 0; k < 1000; k++)
		ASSERT_TRUE(table.insert(0x020000000000ull + k * 7919, static_cast<uint32_t>(k % 5),
					 0));
	for (uint64_t k = 0; k < 1000; k++) {
		auto *e = table.find(0x020000000000ull + k * 7919);
		ASSERT_NE(e, nullptr) << k;
		EXPECT_EQ(e->port, k % 5);
	}
}

TEST(MacLearning, PublishesASnapshotOnlyWhenSomethingChanged)
{
	MacLearning learning(16, 300);
	MacTable *first = learning.current();
	MacTable *next = learning.update({ { macKey(kMacA), 1 } }, 10);
	ASSERT_NE(next, nullptr);
	EXPECT_EQ(learning.retire().get(), first);
	EXPECT_EQ(learning.current()->find(macKey(kMacA))->port, 1u);
	EXPECT_EQ(learning.update({ { macKey(kMacA), 1 } }, 11), nullptr)
		<< "the same MAC on the same port refreshes, it does not republish";
	EXPECT_EQ(learning.current()->find(macKey(kMacA))->lastSeen.load(), 11u);
}

TEST(MacLearning, NeverLearnsGroupAddresses)
{
	MacLearning learning(16, 300);
	EXPECT_EQ(learning.update({ { macKey(kBroadcast), 1 }, { macKey(kMulticast), 1 } }, 1),
		  nullptr);
	EXPECT_EQ(learning.current()->size(), 0u);
}

TEST(MacLearning, FollowsAMacThatMovesToAnotherPort)
{
	MacLearning learning(16, 300);
	learning.update({ { macKey(kMacA), 1 } }, 1);
	learning.retire();
	ASSERT_NE(learning.update({ { macKey(kMacA), 2 } }, 2), nullptr);
	EXPECT_EQ(learning.current()->find(macKey(kMacA))->port, 2u);
	EXPECT_EQ(learning.moves(), 1u);
}

TEST(MacLearning, ForgetsWhatWasNotSeenForTheAgingTime)
{
	MacLearning learning(16, 300);
	learning.update({ { macKey(kMacA), 1 }, { macKey(kMacB), 2 } }, 0);
	learning.retire();
	EXPECT_EQ(learning.update({ { macKey(kMacB), 2 } }, 200), nullptr);
	EXPECT_EQ(learning.update({}, 300), nullptr) << "300 s is not older than 300 s";
	ASSERT_NE(learning.update({}, 301), nullptr);
	EXPECT_EQ(learning.current()->find(macKey(kMacA)), nullptr);
	EXPECT_NE(learning.current()->find(macKey(kMacB)), nullptr) << "refreshed at 200";
}

TEST(MacLearning, FlushesTheEntriesOfARemovedPort)
{
	MacLearning learning(16, 300);
	learning.update({ { macKey(kMacA), 1 }, { macKey(kMacB), 2 } }, 0);
	learning.retire();
	ASSERT_NE(learning.update({}, 1, uint64_t{ 1 } << 2), nullptr);
	EXPECT_NE(learning.current()->find(macKey(kMacA)), nullptr);
	EXPECT_EQ(learning.current()->find(macKey(kMacB)), nullptr);
}

TEST(MacLearning, CountsLearnsRefusedByAFullTable)
{
	MacLearning learning(1, 300);
	learning.update({ { macKey(kMacA), 1 }, { macKey(kMacB), 2 } }, 0);
	EXPECT_EQ(learning.current()->size(), 1u);
	EXPECT_EQ(learning.fullDrops(), 1u);
}

TEST(LearnQueue, DeliversInOrderAndDropsWhenFull)
{
	LearnQueue queue;
	for (size_t i = 0; i < LearnQueue::kSize; i++)
		ASSERT_TRUE(queue.push({ i, 0 }));
	EXPECT_FALSE(queue.push({ 9999, 0 }));
	uint64_t expect = 0;
	queue.drain([&](const MacLearnEvent &e) { EXPECT_EQ(e.key, expect++); });
	EXPECT_EQ(expect, LearnQueue::kSize);
	EXPECT_TRUE(queue.push({ 1, 0 }));
}
