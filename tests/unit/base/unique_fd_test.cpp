/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include <gtest/gtest.h>

#include "vub/base/unique_fd.h"

namespace vub {
namespace {

bool isOpen(int fd)
{
	return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

int openFd()
{
	int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
	EXPECT_GE(fd, 0);
	return fd;
}

TEST(UniqueFd, IsInvalidByDefault)
{
	UniqueFd fd;
	EXPECT_FALSE(fd.isValid());
	EXPECT_FALSE(static_cast<bool>(fd));
	EXPECT_EQ(fd.get(), -1);
}

TEST(UniqueFd, ClosesOnDestruction)
{
	int raw = openFd();
	{
		UniqueFd fd(raw);
		EXPECT_TRUE(fd.isValid());
		EXPECT_EQ(fd.get(), raw);
		EXPECT_TRUE(isOpen(raw));
	}
	EXPECT_FALSE(isOpen(raw));
}

TEST(UniqueFd, ResetClosesTheOldFdAndOwnsTheNewOne)
{
	int first = openFd();
	int second = openFd();
	UniqueFd fd(first);
	fd.reset(second);
	EXPECT_FALSE(isOpen(first));
	EXPECT_TRUE(isOpen(second));
	EXPECT_EQ(fd.get(), second);

	fd.reset();
	EXPECT_FALSE(isOpen(second));
	EXPECT_FALSE(fd.isValid());
}

TEST(UniqueFd, ReleaseGivesUpOwnershipWithoutClosing)
{
	int raw = openFd();
	{
		UniqueFd fd(raw);
		EXPECT_EQ(fd.release(), raw);
		EXPECT_FALSE(fd.isValid());
	}
	EXPECT_TRUE(isOpen(raw));
	::close(raw);
}

TEST(UniqueFd, MoveConstructionTransfersOwnership)
{
	int raw = openFd();
	UniqueFd source(raw);
	{
		UniqueFd target(std::move(source));
		// NOLINTNEXTLINE(bugprone-use-after-move): the moved-from state is the point
		EXPECT_FALSE(source.isValid());
		EXPECT_EQ(target.get(), raw);
		EXPECT_TRUE(isOpen(raw));
	}
	EXPECT_FALSE(isOpen(raw)) << "the new owner closes the fd";
}

TEST(UniqueFd, MoveAssignmentClosesTheTargetsOldFd)
{
	int kept = openFd();
	int replaced = openFd();
	UniqueFd source(kept);
	UniqueFd target(replaced);
	target = std::move(source);
	EXPECT_FALSE(isOpen(replaced));
	EXPECT_TRUE(isOpen(kept));
	EXPECT_EQ(target.get(), kept);
	// NOLINTNEXTLINE(bugprone-use-after-move): the moved-from state is the point
	EXPECT_FALSE(source.isValid());

	target = UniqueFd();
	EXPECT_FALSE(isOpen(kept));
}

} /* namespace */
} /* namespace vub */
