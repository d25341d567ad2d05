/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/epoll.h>

#include <cerrno>
#include <chrono>

#include <gtest/gtest.h>

#include "vub/base/epoll.h"
#include "vub/base/event_fd.h"

namespace vub {
namespace {

TEST(Epoll, CreatesCloseOnExecFd)
{
	auto epoll = Epoll::create();
	ASSERT_TRUE(epoll) << epoll.error().what;
	ASSERT_GE(epoll->fd(), 0);
	EXPECT_NE(::fcntl(epoll->fd(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(Epoll, WaitTimesOutWithZeroEvents)
{
	auto epoll = Epoll::create();
	ASSERT_TRUE(epoll);
	epoll_event events[4];
	auto start = std::chrono::steady_clock::now();
	auto n = epoll->wait(events, 20);
	auto elapsed = std::chrono::steady_clock::now() - start;
	ASSERT_TRUE(n) << n.error().what;
	EXPECT_EQ(*n, 0);
	EXPECT_GE(elapsed, std::chrono::milliseconds(15));
}

TEST(Epoll, ReportsReadyFdWithItsData)
{
	auto epoll = Epoll::create();
	auto efd = EventFd::create();
	ASSERT_TRUE(epoll && efd);
	ASSERT_TRUE(epoll->add(efd->fd(), EPOLLIN, 0x1234567890ull));

	epoll_event events[4];
	auto n = epoll->wait(events, 0);
	ASSERT_TRUE(n);
	EXPECT_EQ(*n, 0) << "nothing is pending yet";

	EXPECT_TRUE(efd->notify());
	n = epoll->wait(events, 1000);
	ASSERT_TRUE(n);
	ASSERT_EQ(*n, 1);
	EXPECT_EQ(events[0].data.u64, 0x1234567890ull);
	EXPECT_NE(events[0].events & EPOLLIN, 0u);
}

TEST(Epoll, ModifyChangesTheData)
{
	auto epoll = Epoll::create();
	auto efd = EventFd::create();
	ASSERT_TRUE(epoll && efd);
	ASSERT_TRUE(epoll->add(efd->fd(), EPOLLIN, 1));
	ASSERT_TRUE(epoll->modify(efd->fd(), EPOLLIN, 2));
	EXPECT_TRUE(efd->notify());
	epoll_event events[4];
	auto n = epoll->wait(events, 1000);
	ASSERT_TRUE(n);
	ASSERT_EQ(*n, 1);
	EXPECT_EQ(events[0].data.u64, 2u);
}

TEST(Epoll, RemovedFdIsNoLongerReported)
{
	auto epoll = Epoll::create();
	auto efd = EventFd::create();
	ASSERT_TRUE(epoll && efd);
	ASSERT_TRUE(epoll->add(efd->fd(), EPOLLIN, 1));
	epoll->remove(efd->fd());
	EXPECT_TRUE(efd->notify());
	epoll_event events[4];
	auto n = epoll->wait(events, 0);
	ASSERT_TRUE(n);
	EXPECT_EQ(*n, 0);
}

TEST(Epoll, RemovingAnUnwatchedFdIsHarmless)
{
	auto epoll = Epoll::create();
	auto efd = EventFd::create();
	ASSERT_TRUE(epoll && efd);
	epoll->remove(efd->fd());
	EXPECT_TRUE(epoll->add(efd->fd(), EPOLLIN, 1));
}

TEST(Epoll, RejectsAddingAnFdTwice)
{
	auto epoll = Epoll::create();
	auto efd = EventFd::create();
	ASSERT_TRUE(epoll && efd);
	ASSERT_TRUE(epoll->add(efd->fd(), EPOLLIN, 1));
	auto again = epoll->add(efd->fd(), EPOLLIN, 1);
	ASSERT_FALSE(again);
	EXPECT_EQ(again.error().code, EEXIST);
}

TEST(Epoll, RejectsModifyingAnUnwatchedFd)
{
	auto epoll = Epoll::create();
	auto efd = EventFd::create();
	ASSERT_TRUE(epoll && efd);
	auto r = epoll->modify(efd->fd(), EPOLLIN, 1);
	ASSERT_FALSE(r);
	EXPECT_EQ(r.error().code, ENOENT);
}

} /* namespace */
} /* namespace vub */
