/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/base/unique_fd.h"

namespace vub {
namespace {

const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));

/* A memfd of \a sizeBytes whose name shows in /proc/self/maps while it is mapped. */
UniqueFd makeMemfd(const char *name, size_t sizeBytes)
{
	UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
	if (fd && ::ftruncate(fd.get(), static_cast<off_t>(sizeBytes)) < 0)
		fd.reset();
	return fd;
}

/* The number of lines of /proc/self/maps that map the memfd called \a name. */
int mappingsOf(const char *name)
{
	std::ifstream maps("/proc/self/maps");
	std::string needle = std::string("/memfd:") + name + " ";
	std::string line;
	int count = 0;
	while (std::getline(maps, line)) {
		if ((line + " ").find(needle) != std::string::npos)
			count++;
	}
	return count;
}

TEST(MemoryMapping, IsInvalidByDefault)
{
	MemoryMapping mapping;
	EXPECT_FALSE(mapping.isValid());
	EXPECT_EQ(mapping.data(), nullptr);
	EXPECT_EQ(mapping.size(), 0u);
}

TEST(MemoryMapping, WritesAreVisibleThroughASecondMapping)
{
	UniqueFd fd = makeMemfd("vub-mm-shared", 2 * kPage);
	ASSERT_TRUE(fd) << "memfd_create: " << std::strerror(errno);
	auto a = MemoryMapping::mapShared(fd.get(), 2 * kPage, 0);
	auto b = MemoryMapping::mapShared(fd.get(), 2 * kPage, 0);
	ASSERT_TRUE(a) << a.error().what;
	ASSERT_TRUE(b) << b.error().what;
	EXPECT_EQ(a->size(), 2 * kPage);
	EXPECT_NE(a->data(), b->data());

	std::memcpy(a->data() + kPage + 10, "guest", 6);
	EXPECT_STREQ(reinterpret_cast<const char *>(b->data() + kPage + 10), "guest");
	b->data()[0] = 0x5a;
	EXPECT_EQ(a->data()[0], 0x5a);
}

TEST(MemoryMapping, MapsFromTheGivenOffset)
{
	UniqueFd fd = makeMemfd("vub-mm-offset", 2 * kPage);
	ASSERT_TRUE(fd);
	auto whole = MemoryMapping::mapShared(fd.get(), 2 * kPage, 0);
	auto second = MemoryMapping::mapShared(fd.get(), kPage, static_cast<off_t>(kPage));
	ASSERT_TRUE(whole);
	ASSERT_TRUE(second) << second.error().what;
	whole->data()[kPage] = 0x11;
	EXPECT_EQ(second->data()[0], 0x11);
}

TEST(MemoryMapping, UnmapsOnDestruction)
{
	const char *name = "vub-mm-unmap";
	UniqueFd fd = makeMemfd(name, kPage);
	ASSERT_TRUE(fd);
	{
		auto mapping = MemoryMapping::mapShared(fd.get(), kPage, 0);
		ASSERT_TRUE(mapping);
		EXPECT_EQ(mappingsOf(name), 1);
	}
	EXPECT_EQ(mappingsOf(name), 0);
}

TEST(MemoryMapping, ResetUnmaps)
{
	const char *name = "vub-mm-reset";
	UniqueFd fd = makeMemfd(name, kPage);
	ASSERT_TRUE(fd);
	auto mapping = MemoryMapping::mapShared(fd.get(), kPage, 0);
	ASSERT_TRUE(mapping);
	mapping->reset();
	EXPECT_FALSE(mapping->isValid());
	EXPECT_EQ(mapping->size(), 0u);
	EXPECT_EQ(mappingsOf(name), 0);
}

TEST(MemoryMapping, MoveTransfersTheMapping)
{
	const char *name = "vub-mm-move";
	UniqueFd fd = makeMemfd(name, kPage);
	ASSERT_TRUE(fd);
	auto mapped = MemoryMapping::mapShared(fd.get(), kPage, 0);
	ASSERT_TRUE(mapped);
	MemoryMapping first = std::move(*mapped);
	uint8_t *addr = first.data();
	{
		MemoryMapping second(std::move(first));
		// NOLINTNEXTLINE(bugprone-use-after-move): the moved-from state is the point
		EXPECT_FALSE(first.isValid());
		EXPECT_EQ(second.data(), addr);
		EXPECT_EQ(second.size(), kPage);
		second.data()[0] = 1;
		EXPECT_EQ(mappingsOf(name), 1);
	}
	EXPECT_EQ(mappingsOf(name), 0) << "the new owner unmaps";
}

TEST(MemoryMapping, MoveAssignmentUnmapsTheTargetsOldRange)
{
	const char *oldName = "vub-mm-old";
	const char *newName = "vub-mm-new";
	UniqueFd oldFd = makeMemfd(oldName, kPage);
	UniqueFd newFd = makeMemfd(newName, kPage);
	ASSERT_TRUE(oldFd && newFd);
	auto target = MemoryMapping::mapShared(oldFd.get(), kPage, 0);
	auto source = MemoryMapping::mapShared(newFd.get(), kPage, 0);
	ASSERT_TRUE(target && source);
	*target = std::move(*source);
	EXPECT_EQ(mappingsOf(oldName), 0);
	EXPECT_EQ(mappingsOf(newName), 1);
}

TEST(MemoryMapping, RejectsZeroSize)
{
	UniqueFd fd = makeMemfd("vub-mm-zero", kPage);
	ASSERT_TRUE(fd);
	auto mapping = MemoryMapping::mapShared(fd.get(), 0, 0);
	ASSERT_FALSE(mapping);
	EXPECT_EQ(mapping.error().code, EINVAL);
}

TEST(MemoryMapping, RejectsUnalignedOffset)
{
	UniqueFd fd = makeMemfd("vub-mm-unaligned", 2 * kPage);
	ASSERT_TRUE(fd);
	auto mapping = MemoryMapping::mapShared(fd.get(), kPage, 1);
	ASSERT_FALSE(mapping);
	EXPECT_EQ(mapping.error().code, EINVAL);
}

TEST(MemoryMapping, RejectsBadFd)
{
	auto mapping = MemoryMapping::mapShared(-1, kPage, 0);
	ASSERT_FALSE(mapping);
	EXPECT_EQ(mapping.error().code, EBADF);
}

} /* namespace */
} /* namespace vub */
