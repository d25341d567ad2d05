/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SplitQueue against a guest driver played by hand: the test lays out the descriptor table, the
 * avail ring and the used ring in memfd guest memory (VIRTIO 1.x "Split Virtqueues"), writes
 * descriptors and indices through its own mapping, and checks what the device side makes of
 * them through the back-end's mapping, hostile chains included (vhost-user-and-virtio.md 4.5).
 */
#include "vub/vhost/split_queue.h"

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/message.h"
#include "vub/virtio/split_ring.h"

namespace vub::vhost {
namespace {

using virtio::kDescFIndirect;
using virtio::kDescFNext;
using virtio::kDescFWrite;
using virtio::SplitDesc;
using virtio::SplitUsedElem;
using PopStatus = SplitQueue::PopStatus;

/*
 * Guest RAM made of memfds. Each part is mapped once for the guest (the test writes rings and
 * buffers there) and once by MemoryRegion::create, as the back-end maps it after SET_MEM_TABLE.
 */
class GuestRam
{
public:
	/* \a mapLocally false leaves a (large, sparse) part untouched by the guest. */
	::testing::AssertionResult add(uint64_t gpa, uint64_t sizeBytes, uint64_t qva,
				       bool mapLocally = true)
	{
		UniqueFd fd(::memfd_create("vub-split-queue-test", MFD_CLOEXEC));
		if (!fd.isValid())
			return ::testing::AssertionFailure()
			       << "memfd_create: " << std::strerror(errno);
		if (::ftruncate(fd.get(), static_cast<off_t>(sizeBytes)) < 0)
			return ::testing::AssertionFailure()
			       << "ftruncate: " << std::strerror(errno);
		Part part;
		part.gpa = gpa;
		part.qva = qva;
		part.size = sizeBytes;
		if (mapLocally) {
			auto local = MemoryMapping::mapShared(fd.get(), sizeBytes, 0);
			if (!local)
				return ::testing::AssertionFailure() << local.error().what;
			part.local = std::move(*local);
		}
		auto region = MemoryRegion::create(MemoryRegionMsg{ gpa, sizeBytes, qva, 0 },
						   std::move(fd));
		if (!region)
			return ::testing::AssertionFailure() << region.error().what;
		part.region = std::move(*region);
		parts_.push_back(std::move(part));
		return ::testing::AssertionSuccess();
	}

	std::unique_ptr<GuestMemory> build() const
	{
		std::vector<std::shared_ptr<MemoryRegion>> regions;
		for (const Part &p : parts_)
			regions.push_back(p.region);
		auto memory = GuestMemory::create(std::move(regions));
		EXPECT_TRUE(memory.has_value());
		return memory ? std::move(*memory) : nullptr;
	}

	/* The guest's pointer to \a gpa. */
	uint8_t *ptr(uint64_t gpa) const
	{
		const Part &p = find(gpa);
		EXPECT_TRUE(p.local.isValid()) << "part not mapped for the guest";
		return p.local.data() + (gpa - p.gpa);
	}
	/* The back-end's pointer to \a gpa: what a translated buffer must point at. */
	uint8_t *hva(uint64_t gpa) const
	{
		const Part &p = find(gpa);
		return p.region->hva() + (gpa - p.gpa);
	}
	uint64_t qva(uint64_t gpa) const
	{
		const Part &p = find(gpa);
		return p.qva + (gpa - p.gpa);
	}

private:
	struct Part {
		uint64_t gpa = 0;
		uint64_t qva = 0;
		uint64_t size = 0;
		MemoryMapping local;
		std::shared_ptr<MemoryRegion> region;
	};

	const Part &find(uint64_t gpa) const
	{
		for (const Part &p : parts_) {
			if (gpa - p.gpa < p.size)
				return p;
		}
		ADD_FAILURE() << "gpa 0x" << std::hex << gpa << " is in no part";
		return parts_.front();
	}

	std::vector<Part> parts_;
};

TEST(SplitQueue, RejectsZeroSize)
{
	SplitQueue queue(256);
	auto result = queue.setSize(0);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EINVAL);
	EXPECT_EQ(queue.size(), 0u);
}

TEST(SplitQueue, RejectsSizeThatIsNotAPowerOfTwo)
{
	SplitQueue queue(256);
	for (uint32_t size : { 3u, 6u, 100u, 255u }) {
		auto result = queue.setSize(size);
		ASSERT_FALSE(result.has_value()) << size;
		EXPECT_EQ(result.error().code, EINVAL) << size;
	}
	EXPECT_EQ(queue.size(), 0u);
}

TEST(SplitQueue, RejectsSizeAboveMaxSize)
{
	SplitQueue queue(256);
	EXPECT_FALSE(queue.setSize(512).has_value());
	SplitQueue large(32768);
	/* 65536 truncates to 0 in 16 bits. */
	EXPECT_FALSE(large.setSize(65536).has_value());
	EXPECT_FALSE(large.setSize(0x10000 + 256).has_value());
	EXPECT_EQ(large.size(), 0u);
}

TEST(SplitQueue, AcceptsPowersOfTwoUpToMaxSize)
{
	SplitQueue queue(256);
	for (uint32_t size : { 1u, 2u, 64u, 256u }) {
		ASSERT_TRUE(queue.setSize(size).has_value()) << size;
		EXPECT_EQ(queue.size(), size);
	}
	SplitQueue largest(32768);
	EXPECT_TRUE(largest.setSize(32768).has_value());
}

TEST(SplitQueue, RejectsMisalignedRingAddresses)
{
	SplitQueue queue(256);
	auto desc = queue.setAddresses(0x1008, 0x2000, 0x3000);
	ASSERT_FALSE(desc.has_value());
	EXPECT_EQ(desc.error().code, EINVAL);
	EXPECT_FALSE(queue.setAddresses(0x1000, 0x2001, 0x3000).has_value());
	EXPECT_FALSE(queue.setAddresses(0x1000, 0x2000, 0x3002).has_value());
	EXPECT_FALSE(queue.hasAddresses());
	EXPECT_TRUE(queue.setAddresses(0x1010, 0x2002, 0x3004).has_value());
	EXPECT_TRUE(queue.hasAddresses());
}

TEST(SplitQueue, TranslateFailsBeforeTheSizeIsSet)
{
	GuestRam ram;
	ASSERT_TRUE(ram.add(0x100000, 0x10000, 0x7f0000000000));
	auto memory = ram.build();
	ASSERT_TRUE(memory);
	SplitQueue queue(256);
	ASSERT_TRUE(queue.setAddresses(0x7f0000000000, 0x7f0000001000, 0x7f0000002000).has_value());
	EXPECT_FALSE(queue.translate(*memory).has_value());
	EXPECT_FALSE(queue.isTranslated());
}

/*
 * One queue of 8 entries in 1 MiB of guest memory at a GPA and a front-end address (QVA) that
 * differ, as with QEMU: desc table, avail ring and used ring on their own pages, buffers above.
 */
class SplitQueueRing : public ::testing::Test
{
protected:
	static constexpr uint16_t kN = 8;
	static constexpr uint64_t kGpa = 0x100000;
	static constexpr uint64_t kSize = 0x100000;
	static constexpr uint64_t kQva = 0x7f0000000000;
	static constexpr uint64_t kDescGpa = kGpa;
	static constexpr uint64_t kAvailGpa = kGpa + 0x1000;
	static constexpr uint64_t kUsedGpa = kGpa + 0x2000;
	static constexpr uint64_t kBufGpa = kGpa + 0x10000;
	static constexpr uint64_t kTableGpa = kGpa + 0x8000; /* indirect tables */

