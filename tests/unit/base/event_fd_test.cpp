/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <utility>

#include <gtest/gtest.h>

#include "vub/base/event_fd.h"

namespace vub {
namespace {

bool isReadable(int fd)
{
	pollfd pfd{ fd, POLLIN, 0 };
	return ::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN) != 0;
}

TEST(EventFd, CreatesNonBlockingCloseOnExecFd)
{
	auto efd = EventFd::create();
	ASSERT_TRUE(efd) << efd.error().what;
	ASSERT_TRUE(efd->isValid());
	int flags = ::fcntl(efd->fd(), F_GETFL);
	ASSERT_GE(flags, 0);
	EXPECT_NE(flags & O_NONBLOCK, 0);
	int fdFlags = ::fcntl(efd->fd(), F_GETFD);
	ASSERT_GE(fdFlags, 0);
	EXPECT_NE(fdFlags & FD_CLOEXEC, 0);
}

TEST(EventFd, DrainReturnsTheNumberOfNotifications)
{
	auto efd = EventFd::create();
	ASSERT_TRUE(efd);
	EXPECT_TRUE(efd->notify());
	EXPECT_TRUE(efd->notify());
	EXPECT_TRUE(efd->notify());
	EXPECT_TRUE(isReadable(efd->fd()));
	EXPECT_EQ(efd->drain(), 3u);
	EXPECT_FALSE(isReadable(efd->fd())) << "drain resets the counter";
}

TEST(EventFd, DrainOfEmptyCounterReturnsZeroWithoutBlocking)
{
	auto efd = EventFd::create();
	ASSERT_TRUE(efd);
	/* A blocking fd would hang the test below instead of failing it. */
	ASSERT_NE(::fcntl(efd->fd(), F_GETFL) & O_NONBLOCK, 0);
	EXPECT_EQ(efd->drain(), 0u);
	EXPECT_TRUE(efd->notify());
	EXPECT_EQ(efd->drain(), 1u);
	EXPECT_EQ(efd->drain(), 0u);
}

TEST(EventFd, AdoptsAnEventFdFromAPeer)
{
	int raw = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(raw, 0);
	EventFd efd{ UniqueFd(raw) };
	EXPECT_EQ(efd.fd(), raw);
	EXPECT_TRUE(efd.notify());
	EXPECT_EQ(efd.drain(), 1u);
}

TEST(EventFd, AdoptRefusesWhatIsNotAnEventFd)
{
	int raw = ::eventfd(0, EFD_CLOEXEC);
	ASSERT_GE(raw, 0);
	auto adopted = EventFd::adopt(UniqueFd(raw));
	ASSERT_TRUE(adopted);
	EXPECT_EQ(adopted->fd(), raw);

	/* A pipe whose reader is gone would raise SIGPIPE on notify(). */
	int ends[2];
	ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
	UniqueFd reader(ends[0]);
	auto pipe = EventFd::adopt(UniqueFd(ends[1]));
	ASSERT_FALSE(pipe);
	EXPECT_EQ(pipe.error().code, EINVAL);
}

TEST(EventFd, KeepsWorkingAfterMove)
{
	auto created = EventFd::create();
	ASSERT_TRUE(created);
	EventFd first = std::move(*created);
	int raw = first.fd();
	EXPECT_TRUE(first.notify());
	EventFd second = std::move(first);
	// NOLINTNEXTLINE(bugprone-use-after-move): the moved-from state is the point
	EXPECT_FALSE(first.isValid());
	EXPECT_EQ(second.fd(), raw);
	EXPECT_TRUE(second.notify());
	EXPECT_EQ(second.drain(), 2u);
}

TEST(EventFd, InvalidEventFdFailsQuietly)
{
	EventFd efd;
	EXPECT_FALSE(efd.isValid());
	EXPECT_FALSE(efd.notify());
	EXPECT_EQ(efd.drain(), 0u);
}

} /* namespace */
} /* namespace vub */
