/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/event_fd.h"
#include "vub/base/event_loop.h"

namespace vub {
namespace {

using namespace std::chrono_literals;

/*
 * A loop run on the test thread, with a watchdog timer so that a loop that never stops fails
 * the test instead of hanging it.
 */
class EventLoopTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		auto created = EventLoop::create();
		ASSERT_TRUE(created) << created.error().what;
		loop = std::move(*created);
	}

	/* Run the loop on this thread; \return false when the watchdog had to stop it. */
	bool runWithWatchdog(std::chrono::milliseconds limit = 3000ms)
	{
		bool fired = false;
		EventLoop::TimerId id = loop->addTimer(limit, [&] {
			fired = true;
			loop->stop();
		});
		loop->run();
		loop->cancelTimer(id);
		return !fired;
	}

	std::unique_ptr<EventLoop> loop;
};

TEST_F(EventLoopTest, RunsTheCallbackOfAReadyFd)
{
	auto efd = EventFd::create();
	ASSERT_TRUE(efd);
	int calls = 0;
	ASSERT_TRUE(loop->watch(efd->fd(), EPOLLIN, [&](uint32_t events) {
		EXPECT_NE(events & EPOLLIN, 0u);
		EXPECT_TRUE(loop->onLoopThread());
		EXPECT_EQ(efd->drain(), 1u);
		calls++;
		loop->stop();
	}));
	EXPECT_TRUE(efd->notify());
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_EQ(calls, 1);
	EXPECT_FALSE(loop->onLoopThread()) << "run() has returned";
}

TEST_F(EventLoopTest, RejectsWatchingAnFdTwice)
{
	auto efd = EventFd::create();
	ASSERT_TRUE(efd);
	ASSERT_TRUE(loop->watch(efd->fd(), EPOLLIN, [](uint32_t) {}));
	auto again = loop->watch(efd->fd(), EPOLLIN, [](uint32_t) {});
	ASSERT_FALSE(again);
	EXPECT_EQ(again.error().code, EEXIST);
}

TEST_F(EventLoopTest, CallbackCanUnwatchItsOwnFd)
{
	auto efd = EventFd::create();
	ASSERT_TRUE(efd);
	int calls = 0;
	/* State captured by the callback, used after the callback has unwatched itself. */
	auto tag = std::make_shared<std::string>("still alive");
	ASSERT_TRUE(loop->watch(efd->fd(), EPOLLIN, [&, tag](uint32_t) {
		calls++;
		loop->unwatch(efd->fd());
		EXPECT_EQ(*tag, "still alive");
		/* Still readable: a watched fd would call again on the next round. */
		EXPECT_TRUE(efd->notify());
		loop->addTimer(30ms, [&] { loop->stop(); });
	}));
	tag.reset();
	EXPECT_TRUE(efd->notify());
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, CallbackCanUnwatchAnotherReadyFd)
{
	auto a = EventFd::create();
	auto b = EventFd::create();
	ASSERT_TRUE(a && b);
	int calls = 0;
	auto unwatchBoth = [&](uint32_t) {
		calls++;
		loop->unwatch(a->fd());
		loop->unwatch(b->fd());
		loop->addTimer(30ms, [&] { loop->stop(); });
	};
	ASSERT_TRUE(loop->watch(a->fd(), EPOLLIN, unwatchBoth));
	ASSERT_TRUE(loop->watch(b->fd(), EPOLLIN, unwatchBoth));
	/* Both ready in the same round: the second must not run once the first unwatched it. */
	EXPECT_TRUE(a->notify());
	EXPECT_TRUE(b->notify());
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, CallbackCanWatchANewFd)
{
	auto first = EventFd::create();
	auto second = EventFd::create();
	ASSERT_TRUE(first && second);
	bool secondCalled = false;
	ASSERT_TRUE(loop->watch(first->fd(), EPOLLIN, [&](uint32_t) {
		first->drain();
		EXPECT_TRUE(loop->watch(second->fd(), EPOLLIN, [&](uint32_t) {
			second->drain();
			secondCalled = true;
			loop->stop();
		}));
		EXPECT_TRUE(second->notify());
	}));
	EXPECT_TRUE(first->notify());
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_TRUE(secondCalled);
}

TEST_F(EventLoopTest, TimersFireInDeadlineOrder)
{
	std::vector<int> order;
	loop->addTimer(60ms, [&] {
		order.push_back(60);
		loop->stop();
	});
	loop->addTimer(20ms, [&] { order.push_back(20); });
	loop->addTimer(40ms, [&] { order.push_back(40); });
	loop->addTimer(0ms, [&] { order.push_back(0); });
	auto start = std::chrono::steady_clock::now();
	EXPECT_TRUE(runWithWatchdog());
	auto elapsed = std::chrono::steady_clock::now() - start;
	EXPECT_EQ(order, (std::vector<int>{ 0, 20, 40, 60 }));
	EXPECT_GE(elapsed, 60ms) << "a timer never fires early";
}

TEST_F(EventLoopTest, ZeroDelayTimersFireInInsertionOrder)
{
	std::vector<int> order;
	for (int i = 0; i < 5; i++)
		loop->addTimer(0ms, [&, i] { order.push_back(i); });
	loop->addTimer(10ms, [&] { loop->stop(); });
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_EQ(order, (std::vector<int>{ 0, 1, 2, 3, 4 }));
}

