/* SPDX-License-Identifier: Apache-2.0 */
/* DirtyLog: SET_LOG_BASE's checks, and the bits a write sets. */
#include "vub/vhost/dirty_log.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"

namespace vub::vhost {
namespace {

/** A memfd of \a bytes, and our own view of it. */
struct LogFile {
	explicit LogFile(size_t bytes) : fd(::memfd_create("log", MFD_CLOEXEC))
	{
		EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(bytes)), 0);
		auto m = MemoryMapping::mapShared(fd.get(), bytes, 0);
		EXPECT_TRUE(m);
		view = std::move(*m);
	}
	UniqueFd dup() const { return UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }
	bool bit(uint64_t page, uint64_t offset = 0) const
	{
		return (view.data()[offset + page / 8] >> (page % 8)) & 1;
	}
	size_t count(uint64_t offset, uint64_t bytes) const
	{
		size_t n = 0;
		for (uint64_t i = 0; i < bytes; i++)
			n += __builtin_popcount(view.data()[offset + i]);
		return n;
	}
	UniqueFd fd;
	MemoryMapping view;
};

TEST(DirtyLog, RefusesWhatCannotBeMapped)
{
	LogFile file(8192);
	EXPECT_FALSE(DirtyLog::map(UniqueFd(), 64, 0)) << "no fd";
	EXPECT_FALSE(DirtyLog::map(file.dup(), 0, 0)) << "size 0";
	auto overflow = DirtyLog::map(file.dup(), 4096, UINT64_MAX - 100);
	ASSERT_FALSE(overflow) << "offset + size overflows (CVE-2020-10722)";
	EXPECT_EQ(overflow.error().code, EINVAL);
	EXPECT_FALSE(DirtyLog::map(file.dup(), 8192, 1)) << "one byte past the file";
	EXPECT_FALSE(DirtyLog::map(file.dup(), 16384, 0)) << "past the file";
	UniqueFd event(::eventfd(0, EFD_CLOEXEC));
	EXPECT_FALSE(DirtyLog::map(std::move(event), 64, 0)) << "not a file";
}

TEST(DirtyLog, MarksEveryPageOfAWriteAndNothingElse)
{
	LogFile file(4096);
	auto log = DirtyLog::map(file.dup(), 4096, 0);
	ASSERT_TRUE(log);
	EXPECT_EQ((*log)->bytes(), 4096u);
	(*log)->mark(5 * 4096 + 100, 10);
	EXPECT_TRUE(file.bit(5));
	EXPECT_EQ(file.count(0, 4096), 1u);
	/* 4095 + 2 bytes: the last byte of page 7 and the first of page 8. */
	(*log)->mark(8 * 4096 - 1, 2);
	EXPECT_TRUE(file.bit(7));
	EXPECT_TRUE(file.bit(8));
	(*log)->mark(100 * 4096, 3 * 4096);
	EXPECT_TRUE(file.bit(100) && file.bit(101) && file.bit(102));
	EXPECT_FALSE(file.bit(103));
	(*log)->mark(200 * 4096, 0);
	EXPECT_FALSE(file.bit(200)) << "a write of 0 bytes";
	EXPECT_EQ(file.count(0, 4096), 6u);
}

TEST(DirtyLog, PagesPastTheLogAreNotMarked)
{
	LogFile file(8192);
	/* A log of 16 bytes (128 pages) at offset 4100 of the file, not page-aligned. */
	auto log = DirtyLog::map(file.dup(), 16, 4100);
	ASSERT_TRUE(log);
	(*log)->mark(127 * 4096, 2 * 4096);
	EXPECT_TRUE(file.bit(127, 4100));
	(*log)->mark(UINT64_MAX - 10, 100);
	(*log)->mark(1ull << 40, 4096);
	EXPECT_EQ(file.count(0, 8192), 1u) << "only page 127: the rest lies past the log";
}

} /* namespace */
} /* namespace vub::vhost */
