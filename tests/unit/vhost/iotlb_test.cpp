/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vIOMMU side of guest memory: the device IOTLB that IOTLB_MSG fills, the miss queue the
 * workers post to, the snapshot that translates I/O virtual addresses through it, and a split
 * ring whose rings and buffers are IOVAs (VIRTIO_F_IOMMU_PLATFORM): a missing translation
 * defers the chain without taking it, and is asked for once.
 */
#include "vub/vhost/iotlb.h"

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/split_queue.h"
#include "vub/virtio/split_ring.h"

namespace vub::vhost {
namespace {

IotlbMsg update(uint64_t iova, uint64_t size, uint64_t uaddr, uint8_t perm = kAccessReadWrite)
{
	IotlbMsg msg{};
	msg.iova = iova;
	msg.size = size;
	msg.uaddr = uaddr;
	msg.perm = perm;
	msg.type = iotlb::kUpdate;
	return msg;
}

TEST(Iotlb, UpdateAddsAnEntryAndReplacesWhatItOverlaps)
{
	Iotlb tlb;
	ASSERT_TRUE(tlb.update(update(0x1000, 0x1000, 0x7f0000001000)).has_value());
	ASSERT_TRUE(tlb.update(update(0x3000, 0x2000, 0x7f0000003000)).has_value());
	EXPECT_EQ(tlb.size(), 2u);
	/* Overlaps both: they go, it stays. */
	ASSERT_TRUE(tlb.update(update(0x1800, 0x2000, 0x7f0000009000, kAccessRead)).has_value());
	ASSERT_EQ(tlb.size(), 1u);
	const IotlbEntry &e = tlb.entries().begin()->second;
	EXPECT_EQ(e.iova, 0x1800u);
	EXPECT_EQ(e.uaddr, 0x7f0000009000u);
	EXPECT_EQ(e.perm, kAccessRead);
}

TEST(Iotlb, RefusesEmptyWrappingAndBadPermissionUpdates)
{
	Iotlb tlb;
	EXPECT_EQ(tlb.update(update(0x1000, 0, 0x1000)).error().code, EINVAL);
	EXPECT_EQ(tlb.update(update(UINT64_MAX - 0xfff, 0x2000, 0x1000)).error().code, EINVAL);
	EXPECT_EQ(tlb.update(update(0x1000, 0x1000, UINT64_MAX - 0x800)).error().code, EINVAL);
	EXPECT_EQ(tlb.update(update(0x1000, 0x1000, 0x1000, 0)).error().code, EINVAL);
	EXPECT_EQ(tlb.update(update(0x1000, 0x1000, 0x1000, 4)).error().code, EINVAL);
	EXPECT_EQ(tlb.size(), 0u);
	/* The last byte of the address space is fine. */
	EXPECT_TRUE(tlb.update(update(UINT64_MAX - 0xfff, 0x1000, 0x1000)).has_value());
}

TEST(Iotlb, InvalidateRemovesEveryEntryItTouches)
{
	Iotlb tlb;
	for (uint64_t page = 0; page < 8; page++)
		ASSERT_TRUE(tlb.update(update(page * 0x1000, 0x1000, 0x10000 + page * 0x1000))
				    .has_value());
	tlb.invalidate(0x1fff, 2); /* the last byte of page 1, the first of page 2 */
	EXPECT_EQ(tlb.size(), 6u);
	EXPECT_EQ(tlb.entries().count(0x1000), 0u);
	EXPECT_EQ(tlb.entries().count(0x2000), 0u);
	tlb.invalidate(0x5000, 0); /* nothing */
	EXPECT_EQ(tlb.size(), 6u);
	/* What Linux's lazy flush makes QEMU send: everything, the size wrapping past 2^64. */
	tlb.invalidate(0x4000, UINT64_MAX);
	EXPECT_EQ(tlb.size(), 2u);
	tlb.invalidate(0, UINT64_MAX);
	EXPECT_EQ(tlb.size(), 0u);
}

TEST(Iotlb, StaysBoundedByEvictingEntries)
{
	Iotlb tlb;
	for (uint64_t i = 0; i < Iotlb::kMaxEntries + 100; i++)
		ASSERT_TRUE(tlb.update(update(i * 0x1000, 0x1000, 0x10000000 + i * 0x1000))
				    .has_value());
	EXPECT_EQ(tlb.size(), Iotlb::kMaxEntries);
	EXPECT_EQ(tlb.evictions(), 100u);
	/* The newest is always there. */
	EXPECT_EQ(tlb.entries().count((Iotlb::kMaxEntries + 99) * 0x1000), 1u);
}

bool readable(int fd)
{
	pollfd p{ fd, POLLIN, 0 };
	return ::poll(&p, 1, 0) == 1;
}

TEST(IotlbMisses, AsksOncePerPageUntilTheIotlbChanges)
{
	auto misses = IotlbMisses::create();
	ASSERT_TRUE(misses.has_value());
	IotlbMisses &m = **misses;
	EXPECT_FALSE(readable(m.fd()));
	m.post(0x1234, kAccessRead);
	EXPECT_TRUE(readable(m.fd()));
	m.post(0x1ff0, kAccessRead);  /* the same page */
	m.post(0x1234, kAccessWrite); /* another access */
	auto taken = m.take();
	ASSERT_EQ(taken.size(), 2u);
	EXPECT_EQ(taken[0].iova, 0x1234u);
	EXPECT_EQ(taken[1].perm, kAccessWrite);
	EXPECT_FALSE(readable(m.fd()));
	/* Asked already: a worker that keeps missing costs nothing more. */
	m.post(0x1234, kAccessRead);
	EXPECT_TRUE(m.take().empty());
	m.forget();
	m.post(0x1234, kAccessRead);
	EXPECT_EQ(m.take().size(), 1u);
}

TEST(IotlbMisses, DropsWhatDoesNotFit)
{
	auto misses = IotlbMisses::create();
	ASSERT_TRUE(misses.has_value());
	for (uint64_t i = 0; i < IotlbMisses::kMaxPending + 10; i++)
		(*misses)->post(i * 0x1000, kAccessRead);
	EXPECT_EQ((*misses)->take().size(), IotlbMisses::kMaxPending);
}

/* Two regions of guest memory, at a GPA and a front-end address (QVA) that differ. */
class IovaMemory : public ::testing::Test
{
protected:
	static constexpr uint64_t kRegionSize = 0x10000;
	static constexpr uint64_t kGpa[2] = { 0x100000, 0x200000 };
	static constexpr uint64_t kQva[2] = { 0x7f0000000000, 0x7f0000010000 }; /* adjacent */