	void SetUp() override
	{
		ASSERT_TRUE(ram_.add(kGpa, kSize, kQva));
		rebuildMemory();
		ASSERT_TRUE(queue_.setSize(kN).has_value());
		ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kAvailGpa),
						ram_.qva(kUsedGpa))
				    .has_value());
		auto translated = queue_.translate(*memory_);
		ASSERT_TRUE(translated.has_value()) << translated.error().what;
		queue_.setReady(true);
	}

	void rebuildMemory()
	{
		memory_ = ram_.build();
		ASSERT_TRUE(memory_);
	}

	SplitDesc *table(uint64_t gpa) const
	{
		return reinterpret_cast<SplitDesc *>(ram_.ptr(gpa));
	}
	void setDesc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0)
	{
		table(kDescGpa)[i] = SplitDesc{ addr, len, flags, next };
	}
	static void setEntry(SplitDesc *t, uint16_t i, uint64_t addr, uint32_t len,
			     uint16_t flags = 0, uint16_t next = 0)
	{
		t[i] = SplitDesc{ addr, len, flags, next };
	}

	uint16_t *availField(size_t offset) const
	{
		return reinterpret_cast<uint16_t *>(ram_.ptr(kAvailGpa + offset));
	}
	uint16_t *usedField(size_t offset) const
	{
		return reinterpret_cast<uint16_t *>(ram_.ptr(kUsedGpa + offset));
	}
	/* Put \a head in the next avail slot and publish it, as a driver does. */
	void makeAvailable(uint16_t head)
	{
		*availField(virtio::kSplitAvailRingOffset + 2 * (availIdx_ % kN)) = head;
		availIdx_++;
		setAvailIdx(availIdx_);
	}
	void setAvailIdx(uint16_t idx)
	{
		std::atomic_ref<uint16_t>(*availField(2)).store(idx, std::memory_order_release);
	}
	void setAvailFlags(uint16_t flags) { *availField(0) = flags; }
	void setUsedEvent(uint16_t idx) { *availField(virtio::splitUsedEventOffset(kN)) = idx; }
	uint16_t usedFlags() const { return *usedField(0); }
	uint16_t usedIdx() const
	{
		return std::atomic_ref<uint16_t>(*usedField(2)).load(std::memory_order_acquire);
	}
	uint16_t availEvent() const { return *usedField(virtio::splitAvailEventOffset(kN)); }
	SplitUsedElem usedElem(uint16_t slot) const
	{
		SplitUsedElem elem;
		std::memcpy(&elem,
			    ram_.ptr(kUsedGpa + virtio::kSplitUsedRingOffset + 8 * (slot % kN)),
			    sizeof(elem));
		return elem;
	}

	PopStatus pop() { return queue_.pop(*memory_, storage_, chain_); }
	PopStatus pop(std::span<DescBuffer> storage)
	{
		return queue_.pop(*memory_, storage, chain_);
	}

	uint64_t badChains() const
	{
		const auto &counts = queue_.stats().badChains;
		uint64_t total = 0;
		for (const Counter &c : counts)
			total += c.get();
		return total;
	}
	/* Pop a chain that must be refused for \a error, counted once, with its head returned. */
	void expectRefused(ChainError error, uint16_t head)
	{
		uint64_t before = queue_.stats().badChains[static_cast<int>(error)].get();
		uint64_t total = badChains();
		uint16_t nextAvail = queue_.nextAvail();
		ASSERT_EQ(pop(), PopStatus::BadChain);
		EXPECT_EQ(queue_.lastError(), error) << "got " << chainErrorName(queue_.lastError())
						     << ", expected " << chainErrorName(error);
		EXPECT_EQ(queue_.stats().badChains[static_cast<int>(error)].get(), before + 1);
		EXPECT_EQ(badChains(), total + 1) << "one counter per refusal";
		EXPECT_EQ(chain_.head, head) << "the caller returns this head with length 0";
		EXPECT_EQ(queue_.nextAvail(), static_cast<uint16_t>(nextAvail + 1))
			<< "a refused chain is consumed";
		EXPECT_FALSE(queue_.isBroken()) << "a bad chain does not break the queue";
	}
	static void expectPiece(const DescBuffer &piece, const uint8_t *hva, uint32_t len,
				bool writable)
	{
		EXPECT_EQ(piece.hva, hva);
		EXPECT_EQ(piece.len, len);
		EXPECT_EQ(piece.writable, writable);
	}

	GuestRam ram_;
	std::unique_ptr<GuestMemory> memory_;
	SplitQueue queue_{ 256 };
	std::array<DescBuffer, 16> storage_{};
	DescriptorChain chain_;
	uint16_t availIdx_ = 0;
};

/* ---- Ring translation ---- */

TEST_F(SplitQueueRing, TranslatesRingsThatEndAtTheRegionEnd)
{
	uint64_t end = kGpa + kSize;
	uint64_t desc = end - virtio::splitDescTableSize(kN);
	uint64_t avail = end - virtio::splitAvailSize(kN);
	uint64_t used = (end - virtio::splitUsedSize(kN)) & ~uint64_t{ 3 };
	ASSERT_TRUE(
		queue_.setAddresses(ram_.qva(desc), ram_.qva(avail), ram_.qva(used)).has_value());
	auto result = queue_.translate(*memory_);
	EXPECT_TRUE(result.has_value()) << result.error().what;
	EXPECT_TRUE(queue_.isTranslated());
}