TEST_F(EventLoopTest, CancelledTimerDoesNotFire)
{
	bool cancelledFired = false;
	EventLoop::TimerId id = loop->addTimer(10ms, [&] { cancelledFired = true; });
	loop->addTimer(50ms, [&] { loop->stop(); });
	loop->cancelTimer(id);
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_FALSE(cancelledFired);
}

TEST_F(EventLoopTest, TimerCanCancelALaterTimer)
{
	bool laterFired = false;
	EventLoop::TimerId later = loop->addTimer(40ms, [&] { laterFired = true; });
	loop->addTimer(10ms, [&] { loop->cancelTimer(later); });
	loop->addTimer(80ms, [&] { loop->stop(); });
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_FALSE(laterFired);
}

TEST_F(EventLoopTest, CancellingAnUnknownTimerIsHarmless)
{
	bool fired = false;
	EventLoop::TimerId id = loop->addTimer(5ms, [&] {
		fired = true;
		loop->stop();
	});
	loop->cancelTimer(id + 1000);
	EXPECT_TRUE(runWithWatchdog());
	EXPECT_TRUE(fired);
}

TEST_F(EventLoopTest, TaskPostedFromAnotherThreadRunsOnTheLoopThread)
{
	std::thread::id ranOn;
	std::thread poster([&] {
		std::this_thread::sleep_for(20ms);
		loop->post([&] {
			ranOn = std::this_thread::get_id();
			loop->stop();
		});
	});
	bool stoppedInTime = runWithWatchdog();
	poster.join();
	EXPECT_TRUE(stoppedInTime);
	EXPECT_EQ(ranOn, std::this_thread::get_id());
}

TEST_F(EventLoopTest, PostedTasksRunInOrder)
{
	std::vector<int> order;
	std::thread poster([&] {
		for (int i = 0; i < 100; i++)
			loop->post([&, i] { order.push_back(i); });
		loop->post([&] { loop->stop(); });
	});
	bool stoppedInTime = runWithWatchdog();
	poster.join();
	EXPECT_TRUE(stoppedInTime);
	ASSERT_EQ(order.size(), 100u);
	for (int i = 0; i < 100; i++)
		EXPECT_EQ(order[i], i);
}

TEST_F(EventLoopTest, StopFromAnotherThreadEndsRun)
{
	std::thread stopper([&] {
		std::this_thread::sleep_for(30ms);
		loop->stop();
	});
	bool stoppedInTime = runWithWatchdog();
	stopper.join();
	EXPECT_TRUE(stoppedInTime);
}

TEST_F(EventLoopTest, StartThreadRunsTheLoopOnANamedThread)
{
	ASSERT_TRUE(loop->startThread("vub-test-loop"));
	EXPECT_FALSE(loop->onLoopThread());
	std::thread::id loopId;
	char name[16] = {};
	loop->runSync([&] {
		loopId = std::this_thread::get_id();
		pthread_getname_np(pthread_self(), name, sizeof(name));
	});
	EXPECT_NE(loopId, std::thread::id());
	EXPECT_NE(loopId, std::this_thread::get_id());
	EXPECT_STREQ(name, "vub-test-loop");
	loop->stop();
}

TEST_F(EventLoopTest, RunSyncWaitsForTheTask)
{
	ASSERT_TRUE(loop->startThread("vub-test-sync"));
	for (int i = 0; i < 50; i++) {
		int value = 0;
		loop->runSync([&] {
			std::this_thread::sleep_for(std::chrono::microseconds(100));
			value = i + 1;
		});
		ASSERT_EQ(value, i + 1) << "runSync returned before its task finished";
	}
	loop->stop();
}

TEST_F(EventLoopTest, RunSyncOnTheLoopThreadRunsInline)
{
	bool inner = false;
	bool innerBeforeReturn = false;
	loop->post([&] {
		loop->runSync([&] { inner = true; });
		innerBeforeReturn = inner;
		loop->stop();
	});
	EXPECT_TRUE(runWithWatchdog()) << "runSync from the loop thread deadlocked";
	EXPECT_TRUE(innerBeforeReturn);
}

TEST_F(EventLoopTest, StopJoinsTheLoopThread)
{
	std::atomic<int> ran{ 0 };
	ASSERT_TRUE(loop->startThread("vub-test-stop"));
	loop->post([&] { ran++; });
	loop->stop();
	/* stop() joined the thread: the posted task has run, and nothing runs after. */
	EXPECT_EQ(ran.load(), 1);
	loop->post([&] { ran++; });
	std::this_thread::sleep_for(20ms);
	EXPECT_EQ(ran.load(), 1);
}

TEST_F(EventLoopTest, StartedLoopCanBeStartedAgainAfterStop)
{
	ASSERT_TRUE(loop->startThread("vub-test-again"));
	loop->stop();
	ASSERT_TRUE(loop->startThread("vub-test-again"));
	std::thread::id loopId;
	loop->runSync([&] { loopId = std::this_thread::get_id(); });
	EXPECT_NE(loopId, std::this_thread::get_id()) << "ran on the new loop thread";
	loop->stop();
}

TEST_F(EventLoopTest, DestructionStopsAStartedLoop)
{
	ASSERT_TRUE(loop->startThread("vub-test-dtor"));
	loop.reset();
	SUCCEED() << "the destructor joined the loop thread";
}

} /* namespace */
} /* namespace vub */