	void SetUp() override
	{
		auto misses = IotlbMisses::create();
		ASSERT_TRUE(misses.has_value());
		misses_ = std::move(*misses);
		for (int i = 0; i < 2; i++) {
			UniqueFd fd(::memfd_create("vub-iotlb-test", MFD_CLOEXEC));
			ASSERT_TRUE(fd.isValid());
			ASSERT_EQ(::ftruncate(fd.get(), kRegionSize), 0);
			auto local = MemoryMapping::mapShared(fd.get(), kRegionSize, 0);
			ASSERT_TRUE(local.has_value());
			local_[i] = std::move(*local);
			auto region = MemoryRegion::create(
				MemoryRegionMsg{ kGpa[i], kRegionSize, kQva[i], 0 }, std::move(fd));
			ASSERT_TRUE(region.has_value());
			regions_.push_back(std::move(*region));
		}
	}

	std::unique_ptr<GuestMemory> build()
	{
		auto memory = GuestMemory::createIova(regions_, tlb_, misses_);
		EXPECT_TRUE(memory.has_value());
		return memory ? std::move(*memory) : nullptr;
	}
	void map(uint64_t iova, uint64_t size, uint64_t qva, uint8_t perm = kAccessReadWrite)
	{
		ASSERT_TRUE(tlb_.update(update(iova, size, qva, perm)).has_value());
	}
	uint8_t *hva(int region, uint64_t offset) const { return regions_[region]->hva() + offset; }