TEST_F(SplitQueueRing, TranslateRefusesDescTableCrossingTheRegionEnd)
{
	uint64_t end = kGpa + kSize;
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(end - 16 * (kN - 1)), ram_.qva(kAvailGpa),
					ram_.qva(kUsedGpa))
			    .has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
	EXPECT_FALSE(queue_.isTranslated());
	EXPECT_EQ(pop(), PopStatus::Empty) << "an untranslated queue has nothing to pop";
}

TEST_F(SplitQueueRing, TranslateRefusesAvailRingWhoseUsedEventCrossesTheRegionEnd)
{
	/* flags, idx and ring[N] fit; the trailing used_event does not. */
	uint64_t avail = kGpa + kSize - (4 + 2 * kN);
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(avail), ram_.qva(kUsedGpa))
			    .has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
	EXPECT_FALSE(queue_.isTranslated());
}

TEST_F(SplitQueueRing, TranslateRefusesUsedRingWhoseAvailEventCrossesTheRegionEnd)
{
	uint64_t used = kGpa + kSize - (4 + 8 * kN);
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kAvailGpa), ram_.qva(used))
			    .has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
}

TEST_F(SplitQueueRing, TranslateRefusesRingOutsideMemory)
{
	ASSERT_TRUE(
		queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kAvailGpa), kQva + kSize + 0x1000)
			.has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
	/* A GPA given where a front-end address belongs is in no region either. */
	ASSERT_TRUE(queue_.setAddresses(kDescGpa, kAvailGpa, kUsedGpa).has_value());
	EXPECT_FALSE(queue_.translate(*memory_).has_value());
}

TEST_F(SplitQueueRing, TranslateRefusesRingStraddlingTwoRegions)
{
	/* A second region contiguous with the first in both GPA and QVA: still two mappings. */
	ASSERT_TRUE(ram_.add(kGpa + kSize, 0x10000, kQva + kSize));
	rebuildMemory();
	uint64_t desc = kGpa + kSize - 64;
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(desc), ram_.qva(kAvailGpa), ram_.qva(kUsedGpa))
			    .has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
	EXPECT_FALSE(queue_.isTranslated());
}

TEST_F(SplitQueueRing, TranslateRefusesRingsUnalignedInTheMapping)
{
	/* A region whose front-end address is odd: aligned ring addresses land on odd bytes. */
	uint64_t gpa = kGpa + kSize, qva = kQva + kSize + 0x100001;
	ASSERT_TRUE(ram_.add(gpa, 0x10000, qva));
	rebuildMemory();
	ASSERT_TRUE(queue_.setAddresses(qva + 0x1fff, qva + 0x2fff, qva + 0x3fff).has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EINVAL);
	EXPECT_FALSE(queue_.isTranslated());
}

/* ---- pop(): good chains ---- */

TEST_F(SplitQueueRing, PopReturnsEmptyWhenNotReady)
{
	setDesc(0, kBufGpa, 64);
	makeAvailable(0);
	queue_.setReady(false);
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.nextAvail(), 0u);
	queue_.setReady(true);
	EXPECT_EQ(pop(), PopStatus::Ok);
}

TEST_F(SplitQueueRing, PopReturnsEmptyWhenNothingIsAvailable)
{
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.stats().emptyPolls.get(), 1u);
	setDesc(0, kBufGpa, 64);
	makeAvailable(0);
	EXPECT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.stats().emptyPolls.get(), 2u);
	EXPECT_EQ(queue_.stats().chains.get(), 1u);
}

TEST_F(SplitQueueRing, PopsAReadableChainOfThreeDescriptors)
{
	/* Head 5 -> 2 -> 7: the links, not the table order, make the chain. */
	setDesc(5, kBufGpa, 100, kDescFNext, 2);
	setDesc(2, kBufGpa + 0x1000, 200, kDescFNext, 7);
	setDesc(7, kBufGpa + 0x3000, 300);
	std::memcpy(ram_.ptr(kBufGpa + 0x1000), "second", 6);
	makeAvailable(5);

	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 5u);
	ASSERT_EQ(chain_.bufferCount, 3u);
	EXPECT_EQ(chain_.buffers, storage_.data());
	EXPECT_EQ(chain_.pieces().size(), 3u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 100, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x1000), 200, false);
	expectPiece(chain_.buffers[2], ram_.hva(kBufGpa + 0x3000), 300, false);
	EXPECT_EQ(std::memcmp(chain_.buffers[1].hva, "second", 6), 0)
		<< "hva reaches the guest's bytes";
	EXPECT_EQ(chain_.readableBytes, 600u);
	EXPECT_EQ(chain_.writableBytes, 0u);
	EXPECT_EQ(queue_.nextAvail(), 1u);
	EXPECT_EQ(queue_.stats().chains.get(), 1u);
	EXPECT_EQ(badChains(), 0u);
}

TEST_F(SplitQueueRing, PopsAReadableThenWritableChain)
{
	setDesc(0, kBufGpa, 12, kDescFNext, 1);
	setDesc(1, kBufGpa + 0x100, 1500, kDescFNext, 3);
	setDesc(3, kBufGpa + 0x1000, 4096, kDescFWrite | kDescFNext, 4);
	setDesc(4, kBufGpa + 0x2000, 10, kDescFWrite);
	makeAvailable(0);

	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 4u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 12, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 1500, false);
	expectPiece(chain_.buffers[2], ram_.hva(kBufGpa + 0x1000), 4096, true);
	expectPiece(chain_.buffers[3], ram_.hva(kBufGpa + 0x2000), 10, true);
	EXPECT_EQ(chain_.readableBytes, 1512u);
	EXPECT_EQ(chain_.writableBytes, 4106u);

	/* A device write through the chain lands in the guest's buffer. */
	std::memcpy(chain_.buffers[2].hva, "rx", 2);
	EXPECT_EQ(std::memcmp(ram_.ptr(kBufGpa + 0x1000), "rx", 2), 0);
}

TEST_F(SplitQueueRing, PopsChainsInAvailRingOrder)
{
	setDesc(3, kBufGpa, 10);
	setDesc(1, kBufGpa + 0x100, 20, kDescFWrite);
	makeAvailable(3);
	makeAvailable(1);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 3u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 1u);
	EXPECT_EQ(chain_.writableBytes, 20u);
	EXPECT_EQ(pop(), PopStatus::Empty);
}

