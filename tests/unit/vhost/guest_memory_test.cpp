/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MemoryRegion, GuestMemory and GuestMemoryAtomic on memfd memory: mapping with odd offsets and
 * hugetlbfs, every rejected region, whole-range translation (CVE-2018-1059 class) and the RCU
 * reclamation of replaced snapshots.
 */
#include "vub/vhost/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <linux/memfd.h>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/base/rcu.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/message.h"

namespace vub::vhost {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kHugePage = 2u << 20;

UniqueFd makeMemfd(size_t sizeBytes, unsigned flags = 0)
{
	UniqueFd fd(::memfd_create("vub-guest-memory-test", MFD_CLOEXEC | flags));
	if (!fd.isValid())
		return fd;
	if (::ftruncate(fd.get(), static_cast<off_t>(sizeBytes)) < 0)
		return UniqueFd();
	return fd;
}

UniqueFd dupFd(int fd)
{
	return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

MemoryRegionMsg regionMsg(uint64_t gpa, uint64_t sizeBytes, uint64_t qva, uint64_t mmapOffset = 0)
{
	return MemoryRegionMsg{ gpa, sizeBytes, qva, mmapOffset };
}

/* A memfd region of \a sizeBytes at \a gpa / \a qva, mapped from the start of its own memfd. */
std::shared_ptr<MemoryRegion> makeRegion(uint64_t gpa, uint64_t sizeBytes, uint64_t qva)
{
	UniqueFd fd = makeMemfd(sizeBytes);
	EXPECT_TRUE(fd.isValid()) << std::strerror(errno);
	auto region = MemoryRegion::create(regionMsg(gpa, sizeBytes, qva), std::move(fd));
	EXPECT_TRUE(region.has_value()) << (region ? "" : region.error().what);
	return region ? *region : nullptr;
}

std::unique_ptr<GuestMemory> makeMemory(std::vector<std::shared_ptr<MemoryRegion>> regions)
{
	auto memory = GuestMemory::create(std::move(regions));
	EXPECT_TRUE(memory.has_value()) << (memory ? "" : memory.error().what);
	return memory ? std::move(*memory) : nullptr;
}

/* The error code of a refused region, 0 when it was accepted. */
int createError(const MemoryRegionMsg &msg, UniqueFd fd)
{
	auto region = MemoryRegion::create(msg, std::move(fd));
	return region ? 0 : region.error().code;
}

/* ---- MemoryRegion ---- */

TEST(MemoryRegion, WritesThroughHvaReachTheFdAndBack)
{
	constexpr size_t kSize = 16 * kPage;
	UniqueFd fd = makeMemfd(kSize);
	ASSERT_TRUE(fd.isValid());
	auto peer = MemoryMapping::mapShared(fd.get(), kSize, 0);
	ASSERT_TRUE(peer.has_value());
	auto region =
		MemoryRegion::create(regionMsg(0x100000, kSize, 0x7f0000000000), dupFd(fd.get()));
	ASSERT_TRUE(region.has_value()) << region.error().what;
	const MemoryRegion &r = **region;

	EXPECT_EQ(r.gpa(), 0x100000u);
	EXPECT_EQ(r.qva(), 0x7f0000000000u);
	EXPECT_EQ(r.size(), kSize);
	EXPECT_EQ(r.mmapOffset(), 0u);
	EXPECT_EQ(r.pageSize(), kPage);
	EXPECT_GE(r.fd(), 0);
	EXPECT_NE(r.hva(), peer->data()) << "the region has its own mapping";

	std::memcpy(r.hva() + 100, "device", 6);
	EXPECT_EQ(std::memcmp(peer->data() + 100, "device", 6), 0);
	std::memcpy(peer->data() + kSize - 5, "guest", 5);
	EXPECT_EQ(std::memcmp(r.hva() + kSize - 5, "guest", 5), 0);
}

TEST(MemoryRegion, MapsAnOffsetThatIsNotPageAligned)
{
	constexpr size_t kFileSize = 4 * kPage;
	constexpr uint64_t kOffset = kPage + 100;
	constexpr uint64_t kSize = 2 * kPage;
	UniqueFd fd = makeMemfd(kFileSize);
	ASSERT_TRUE(fd.isValid());
	auto peer = MemoryMapping::mapShared(fd.get(), kFileSize, 0);
	ASSERT_TRUE(peer.has_value());
	for (size_t i = 0; i < kFileSize; i++)
		peer->data()[i] = static_cast<uint8_t>(i * 7 + i / 256);

	auto region = MemoryRegion::create(regionMsg(0x200000, kSize, 0x300000, kOffset),
					   dupFd(fd.get()));
	ASSERT_TRUE(region.has_value()) << region.error().what;
	const MemoryRegion &r = **region;
	EXPECT_EQ(r.mmapOffset(), kOffset);
	EXPECT_EQ(r.size(), kSize);
	/* The mapping starts at the page below the offset: hva is 100 bytes into it. */
	EXPECT_EQ(reinterpret_cast<uintptr_t>(r.hva()) % kPage, 100u);
	EXPECT_EQ(r.hva()[0], peer->data()[kOffset]);
	EXPECT_EQ(std::memcmp(r.hva(), peer->data() + kOffset, kSize), 0);

	r.hva()[kSize - 1] = 0xa5;
	EXPECT_EQ(peer->data()[kOffset + kSize - 1], 0xa5);
}

TEST(MemoryRegion, AcceptsARangeEndingAtTheTopOfTheAddressSpace)
{
	UniqueFd fd = makeMemfd(kPage);
	ASSERT_TRUE(fd.isValid());
	auto region = MemoryRegion::create(
		regionMsg(UINT64_MAX - (kPage - 1), kPage, UINT64_MAX - (kPage - 1)),
		std::move(fd));
	ASSERT_TRUE(region.has_value()) << region.error().what;
	EXPECT_TRUE((*region)->containsGpa(UINT64_MAX));
	EXPECT_FALSE((*region)->containsGpa(0));
	EXPECT_TRUE((*region)->containsQva(UINT64_MAX - (kPage - 1)));
	EXPECT_FALSE((*region)->containsQva(UINT64_MAX - kPage));
}

TEST(MemoryRegion, RejectsZeroSize)
{
	EXPECT_EQ(createError(regionMsg(0x100000, 0, 0x100000), makeMemfd(kPage)), EINVAL);
}

TEST(MemoryRegion, RejectsGpaRangeThatOverflows)
{
	EXPECT_EQ(createError(regionMsg(UINT64_MAX - 100, kPage, 0x100000), makeMemfd(kPage)),
		  EINVAL);
	EXPECT_EQ(
		createError(regionMsg(UINT64_MAX - (kPage - 2), kPage, 0x100000), makeMemfd(kPage)),
		EINVAL)
		<< "one byte past the top of the address space";
}

TEST(MemoryRegion, RejectsQvaRangeThatOverflows)
{
	EXPECT_EQ(createError(regionMsg(0x100000, kPage, UINT64_MAX - 100), makeMemfd(kPage)),
		  EINVAL);
}

TEST(MemoryRegion, RejectsOffsetRangeThatOverflows)
{
	/* CVE-2020-10722 class: offset + size wraps, so a smaller mapping than assumed. */
	EXPECT_EQ(createError(regionMsg(0x100000, kPage, 0x100000, UINT64_MAX - 100),
			      makeMemfd(kPage)),
		  EINVAL);
	EXPECT_EQ(createError(regionMsg(0x100000, 2 * kPage, 0x100000, UINT64_MAX - kPage + 1),
			      makeMemfd(kPage)),
		  EINVAL);
}

TEST(MemoryRegion, RejectsRegionPastTheEndOfItsFile)
{
	EXPECT_EQ(createError(regionMsg(0x100000, 4 * kPage, 0x100000, 2 * kPage),
			      makeMemfd(4 * kPage)),
		  EINVAL);
	EXPECT_EQ(createError(regionMsg(0x100000, 4 * kPage + 1, 0x100000), makeMemfd(4 * kPage)),
		  EINVAL);
	EXPECT_EQ(createError(regionMsg(0x100000, 2 * kPage, 0x100000, 2 * kPage),
			      makeMemfd(4 * kPage)),
		  0)
		<< "a region that ends exactly at the end of the file fits";
}

TEST(MemoryRegion, RejectsMissingFd)
{
	EXPECT_EQ(createError(regionMsg(0x100000, kPage, 0x100000), UniqueFd()), EBADF);
}

TEST(MemoryRegion, RejectsFdThatIsNotOpen)
{
	/* At or above RLIMIT_NOFILE no fd can be open, so closing it later harms nobody. */
	struct rlimit limit {
	};
	ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
	int notOpen = limit.rlim_cur < (1u << 30) ? static_cast<int>(limit.rlim_cur) : 1 << 30;
	EXPECT_EQ(createError(regionMsg(0x100000, kPage, 0x100000), UniqueFd(notOpen)), EBADF);
}

TEST(MemoryRegion, RejectsFdThatCannotBeMapped)
{
	int fds[2];
	ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
	UniqueFd writeEnd(fds[1]);
	EXPECT_NE(createError(regionMsg(0x100000, kPage, 0x100000), UniqueFd(fds[0])), 0);
}

TEST(MemoryRegion, MapsHugetlbfsWithItsPageSize)
{
	UniqueFd fd(
		::memfd_create("vub-guest-memory-huge", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB));
	if (!fd.isValid())
		GTEST_SKIP() << "memfd_create(MFD_HUGETLB | MFD_HUGE_2MB) failed: "
			     << std::strerror(errno);
	if (::ftruncate(fd.get(), static_cast<off_t>(2 * kHugePage)) < 0)
		GTEST_SKIP() << "ftruncate of a hugetlbfs memfd failed: " << std::strerror(errno);
	/* A reserving mapping fails cleanly when no 2 MiB page is free; touching would SIGBUS. */
	auto peer = MemoryMapping::mapShared(fd.get(), kHugePage, static_cast<off_t>(kHugePage));
	if (!peer)
		GTEST_SKIP() << "no free 2 MiB huge page: " << std::strerror(peer.error().code);
	peer->data()[kPage] = 0x5a;
	peer->data()[kPage + 1] = 0xc3;

	constexpr uint64_t kOffset = kHugePage + kPage;
	auto region = MemoryRegion::create(
		regionMsg(0x40000000, kPage * 4, 0x7f0040000000, kOffset), dupFd(fd.get()));
	ASSERT_TRUE(region.has_value()) << region.error().what;
	const MemoryRegion &r = **region;
	EXPECT_EQ(r.pageSize(), kHugePage);
	EXPECT_EQ(r.mmapOffset(), kOffset);
	/* The mapping is aligned down to the huge page: hva is 4 KiB into it. */
	EXPECT_EQ(reinterpret_cast<uintptr_t>(r.hva()) % kHugePage, kPage);
	EXPECT_EQ(r.hva()[0], 0x5a);
	EXPECT_EQ(r.hva()[1], 0xc3);
	r.hva()[2] = 0x77;
	EXPECT_EQ(peer->data()[kPage + 2], 0x77);
}

/* ---- GuestMemory::create ---- */

TEST(GuestMemory, StartsEmpty)
{
	GuestMemory memory;
	EXPECT_TRUE(memory.empty());
	EXPECT_EQ(memory.translateGpa(0, 1), nullptr);
	EXPECT_EQ(memory.translateQva(0, 1), nullptr);
	uint64_t gpa = 1;
	EXPECT_FALSE(memory.qvaToGpa(0, &gpa));
}

TEST(GuestMemory, RejectsOverlappingGpaRanges)
{
	auto a = makeRegion(0x100000, 0x10000, 0x7f0000000000);
	auto b = makeRegion(0x10f000, 0x10000, 0x7f0001000000);
	ASSERT_TRUE(a && b);
	auto memory = GuestMemory::create({ a, b });
	ASSERT_FALSE(memory.has_value());
	EXPECT_EQ(memory.error().code, EINVAL);

	/* One range inside the other, given in either order. */
	auto inner = makeRegion(0x104000, 0x1000, 0x7f0002000000);
	ASSERT_TRUE(inner);
	EXPECT_FALSE(GuestMemory::create({ a, inner }).has_value());
	EXPECT_FALSE(GuestMemory::create({ inner, a }).has_value());
}

TEST(GuestMemory, RejectsOverlappingQvaRanges)
{
	auto a = makeRegion(0x100000, 0x10000, 0x7f0000000000);
	auto b = makeRegion(0x800000, 0x10000, 0x7f000000ffff);
	ASSERT_TRUE(a && b);
	auto memory = GuestMemory::create({ a, b });
	ASSERT_FALSE(memory.has_value());
	EXPECT_EQ(memory.error().code, EINVAL);
}

TEST(GuestMemory, RejectsTheSameRegionTwice)
{
	auto a = makeRegion(0x100000, 0x10000, 0x7f0000000000);
	ASSERT_TRUE(a);
	EXPECT_FALSE(GuestMemory::create({ a, a }).has_value());
}

TEST(GuestMemory, AcceptsAdjacentRanges)
{
	auto a = makeRegion(0x100000, 0x10000, 0x7f0000000000);
	auto b = makeRegion(0x110000, 0x10000, 0x7f0000010000);
	ASSERT_TRUE(a && b);
	auto memory = GuestMemory::create({ b, a });
	ASSERT_TRUE(memory.has_value()) << memory.error().what;
	EXPECT_EQ((*memory)->regions().size(), 2u);
	EXPECT_FALSE((*memory)->empty());
}

TEST(GuestMemory, RejectsMoreThanMaxRegions)
{
	auto a = makeRegion(0x100000, 0x1000, 0x7f0000000000);
	ASSERT_TRUE(a);
	std::vector<std::shared_ptr<MemoryRegion>> regions(GuestMemory::kMaxRegions + 1, a);
	auto memory = GuestMemory::create(std::move(regions));
	ASSERT_FALSE(memory.has_value());
	EXPECT_EQ(memory.error().code, E2BIG);
}

/* ---- Translation ---- */

class GuestMemoryTranslation : public ::testing::Test
{
protected:
	static constexpr uint64_t kGpaA = 0x100000;
	static constexpr uint64_t kGpaB = 0x110000; /* GPA-contiguous with A */
	static constexpr uint64_t kSize = 0x10000;
	static constexpr uint64_t kQvaA = 0x7f0000000000;
	static constexpr uint64_t kQvaB = 0x7f0000800000; /* not QVA-contiguous */

	void SetUp() override
	{
		a_ = makeRegion(kGpaA, kSize, kQvaA);
		b_ = makeRegion(kGpaB, kSize, kQvaB);
		ASSERT_TRUE(a_ && b_);
		memory_ = makeMemory({ a_, b_ });
		ASSERT_TRUE(memory_);
	}

	std::shared_ptr<MemoryRegion> a_;
	std::shared_ptr<MemoryRegion> b_;
	std::unique_ptr<GuestMemory> memory_;
};

TEST_F(GuestMemoryTranslation, TranslatesRangesInsideOneRegion)
{
	EXPECT_EQ(memory_->translateGpa(kGpaA, kSize), a_->hva());
	EXPECT_EQ(memory_->translateGpa(kGpaA + 0x123, 0x10), a_->hva() + 0x123);
	EXPECT_EQ(memory_->translateGpa(kGpaA + kSize - 1, 1), a_->hva() + kSize - 1);
	EXPECT_EQ(memory_->translateGpa(kGpaB + 8, kSize - 8), b_->hva() + 8);
	EXPECT_EQ(memory_->translateGpa(kGpaB + 8, 0), b_->hva() + 8) << "len 0 counts as 1 byte";
}

TEST_F(GuestMemoryTranslation, RefusesRangeThatStartsInsideAndEndsOutside)
{
	/* CVE-2018-1059: only the start was checked. B follows A in GPA, but not in hva. */
	EXPECT_EQ(memory_->translateGpa(kGpaA + kSize - 1, 2), nullptr);
	EXPECT_EQ(memory_->translateGpa(kGpaA + 0x8000, kSize), nullptr);
	EXPECT_EQ(memory_->translateGpa(kGpaA, kSize + 1), nullptr);
	/* B's end borders unmapped space. */
	EXPECT_EQ(memory_->translateGpa(kGpaB + kSize - 16, 17), nullptr);
}

TEST_F(GuestMemoryTranslation, RefusesLengthThatOverflows)
{
	EXPECT_EQ(memory_->translateGpa(kGpaA + 0x10, UINT64_MAX), nullptr);
	EXPECT_EQ(memory_->translateGpa(kGpaA + 0x10, UINT64_MAX - 0xf), nullptr)
		<< "gpa + len wraps to 0";
	EXPECT_EQ(memory_->translateGpa(kGpaA + 0x10, UINT64_MAX - kGpaA - 0xf + 0x20), nullptr)
		<< "gpa + len wraps into the region";
	EXPECT_EQ(memory_->translateQva(kQvaA + 0x10, UINT64_MAX - 0xf), nullptr);
}

TEST_F(GuestMemoryTranslation, RefusesGpaInNoRegion)
{
	EXPECT_EQ(memory_->translateGpa(0, 1), nullptr);
	EXPECT_EQ(memory_->translateGpa(kGpaA - 1, 1), nullptr);
	EXPECT_EQ(memory_->translateGpa(kGpaB + kSize, 1), nullptr);
	EXPECT_EQ(memory_->translateGpa(UINT64_MAX, 1), nullptr);
	uint64_t contiguous = 99;
	EXPECT_EQ(memory_->translateGpaPrefix(kGpaB + kSize, 16, &contiguous), nullptr);
}

TEST_F(GuestMemoryTranslation, UsesAndUpdatesTheHint)
{
	uint32_t hint = 1; /* B */
	EXPECT_EQ(memory_->translateGpa(kGpaB + 0x40, 8, &hint), b_->hva() + 0x40);
	EXPECT_EQ(hint, 1u);
	EXPECT_EQ(memory_->translateGpa(kGpaA + 0x40, 8, &hint), a_->hva() + 0x40);
	EXPECT_EQ(hint, 0u) << "the hint moves to the region that matched";

	uint32_t stale = 77; /* beyond the table, e.g. from a larger snapshot */
	EXPECT_EQ(memory_->translateGpa(kGpaB, 8, &stale), b_->hva());
	EXPECT_EQ(stale, 1u);

	uint32_t untouched = 1;
	EXPECT_EQ(memory_->translateGpa(0x10, 8, &untouched), nullptr);
	EXPECT_EQ(untouched, 1u) << "a miss leaves the hint alone";
}

TEST_F(GuestMemoryTranslation, PrefixClipsAtTheRegionEnd)
{
	uint64_t contiguous = 0;
	EXPECT_EQ(memory_->translateGpaPrefix(kGpaA + kSize - 100, 300, &contiguous),
		  a_->hva() + kSize - 100);
	EXPECT_EQ(contiguous, 100u);
	EXPECT_EQ(memory_->translateGpaPrefix(kGpaA + 0x10, 300, &contiguous), a_->hva() + 0x10);
	EXPECT_EQ(contiguous, 300u);
	EXPECT_EQ(memory_->translateGpaPrefix(kGpaB, UINT64_MAX, &contiguous), b_->hva());
	EXPECT_EQ(contiguous, kSize);
	uint32_t hint = 0;
	EXPECT_EQ(memory_->translateGpaPrefix(kGpaB + kSize - 1, 2, &contiguous, &hint),
		  b_->hva() + kSize - 1);
	EXPECT_EQ(contiguous, 1u);
	EXPECT_EQ(hint, 1u);
}

TEST_F(GuestMemoryTranslation, TranslatesQvaRanges)
{
	EXPECT_EQ(memory_->translateQva(kQvaA, kSize), a_->hva());
	EXPECT_EQ(memory_->translateQva(kQvaB + 0x200, 0x100), b_->hva() + 0x200);
	EXPECT_EQ(memory_->translateQva(kQvaA + kSize - 8, 16), nullptr);
	EXPECT_EQ(memory_->translateQva(kQvaA + kSize, 1), nullptr);
	EXPECT_EQ(memory_->translateQva(kGpaA, 1), nullptr) << "a gpa is not a qva";
}

TEST_F(GuestMemoryTranslation, ConvertsQvaToGpa)
{
	uint64_t gpa = 0;
	ASSERT_TRUE(memory_->qvaToGpa(kQvaB + 0x345, &gpa));
	EXPECT_EQ(gpa, kGpaB + 0x345);
	ASSERT_TRUE(memory_->qvaToGpa(kQvaA + kSize - 1, &gpa));
	EXPECT_EQ(gpa, kGpaA + kSize - 1);
	gpa = 42;
	EXPECT_FALSE(memory_->qvaToGpa(kQvaA + kSize, &gpa));
	EXPECT_FALSE(memory_->qvaToGpa(kQvaA - 1, &gpa));
	EXPECT_EQ(gpa, 42u);
}

/* ---- GuestMemoryAtomic ---- */

TEST(GuestMemoryAtomic, StartsWithAnEmptySnapshot)
{
	Rcu rcu;
	GuestMemoryAtomic atomic(rcu);
	ASSERT_NE(atomic.memory(), nullptr);
	EXPECT_TRUE(atomic.memory()->empty());
	EXPECT_EQ(&atomic.rcu(), &rcu);
}

TEST(GuestMemoryAtomic, ReplacePublishesTheNewSnapshot)
{
	Rcu rcu;
	GuestMemoryAtomic atomic(rcu);
	auto region = makeRegion(0x100000, 0x10000, 0x7f0000000000);
	ASSERT_TRUE(region);
	auto next = makeMemory({ region });
	ASSERT_TRUE(next);
	const GuestMemory *published = next.get();
	atomic.replace(std::move(next));
	EXPECT_EQ(atomic.memory(), published);
	EXPECT_EQ(atomic.memory()->translateGpa(0x100010, 4), region->hva() + 0x10);

	atomic.replace(std::make_unique<GuestMemory>());
	ASSERT_NE(atomic.memory(), nullptr);
	EXPECT_TRUE(atomic.memory()->empty());
}

TEST(GuestMemoryAtomic, CallsBeforeReclaimWithTheNewSnapshotBeforeFreeingTheOld)
{
	Rcu rcu;
	GuestMemoryAtomic atomic(rcu);
	std::weak_ptr<MemoryRegion> oldRegion;
	{
		auto region = makeRegion(0x100000, 0x10000, 0x7f0000000000);
		ASSERT_TRUE(region);
		oldRegion = region;
		atomic.replace(makeMemory({ region }));
	}
	auto next = makeMemory({ makeRegion(0x200000, 0x10000, 0x7f0000100000) });
	ASSERT_TRUE(next);
	const GuestMemory *published = next.get();

	int calls = 0;
	bool oldAliveDuringCallback = false;
	const GuestMemory *seen = nullptr;
	const GuestMemory *currentDuringCallback = nullptr;
	atomic.replace(std::move(next), [&](const GuestMemory &mem) {
		calls++;
		seen = &mem;
		currentDuringCallback = atomic.memory();
		oldAliveDuringCallback = !oldRegion.expired();
	});
	EXPECT_EQ(calls, 1);
	EXPECT_EQ(seen, published);
	EXPECT_EQ(currentDuringCallback, published) << "published before the callback";
	EXPECT_TRUE(oldAliveDuringCallback) << "the old snapshot is still mapped in the callback";
	EXPECT_TRUE(oldRegion.expired()) << "the old snapshot is freed when replace() returns";
}

TEST(GuestMemoryAtomic, WaitsForAReaderHoldingTheOldSnapshot)
{
	constexpr uint64_t kGpa = 0x100000;
	constexpr uint64_t kSize = 0x10000;
	Rcu rcu;
	GuestMemoryAtomic atomic(rcu);
	std::weak_ptr<MemoryRegion> oldRegion;
	{
		auto region = makeRegion(kGpa, kSize, 0x7f0000000000);
		ASSERT_TRUE(region);
		std::memset(region->hva(), 0x3c, kSize);
		oldRegion = region;
		atomic.replace(makeMemory({ region }));
	}
	auto next = makeMemory({ makeRegion(0x200000, kSize, 0x7f0000100000) });
	ASSERT_TRUE(next);
	const GuestMemory *published = next.get();

	std::atomic<int> readerStep{ 0 }; /* 1 holding, 3 read done and quiescent */
	std::atomic<bool> mayGoQuiescent{ false };
	/* Set when the old region is gone already: reading it would fault. */
	std::atomic<bool> skipRead{ false };
	std::atomic<bool> readerRegistered{ false };
	std::atomic<bool> oldBytesIntact{ false };
	std::atomic<bool> readerSawOldSnapshot{ false };
	std::thread reader([&] {
		auto registration = rcu.registerReader();
		readerRegistered = registration.has_value();
		if (!registration) {
			readerStep = 3;
			return;
		}
		const GuestMemory *snapshot = atomic.memory();
		const uint8_t *bytes = snapshot->translateGpa(kGpa, kSize);
		readerSawOldSnapshot = bytes != nullptr;
		readerStep = 1;
		while (!mayGoQuiescent)
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
		/* replace() has published the new snapshot and waits: the old one is still mapped.
		 */
		bool intact = bytes != nullptr && !skipRead;
		for (uint64_t i = 0; intact && i < kSize; i += 64)
			intact = bytes[i] == 0x3c;
		oldBytesIntact = intact;
		registration->quiescent();
		readerStep = 3;
	});
	while (readerStep.load() < 1)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	ASSERT_TRUE(readerRegistered.load());
	ASSERT_TRUE(readerSawOldSnapshot.load());

	std::atomic<bool> publishedFlag{ false };
	std::atomic<bool> replaceDone{ false };
	std::thread writer([&] {
		atomic.replace(std::move(next), [&](const GuestMemory &) { publishedFlag = true; });
		replaceDone = true;
	});
	while (!publishedFlag.load())
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(atomic.memory(), published);
	EXPECT_FALSE(replaceDone.load())
		<< "replace() returned while a reader held the old snapshot";
	EXPECT_FALSE(oldRegion.expired()) << "the old region was unmapped under a reader";

	skipRead = oldRegion.expired();
	mayGoQuiescent = true;
	writer.join();
	reader.join();
	EXPECT_TRUE(oldBytesIntact.load());
	EXPECT_TRUE(replaceDone.load());
	EXPECT_TRUE(oldRegion.expired()) << "the old region outlived the grace period";
}

TEST(GuestMemoryAtomic, KeepsRegionsThatTheNewSnapshotShares)
{
	Rcu rcu;
	GuestMemoryAtomic atomic(rcu);
	auto shared = makeRegion(0x100000, 0x10000, 0x7f0000000000);
	auto dropped = makeRegion(0x200000, 0x10000, 0x7f0000100000);
	auto added = makeRegion(0x300000, 0x10000, 0x7f0000200000);
	ASSERT_TRUE(shared && dropped && added);
	std::memcpy(shared->hva() + 0x40, "kept", 4);
	atomic.replace(makeMemory({ shared, dropped }));

	std::weak_ptr<MemoryRegion> sharedWeak = shared;
	std::weak_ptr<MemoryRegion> droppedWeak = dropped;
	uint8_t *sharedHva = shared->hva();
	dropped.reset();
	auto next = makeMemory({ shared, added });
	shared.reset();
	added.reset();
	atomic.replace(std::move(next));

	EXPECT_TRUE(droppedWeak.expired());
	ASSERT_FALSE(sharedWeak.expired());
	uint8_t *hva = atomic.memory()->translateGpa(0x100040, 4);
	EXPECT_EQ(hva, sharedHva + 0x40) << "the shared region keeps its mapping";
	ASSERT_NE(hva, nullptr);
	EXPECT_EQ(std::memcmp(hva, "kept", 4), 0);
	hva[4] = 'x';
	EXPECT_EQ(sharedHva[0x44], 'x');
	EXPECT_EQ(atomic.memory()->translateGpa(0x200000, 1), nullptr);
}

TEST(GuestMemoryAtomic, DestructorFreesTheCurrentSnapshot)
{
	Rcu rcu;
	std::weak_ptr<MemoryRegion> weak;
	{
		GuestMemoryAtomic atomic(rcu);
		auto region = makeRegion(0x100000, 0x10000, 0x7f0000000000);
		ASSERT_TRUE(region);
		weak = region;
		atomic.replace(makeMemory({ region }));
		region.reset();
		EXPECT_FALSE(weak.expired());
	}
	EXPECT_TRUE(weak.expired());
}

} /* namespace */
} /* namespace vub::vhost */