	Iotlb tlb_;
	std::shared_ptr<IotlbMisses> misses_;
	std::vector<std::shared_ptr<MemoryRegion>> regions_;
	MemoryMapping local_[2];
};

TEST_F(IovaMemory, TranslatesIovasThroughTheIotlbOnly)
{
	map(0x40000000, 0x1000, kQva[0] + 0x3000);
	auto memory = build();
	ASSERT_TRUE(memory);
	EXPECT_TRUE(memory->isIova());
	EXPECT_EQ(memory->translateGpa(0x40000010, 16), hva(0, 0x3010));
	/* Guest-physical addresses mean nothing now. */
	EXPECT_EQ(memory->translateGpa(kGpa[0] + 0x3000, 16), nullptr);
	EXPECT_EQ(memory->translateGpa(0x40001000, 1), nullptr);
	EXPECT_EQ(memory->firstUnmapped(0x40000ff0, 0x20, kAccessRead), 0x40001000u);
	EXPECT_EQ(memory->firstUnmapped(0x40000000, 0x1000, kAccessRead), UINT64_MAX);
	/* The plain snapshot is not an IOVA one. */
	auto plain = GuestMemory::create(regions_);
	ASSERT_TRUE(plain.has_value());
	EXPECT_FALSE((*plain)->isIova());
}

TEST_F(IovaMemory, ChecksTheAccessEachEntryAllows)
{
	map(0x40000000, 0x1000, kQva[0], kAccessRead);
	map(0x40001000, 0x1000, kQva[0] + 0x1000, kAccessWrite);
	auto memory = build();
	ASSERT_TRUE(memory);
	EXPECT_NE(memory->translateGpa(0x40000000, 8, nullptr, kAccessRead), nullptr);
	EXPECT_EQ(memory->translateGpa(0x40000000, 8, nullptr, kAccessWrite), nullptr);
	EXPECT_EQ(memory->translateGpa(0x40001000, 8, nullptr, kAccessRead), nullptr);
	EXPECT_NE(memory->translateGpa(0x40001000, 8, nullptr, kAccessWrite), nullptr);
	uint64_t piece = 0;
	EXPECT_EQ(memory->translateGpaPrefix(0x40001000, 8, &piece, nullptr, kAccessRead), nullptr);
}

TEST_F(IovaMemory, JoinsPagesContiguousOnBothSidesAndCutsAtRegionEdges)
{
	/* Four pages in a row in region 0: one window, so a ring over them translates whole. */
	for (uint64_t p = 0; p < 4; p++)
		map(0x50000000 + p * 0x1000, 0x1000, kQva[0] + 0x8000 + p * 0x1000);
	/* An entry across the two regions (adjacent in QVA, not in the back-end's mapping). */
	map(0x60000000, 0x2000, kQva[0] + kRegionSize - 0x1000);
	/* An entry partly outside guest memory: the rest is left out. */
	map(0x70000000, 0x2000, kQva[1] + kRegionSize - 0x1000);
	auto memory = build();
	ASSERT_TRUE(memory);
	EXPECT_EQ(memory->translateGpa(0x50000000, 0x4000), hva(0, 0x8000));
	uint64_t piece = 0;
	EXPECT_EQ(memory->translateGpaPrefix(0x60000800, 0x1000, &piece), hva(0, 0xf800));
	EXPECT_EQ(piece, 0x800u);
	EXPECT_EQ(memory->translateGpaPrefix(0x60001000, 0x1000, &piece), hva(1, 0));
	EXPECT_EQ(piece, 0x1000u);
	if (hva(0, kRegionSize) != hva(1, 0)) {
		/* Not contiguous in the back-end's mappings: no window holds it whole. */
		EXPECT_EQ(memory->translateGpa(0x60000800, 0x1000), nullptr);
		EXPECT_EQ(memory->firstUnmapped(0x60000800, 0x1000, kAccessRead), UINT64_MAX);
	}
	EXPECT_NE(memory->translateGpa(0x70000000, 0x1000), nullptr);
	EXPECT_EQ(memory->translateGpa(0x70001000, 1), nullptr);
}

TEST_F(IovaMemory, RequestTranslationPostsAMiss)
{
	auto memory = build();
	ASSERT_TRUE(memory);
	memory->requestTranslation(0x40000123, kAccessWrite);
	auto taken = misses_->take();
	ASSERT_EQ(taken.size(), 1u);
	EXPECT_EQ(taken[0].iova, 0x40000123u);
	EXPECT_EQ(taken[0].perm, kAccessWrite);
}

/*
 * A split ring of 8 entries whose rings and buffers are IOVAs: ring pages at 0x40000000,
 * buffers at 0x48000000, mapped page by page as a test needs them.
 */
class IovaSplitQueue : public IovaMemory
{
protected:
	static constexpr uint16_t kN = 8;
	static constexpr uint64_t kRingIova = 0x40000000;
	static constexpr uint64_t kBufIova = 0x48000000;
	/* Region 0 holds the rings (offsets 0, 0x1000, 0x2000) and the buffers (0x8000 on). */
	static constexpr uint64_t kBufOffset = 0x8000;

	void mapRings()
	{
		map(kRingIova, 0x3000, kQva[0]);
	}
	void mapBuffer(uint64_t page, uint8_t perm = kAccessReadWrite)
	{
		map(kBufIova + page * 0x1000, 0x1000, kQva[0] + kBufOffset + page * 0x1000, perm);
	}
	virtio::SplitDesc *desc() { return reinterpret_cast<virtio::SplitDesc *>(local_[0].data()); }
	uint16_t *avail() { return reinterpret_cast<uint16_t *>(local_[0].data() + 0x1000); }
	void makeAvailable(uint16_t head, uint64_t addr, uint32_t len, uint16_t flags)
	{
		desc()[head] = virtio::SplitDesc{ addr, len, flags, 0 };
		avail()[2 + (availIdx_ % kN)] = head;
		availIdx_++;
		std::atomic_ref<uint16_t>(avail()[1]).store(availIdx_, std::memory_order_release);
	}
	::testing::AssertionResult start(SplitQueue &queue)
	{
		if (!queue.setSize(kN) ||
		    !queue.setAddresses(kRingIova, kRingIova + 0x1000, kRingIova + 0x2000))
			return ::testing::AssertionFailure() << "set up";
		memory_ = build();
		auto translated = queue.translate(*memory_);
		if (!translated)
			return ::testing::AssertionFailure() << translated.error().what;
		queue.setReady(true);
		return ::testing::AssertionSuccess();
	}