TEST_F(SplitQueueRing, RewindAvailGivesBackChainsForTheNextPop)
{
	setDesc(0, kBufGpa, 10);
	setDesc(1, kBufGpa + 0x100, 20);
	makeAvailable(0);
	makeAvailable(1);
	uint32_t start = queue_.availPosition();
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(queue_.available(), 0u);
	queue_.rewindAvail(start);
	EXPECT_EQ(queue_.available(), 2u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 0u);
	EXPECT_EQ(chain_.descCount, 1u);
}

TEST_F(SplitQueueRing, QueueTheDeviceOnlyReadsTakesWritableBuffersAsReadable)
{
	queue_.setDeviceReadsOnly(true);
	setDesc(0, kBufGpa, 16, kDescFWrite | kDescFNext, 1);
	setDesc(1, kBufGpa + 0x100, 16);
	makeAvailable(0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.readableBytes, 32u);
	EXPECT_EQ(chain_.writableBytes, 0u);
}

TEST_F(SplitQueueRing, PopsAChainOfQueueSizeDescriptors)
{
	for (uint16_t i = 0; i < kN; i++)
		setDesc(i, kBufGpa + 0x100 * i, 16, i + 1 < kN ? kDescFNext : 0, i + 1);
	makeAvailable(0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.bufferCount, kN);
	EXPECT_EQ(chain_.readableBytes, 16u * kN);
}

TEST_F(SplitQueueRing, SplitsBufferSpanningTwoGpaContiguousRegions)
{
	/* B follows A in guest-physical space, but is mapped elsewhere in the back-end. */
	constexpr uint64_t kGpaB = kGpa + kSize;
	ASSERT_TRUE(ram_.add(kGpaB, 0x10000, 0x7f0010000000));
	rebuildMemory();
	ASSERT_NE(ram_.hva(kGpaB), ram_.hva(kGpaB - 1) + 1)
		<< "the regions must not be host-contiguous";
	std::memcpy(ram_.ptr(kGpaB - 3), "abc", 3);
	std::memcpy(ram_.ptr(kGpaB), "defg", 4);
	setDesc(0, kGpaB - 100, 300);
	makeAvailable(0);

	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 2u);
	expectPiece(chain_.buffers[0], ram_.hva(kGpaB - 100), 100, false);
	expectPiece(chain_.buffers[1], ram_.hva(kGpaB), 200, false);
	EXPECT_EQ(chain_.readableBytes, 300u);
	EXPECT_EQ(std::memcmp(chain_.buffers[0].hva + 97, "abc", 3), 0);
	EXPECT_EQ(std::memcmp(chain_.buffers[1].hva, "defg", 4), 0);
}

/* ---- pop(): refused chains ---- */

TEST_F(SplitQueueRing, RefusesALoopingChain)
{
	setDesc(0, kBufGpa, 16, kDescFNext, 1);
	setDesc(1, kBufGpa + 0x100, 16, kDescFNext, 0);
	makeAvailable(0);
	expectRefused(ChainError::TooLong, 0);

	setDesc(4, kBufGpa, 16, kDescFNext, 4); /* a descriptor pointing at itself */
	makeAvailable(4);
	expectRefused(ChainError::TooLong, 4);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::TooLong)].get(), 2u);
}

TEST_F(SplitQueueRing, RefusesNextOutOfRange)
{
	setDesc(0, kBufGpa, 16, kDescFNext, kN);
	makeAvailable(0);
	expectRefused(ChainError::NextOutOfRange, 0);
	setDesc(1, kBufGpa, 16, kDescFNext, 0xffff);
	makeAvailable(1);
	expectRefused(ChainError::NextOutOfRange, 1);
}

TEST_F(SplitQueueRing, RefusesBufferOutsideGuestMemory)
{
	setDesc(0, 0x1000, 16);
	makeAvailable(0);
	expectRefused(ChainError::BadAddress, 0);
	/* addr + len wraps past the top of the address space. */
	setDesc(1, UINT64_MAX - 7, 64);
	makeAvailable(1);
	expectRefused(ChainError::BadAddress, 1);
	/* A bad buffer after a good one. */
	setDesc(2, kBufGpa, 16, kDescFNext, 3);
	setDesc(3, kGpa + kSize + 0x100000, 16);
	makeAvailable(2);
	expectRefused(ChainError::BadAddress, 2);
}

TEST_F(SplitQueueRing, RefusesBufferCrossingTheRegionEndIntoUnmappedSpace)
{
	/* CVE-2018-1059 class: the start is mapped, the rest is not. */
	setDesc(0, kGpa + kSize - 100, 200, kDescFWrite);
	makeAvailable(0);
	expectRefused(ChainError::BadAddress, 0);
}

TEST_F(SplitQueueRing, RefusesZeroLengthBuffer)
{
	setDesc(0, kBufGpa, 16, kDescFNext, 1);
	setDesc(1, kBufGpa + 0x100, 0);
	makeAvailable(0);
	expectRefused(ChainError::ZeroLength, 0);
}

TEST_F(SplitQueueRing, RefusesReadableAfterWritable)
{
	setDesc(0, kBufGpa, 16, kDescFWrite | kDescFNext, 1);
	setDesc(1, kBufGpa + 0x100, 16);
	makeAvailable(0);
	expectRefused(ChainError::ReadAfterWrite, 0);
}

TEST_F(SplitQueueRing, RefusesIndirectWhenNotNegotiated)
{
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16);
	setDesc(0, kTableGpa, 16, kDescFIndirect);
	makeAvailable(0);
	expectRefused(ChainError::IndirectNotNegotiated, 0);
}

TEST_F(SplitQueueRing, PopsAnIndirectChain)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 12, kDescFNext, 2);
	setEntry(t, 2, kBufGpa + 0x100, 100, kDescFNext, 1);
	setEntry(t, 1, kBufGpa + 0x1000, 2048, kDescFWrite);
	setDesc(6, kTableGpa, 3 * 16, kDescFIndirect);
	makeAvailable(6);

	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 6u);
	ASSERT_EQ(chain_.bufferCount, 3u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 12, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 100, false);
	expectPiece(chain_.buffers[2], ram_.hva(kBufGpa + 0x1000), 2048, true);
	EXPECT_EQ(chain_.readableBytes, 112u);
	EXPECT_EQ(chain_.writableBytes, 2048u);
}

TEST_F(SplitQueueRing, PopsDirectDescriptorsFollowedByAnIndirectOne)
{
	/* "zero or more normal chained descriptors followed by a single INDIRECT descriptor" */
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa + 0x100, 20, kDescFNext, 1);
	setEntry(t, 1, kBufGpa + 0x200, 30, kDescFWrite);
	setDesc(0, kBufGpa, 10, kDescFNext, 1);
	setDesc(1, kTableGpa, 2 * 16, kDescFIndirect);
	makeAvailable(0);

	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 3u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 10, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 20, false);
	expectPiece(chain_.buffers[2], ram_.hva(kBufGpa + 0x200), 30, true);
}

TEST_F(SplitQueueRing, IgnoresTheWriteFlagOfTheIndirectDescriptor)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 64);
	setDesc(0, kTableGpa, 16, kDescFIndirect | kDescFWrite);
	makeAvailable(0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 1u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 64, false);
}

TEST_F(SplitQueueRing, RefusesIndirectTableWithBadLength)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16);
	setEntry(t, 1, kBufGpa, 16);
	setDesc(0, kTableGpa, 0, kDescFIndirect);
	makeAvailable(0);
	expectRefused(ChainError::IndirectBadLength, 0);
	setDesc(1, kTableGpa, 24, kDescFIndirect);
	makeAvailable(1);
	expectRefused(ChainError::IndirectBadLength, 1);
	setDesc(2, kTableGpa, 15, kDescFIndirect);
	makeAvailable(2);
	expectRefused(ChainError::IndirectBadLength, 2);
	setDesc(3, kGpa, (virtio::kMaxQueueSize + 1) * 16, kDescFIndirect);
	makeAvailable(3);
	expectRefused(ChainError::IndirectBadLength, 3);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::IndirectBadLength)].get(),
		  4u);
}

TEST_F(SplitQueueRing, RefusesNestedIndirect)
{
	queue_.setIndirect(true);
	SplitDesc *outer = table(kTableGpa);
	SplitDesc *inner = table(kTableGpa + 0x100);
	setEntry(inner, 0, kBufGpa, 16);
	setEntry(outer, 0, kBufGpa, 16, kDescFNext, 1);
	setEntry(outer, 1, kTableGpa + 0x100, 16, kDescFIndirect);
	setDesc(0, kTableGpa, 2 * 16, kDescFIndirect);
	makeAvailable(0);
	expectRefused(ChainError::IndirectNested, 0);
}

TEST_F(SplitQueueRing, RefusesIndirectWithNext)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16);
	setDesc(0, kTableGpa, 16, kDescFIndirect | kDescFNext, 1);
	setDesc(1, kBufGpa, 16);
	makeAvailable(0);
	expectRefused(ChainError::IndirectWithNext, 0);
}

TEST_F(SplitQueueRing, RefusesIndirectTableOutsideGuestMemory)
{
	queue_.setIndirect(true);
	setDesc(0, 0x2000, 32, kDescFIndirect);
	makeAvailable(0);
	expectRefused(ChainError::BadAddress, 0);
	/* The table crosses the region end. */
	setDesc(1, kGpa + kSize - 16, 32, kDescFIndirect);
	makeAvailable(1);
	expectRefused(ChainError::BadAddress, 1);
}

TEST_F(SplitQueueRing, RefusesALoopInsideAnIndirectTable)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16, kDescFNext, 1);
	setEntry(t, 1, kBufGpa, 16, kDescFNext, 2);
	setEntry(t, 2, kBufGpa, 16, kDescFNext, 0);
	setDesc(0, kTableGpa, 3 * 16, kDescFIndirect);
	makeAvailable(0);
	expectRefused(ChainError::TooLong, 0);
}

TEST_F(SplitQueueRing, RefusesNextBeyondTheIndirectTable)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16, kDescFNext, 1);
	setEntry(t, 1, kBufGpa, 16, kDescFNext, 2); /* inside the ring's size, outside the table */
	setEntry(t, 2, kBufGpa, 16);
	setDesc(0, kTableGpa, 2 * 16, kDescFIndirect);
	makeAvailable(0);
	expectRefused(ChainError::NextOutOfRange, 0);
}

TEST_F(SplitQueueRing, RefusesMorePiecesThanTheCallerCanHold)
{
	setDesc(0, kBufGpa, 16, kDescFNext, 1);
	setDesc(1, kBufGpa + 0x100, 16, kDescFNext, 2);
	setDesc(2, kBufGpa + 0x200, 16);
	makeAvailable(0);
	std::array<DescBuffer, 2> small{};
	ASSERT_EQ(pop(small), PopStatus::BadChain);
	EXPECT_EQ(queue_.lastError(), ChainError::TooManyBuffers);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::TooManyBuffers)].get(), 1u);
	EXPECT_EQ(chain_.head, 0u);

	/* One descriptor that becomes two pieces across regions counts as two. */
	constexpr uint64_t kGpaB = kGpa + kSize;
	ASSERT_TRUE(ram_.add(kGpaB, 0x10000, 0x7f0010000000));
	rebuildMemory();
	setDesc(3, kGpaB - 8, 16);
	makeAvailable(3);
	std::array<DescBuffer, 1> one{};
	ASSERT_EQ(pop(one), PopStatus::BadChain);
	EXPECT_EQ(queue_.lastError(), ChainError::TooManyBuffers);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::TooManyBuffers)].get(), 2u);
	EXPECT_EQ(badChains(), 2u);
}

TEST_F(SplitQueueRing, RefusesChainWhoseTotalLengthExceedsFourGiB)
{
	/* 4 GiB of sparse memfd, never touched: room for a 0xffffffff-byte buffer. */
	constexpr uint64_t kBigGpa = 0x100000000;
	constexpr uint64_t kBigSize = 0x100000000;
	ASSERT_TRUE(ram_.add(kBigGpa, kBigSize, 0x7f1000000000, false));
	rebuildMemory();

	/* One descriptor of 2^32 - 1 bytes is the most a chain can carry. */
	setDesc(0, kBigGpa, 0xffffffff);
	makeAvailable(0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 1u);
	EXPECT_EQ(chain_.buffers[0].len, 0xffffffffu);
	EXPECT_EQ(chain_.readableBytes, 0xffffffffu);

	setDesc(1, kBigGpa, 0xffffffff, kDescFNext, 2);
	setDesc(2, kBigGpa, 0xffffffff, kDescFNext, 3);
	setDesc(3, kBigGpa, 0xffffffff);
	makeAvailable(1);
	expectRefused(ChainError::LengthOverflow, 1);

	/* Writable bytes count too. */
	setDesc(4, kBigGpa, 0x80000000, kDescFNext, 5);
	setDesc(5, kBigGpa, 0x80000000, kDescFWrite);
	makeAvailable(4);
	expectRefused(ChainError::LengthOverflow, 4);
}