	std::unique_ptr<GuestMemory> memory_;
	uint16_t availIdx_ = 0;
	DescBuffer storage_[8];
	DescriptorChain chain_;
};

TEST_F(IovaSplitQueue, RingsNotInTheIotlbAreAskedForAndComeUpOnceTheyAre)
{
	SplitQueue queue(256);
	ASSERT_TRUE(queue.setSize(kN).has_value());
	ASSERT_TRUE(queue.setAddresses(kRingIova, kRingIova + 0x1000, kRingIova + 0x2000).has_value());
	memory_ = build();
	auto translated = queue.translate(*memory_);
	ASSERT_FALSE(translated.has_value());
	EXPECT_EQ(translated.error().code, EAGAIN);
	auto taken = misses_->take();
	ASSERT_EQ(taken.size(), 3u);
	EXPECT_EQ(taken[0].iova, kRingIova);
	EXPECT_EQ(taken[0].perm, kAccessRead);
	EXPECT_EQ(taken[2].iova, kRingIova + 0x2000);
	EXPECT_EQ(taken[2].perm, kAccessWrite);
	mapRings();
	misses_->forget();
	ASSERT_TRUE(start(queue));
	EXPECT_TRUE(queue.isTranslated());
	EXPECT_TRUE(misses_->take().empty());
}

TEST_F(IovaSplitQueue, AChainWithAMissingBufferWaitsUntouchedAndComesWithItsTranslation)
{
	mapRings();
	SplitQueue queue(256);
	ASSERT_TRUE(start(queue));
	makeAvailable(3, kBufIova + 0x10, 64, virtio::kDescFWrite);
	for (int round = 0; round < 3; round++) {
		EXPECT_EQ(queue.pop(*memory_, storage_, chain_), SplitQueue::PopStatus::Deferred);
		EXPECT_EQ(queue.nextAvail(), 0u) << "a deferred chain is not taken";
	}
	auto taken = misses_->take();
	ASSERT_EQ(taken.size(), 1u) << "asked once, however often it is polled";
	EXPECT_EQ(taken[0].iova, kBufIova + 0x10);
	EXPECT_EQ(taken[0].perm, kAccessWrite);
	EXPECT_EQ(queue.stats().badChains[static_cast<int>(ChainError::IotlbMiss)].get(), 3u);

	mapBuffer(0);
	memory_ = build();
	ASSERT_EQ(queue.pop(*memory_, storage_, chain_), SplitQueue::PopStatus::Ok);
	EXPECT_EQ(chain_.head, 3u);
	ASSERT_EQ(chain_.bufferCount, 1u);
	EXPECT_EQ(chain_.buffers[0].hva, hva(0, kBufOffset + 0x10));
	EXPECT_EQ(queue.nextAvail(), 1u);
}

TEST_F(IovaSplitQueue, ABufferOverTwoPagesAsksForTheSecondOnceTheFirstIsThere)
{
	mapRings();
	mapBuffer(0);
	SplitQueue queue(256);
	ASSERT_TRUE(start(queue));
	makeAvailable(0, kBufIova + 0xf00, 0x200, 0);
	EXPECT_EQ(queue.pop(*memory_, storage_, chain_), SplitQueue::PopStatus::Deferred);
	auto taken = misses_->take();
	ASSERT_EQ(taken.size(), 1u);
	EXPECT_EQ(taken[0].iova, kBufIova + 0x1000);
	EXPECT_EQ(taken[0].perm, kAccessRead);
	mapBuffer(1);
	memory_ = build();
	ASSERT_EQ(queue.pop(*memory_, storage_, chain_), SplitQueue::PopStatus::Ok);
	EXPECT_EQ(chain_.readableBytes, 0x200u);
	/* Two pages contiguous on both sides: one window, one piece. */
	EXPECT_EQ(chain_.bufferCount, 1u);
}

TEST_F(IovaSplitQueue, ABufferTheIommuForbidsIsRefusedNotAskedFor)
{
	mapRings();
	mapBuffer(0, kAccessRead); /* DMA_TO_DEVICE: the device may not write it */
	SplitQueue queue(256);
	ASSERT_TRUE(start(queue));
	makeAvailable(5, kBufIova, 64, virtio::kDescFWrite);
	ASSERT_EQ(queue.pop(*memory_, storage_, chain_), SplitQueue::PopStatus::BadChain);
	EXPECT_EQ(queue.lastError(), ChainError::BadAddress);
	EXPECT_EQ(chain_.head, 5u);
	EXPECT_TRUE(misses_->take().empty());
}

} /* namespace */
} /* namespace vub::vhost */