TEST_F(SplitQueueRing, GoesOnAfterABadChain)
{
	setDesc(0, kBufGpa, 0);
	setDesc(1, kBufGpa + 0x100, 32, kDescFWrite);
	makeAvailable(0);
	makeAvailable(1);
	expectRefused(ChainError::ZeroLength, 0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 1u);
	ASSERT_EQ(chain_.bufferCount, 1u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa + 0x100), 32, true);
	EXPECT_EQ(queue_.stats().chains.get(), 1u);
	EXPECT_EQ(badChains(), 1u);
}

/* ---- pop(): corrupt rings ---- */

TEST_F(SplitQueueRing, BreaksWhenAvailIndexMovesByMoreThanSize)
{
	setDesc(0, kBufGpa, 16);
	setAvailIdx(kN + 1);
	EXPECT_EQ(pop(), PopStatus::Broken);
	EXPECT_TRUE(queue_.isBroken());
	EXPECT_EQ(queue_.nextAvail(), 0u);

	/* The queue stays broken even when the guest puts a sane index back. */
	setAvailIdx(1);
	EXPECT_NE(pop(), PopStatus::Ok);
	EXPECT_TRUE(queue_.isBroken());
	EXPECT_EQ(queue_.stats().chains.get(), 0u);
}

TEST_F(SplitQueueRing, AcceptsAvailIndexMovedByExactlySize)
{
	for (uint16_t i = 0; i < kN; i++) {
		setDesc(i, kBufGpa + 0x100 * i, 16);
		makeAvailable(i);
	}
	for (uint16_t i = 0; i < kN; i++) {
		ASSERT_EQ(pop(), PopStatus::Ok) << i;
		EXPECT_EQ(chain_.head, i);
	}
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_FALSE(queue_.isBroken());
}

TEST_F(SplitQueueRing, FollowsTheAvailIndexAcrossItsWrap)
{
	queue_.setNextAvail(0xfffe);
	availIdx_ = 0xfffe;
	setDesc(2, kBufGpa, 16);
	setDesc(5, kBufGpa, 16);
	setDesc(7, kBufGpa, 16);
	makeAvailable(2);
	makeAvailable(5);
	makeAvailable(7); /* avail idx is now 1 */
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 2u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 5u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 7u);
	EXPECT_EQ(queue_.nextAvail(), 1u);
	EXPECT_EQ(pop(), PopStatus::Empty);
}

TEST_F(SplitQueueRing, BreaksOnHeadBeyondTheTable)
{
	makeAvailable(kN);
	EXPECT_EQ(pop(), PopStatus::Broken);
	EXPECT_TRUE(queue_.isBroken());
	EXPECT_EQ(pop(), PopStatus::Empty) << "a broken queue is not processed";
}

TEST_F(SplitQueueRing, ResetForgetsBrokenStateAndRing)
{
	makeAvailable(0xffff);
	ASSERT_EQ(pop(), PopStatus::Broken);
	queue_.reset();
	EXPECT_FALSE(queue_.isBroken());
	EXPECT_FALSE(queue_.isReady());
	EXPECT_FALSE(queue_.isTranslated());
	EXPECT_FALSE(queue_.hasAddresses());
	EXPECT_EQ(queue_.nextAvail(), 0u);
	EXPECT_EQ(queue_.nextUsed(), 0u);
	EXPECT_EQ(queue_.size(), kN) << "the size is kept";
	EXPECT_EQ(pop(), PopStatus::Empty);
}

/* ---- Used ring ---- */

TEST_F(SplitQueueRing, AddUsedIsInvisibleUntilPublishUsed)
{
	setDesc(3, kBufGpa, 16, kDescFWrite);
	setDesc(6, kBufGpa + 0x100, 16, kDescFWrite);
	makeAvailable(3);
	makeAvailable(6);
	ASSERT_EQ(pop(), PopStatus::Ok);
	queue_.addUsed(chain_.head, 11);
	ASSERT_EQ(pop(), PopStatus::Ok);
	queue_.addUsed(chain_.head, 16);
	EXPECT_EQ(queue_.nextUsed(), 2u);
	EXPECT_EQ(usedIdx(), 0u);
	EXPECT_EQ(queue_.guestUsedIdx(), 0u);

	queue_.publishUsed();
	EXPECT_EQ(usedIdx(), 2u);
	EXPECT_EQ(queue_.guestUsedIdx(), 2u);
	EXPECT_EQ(usedElem(0).id, 3u);
	EXPECT_EQ(usedElem(0).len, 11u);
	EXPECT_EQ(usedElem(1).id, 6u);
	EXPECT_EQ(usedElem(1).len, 16u);
}

TEST_F(SplitQueueRing, AddUsedWrapsAroundTheRing)
{
	queue_.setNextUsed(0xffff);
	queue_.addUsed(4, 100);
	queue_.addUsed(5, 200);
	queue_.publishUsed();
	EXPECT_EQ(usedIdx(), 1u);
	EXPECT_EQ(usedElem(kN - 1).id, 4u);
	EXPECT_EQ(usedElem(kN - 1).len, 100u);
	EXPECT_EQ(usedElem(0).id, 5u);
	EXPECT_EQ(usedElem(0).len, 200u);
}

/* ---- Notifications ---- */

TEST_F(SplitQueueRing, NotifiesUnlessNoInterruptWithoutEventIdx)
{
	queue_.addUsed(0, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());
	setAvailFlags(virtio::kAvailFNoInterrupt);
	queue_.addUsed(1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());
	setUsedEvent(0); /* ignored without EVENT_IDX */
	EXPECT_FALSE(queue_.needsNotification());
	setAvailFlags(0);
	EXPECT_TRUE(queue_.needsNotification());
	EXPECT_EQ(queue_.stats().notificationsSent.get(), 2u);
	EXPECT_EQ(queue_.stats().notificationsSuppressed.get(), 2u);
}

TEST_F(SplitQueueRing, NotifiesWhenUsedEventIsCrossedWithEventIdx)
{
	queue_.setEventIdx(true);
	setAvailFlags(virtio::kAvailFNoInterrupt); /* ignored with EVENT_IDX */
	setUsedEvent(100);
	queue_.addUsed(0, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification()) << "the first notification is always sent";

	/* The guest wants an event once the entry at its old index (1) is used. */
	setUsedEvent(1);
	queue_.addUsed(1, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());

	/* The guest asks for an event far ahead. */
	setUsedEvent(100);
	queue_.addUsed(2, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());

	/* used_event already passed before this batch: no new event. */
	setUsedEvent(2);
	queue_.addUsed(3, 1);
	queue_.addUsed(4, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());

	/* A batch that crosses used_event (5 is in [5, 7)). */
	setUsedEvent(5);
	queue_.addUsed(5, 1);
	queue_.addUsed(6, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());

	EXPECT_EQ(queue_.stats().notificationsSent.get(), 3u);
	EXPECT_EQ(queue_.stats().notificationsSuppressed.get(), 2u);
}

TEST_F(SplitQueueRing, DisableNotificationSetsNoNotifyWithoutEventIdx)
{
	ASSERT_EQ(usedFlags(), 0u);
	queue_.disableNotification();
	EXPECT_EQ(usedFlags() & virtio::kUsedFNoNotify, virtio::kUsedFNoNotify);
	EXPECT_FALSE(queue_.enableNotification()) << "nothing was made available meanwhile";
	EXPECT_EQ(usedFlags() & virtio::kUsedFNoNotify, 0u);
}

TEST_F(SplitQueueRing, EnableNotificationReportsBuffersMadeAvailableMeanwhile)
{
	queue_.disableNotification();
	setDesc(0, kBufGpa, 16);
	makeAvailable(0);
	EXPECT_TRUE(queue_.enableNotification());
	EXPECT_EQ(usedFlags() & virtio::kUsedFNoNotify, 0u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_FALSE(queue_.enableNotification());
}

TEST_F(SplitQueueRing, EnableNotificationWritesAvailEventWithEventIdx)
{
	queue_.setEventIdx(true);
	setDesc(0, kBufGpa, 16);
	setDesc(1, kBufGpa, 16);
	makeAvailable(0);
	makeAvailable(1);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);

	queue_.disableNotification();
	EXPECT_EQ(usedFlags(), 0u) << "with EVENT_IDX the flag is not used";
	EXPECT_FALSE(queue_.enableNotification());
	EXPECT_EQ(availEvent(), 2u);

	setDesc(2, kBufGpa, 16);
	makeAvailable(2);
	EXPECT_TRUE(queue_.enableNotification()) << "avail idx moved past avail_event";
	EXPECT_EQ(availEvent(), 2u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_FALSE(queue_.enableNotification());
	EXPECT_EQ(availEvent(), 3u);
}

/* ---- Double fetch ---- */

TEST_F(SplitQueueRing, ChainKeepsCopiesWhenTheGuestRewritesDescriptors)
{
	setDesc(0, kBufGpa, 100, kDescFNext, 1);
	setDesc(1, kBufGpa + 0x1000, 200, kDescFWrite);
	makeAvailable(0);
	ASSERT_EQ(pop(), PopStatus::Ok);

	/* The guest rewrites the chain after the device validated it. */
	setDesc(0, 0x10, 0xffffffff, kDescFWrite | kDescFNext, 7);
	setDesc(1, kGpa, 0, kDescFIndirect);

	EXPECT_EQ(chain_.head, 0u);
	ASSERT_EQ(chain_.bufferCount, 2u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 100, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x1000), 200, true);
	EXPECT_EQ(chain_.readableBytes, 100u);
	EXPECT_EQ(chain_.writableBytes, 200u);
}

TEST_F(SplitQueueRing, ChainKeepsCopiesWhenTheGuestRewritesAnIndirectTable)
{
	queue_.setIndirect(true);
	SplitDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 64, kDescFNext, 1);
	setEntry(t, 1, kBufGpa + 0x100, 128, kDescFWrite);
	setDesc(0, kTableGpa, 2 * 16, kDescFIndirect);
	makeAvailable(0);
	ASSERT_EQ(pop(), PopStatus::Ok);

	setEntry(t, 0, UINT64_MAX - 0x100, 0xffffffff, kDescFIndirect, 0);
	setEntry(t, 1, 0, 0, kDescFNext, 1);

	ASSERT_EQ(chain_.bufferCount, 2u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 64, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 128, true);
}


TEST_F(SplitQueueRing, ABaseThatDoesNotFitTheUsedIndexResumesFromIt)
{
	std::atomic_ref<uint16_t>(*usedField(2)).store(100, std::memory_order_release);
	/* Two chains in flight when the ring stopped: the base stands. */
	queue_.setNextAvail(102);
	EXPECT_FALSE(queue_.resumeFromUsedIndex());
	EXPECT_EQ(queue_.nextAvail(), 102u);
	EXPECT_EQ(queue_.nextUsed(), 100u);
	/* Behind the used index (DPDK's virtio-user after our restart sends 0), or a ring ahead. */
	for (uint16_t base : { uint16_t{ 0 }, uint16_t{ 99 }, uint16_t{ 100 + kN + 1 } }) {
		queue_.setNextAvail(base);
		EXPECT_TRUE(queue_.resumeFromUsedIndex()) << base;
		EXPECT_EQ(queue_.nextAvail(), 100u) << base;
	}
}

/* ---- Inflight I/O tracking (vhost-user "Inflight I/O tracking") ---- */

/* The region of one queue of 8 entries, as the front-end keeps it between back-ends. */
struct InflightRegion {
	alignas(64) uint8_t bytes[inflightQueueBytesSplit(8)]{};
	InflightQueueSplit &header() { return *reinterpret_cast<InflightQueueSplit *>(bytes); }
	InflightDescSplit &desc(uint16_t head) { return header().desc()[head]; }
};

class SplitQueueInflight : public SplitQueueRing
{
protected:
	void SetUp() override
	{
		static_assert(kN == 8);
		SplitQueueRing::SetUp();
		for (uint16_t i = 0; i < kN; i++)
			setDesc(i, kBufGpa + 0x100 * i, 64);
		queue_.setInflight(&region_.header());
		ASSERT_EQ(queue_.recoverInflight(), 0u);
	}
	/*
	 * The back-end died and a new one starts on the same rings and region: the queue reset,
	 * then configured as SET_VRING_NUM/ADDR/BASE (the front-end's last avail index: the used
	 * index, as QEMU resets it when GET_VRING_BASE failed) and the kick would.
	 */
	uint16_t restart()
	{
		queue_.reset();
		EXPECT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kAvailGpa),
						ram_.qva(kUsedGpa))
				    .has_value());
		EXPECT_TRUE(queue_.translate(*memory_).has_value());
		queue_.setNextAvail(usedIdx());
		queue_.setInflight(&region_.header());
		uint16_t lined = queue_.recoverInflight();
		queue_.setReady(true);
		return lined;
	}
	std::vector<uint16_t> popHeads(size_t n)
	{
		std::vector<uint16_t> heads;
		for (size_t i = 0; i < n; i++) {
			EXPECT_EQ(pop(), PopStatus::Ok);
			heads.push_back(chain_.head);
		}
		return heads;
	}

	InflightRegion region_;
};

TEST_F(SplitQueueInflight, StartsANewRegion)
{
	EXPECT_EQ(region_.header().version, kInflightVersion);
	EXPECT_EQ(region_.header().descNum, kN);
	EXPECT_EQ(region_.header().usedIdx, 0u);
}

TEST_F(SplitQueueInflight, MarksTakenChainsUntilTheirUseIsPublished)
{
	for (uint16_t head : { 5, 2, 7 })
		makeAvailable(head);
	EXPECT_EQ(popHeads(3), (std::vector<uint16_t>{ 5, 2, 7 }));
	for (uint16_t head : { 5, 2, 7 })
		EXPECT_EQ(region_.desc(head).inflight, 1) << head;
	EXPECT_LT(region_.desc(5).counter, region_.desc(2).counter);
	EXPECT_LT(region_.desc(2).counter, region_.desc(7).counter);

	queue_.addUsed(2, 0);
	queue_.addUsed(5, 0);
	EXPECT_EQ(region_.desc(2).inflight, 1) << "cleared before it is published";
	queue_.publishUsed();
	EXPECT_EQ(region_.desc(2).inflight, 0);
	EXPECT_EQ(region_.desc(5).inflight, 0);
	EXPECT_EQ(region_.desc(7).inflight, 1);
	EXPECT_EQ(region_.header().usedIdx, 2u);
	EXPECT_EQ(region_.header().lastBatchHead, 5u);
	EXPECT_EQ(region_.desc(5).next, 2u) << "the batch's list, newest first";
}

TEST_F(SplitQueueInflight, ARestartTakesUnreturnedChainsAgainInTheirOrderThenNewOnes)
{
	/* Taken 6, 1, 4; only 1 returned (out of order); then the driver adds 3. */
	for (uint16_t head : { 6, 1, 4 })
		makeAvailable(head);
	popHeads(3);
	queue_.addUsed(1, 0);
	queue_.publishUsed();
	makeAvailable(3);

	EXPECT_EQ(restart(), 2u);
	EXPECT_EQ(queue_.available(), 3u) << "the two to take again and the new one";
	EXPECT_EQ(popHeads(3), (std::vector<uint16_t>{ 6, 4, 3 }))
		<< "the two chains in flight first, as taken, then the new one";
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.nextAvail(), 4u);
	/* Nothing handed back twice: each is used once more, and the region ends empty. */
	for (uint16_t head : { 6, 4, 3 })
		queue_.addUsed(head, 0);
	queue_.publishUsed();
	EXPECT_EQ(usedIdx(), 4u);
	for (uint16_t h = 0; h < kN; h++)
		EXPECT_EQ(region_.desc(h).inflight, 0) << h;
	EXPECT_EQ(restart(), 0u);
	EXPECT_EQ(pop(), PopStatus::Empty);
}

TEST_F(SplitQueueInflight, ARestartFinishesABatchPublishedButNotCleared)
{
	for (uint16_t head : { 0, 3, 5 })
		makeAvailable(head);
	popHeads(3);
	queue_.addUsed(3, 0);
	queue_.addUsed(0, 0);
	queue_.publishUsed();
	/* As if the back-end died after the used index store, before clearing the batch. */
	region_.desc(3).inflight = 1;
	region_.desc(0).inflight = 1;
	region_.header().usedIdx = 0;

	EXPECT_EQ(restart(), 1u) << "the batch is done: only 5 is still in flight";
	EXPECT_EQ(popHeads(1), (std::vector<uint16_t>{ 5 }));
	EXPECT_EQ(region_.header().usedIdx, 2u);
	EXPECT_EQ(region_.desc(3).inflight, 0);
}

TEST_F(SplitQueueInflight, ARestartFindsTheBatchOfTheUsualPath)
{
	/* Chains of one direct descriptor: popUsualBurst takes them, a burst at a time. */
	for (uint16_t head = 0; head < 4; head++)
		makeAvailable(head);
	ASSERT_EQ(queue_.available(), 4u);
	std::array<DescBuffer, 4> buffers{};
	std::array<uint16_t, 4> ids{};
	ASSERT_EQ(queue_.popUsualBurst(*memory_, buffers.data(), ids.data(), 4,
				       [](uint16_t, const DescBuffer &) { return true; }),
		  4u);
	queue_.addUsed(ids[0], 0);
	queue_.publishUsed();
	EXPECT_EQ(restart(), 3u);
	EXPECT_EQ(popHeads(3), (std::vector<uint16_t>{ 1, 2, 3 }));
}

TEST_F(SplitQueueInflight, AHostileRegionIsStartedAfreshOrBounded)
{
	for (uint16_t head : { 2, 4 })
		makeAvailable(head);
	popHeads(2);
	/* A size the ring does not have: nothing is trusted. */
	region_.header().descNum = kN * 2;
	EXPECT_EQ(restart(), 0u);
	EXPECT_EQ(region_.header().descNum, kN);
	EXPECT_EQ(queue_.nextAvail(), 0u) << "the front-end's base stands";

	/* A used index a ring and more behind, garbage flags, a batch list out of the table. */
	popHeads(2);
	region_.header().usedIdx = static_cast<uint16_t>(usedIdx() - kN - 1);
	EXPECT_EQ(restart(), 0u);
	popHeads(2);
	region_.desc(6).inflight = 0x7f;
	region_.header().lastBatchHead = 0xffff;
	region_.header().usedIdx = static_cast<uint16_t>(usedIdx() - 1);
	EXPECT_EQ(restart(), 2u) << "the list leaves the table at once; 2 and 4 stay in flight";
	EXPECT_EQ(region_.desc(6).inflight, 0) << "a flag that is neither 0 nor 1 is cleared";
	EXPECT_EQ(popHeads(2), (std::vector<uint16_t>{ 2, 4 }));
}

TEST_F(SplitQueueInflight, ResetStopsTracking)
{
	queue_.reset();
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kAvailGpa),
					ram_.qva(kUsedGpa))
			    .has_value());
	ASSERT_TRUE(queue_.translate(*memory_).has_value());
	queue_.setReady(true);
	makeAvailable(3);
	popHeads(1);
	EXPECT_EQ(region_.desc(3).inflight, 0);
}

} /* namespace */
} /* namespace vub::vhost */
