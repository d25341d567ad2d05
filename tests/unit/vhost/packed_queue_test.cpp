/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PackedQueue against a guest driver played by hand, then against PackedDriver: the test lays
 * out the descriptor ring and the two event suppression areas in memfd guest memory (VIRTIO 1.x
 * "Packed Virtqueues"), writes descriptors through its own mapping with the wrap-counter bits,
 * and checks what the device side makes of them through the back-end's mapping, hostile rings
 * included (vhost-user-and-virtio.md 4.2 and 4.5, hostile-inputs.md item 14).
 */
#include "vub/vhost/packed_queue.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/inflight.h"
#include "vub/vhost/message.h"
#include "vub/virtio/packed_ring.h"

#include "guest_memory_fd.h"
#include "packed_driver.h"

namespace vub::vhost {
namespace {

using virtio::kPackedDescFAvail;
using virtio::kPackedDescFIndirect;
using virtio::kPackedDescFNext;
using virtio::kPackedDescFUsed;
using virtio::kPackedDescFWrite;
using virtio::kPackedEventFlagDesc;
using virtio::kPackedEventFlagDisable;
using virtio::kPackedEventFlagEnable;
using virtio::PackedDesc;
using virtio::PackedEventSuppress;
using PopStatus = PackedQueue::PopStatus;

constexpr uint16_t kNotTheId = 0xdead; /* in every descriptor but a chain's last */

uint16_t availBits(bool wrap)
{
	return wrap ? kPackedDescFAvail : kPackedDescFUsed;
}

uint16_t usedBits(bool wrap)
{
	return wrap ? kPackedDescFAvail | kPackedDescFUsed : 0;
}

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
		UniqueFd fd(::memfd_create("vub-packed-queue-test", MFD_CLOEXEC));
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

/* ---- Configuration ---- */

TEST(PackedQueue, RejectsZeroSize)
{
	PackedQueue queue(256);
	auto result = queue.setSize(0);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EINVAL);
	EXPECT_EQ(queue.size(), 0u);
}

TEST(PackedQueue, AcceptsSizesThatAreNotPowersOfTwo)
{
	PackedQueue queue(256);
	for (uint32_t size : { 1u, 3u, 5u, 100u, 255u, 256u }) {
		ASSERT_TRUE(queue.setSize(size).has_value()) << size;
		EXPECT_EQ(queue.size(), size);
	}
}

TEST(PackedQueue, RejectsSizeAboveMaxSize)
{
	PackedQueue queue(256);
	EXPECT_FALSE(queue.setSize(257).has_value());
	PackedQueue large(0xffff);
	/* 2^15 is the most the 15-bit indices of the layout can address. */
	EXPECT_TRUE(large.setSize(32768).has_value());
	EXPECT_FALSE(large.setSize(32769).has_value());
	EXPECT_FALSE(large.setSize(65536).has_value()) << "truncates to 0 in 16 bits";
	EXPECT_FALSE(large.setSize(0x10000 + 5).has_value());
	EXPECT_EQ(large.size(), 32768u);
}

TEST(PackedQueue, RejectsMisalignedRingAddresses)
{
	PackedQueue queue(256);
	auto desc = queue.setAddresses(0x1008, 0x2000, 0x3000);
	ASSERT_FALSE(desc.has_value());
	EXPECT_EQ(desc.error().code, EINVAL);
	EXPECT_FALSE(queue.setAddresses(0x1000, 0x2002, 0x3000).has_value());
	EXPECT_FALSE(queue.setAddresses(0x1000, 0x2000, 0x3001).has_value());
	EXPECT_FALSE(queue.hasAddresses());
	EXPECT_TRUE(queue.setAddresses(0x1010, 0x2004, 0x300c).has_value());
	EXPECT_TRUE(queue.hasAddresses());
}

TEST(PackedQueue, TranslateFailsBeforeTheSizeIsSet)
{
	GuestRam ram;
	ASSERT_TRUE(ram.add(0x100000, 0x10000, 0x7f0000000000));
	auto memory = ram.build();
	ASSERT_TRUE(memory);
	PackedQueue queue(256);
	ASSERT_TRUE(queue.setAddresses(0x7f0000000000, 0x7f0000001000, 0x7f0000002000).has_value());
	auto result = queue.translate(*memory);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EINVAL);
	EXPECT_FALSE(queue.isTranslated());
}

/* ---- SET/GET_VRING_BASE ---- */

TEST(PackedQueue, BaseOfANewQueueHasBothWrapCountersSet)
{
	PackedQueue queue(256);
	EXPECT_EQ(queue.base(), virtio::kPackedBaseAvailWrap | virtio::kPackedBaseUsedWrap);
	EXPECT_EQ(queue.base(), 0x80008000u);
	EXPECT_TRUE(queue.availWrap());
	EXPECT_TRUE(queue.usedWrap());
}

TEST(PackedQueue, SetBaseRoundTripsTheEncoding)
{
	PackedQueue queue(256);
	ASSERT_TRUE(queue.setSize(5).has_value());
	struct Case {
		uint16_t avail;
		bool availWrap;
		uint16_t used;
		bool usedWrap;
	};
	const Case cases[] = {
		{ 3, true, 1, true },  /* two in flight, same lap */
		{ 0, false, 4, true }, /* avail wrapped, used not yet */
		{ 2, false, 2, true }, /* the whole ring in flight */
		{ 4, false, 4, false }, { 1, true, 0, true },
	};
	for (const Case &c : cases) {
		uint32_t base = c.avail | (c.availWrap ? 1u << 15 : 0u) | uint32_t{ c.used } << 16 |
				(c.usedWrap ? 1u << 31 : 0u);
		auto result = queue.setBase(base);
		ASSERT_TRUE(result.has_value()) << std::hex << base << ": " << result.error().what;
		EXPECT_EQ(queue.nextAvail(), c.avail);
		EXPECT_EQ(queue.availWrap(), c.availWrap);
		EXPECT_EQ(queue.nextUsed(), c.used);
		EXPECT_EQ(queue.usedWrap(), c.usedWrap);
		EXPECT_EQ(queue.base(), base);
	}
	ASSERT_TRUE(queue.setBase(0x80018003).has_value()); /* avail 3, used 1, both wrap 1 */
	EXPECT_EQ(queue.inFlight(), 2u);
	ASSERT_TRUE(queue.setBase(0x00048001).has_value()); /* avail 1 wrap 1, used 4 wrap 0 */
	EXPECT_EQ(queue.inFlight(), 2u);
}

TEST(PackedQueue, SetBaseWithAZeroUsedHalfTakesTheAvailHalf)
{
	/* DPDK virtio-user sends `num |= 1 << 15` and nothing above bit 15. */
	PackedQueue queue(256);
	ASSERT_TRUE(queue.setSize(256).has_value());
	ASSERT_TRUE(queue.setBase(1u << 15).has_value());
	EXPECT_EQ(queue.nextAvail(), 0u);
	EXPECT_TRUE(queue.availWrap());
	EXPECT_EQ(queue.nextUsed(), 0u);
	EXPECT_TRUE(queue.usedWrap());
	EXPECT_EQ(queue.base(), 0x80008000u);

	ASSERT_TRUE(queue.setBase(17).has_value());
	EXPECT_EQ(queue.nextAvail(), 17u);
	EXPECT_FALSE(queue.availWrap());
	EXPECT_EQ(queue.nextUsed(), 17u);
	EXPECT_FALSE(queue.usedWrap());
	EXPECT_EQ(queue.inFlight(), 0u);
	EXPECT_EQ(queue.base(), 17u | 17u << 16);
}

TEST(PackedQueue, SetBaseRejectsBadStates)
{
	PackedQueue queue(256);
	auto early = queue.setBase(1u << 15);
	ASSERT_FALSE(early.has_value()) << "the size must come first";
	EXPECT_EQ(early.error().code, EINVAL);

	ASSERT_TRUE(queue.setSize(5).has_value());
	ASSERT_TRUE(queue.setBase(0x80018003).has_value());
	const uint32_t bad[] = {
		0x00008005,	       /* avail index == size */
		0x00007fff,	       /* avail index far beyond */
		0x80058000,	       /* used index == size */
		0x80038001,	       /* same lap, used ahead of avail */
		0x00010003 | 1u << 15, /* avail a lap ahead and beyond used: > size in flight */
	};
	for (uint32_t base : bad) {
		auto result = queue.setBase(base);
		ASSERT_FALSE(result.has_value()) << std::hex << base;
		EXPECT_EQ(result.error().code, EINVAL);
		EXPECT_EQ(queue.base(), 0x80018003u) << "a refused base changes nothing";
	}
}

TEST(PackedQueue, SetSizeResetsAPositionThatNoLongerFits)
{
	PackedQueue queue(256);
	ASSERT_TRUE(queue.setSize(256).has_value());
	ASSERT_FALSE(queue.setBase(0x00c80064).has_value()) << "used 200 ahead of avail 100";
	ASSERT_TRUE(queue.setBase(0x006400c8).has_value()); /* avail 200, used 100, both wrap 0 */
	ASSERT_TRUE(queue.setSize(201).has_value());
	EXPECT_EQ(queue.base(), 0x006400c8u) << "still fits";
	ASSERT_TRUE(queue.setSize(150).has_value());
	EXPECT_EQ(queue.base(), 0x80008000u) << "avail 200 would index past the ring";
}

/*
 * One queue of 8 entries in 1 MiB of guest memory at a GPA and a front-end address (QVA) that
 * differ, as with QEMU: the descriptor ring and the two event areas on their own pages,
 * buffers above.
 */
class PackedQueueRing : public ::testing::Test
{
protected:
	static constexpr uint16_t kN = 8;
	static constexpr uint64_t kGpa = 0x100000;
	static constexpr uint64_t kSize = 0x100000;
	static constexpr uint64_t kQva = 0x7f0000000000;
	static constexpr uint64_t kDescGpa = kGpa;
	static constexpr uint64_t kDriverEventGpa = kGpa + 0x1000;
	static constexpr uint64_t kDeviceEventGpa = kGpa + 0x2000;
	static constexpr uint64_t kBufGpa = kGpa + 0x10000;
	static constexpr uint64_t kTableGpa = kGpa + 0x8000; /* indirect tables */

	/* One descriptor as the test posts it: flags without the AVAIL/USED bits. */
	struct D {
		uint64_t addr;
		uint32_t len;
		uint16_t flags = 0;
	};

	void SetUp() override
	{
		ASSERT_TRUE(ram_.add(kGpa, kSize, kQva));
		rebuildMemory();
		ASSERT_TRUE(queue_.setSize(kN).has_value());
		ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kDriverEventGpa),
						ram_.qva(kDeviceEventGpa))
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

	PackedDesc *ring(uint16_t i) const
	{
		return reinterpret_cast<PackedDesc *>(ram_.ptr(kDescGpa)) + i;
	}
	PackedDesc *table(uint64_t gpa) const
	{
		return reinterpret_cast<PackedDesc *>(ram_.ptr(gpa));
	}
	static void setEntry(PackedDesc *t, uint16_t i, uint64_t addr, uint32_t len,
			     uint16_t flags = 0, uint16_t id = 0)
	{
		t[i] = PackedDesc{ addr, len, id, flags };
	}
	void setFlags(uint16_t i, uint16_t flags)
	{
		std::atomic_ref<uint16_t>(ring(i)->flags).store(flags, std::memory_order_release);
	}
	uint16_t flagsAt(uint16_t i) const
	{
		return std::atomic_ref<uint16_t>(ring(i)->flags).load(std::memory_order_acquire);
	}

	/*
	 * Post \a chain at the driver's avail position as a driver does: the avail bits of each
	 * position's lap, the buffer id in the last descriptor, the first made available last.
	 * NEXT is not added: each D says whether it has one.
	 */
	void makeAvailable(std::initializer_list<D> chain, uint16_t id)
	{
		makeAvailable(std::span<const D>(chain.begin(), chain.size()), id);
	}
	void makeAvailable(std::span<const D> chain, uint16_t id)
	{
		uint16_t first = availIdx_;
		uint16_t firstFlags = 0;
		size_t k = 0;
		for (const D &d : chain) {
			bool last = ++k == chain.size();
			uint16_t flags = static_cast<uint16_t>(d.flags | availBits(availWrap_));
			*ring(availIdx_) = PackedDesc{ d.addr, d.len, last ? id : kNotTheId,
						       k == 1 ? uint16_t{ 0 } : flags };
			if (k == 1)
				firstFlags = flags;
			if (++availIdx_ == kN) {
				availIdx_ = 0;
				availWrap_ = !availWrap_;
			}
		}
		setFlags(first, firstFlags);
	}
	/* Start both the driver and the device at ring position \a idx of the lap \a wrap. */
	void startAt(uint16_t idx, bool wrap)
	{
		uint32_t half = idx | (wrap ? 1u << 15 : 0u);
		ASSERT_TRUE(queue_.setBase(half | half << 16).has_value());
		availIdx_ = idx;
		availWrap_ = wrap;
	}

	PackedEventSuppress *driverEvent() const
	{
		return reinterpret_cast<PackedEventSuppress *>(ram_.ptr(kDriverEventGpa));
	}
	PackedEventSuppress *deviceEvent() const
	{
		return reinterpret_cast<PackedEventSuppress *>(ram_.ptr(kDeviceEventGpa));
	}
	void setDriverEvent(uint16_t flags, uint16_t off = 0, bool wrap = false)
	{
		driverEvent()->offWrap = static_cast<uint16_t>(off | (wrap ? 0x8000 : 0));
		driverEvent()->flags = flags;
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
	/* Where the device reads next, as one number that counts laps: index + wrap * size. */
	uint32_t availPosition() const
	{
		return queue_.nextAvail() + (queue_.availWrap() ? kN : 0);
	}
	static uint32_t advanced(uint32_t position, uint32_t by)
	{
		return (position + by) % (2 * kN);
	}

	/* Pop a chain that must be refused for \a error, counted once, and consumed whole. */
	void expectRefused(ChainError error, uint16_t id, uint16_t descCount = 1)
	{
		uint64_t before = queue_.stats().badChains[static_cast<int>(error)].get();
		uint64_t total = badChains();
		uint32_t position = availPosition();
		ASSERT_EQ(pop(), PopStatus::BadChain);
		EXPECT_EQ(queue_.lastError(), error) << "got " << chainErrorName(queue_.lastError())
						     << ", expected " << chainErrorName(error);
		EXPECT_EQ(queue_.stats().badChains[static_cast<int>(error)].get(), before + 1);
		EXPECT_EQ(badChains(), total + 1) << "one counter per refusal";
		EXPECT_EQ(chain_.head, id) << "the caller returns this id with length 0";
		EXPECT_EQ(queue_.lastDescCount(), descCount);
		EXPECT_EQ(availPosition(), advanced(position, descCount))
			<< "a refused chain is consumed whole";
		EXPECT_FALSE(queue_.isBroken()) << "a bad chain does not break the queue";
	}
	void expectBroken()
	{
		uint32_t base = queue_.base();
		uint64_t chains = queue_.stats().chains.get();
		EXPECT_EQ(pop(), PopStatus::Broken);
		EXPECT_TRUE(queue_.isBroken());
		EXPECT_EQ(queue_.base(), base) << "a broken ring is not consumed";
		EXPECT_EQ(pop(), PopStatus::Empty) << "a broken queue is not processed";
		EXPECT_EQ(queue_.stats().chains.get(), chains);
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
	PackedQueue queue_{ 256 };
	std::array<DescBuffer, 16> storage_{};
	DescriptorChain chain_;
	uint16_t availIdx_ = 0;
	bool availWrap_ = true;
};

/* ---- Ring translation ---- */

TEST_F(PackedQueueRing, TranslatesRingsThatEndAtTheRegionEnd)
{
	uint64_t end = kGpa + kSize;
	uint64_t desc = end - virtio::packedDescRingSize(kN);
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(desc), ram_.qva(end - 4), ram_.qva(end - 8))
			    .has_value());
	auto result = queue_.translate(*memory_);
	EXPECT_TRUE(result.has_value()) << result.error().what;
	EXPECT_TRUE(queue_.isTranslated());
}

TEST_F(PackedQueueRing, TranslateRefusesDescRingCrossingTheRegionEnd)
{
	uint64_t end = kGpa + kSize;
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(end - 16 * (kN - 1)), ram_.qva(kDriverEventGpa),
					ram_.qva(kDeviceEventGpa))
			    .has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
	EXPECT_FALSE(queue_.isTranslated());
	EXPECT_EQ(pop(), PopStatus::Empty) << "an untranslated queue has nothing to pop";
	EXPECT_FALSE(queue_.enableNotification());
	EXPECT_FALSE(queue_.needsNotification());
}

TEST_F(PackedQueueRing, TranslateRefusesEventAreasOutsideMemory)
{
	uint64_t outside = kQva + kSize;
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), outside, ram_.qva(kDeviceEventGpa))
			    .has_value());
	auto driver = queue_.translate(*memory_);
	ASSERT_FALSE(driver.has_value());
	EXPECT_EQ(driver.error().code, EFAULT);
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kDriverEventGpa), outside)
			    .has_value());
	EXPECT_FALSE(queue_.translate(*memory_).has_value());
	/* A GPA given where a front-end address belongs is in no region either. */
	ASSERT_TRUE(queue_.setAddresses(kDescGpa, kDriverEventGpa, kDeviceEventGpa).has_value());
	EXPECT_FALSE(queue_.translate(*memory_).has_value());
	EXPECT_FALSE(queue_.isTranslated());
}

TEST_F(PackedQueueRing, TranslateRefusesRingStraddlingTwoRegions)
{
	/* A second region contiguous with the first in both GPA and QVA: still two mappings. */
	ASSERT_TRUE(ram_.add(kGpa + kSize, 0x10000, kQva + kSize));
	rebuildMemory();
	uint64_t desc = kGpa + kSize - 64;
	ASSERT_TRUE(queue_.setAddresses(ram_.qva(desc), ram_.qva(kDriverEventGpa),
					ram_.qva(kDeviceEventGpa))
			    .has_value());
	auto result = queue_.translate(*memory_);
	ASSERT_FALSE(result.has_value());
	EXPECT_EQ(result.error().code, EFAULT);
}

/* ---- pop(): good chains ---- */

TEST_F(PackedQueueRing, PopReturnsEmptyWhenNotReady)
{
	makeAvailable({ { kBufGpa, 64 } }, 0);
	queue_.setReady(false);
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.nextAvail(), 0u);
	queue_.setReady(true);
	EXPECT_EQ(pop(), PopStatus::Ok);
}

TEST_F(PackedQueueRing, PopReturnsEmptyWhenNothingIsAvailable)
{
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.stats().emptyPolls.get(), 1u);
	makeAvailable({ { kBufGpa, 64 } }, 0);
	EXPECT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.stats().emptyPolls.get(), 2u);
	EXPECT_EQ(queue_.stats().chains.get(), 1u);
}

TEST_F(PackedQueueRing, PopsAReadableChainOfThreeDescriptorsWithTheIdOfTheLast)
{
	makeAvailable({ { kBufGpa, 100, kPackedDescFNext },
			{ kBufGpa + 0x1000, 200, kPackedDescFNext },
			{ kBufGpa + 0x3000, 300 } },
		      5);
	std::memcpy(ram_.ptr(kBufGpa + 0x1000), "second", 6);

	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 5u) << "the buffer id is in the last descriptor";
	EXPECT_EQ(queue_.lastDescCount(), 3u);
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
	EXPECT_EQ(queue_.nextAvail(), 3u);
	EXPECT_TRUE(queue_.availWrap());
	EXPECT_EQ(queue_.inFlight(), 3u);
	EXPECT_EQ(queue_.stats().chains.get(), 1u);
	EXPECT_EQ(badChains(), 0u);
}

TEST_F(PackedQueueRing, PopsAReadableThenWritableChain)
{
	makeAvailable({ { kBufGpa, 12, kPackedDescFNext },
			{ kBufGpa + 0x100, 1500, kPackedDescFNext },
			{ kBufGpa + 0x1000, 4096, kPackedDescFWrite | kPackedDescFNext },
			{ kBufGpa + 0x2000, 10, kPackedDescFWrite } },
		      2);

	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 2u);
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

TEST_F(PackedQueueRing, PopsChainsInRingOrder)
{
	makeAvailable({ { kBufGpa, 10 } }, 3);
	makeAvailable({ { kBufGpa + 0x100, 20, kPackedDescFWrite } }, 1);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 3u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 1u);
	EXPECT_EQ(chain_.writableBytes, 20u);
	EXPECT_EQ(pop(), PopStatus::Empty);
}

TEST_F(PackedQueueRing, AvailableCountsDescriptorsUpToTheLimit)
{
	EXPECT_EQ(queue_.available(32), 0u);
	makeAvailable({ { kBufGpa, 10, kPackedDescFNext }, { kBufGpa + 0x100, 10 } }, 3);
	makeAvailable({ { kBufGpa + 0x200, 20 } }, 1);
	/* Descriptors, not chains: an upper bound of what pop() returns. */
	EXPECT_EQ(queue_.available(32), 3u);
	EXPECT_EQ(queue_.available(2), 2u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(queue_.available(32), 1u);
}

TEST_F(PackedQueueRing, RewindAvailGivesBackChainsForTheNextPop)
{
	makeAvailable({ { kBufGpa, 10, kPackedDescFNext }, { kBufGpa + 0x100, 10 } }, 3);
	makeAvailable({ { kBufGpa + 0x200, 20 } }, 1);
	uint32_t start = queue_.availPosition();
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.descCount, 1u);
	queue_.rewindAvail(start);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 3u);
	EXPECT_EQ(chain_.descCount, 2u);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 1u);
}

TEST_F(PackedQueueRing, QueueTheDeviceOnlyReadsTakesWritableBuffersAsReadable)
{
	/* DPDK's virtio TX: the net header of an indirect table says WRITE, the data does not. */
	queue_.setIndirect(true);
	queue_.setDeviceReadsOnly(true);
	PackedDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 12, kPackedDescFWrite);
	setEntry(t, 1, kBufGpa + 0x100, 100);
	makeAvailable({ { kTableGpa, 2 * 16, kPackedDescFIndirect } }, 0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.readableBytes, 112u);
	EXPECT_EQ(chain_.writableBytes, 0u);
	/* Without it the same chain is refused. */
	queue_.setDeviceReadsOnly(false);
	makeAvailable({ { kTableGpa, 2 * 16, kPackedDescFIndirect } }, 1);
	expectRefused(ChainError::ReadAfterWrite, 1);
}

TEST_F(PackedQueueRing, PopsAChainOfQueueSizeDescriptors)
{
	for (uint16_t i = 0; i < kN; i++)
		*ring(i) = PackedDesc{ kBufGpa + 0x100 * i, 16, kNotTheId,
				       static_cast<uint16_t>(availBits(true) |
							     (i + 1 < kN ? kPackedDescFNext : 0)) };
	ring(kN - 1)->id = 4;
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 4u);
	EXPECT_EQ(chain_.bufferCount, kN);
	EXPECT_EQ(chain_.readableBytes, 16u * kN);
	EXPECT_EQ(queue_.lastDescCount(), kN);
	EXPECT_EQ(queue_.nextAvail(), 0u);
	EXPECT_FALSE(queue_.availWrap()) << "a whole lap flips the wrap counter";
}

TEST_F(PackedQueueRing, PopsAChainThatWrapsAroundTheRingEnd)
{
	/* Positions 6, 7, 0, 1: the last two carry the next lap's avail bits. */
	startAt(6, true);
	makeAvailable({ { kBufGpa, 10, kPackedDescFNext },
			{ kBufGpa + 0x100, 20, kPackedDescFNext },
			{ kBufGpa + 0x200, 30, kPackedDescFNext | kPackedDescFWrite },
			{ kBufGpa + 0x300, 40, kPackedDescFWrite } },
		      7);
	EXPECT_EQ(flagsAt(0) & (kPackedDescFAvail | kPackedDescFUsed), kPackedDescFUsed);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 7u);
	ASSERT_EQ(chain_.bufferCount, 4u);
	expectPiece(chain_.buffers[3], ram_.hva(kBufGpa + 0x300), 40, true);
	EXPECT_EQ(queue_.nextAvail(), 2u);
	EXPECT_FALSE(queue_.availWrap());
	EXPECT_EQ(queue_.inFlight(), 4u);
	EXPECT_EQ(pop(), PopStatus::Empty);
}

TEST_F(PackedQueueRing, SplitsBufferSpanningTwoGpaContiguousRegions)
{
	/* B follows A in guest-physical space, but is mapped elsewhere in the back-end. */
	constexpr uint64_t kGpaB = kGpa + kSize;
	ASSERT_TRUE(ram_.add(kGpaB, 0x10000, 0x7f0010000000));
	rebuildMemory();
	ASSERT_NE(ram_.hva(kGpaB), ram_.hva(kGpaB - 1) + 1)
		<< "the regions must not be host-contiguous";
	std::memcpy(ram_.ptr(kGpaB - 3), "abc", 3);
	std::memcpy(ram_.ptr(kGpaB), "defg", 4);
	makeAvailable({ { kGpaB - 100, 300 } }, 0);

	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 2u);
	expectPiece(chain_.buffers[0], ram_.hva(kGpaB - 100), 100, false);
	expectPiece(chain_.buffers[1], ram_.hva(kGpaB), 200, false);
	EXPECT_EQ(chain_.readableBytes, 300u);
	EXPECT_EQ(queue_.lastDescCount(), 1u) << "two pieces, one descriptor";
	EXPECT_EQ(std::memcmp(chain_.buffers[0].hva + 97, "abc", 3), 0);
	EXPECT_EQ(std::memcmp(chain_.buffers[1].hva, "defg", 4), 0);
}

/* ---- pop(): refused chains ---- */

TEST_F(PackedQueueRing, RefusesAChainLongerThanTheRing)
{
	/* Every descriptor of the lap says NEXT: the chain never ends. */
	for (uint16_t i = 0; i < kN; i++)
		*ring(i) =
			PackedDesc{ kBufGpa, 16, static_cast<uint16_t>(i == kN - 1 ? 6 : kNotTheId),
				    static_cast<uint16_t>(availBits(true) | kPackedDescFNext) };
	expectRefused(ChainError::TooLong, 6, kN);
	EXPECT_EQ(queue_.nextAvail(), 0u);
	EXPECT_FALSE(queue_.availWrap());
}

TEST_F(PackedQueueRing, RefusesBufferOutsideGuestMemory)
{
	makeAvailable({ { 0x1000, 16 } }, 0);
	expectRefused(ChainError::BadAddress, 0);
	/* addr + len wraps past the top of the address space. */
	makeAvailable({ { UINT64_MAX - 7, 64 } }, 1);
	expectRefused(ChainError::BadAddress, 1);
	/* A bad buffer after a good one. */
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext }, { kGpa + kSize + 0x100000, 16 } }, 2);
	expectRefused(ChainError::BadAddress, 2, 2);
}

TEST_F(PackedQueueRing, RefusesBufferCrossingTheRegionEndIntoUnmappedSpace)
{
	/* CVE-2018-1059 class: the start is mapped, the rest is not. */
	makeAvailable({ { kGpa + kSize - 100, 200, kPackedDescFWrite } }, 0);
	expectRefused(ChainError::BadAddress, 0);
}

TEST_F(PackedQueueRing, RefusesZeroLengthBuffer)
{
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext }, { kBufGpa + 0x100, 0 } }, 3);
	expectRefused(ChainError::ZeroLength, 3, 2);
}

TEST_F(PackedQueueRing, RefusesReadableAfterWritable)
{
	makeAvailable(
		{ { kBufGpa, 16, kPackedDescFWrite | kPackedDescFNext }, { kBufGpa + 0x100, 16 } },
		0);
	expectRefused(ChainError::ReadAfterWrite, 0, 2);
}

TEST_F(PackedQueueRing, ConsumesTheWholeRefusedChain)
{
	/* The error is in the first descriptor; the two after it belong to the chain too. */
	makeAvailable({ { kBufGpa, 0, kPackedDescFNext },
			{ kBufGpa + 0x100, 16, kPackedDescFNext },
			{ kBufGpa + 0x200, 16 } },
		      4);
	makeAvailable({ { kBufGpa + 0x300, 32, kPackedDescFWrite } }, 1);
	expectRefused(ChainError::ZeroLength, 4, 3);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 1u);
	ASSERT_EQ(chain_.bufferCount, 1u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa + 0x300), 32, true);
}

TEST_F(PackedQueueRing, RefusesIndirectWhenNotNegotiated)
{
	setEntry(table(kTableGpa), 0, kBufGpa, 16);
	makeAvailable({ { kTableGpa, 16, kPackedDescFIndirect } }, 0);
	expectRefused(ChainError::IndirectNotNegotiated, 0);
}

TEST_F(PackedQueueRing, PopsAnIndirectChain)
{
	queue_.setIndirect(true);
	PackedDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 12);
	setEntry(t, 1, kBufGpa + 0x100, 100);
	setEntry(t, 2, kBufGpa + 0x1000, 2048, kPackedDescFWrite);
	makeAvailable({ { kTableGpa, 3 * 16, kPackedDescFIndirect } }, 6);

	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 6u);
	EXPECT_EQ(queue_.lastDescCount(), 1u);
	ASSERT_EQ(chain_.bufferCount, 3u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 12, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 100, false);
	expectPiece(chain_.buffers[2], ram_.hva(kBufGpa + 0x1000), 2048, true);
	EXPECT_EQ(chain_.readableBytes, 112u);
	EXPECT_EQ(chain_.writableBytes, 2048u);
}

TEST_F(PackedQueueRing, UsesEveryEntryOfAnIndirectTableInOrder)
{
	/* Inside a packed table NEXT and the ids mean nothing: len / 16 entries, in order. */
	queue_.setIndirect(true);
	PackedDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 10, kPackedDescFNext, 999);
	setEntry(t, 1, kBufGpa + 0x100, 20, 0, 7);
	setEntry(t, 2, kBufGpa + 0x200, 30, kPackedDescFWrite | kPackedDescFNext, 0xffff);
	makeAvailable({ { kTableGpa, 3 * 16, kPackedDescFIndirect } }, 2);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 2u);
	ASSERT_EQ(chain_.bufferCount, 3u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 10, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 20, false);
	expectPiece(chain_.buffers[2], ram_.hva(kBufGpa + 0x200), 30, true);
}

TEST_F(PackedQueueRing, IgnoresTheWriteFlagOfTheIndirectDescriptor)
{
	queue_.setIndirect(true);
	setEntry(table(kTableGpa), 0, kBufGpa, 64);
	makeAvailable({ { kTableGpa, 16, kPackedDescFIndirect | kPackedDescFWrite } }, 0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 1u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 64, false);
}

TEST_F(PackedQueueRing, RefusesIndirectTableWithBadLength)
{
	queue_.setIndirect(true);
	PackedDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16);
	setEntry(t, 1, kBufGpa, 16);
	makeAvailable({ { kTableGpa, 0, kPackedDescFIndirect } }, 0);
	expectRefused(ChainError::IndirectBadLength, 0);
	makeAvailable({ { kTableGpa, 24, kPackedDescFIndirect } }, 1);
	expectRefused(ChainError::IndirectBadLength, 1);
	makeAvailable({ { kTableGpa, 15, kPackedDescFIndirect } }, 2);
	expectRefused(ChainError::IndirectBadLength, 2);
	makeAvailable({ { kGpa, (virtio::kMaxQueueSize + 1) * 16, kPackedDescFIndirect } }, 3);
	expectRefused(ChainError::IndirectBadLength, 3);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::IndirectBadLength)].get(),
		  4u);
}

TEST_F(PackedQueueRing, RefusesNestedIndirect)
{
	queue_.setIndirect(true);
	PackedDesc *outer = table(kTableGpa);
	PackedDesc *inner = table(kTableGpa + 0x100);
	setEntry(inner, 0, kBufGpa, 16);
	setEntry(outer, 0, kBufGpa, 16);
	setEntry(outer, 1, kTableGpa + 0x100, 16, kPackedDescFIndirect);
	makeAvailable({ { kTableGpa, 2 * 16, kPackedDescFIndirect } }, 0);
	expectRefused(ChainError::IndirectNested, 0);
}

TEST_F(PackedQueueRing, RefusesIndirectWithNext)
{
	queue_.setIndirect(true);
	setEntry(table(kTableGpa), 0, kBufGpa, 16);
	makeAvailable(
		{ { kTableGpa, 16, kPackedDescFIndirect | kPackedDescFNext }, { kBufGpa, 16 } }, 5);
	expectRefused(ChainError::IndirectWithNext, 5, 2);
}

TEST_F(PackedQueueRing, RefusesIndirectAfterDirectDescriptors)
{
	/* Packed: "MUST NOT write direct descriptors with INDIRECT in a list linked by NEXT". */
	queue_.setIndirect(true);
	setEntry(table(kTableGpa), 0, kBufGpa + 0x100, 16);
	makeAvailable(
		{ { kBufGpa, 10, kPackedDescFNext }, { kTableGpa, 16, kPackedDescFIndirect } }, 1);
	expectRefused(ChainError::IndirectWithNext, 1, 2);
}

TEST_F(PackedQueueRing, RefusesIndirectTableOutsideGuestMemory)
{
	queue_.setIndirect(true);
	makeAvailable({ { 0x2000, 32, kPackedDescFIndirect } }, 0);
	expectRefused(ChainError::BadAddress, 0);
	/* The table crosses the region end. */
	makeAvailable({ { kGpa + kSize - 16, 32, kPackedDescFIndirect } }, 1);
	expectRefused(ChainError::BadAddress, 1);
	/* The table is fine, a buffer in it is not. */
	setEntry(table(kTableGpa), 0, kBufGpa, 16);
	setEntry(table(kTableGpa), 1, 0x10, 16, kPackedDescFWrite);
	makeAvailable({ { kTableGpa, 32, kPackedDescFIndirect } }, 2);
	expectRefused(ChainError::BadAddress, 2);
}

TEST_F(PackedQueueRing, RefusesErrorsInsideAnIndirectTable)
{
	queue_.setIndirect(true);
	PackedDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 16);
	setEntry(t, 1, kBufGpa + 0x100, 0);
	makeAvailable({ { kTableGpa, 32, kPackedDescFIndirect } }, 0);
	expectRefused(ChainError::ZeroLength, 0);
	setEntry(t, 0, kBufGpa, 16, kPackedDescFWrite);
	setEntry(t, 1, kBufGpa + 0x100, 16);
	makeAvailable({ { kTableGpa, 32, kPackedDescFIndirect } }, 1);
	expectRefused(ChainError::ReadAfterWrite, 1);
}

TEST_F(PackedQueueRing, RefusesMorePiecesThanTheCallerCanHold)
{
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext },
			{ kBufGpa + 0x100, 16, kPackedDescFNext },
			{ kBufGpa + 0x200, 16 } },
		      0);
	std::array<DescBuffer, 2> small{};
	ASSERT_EQ(pop(small), PopStatus::BadChain);
	EXPECT_EQ(queue_.lastError(), ChainError::TooManyBuffers);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::TooManyBuffers)].get(), 1u);
	EXPECT_EQ(chain_.head, 0u);
	EXPECT_EQ(queue_.lastDescCount(), 3u);

	/* One descriptor that becomes two pieces across regions counts as two. */
	constexpr uint64_t kGpaB = kGpa + kSize;
	ASSERT_TRUE(ram_.add(kGpaB, 0x10000, 0x7f0010000000));
	rebuildMemory();
	makeAvailable({ { kGpaB - 8, 16 } }, 3);
	std::array<DescBuffer, 1> one{};
	ASSERT_EQ(pop(one), PopStatus::BadChain);
	EXPECT_EQ(queue_.lastError(), ChainError::TooManyBuffers);
	EXPECT_EQ(queue_.stats().badChains[static_cast<int>(ChainError::TooManyBuffers)].get(), 2u);
	EXPECT_EQ(badChains(), 2u);
}

TEST_F(PackedQueueRing, RefusesChainWhoseTotalLengthExceedsFourGiB)
{
	/* 4 GiB of sparse memfd, never touched: room for a 0xffffffff-byte buffer. */
	constexpr uint64_t kBigGpa = 0x100000000;
	constexpr uint64_t kBigSize = 0x100000000;
	ASSERT_TRUE(ram_.add(kBigGpa, kBigSize, 0x7f1000000000, false));
	rebuildMemory();

	/* One descriptor of 2^32 - 1 bytes is the most a chain can carry. */
	makeAvailable({ { kBigGpa, 0xffffffff } }, 0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(chain_.bufferCount, 1u);
	EXPECT_EQ(chain_.buffers[0].len, 0xffffffffu);
	EXPECT_EQ(chain_.readableBytes, 0xffffffffu);

	makeAvailable({ { kBigGpa, 0xffffffff, kPackedDescFNext },
			{ kBigGpa, 0xffffffff, kPackedDescFNext },
			{ kBigGpa, 0xffffffff } },
		      1);
	expectRefused(ChainError::LengthOverflow, 1, 3);

	/* Writable bytes count too. */
	makeAvailable({ { kBigGpa, 0x80000000, kPackedDescFNext },
			{ kBigGpa, 0x80000000, kPackedDescFWrite } },
		      4);
	expectRefused(ChainError::LengthOverflow, 4, 2);
}

TEST_F(PackedQueueRing, GoesOnAfterABadChain)
{
	makeAvailable({ { kBufGpa, 0 } }, 0);
	makeAvailable({ { kBufGpa + 0x100, 32, kPackedDescFWrite } }, 1);
	expectRefused(ChainError::ZeroLength, 0);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(chain_.head, 1u);
	ASSERT_EQ(chain_.bufferCount, 1u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa + 0x100), 32, true);
	EXPECT_EQ(queue_.stats().chains.get(), 1u);
	EXPECT_EQ(badChains(), 1u);
}

/* ---- pop(): corrupt rings (hostile-inputs.md item 14) ---- */

TEST_F(PackedQueueRing, BreaksOnBufferIdBeyondTheRing)
{
	makeAvailable({ { kBufGpa, 16 } }, kN);
	expectBroken();
}

TEST_F(PackedQueueRing, BreaksOnBufferIdBeyondTheRingInABadChain)
{
	/* The id decides before the chain's own error: there is nothing to return. */
	makeAvailable({ { kBufGpa, 0, kPackedDescFNext }, { kBufGpa, 16 } }, 0xffff);
	expectBroken();
	EXPECT_EQ(badChains(), 0u);
}

TEST_F(PackedQueueRing, BreaksWhenAChainRunsIntoADescriptorThatIsNotAvailable)
{
	/* NEXT on the first, but the second still has the bits of a used descriptor. */
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext }, { kBufGpa + 0x100, 16 } }, 1);
	setFlags(1, usedBits(true));
	expectBroken();
}

TEST_F(PackedQueueRing, BreaksWhenAChainRunsIntoADescriptorOfTheWrongLap)
{
	/* Across the ring end the next lap's bits are needed: the driver kept the old ones. */
	startAt(kN - 1, true);
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext }, { kBufGpa + 0x100, 16 } }, 1);
	ASSERT_EQ(flagsAt(0) & (kPackedDescFAvail | kPackedDescFUsed), kPackedDescFUsed);
	setFlags(0, availBits(true));
	expectBroken();
}

TEST_F(PackedQueueRing, BreaksWhenAChainRunsIntoAvailSetWithoutUsedInTheSecondLap)
{
	/* In the lap of wrap counter 0, AVAIL set and USED clear is last lap's pattern. */
	startAt(2, false);
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext }, { kBufGpa + 0x100, 16 } }, 1);
	setFlags(3, kPackedDescFAvail);
	expectBroken();
}

TEST_F(PackedQueueRing, IgnoresDescriptorsWithTheWrongWrapBits)
{
	/* Both bits set: a used descriptor of the first lap, not an available one. */
	*ring(0) = PackedDesc{ kBufGpa, 16, 0, kPackedDescFAvail | kPackedDescFUsed };
	EXPECT_EQ(pop(), PopStatus::Empty);
	/* Neither bit set: a used descriptor of the second lap. */
	*ring(0) = PackedDesc{ kBufGpa, 16, 0, 0 };
	EXPECT_EQ(pop(), PopStatus::Empty);
	/* The second lap's available pattern, while the device is in the first. */
	*ring(0) = PackedDesc{ kBufGpa, 16, 0, kPackedDescFUsed };
	EXPECT_EQ(pop(), PopStatus::Empty);

	/* In the second lap, AVAIL without USED is stale, not available. */
	startAt(0, false);
	*ring(0) = PackedDesc{ kBufGpa, 16, 0, kPackedDescFAvail };
	EXPECT_EQ(pop(), PopStatus::Empty);
	*ring(0) = PackedDesc{ kBufGpa, 16, 0, kPackedDescFUsed };
	EXPECT_EQ(pop(), PopStatus::Ok);
	EXPECT_EQ(queue_.stats().emptyPolls.get(), 4u);
	EXPECT_FALSE(queue_.isBroken());
}

TEST_F(PackedQueueRing, BreaksWhenTheDriverReusesADescriptorTheDeviceHolds)
{
	for (uint16_t i = 0; i < kN; i++)
		makeAvailable({ { kBufGpa, 16 } }, i);
	for (uint16_t i = 0; i < kN; i++)
		ASSERT_EQ(pop(), PopStatus::Ok) << i;
	EXPECT_EQ(queue_.inFlight(), kN);
	EXPECT_EQ(pop(), PopStatus::Empty) << "descriptor 0 still shows the first lap";

	/* The driver makes descriptor 0 available for the second lap without it being used. */
	makeAvailable({ { kBufGpa, 16 } }, 0);
	expectBroken();
}

TEST_F(PackedQueueRing, BreaksWhenAChainRunsIntoADescriptorTheDeviceHolds)
{
	makeAvailable({ { kBufGpa, 16 } }, 0);
	ASSERT_EQ(pop(), PopStatus::Ok); /* position 0 stays in flight */
	for (uint16_t i = 1; i < kN; i++)
		*ring(i) = PackedDesc{ kBufGpa, 16, kNotTheId,
				       static_cast<uint16_t>(availBits(true) | kPackedDescFNext) };
	/* ... and on into position 0 with the second lap's bits. */
	*ring(0) = PackedDesc{ kBufGpa, 16, 3, availBits(false) };
	expectBroken();
}

TEST_F(PackedQueueRing, ResetForgetsBrokenStateAndRing)
{
	makeAvailable({ { kBufGpa, 16 } }, 0xffff);
	ASSERT_EQ(pop(), PopStatus::Broken);
	queue_.reset();
	EXPECT_FALSE(queue_.isBroken());
	EXPECT_FALSE(queue_.isReady());
	EXPECT_FALSE(queue_.isTranslated());
	EXPECT_FALSE(queue_.hasAddresses());
	EXPECT_EQ(queue_.base(), 0x80008000u);
	EXPECT_EQ(queue_.size(), kN) << "the size is kept";
	EXPECT_EQ(pop(), PopStatus::Empty);
}

/* ---- Used descriptors ---- */

TEST_F(PackedQueueRing, TheDriverSeesNoUsedDescriptorUntilPublishUsed)
{
	makeAvailable({ { kBufGpa, 16, kPackedDescFWrite } }, 3);
	makeAvailable({ { kBufGpa + 0x100, 16, kPackedDescFNext },
			{ kBufGpa + 0x200, 16, kPackedDescFWrite } },
		      6);
	makeAvailable({ { kBufGpa + 0x300, 16 } }, 1);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);
	uint16_t headFlags = flagsAt(0);

	queue_.addUsed(3, 11, 1);
	queue_.addUsed(6, 16, 2);
	queue_.addUsed(1, 0, 1);
	EXPECT_EQ(queue_.nextUsed(), 4u);
	EXPECT_EQ(queue_.inFlight(), 0u);
	/*
	 * The driver sees none of the batch yet: it reads used descriptors in ring order, and
	 * the first one keeps the flags the driver gave it.
	 */
	EXPECT_EQ(flagsAt(0), headFlags);

	queue_.publishUsed();
	EXPECT_EQ(ring(0)->id, 3u);
	EXPECT_EQ(ring(0)->len, 11u);
	EXPECT_EQ(flagsAt(0), usedBits(true) | kPackedDescFWrite);
	EXPECT_EQ(flagsAt(1), usedBits(true) | kPackedDescFWrite);
	EXPECT_EQ(flagsAt(3), usedBits(true)) << "no WRITE for length 0";
	EXPECT_EQ(ring(1)->id, 6u);
	EXPECT_EQ(ring(1)->len, 16u);
	EXPECT_EQ(ring(3)->id, 1u);
	EXPECT_EQ(ring(3)->len, 0u);
	EXPECT_EQ(flagsAt(2) & (kPackedDescFAvail | kPackedDescFUsed), kPackedDescFAvail)
		<< "the second descriptor of a chain is skipped, not written";

	/* A publishUsed() with nothing added writes nothing. */
	setFlags(0, 0x1234);
	queue_.publishUsed();
	EXPECT_EQ(flagsAt(0), 0x1234u);
}

TEST_F(PackedQueueRing, ChainsGivenBackWhileTheRingIsUnmappedArePublishedWhenItIsBack)
{
	makeAvailable({ { kBufGpa, 16, kPackedDescFWrite } }, 3);
	makeAvailable({ { kBufGpa + 0x100, 16, kPackedDescFWrite } }, 4);
	makeAvailable({ { kBufGpa + 0x200, 16, kPackedDescFWrite } }, 5);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);
	/* One given back while mapped, then the mapping goes (a new memory table) and two more. */
	queue_.addUsed(3, 1, 1);
	queue_.untranslate();
	queue_.addUsed(4, 2, 1);
	queue_.addUsed(5, 3, 1);
	queue_.publishUsed();
	EXPECT_EQ(flagsAt(0) & kPackedDescFUsed, 0u) << "nothing published without a ring";
	ASSERT_TRUE(queue_.translate(*memory_).has_value());
	queue_.publishUsed();
	for (uint16_t i = 0; i < 3; i++) {
		EXPECT_EQ(ring(i)->id, 3u + i);
		EXPECT_EQ(ring(i)->len, 1u + i);
		EXPECT_EQ(flagsAt(i), usedBits(true) | kPackedDescFWrite) << "descriptor " << i;
	}
	EXPECT_EQ(queue_.nextUsed(), 3u);
}

TEST_F(PackedQueueRing, AddUsedFlipsTheUsedWrapCounterAtTheRingEnd)
{
	startAt(6, true);
	makeAvailable({ { kBufGpa, 16, kPackedDescFNext },
			{ kBufGpa, 16, kPackedDescFNext },
			{ kBufGpa, 16 } },
		      2);
	makeAvailable({ { kBufGpa, 16 } }, 5);
	ASSERT_EQ(pop(), PopStatus::Ok);
	uint16_t count = queue_.lastDescCount();
	ASSERT_EQ(pop(), PopStatus::Ok);
	/* Completion order differs from ring order. */
	queue_.addUsed(5, 1, 1);
	queue_.addUsed(2, 2, count);
	EXPECT_EQ(queue_.nextUsed(), 2u);
	EXPECT_FALSE(queue_.usedWrap());
	queue_.publishUsed();
	EXPECT_EQ(ring(6)->id, 5u);
	EXPECT_EQ(flagsAt(6), usedBits(true) | kPackedDescFWrite);
	EXPECT_EQ(ring(7)->id, 2u);
	EXPECT_EQ(flagsAt(7), usedBits(true) | kPackedDescFWrite) << "written in the first lap";
	EXPECT_EQ(queue_.base(), 2u | 2u << 16) << "both halves in the second lap";

	/* The next used descriptor carries the second lap's bits: both clear. */
	makeAvailable({ { kBufGpa, 16 } }, 4);
	ASSERT_EQ(pop(), PopStatus::Ok);
	queue_.addUsed(4, 0, 1);
	queue_.publishUsed();
	EXPECT_EQ(flagsAt(2), 0u);
}

/* ---- Notifications ---- */

TEST_F(PackedQueueRing, NotifiesUnlessDisabledWithoutEventIdx)
{
	queue_.addUsed(0, 1, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());
	setDriverEvent(kPackedEventFlagDisable);
	queue_.addUsed(1, 1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());
	setDriverEvent(kPackedEventFlagDesc, 7, true); /* DESC means nothing without EVENT_IDX */
	EXPECT_TRUE(queue_.needsNotification());
	setDriverEvent(kPackedEventFlagEnable);
	EXPECT_TRUE(queue_.needsNotification());
	EXPECT_EQ(queue_.stats().notificationsSent.get(), 3u);
	EXPECT_EQ(queue_.stats().notificationsSuppressed.get(), 1u);
}

TEST_F(PackedQueueRing, NotifiesWhenTheEventDescriptorIsUsedWithEventIdx)
{
	queue_.setEventIdx(true);
	setDriverEvent(kPackedEventFlagDesc, 6, true);
	queue_.addUsed(0, 1, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification()) << "the first notification is always sent";

	/* The driver wants an event once the descriptor at its used position (1) is used. */
	setDriverEvent(kPackedEventFlagDesc, 1, true);
	queue_.addUsed(1, 1, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());

	/* The driver asks for an event further ahead. */
	setDriverEvent(kPackedEventFlagDesc, 5, true);
	queue_.addUsed(2, 1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());

	/* A batch that uses the event descriptor (3 is in [3, 5)). */
	setDriverEvent(kPackedEventFlagDesc, 3, true);
	queue_.addUsed(3, 1, 1);
	queue_.addUsed(4, 1, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());

	/* The event descriptor already passed before this batch: no new event. */
	queue_.addUsed(5, 1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());

	/* A batch across the ring end (6, 7, 0, 1) that uses 7 of the first lap. */
	setDriverEvent(kPackedEventFlagDesc, 7, true);
	queue_.addUsed(0, 1, 2);
	queue_.addUsed(1, 1, 2);
	queue_.publishUsed();
	ASSERT_FALSE(queue_.usedWrap());
	EXPECT_TRUE(queue_.needsNotification());

	/* An event in the second lap, ahead and then used. */
	setDriverEvent(kPackedEventFlagDesc, 3, false);
	queue_.addUsed(2, 1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());
	queue_.addUsed(3, 1, 2);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());

	EXPECT_EQ(queue_.stats().notificationsSent.get(), 5u);
	EXPECT_EQ(queue_.stats().notificationsSuppressed.get(), 3u);
}

TEST_F(PackedQueueRing, EventIdxHonoursEnableAndDisableFlags)
{
	queue_.setEventIdx(true);
	setDriverEvent(kPackedEventFlagDisable);
	queue_.addUsed(0, 1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification()) << "DISABLE wins even for the first";
	setDriverEvent(kPackedEventFlagEnable, 100);
	queue_.addUsed(1, 1, 1);
	queue_.publishUsed();
	EXPECT_TRUE(queue_.needsNotification());
	/* DESC at a descriptor already used before the last notification. */
	setDriverEvent(kPackedEventFlagDesc, 1, true);
	queue_.addUsed(2, 1, 1);
	queue_.publishUsed();
	EXPECT_FALSE(queue_.needsNotification());
}

TEST_F(PackedQueueRing, DisableNotificationWritesDisable)
{
	ASSERT_EQ(deviceEvent()->flags, kPackedEventFlagEnable);
	queue_.disableNotification();
	EXPECT_EQ(deviceEvent()->flags, kPackedEventFlagDisable);
	EXPECT_FALSE(queue_.enableNotification()) << "nothing was made available meanwhile";
	EXPECT_EQ(deviceEvent()->flags, kPackedEventFlagEnable);

	queue_.setEventIdx(true);
	queue_.disableNotification();
	EXPECT_EQ(deviceEvent()->flags, kPackedEventFlagDisable) << "with EVENT_IDX too";
}

TEST_F(PackedQueueRing, EnableNotificationReportsBuffersMadeAvailableMeanwhile)
{
	queue_.disableNotification();
	makeAvailable({ { kBufGpa, 16 } }, 0);
	EXPECT_TRUE(queue_.enableNotification());
	EXPECT_EQ(deviceEvent()->flags, kPackedEventFlagEnable);
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_FALSE(queue_.enableNotification());
}

TEST_F(PackedQueueRing, EnableNotificationWritesTheNextAvailPositionWithEventIdx)
{
	queue_.setEventIdx(true);
	startAt(6, true);
	makeAvailable({ { kBufGpa, 16 } }, 0);
	makeAvailable({ { kBufGpa, 16 } }, 1);
	ASSERT_EQ(pop(), PopStatus::Ok);
	ASSERT_EQ(pop(), PopStatus::Ok);

	queue_.disableNotification();
	EXPECT_EQ(deviceEvent()->flags, kPackedEventFlagDisable);
	EXPECT_FALSE(queue_.enableNotification());
	EXPECT_EQ(deviceEvent()->flags, kPackedEventFlagDesc);
	EXPECT_EQ(deviceEvent()->offWrap, 0u) << "position 0 of the second lap: wrap bit clear";

	makeAvailable({ { kBufGpa, 16 } }, 2);
	EXPECT_TRUE(queue_.enableNotification()) << "a descriptor is available at the event";
	ASSERT_EQ(pop(), PopStatus::Ok);
	EXPECT_FALSE(queue_.enableNotification());
	EXPECT_EQ(deviceEvent()->offWrap, 1u);
}

/* ---- Double fetch ---- */

TEST_F(PackedQueueRing, ChainKeepsCopiesWhenTheGuestRewritesDescriptors)
{
	makeAvailable({ { kBufGpa, 100, kPackedDescFNext },
			{ kBufGpa + 0x1000, 200, kPackedDescFWrite } },
		      4);
	ASSERT_EQ(pop(), PopStatus::Ok);

	/* The guest rewrites the chain after the device validated it. */
	*ring(0) = PackedDesc{ 0x10, 0xffffffff, 0xffff,
			       static_cast<uint16_t>(availBits(true) | kPackedDescFWrite |
						     kPackedDescFNext) };
	*ring(1) = PackedDesc{ kGpa, 0, 7, kPackedDescFIndirect };

	EXPECT_EQ(chain_.head, 4u);
	ASSERT_EQ(chain_.bufferCount, 2u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 100, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x1000), 200, true);
	EXPECT_EQ(chain_.readableBytes, 100u);
	EXPECT_EQ(chain_.writableBytes, 200u);
	EXPECT_EQ(queue_.lastDescCount(), 2u);
	EXPECT_EQ(pop(), PopStatus::Empty)
		<< "rewritten descriptors behind the position are not read";
}

TEST_F(PackedQueueRing, ChainKeepsCopiesWhenTheGuestRewritesAnIndirectTable)
{
	queue_.setIndirect(true);
	PackedDesc *t = table(kTableGpa);
	setEntry(t, 0, kBufGpa, 64);
	setEntry(t, 1, kBufGpa + 0x100, 128, kPackedDescFWrite);
	makeAvailable({ { kTableGpa, 2 * 16, kPackedDescFIndirect } }, 0);
	ASSERT_EQ(pop(), PopStatus::Ok);

	setEntry(t, 0, UINT64_MAX - 0x100, 0xffffffff, kPackedDescFIndirect);
	setEntry(t, 1, 0, 0, kPackedDescFNext);

	ASSERT_EQ(chain_.bufferCount, 2u);
	expectPiece(chain_.buffers[0], ram_.hva(kBufGpa), 64, false);
	expectPiece(chain_.buffers[1], ram_.hva(kBufGpa + 0x100), 128, true);
}

/* ---- Inflight I/O tracking (vhost-user "Inflight I/O tracking", packed virtqueues) ---- */

/* The region of one queue of 8 entries, as the front-end keeps it between back-ends. */
struct PackedInflightRegion {
	alignas(64) uint8_t bytes[inflightQueueBytesPacked(8)]{};
	InflightQueuePacked &header() { return *reinterpret_cast<InflightQueuePacked *>(bytes); }
	InflightDescPacked &desc(uint16_t state) { return header().desc()[state]; }
	/* The states on the free list (a list that loops counts once per state). */
	unsigned freeStates()
	{
		std::vector<bool> seen(8);
		unsigned n = 0;
		for (uint16_t s = header().freeHead; s < 8 && !seen[s]; s = desc(s).next) {
			seen[s] = true;
			n++;
		}
		return n;
	}
	/* The head state of the chain in flight whose buffer id is \a id; 0xffff if none. */
	uint16_t headOf(uint16_t id)
	{
		for (uint16_t s = 0; s < 8; s++) {
			if (desc(s).inflight == 1 && desc(s).last < 8 &&
			    desc(desc(s).last).id == id)
				return s;
		}
		return 0xffff;
	}
	unsigned inFlight()
	{
		unsigned n = 0;
		for (uint16_t s = 0; s < 8; s++)
			n += desc(s).inflight == 1;
		return n;
	}
};

class PackedQueueInflight : public PackedQueueRing
{
protected:
	/* A new back-end's stale base (QEMU keeps the one of the last start): both halves 0/1. */
	static constexpr uint32_t kStaleBase = 0x80008000;

	void SetUp() override
	{
		static_assert(kN == 8);
		PackedQueueRing::SetUp();
		queue_.setInflight(&region_.header());
		ASSERT_EQ(queue_.recoverInflight(), 0u);
	}
	static uint64_t bufGpa(uint16_t id, uint16_t k) { return kBufGpa + 0x100 * id + 0x40 * k; }
	/* Post the chain of buffer id \a id: \a n readable descriptors of 64 bytes. */
	void post(uint16_t id, uint16_t n = 1)
	{
		std::vector<D> chain;
		for (uint16_t k = 0; k < n; k++)
			chain.push_back(D{ bufGpa(id, k), 64,
					   k + 1 < n ? kPackedDescFNext : uint16_t{ 0 } });
		makeAvailable(chain, id);
	}
	/* Pop \a n chains; each must be one that post() made, with its buffers. */
	std::vector<uint16_t> popIds(size_t n)
	{
		std::vector<uint16_t> ids;
		for (size_t i = 0; i < n; i++) {
			EXPECT_EQ(pop(), PopStatus::Ok) << chainErrorName(queue_.lastError());
			ids.push_back(chain_.head);
			EXPECT_EQ(chain_.bufferCount, queue_.lastDescCount());
			for (uint32_t k = 0; k < chain_.bufferCount; k++)
				expectPiece(chain_.buffers[k],
					    ram_.hva(bufGpa(chain_.head, static_cast<uint16_t>(k))),
					    64, false);
		}
		return ids;
	}
	/*
	 * The back-end died and a new one starts on the same rings and region: the queue reset,
	 * then configured as SET_VRING_NUM/ADDR/BASE and the kick would.
	 */
	uint16_t restart(uint32_t base = kStaleBase)
	{
		reconfigure();
		EXPECT_TRUE(queue_.setBase(base).has_value());
		queue_.setInflight(&region_.header());
		uint16_t lined = queue_.recoverInflight();
		queue_.setReady(true);
		return lined;
	}
	/* A reset queue given its ring again, as SET_VRING_ADDR would. */
	void reconfigure()
	{
		queue_.reset();
		EXPECT_TRUE(queue_.setAddresses(ram_.qva(kDescGpa), ram_.qva(kDriverEventGpa),
						ram_.qva(kDeviceEventGpa))
				    .has_value());
		EXPECT_TRUE(queue_.translate(*memory_).has_value());
	}
	/* The used descriptor the driver sees at ring position \a i: its id, or -1. */
	int usedIdAt(uint16_t i, bool wrap) const
	{
		return flagsAt(i) == usedBits(wrap) ? ring(i)->id : -1;
	}

	PackedInflightRegion region_;
};

TEST_F(PackedQueueInflight, StartsANewRegion)
{
	EXPECT_EQ(region_.header().version, kInflightVersion);
	EXPECT_EQ(region_.header().descNum, kN);
	EXPECT_EQ(region_.header().usedIdx, 0u);
	EXPECT_EQ(region_.header().usedWrapCounter, 1u);
	EXPECT_EQ(region_.header().oldUsedWrapCounter, 1u);
	EXPECT_EQ(region_.freeStates(), kN);
	EXPECT_EQ(region_.desc(kN - 1).next, kN) << "the list ends at the size, as DPDK's does";
}

TEST_F(PackedQueueInflight, RecordsTakenChainsUntilTheirUseIsPublished)
{
	post(5);
	post(2, 3);
	post(7);
	EXPECT_EQ(popIds(3), (std::vector<uint16_t>{ 5, 2, 7 }));
	uint16_t h5 = region_.headOf(5), h2 = region_.headOf(2), h7 = region_.headOf(7);
	ASSERT_LT(h5, kN);
	ASSERT_LT(h2, kN);
	ASSERT_LT(h7, kN);
	EXPECT_LT(region_.desc(h5).counter, region_.desc(h2).counter);
	EXPECT_LT(region_.desc(h2).counter, region_.desc(h7).counter);
	/* Chain 2: three copies linked from its head, in ring order. */
	EXPECT_EQ(region_.desc(h2).num, 3u);
	uint16_t s = h2;
	for (uint16_t k = 0; k < 3; k++) {
		EXPECT_EQ(region_.desc(s).addr, bufGpa(2, k));
		EXPECT_EQ(region_.desc(s).len, 64u);
		if (k < 2)
			s = region_.desc(s).next;
	}
	EXPECT_EQ(region_.desc(h2).last, s);
	EXPECT_EQ(region_.desc(s).id, 2u);
	EXPECT_EQ(region_.freeStates(), kN - 5u);
	EXPECT_EQ(region_.header().freeHead, region_.header().oldFreeHead);

	queue_.addUsed(2, 0, 3);
	queue_.addUsed(5, 0, 1);
	EXPECT_EQ(region_.desc(h2).inflight, 1) << "cleared before it is published";
	EXPECT_EQ(region_.header().usedIdx, 0u);
	queue_.publishUsed();
	EXPECT_EQ(usedIdAt(0, true), 2);
	EXPECT_EQ(region_.desc(h2).inflight, 0);
	EXPECT_EQ(region_.desc(h5).inflight, 0);
	EXPECT_EQ(region_.desc(h7).inflight, 1);
	EXPECT_EQ(region_.header().usedIdx, 4u);
	EXPECT_EQ(region_.header().oldUsedIdx, 4u);
	EXPECT_EQ(region_.header().oldFreeHead, region_.header().freeHead);
	EXPECT_EQ(region_.freeStates(), kN - 1u);
}

TEST_F(PackedQueueInflight, ARestartTakesUnreturnedChainsAgainInTheirOrderThenNewOnes)
{
	/* Taken 6, 1 (two descriptors), 4; only 1 returned, out of order; then the driver adds 3.
	 */
	post(6);
	post(1, 2);
	post(4);
	popIds(3);
	queue_.addUsed(1, 0, 2);
	queue_.publishUsed();
	EXPECT_EQ(usedIdAt(0, true), 1) << "chain 6's descriptor is overwritten in the ring";
	post(3);

	EXPECT_EQ(restart(), 2u);
	EXPECT_EQ(queue_.nextUsed(), 2u) << "the region's used position, not the stale base";
	EXPECT_EQ(queue_.nextAvail(), 4u) << "past the two chains in flight";
	EXPECT_EQ(queue_.available(8), 3u);
	EXPECT_EQ(popIds(3), (std::vector<uint16_t>{ 6, 4, 3 }))
		<< "the two chains in flight first, from their copies, then the new one";
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.nextAvail(), 5u);
	/* Nothing handed back twice: each is used once more, and the region ends empty. */
	for (uint16_t id : { 6, 4, 3 })
		queue_.addUsed(id, 0, 1);
	queue_.publishUsed();
	EXPECT_EQ(usedIdAt(2, true), 6);
	EXPECT_EQ(usedIdAt(3, true), 4);
	EXPECT_EQ(usedIdAt(4, true), 3);
	EXPECT_EQ(region_.inFlight(), 0u);
	EXPECT_EQ(region_.freeStates(), kN);
	EXPECT_EQ(restart(), 0u);
	EXPECT_EQ(pop(), PopStatus::Empty);
	EXPECT_EQ(queue_.nextAvail(), 5u);
	EXPECT_EQ(queue_.nextUsed(), 5u);
}

TEST_F(PackedQueueInflight, ARestartKeepsABatchTheDriverSawAndRollsBackOneItDidNot)
{
	post(0);
	post(3);
	post(5);
	popIds(3);
	PackedInflightRegion before = region_;
	queue_.addUsed(3, 0, 1);
	queue_.addUsed(0, 0, 1);
	queue_.publishUsed();
	PackedInflightRegion after = region_;
	/* Died after publishing, before clearing the batch and moving the old values. */
	auto diedMidBatch = [&] {
		region_ = after;
		region_.header().oldFreeHead = before.header().oldFreeHead;
		region_.header().oldUsedIdx = before.header().oldUsedIdx;
		region_.desc(before.headOf(3)).inflight = 1;
		region_.desc(before.headOf(0)).inflight = 1;
	};
	diedMidBatch();
	EXPECT_EQ(restart(), 1u) << "the driver saw the batch: only 5 is still in flight";
	EXPECT_EQ(queue_.nextUsed(), 2u);
	EXPECT_EQ(popIds(1), (std::vector<uint16_t>{ 5 }));
	EXPECT_EQ(region_.header().oldUsedIdx, 2u);

	/* The same, but the first used descriptor of the batch never got its flags. */
	diedMidBatch();
	setFlags(0, availBits(true));
	EXPECT_EQ(restart(), 3u) << "the driver saw nothing: all three again";
	EXPECT_EQ(queue_.nextUsed(), 0u);
	EXPECT_EQ(queue_.nextAvail(), 3u);
	EXPECT_EQ(popIds(3), (std::vector<uint16_t>{ 0, 3, 5 }));
}

TEST_F(PackedQueueInflight, ChainsReturnedButNotPublishedComeAgain)
{
	post(1);
	post(2, 2);
	popIds(2);
	queue_.addUsed(2, 0, 2);
	queue_.addUsed(1, 0, 1);
	/* Died before publishUsed(): the region does not know of the batch. */
	EXPECT_EQ(restart(), 2u);
	EXPECT_EQ(popIds(2), (std::vector<uint16_t>{ 1, 2 }));
}

TEST_F(PackedQueueInflight, UsedDescriptorsNeverPublishedDoNotShowAfterARestart)
{
	post(1);
	post(2);
	post(3);
	popIds(3);
	for (uint16_t id : { 1, 2, 3 })
		queue_.addUsed(id, 0, 1);
	/* Died before publishing: all but the first have their used flags already. */
	EXPECT_EQ(usedIdAt(0, true), -1);
	EXPECT_EQ(usedIdAt(1, true), 2);
	EXPECT_EQ(restart(), 3u);
	EXPECT_EQ(usedIdAt(1, true), -1) << "the driver would take chain 2 as used";
	EXPECT_EQ(usedIdAt(2, true), -1);
	EXPECT_EQ(popIds(1), (std::vector<uint16_t>{ 1 }));
	queue_.addUsed(1, 0, 1);
	queue_.publishUsed();
	EXPECT_EQ(usedIdAt(0, true), 1);
	EXPECT_EQ(usedIdAt(1, true), -1) << "only what this back-end published shows";
}

TEST_F(PackedQueueInflight, ARestartFindsTheChainsOfTheUsualPath)
{
	/* Chains of one direct descriptor: popUsualBurst takes them, a burst at a time. */
	for (uint16_t id = 0; id < 4; id++)
		post(id);
	std::array<DescBuffer, 4> buffers{};
	std::array<uint16_t, 4> ids{};
	ASSERT_EQ(queue_.popUsualBurst(*memory_, buffers.data(), ids.data(), 4,
				       [](uint16_t, const DescBuffer &) { return true; }),
		  4u);
	EXPECT_EQ(region_.inFlight(), 4u);
	queue_.addUsed(ids[0], 0, 1);
	queue_.publishUsed();
	EXPECT_EQ(restart(), 3u);
	EXPECT_EQ(popIds(3), (std::vector<uint16_t>{ 1, 2, 3 }));
}

TEST_F(PackedQueueInflight, AnInOrderReturnClearsEveryChainUpToIt)
{
	post(5);
	post(2, 2);
	post(7);
	popIds(3);
	/* IN_ORDER: one used descriptor, the last chain's id, over all their descriptors. */
	queue_.addUsed(2, 0, 3);
	queue_.publishUsed();
	EXPECT_EQ(region_.inFlight(), 1u);
	EXPECT_LT(region_.headOf(7), kN);
	EXPECT_EQ(region_.freeStates(), kN - 1u);
	queue_.addUsed(7, 0, 1);
	queue_.publishUsed();
	EXPECT_EQ(region_.inFlight(), 0u);
	EXPECT_EQ(region_.freeStates(), kN);
}

TEST_F(PackedQueueInflight, RewindForgetsTheChainsTakenSince)
{
	post(1);
	post(2, 2);
	post(3);
	popIds(1);
	uint32_t position = queue_.availPosition();
	popIds(2);
	EXPECT_EQ(region_.inFlight(), 3u);
	queue_.rewindAvail(position);
	EXPECT_EQ(region_.inFlight(), 1u);
	EXPECT_LT(region_.headOf(1), kN);
	EXPECT_EQ(region_.freeStates(), kN - 1u);
	EXPECT_EQ(popIds(2), (std::vector<uint16_t>{ 2, 3 }));
	EXPECT_EQ(region_.inFlight(), 3u);
	EXPECT_EQ(region_.freeStates(), kN - 4u);
	EXPECT_EQ(restart(), 3u);
	EXPECT_EQ(popIds(3), (std::vector<uint16_t>{ 1, 2, 3 }));
}

TEST_F(PackedQueueInflight, AHostileRegionIsStartedAfreshOrBounded)
{
	post(2);
	post(4, 2);
	popIds(2);
	/* A size the ring does not have: nothing is trusted, the front-end's base stands. */
	region_.header().descNum = kN * 2;
	EXPECT_EQ(restart(), 0u);
	EXPECT_EQ(region_.header().descNum, kN);
	EXPECT_EQ(region_.freeStates(), kN);
	EXPECT_EQ(queue_.nextAvail(), 0u);

	/* Positions beyond the ring or wrap counters that are not 0 or 1. */
	popIds(2);
	region_.header().usedIdx = kN + 1;
	EXPECT_EQ(restart(), 0u);
	popIds(2);
	region_.header().oldUsedWrapCounter = 2;
	EXPECT_EQ(restart(), 0u);

	/* A chain longer than the ring, one that runs into the free list, a wrong last state. */
	popIds(2);
	region_.desc(region_.headOf(4)).num = kN + 1;
	EXPECT_EQ(restart(), 0u);
	popIds(2);
	region_.desc(region_.headOf(4)).next = region_.header().freeHead;
	EXPECT_EQ(restart(), 0u);
	popIds(2);
	region_.desc(region_.headOf(4)).last = region_.headOf(4);
	EXPECT_EQ(restart(), 0u);

	/* Garbage that costs nothing: a flag neither 0 nor 1, a free list that loops. */
	popIds(2);
	uint16_t spare = region_.header().freeHead;
	region_.desc(spare).inflight = 0x7f;
	region_.desc(spare).next = spare;
	EXPECT_EQ(restart(), 2u);
	EXPECT_EQ(region_.desc(spare).inflight, 0) << "a flag that is neither 0 nor 1 is cleared";
	EXPECT_EQ(region_.freeStates(), kN - 3u) << "every state no chain holds is free again";

	/* A copy whose buffer is not in guest memory: the chain is refused, not trusted. */
	region_.desc(region_.headOf(2)).addr = 0xdead00000000;
	EXPECT_EQ(restart(), 2u);
	EXPECT_EQ(pop(), PopStatus::BadChain);
	EXPECT_EQ(queue_.lastError(), ChainError::BadAddress);
	EXPECT_EQ(chain_.head, 2u);
	EXPECT_EQ(queue_.lastDescCount(), 1u) << "returned with length 0, like any refused chain";
	EXPECT_EQ(popIds(1), (std::vector<uint16_t>{ 4 }));
	EXPECT_FALSE(queue_.isBroken());
}

TEST_F(PackedQueueInflight, ADriverReusingDescriptorsNotYetSeenUsedCostsNoState)
{
	for (uint16_t id = 0; id < kN; id++)
		post(id);
	popIds(kN);
	EXPECT_EQ(region_.freeStates(), 0u);
	for (uint16_t id = 0; id < 4; id++)
		queue_.addUsed(id, 0, 1);
	/* The driver cannot have seen them used, yet it makes those descriptors available. */
	post(8 % kN);
	EXPECT_EQ(pop(), PopStatus::Empty) << "its states are free only once published";
	queue_.publishUsed();
	EXPECT_EQ(region_.freeStates(), 4u);
	EXPECT_EQ(region_.inFlight(), 4u);
}

TEST_F(PackedQueueInflight, ResetStopsTracking)
{
	reconfigure();
	queue_.setReady(true);
	post(3);
	popIds(1);
	EXPECT_EQ(region_.inFlight(), 0u);
	EXPECT_EQ(region_.freeStates(), kN);
}

/* ---- PackedDriver against PackedQueue, in one thread ---- */

using test::BufferSpec;
using test::GuestMemoryFd;
using test::PackedDriver;
using test::PackedUsedElem;

/* A small deterministic generator: the same chains on every run. */
class Lcg
{
public:
	explicit Lcg(uint32_t seed) : state_(seed) {}
	uint32_t next(uint32_t bound)
	{
		state_ = state_ * 1664525u + 1013904223u;
		return (state_ >> 8) % bound;
	}

private:
	uint32_t state_;
};

class PackedDriverLoop : public ::testing::Test
{
protected:
	static constexpr uint64_t kGpa = 0x40000000;
	static constexpr size_t kMemSize = 1 << 20;
	static constexpr uint32_t kBufSize = 256;

	/* What the driver posted under one id. */
	struct Posted {
		std::vector<BufferSpec> bufs;
		bool indirect = false;
	};
	/* A chain the device holds. */
	struct Held {
		uint16_t id;
		uint16_t descCount;
		uint32_t written;
	};

	void start(uint16_t size, bool eventIdx = false, bool indirect = false)
	{
		mem_ = GuestMemoryFd::create(kMemSize, kGpa);
		ASSERT_TRUE(mem_);
		driver_ = std::make_unique<PackedDriver>(*mem_, size);
		pool_ = mem_->alloc(size_t{ kBufSize } * 64, 64);
		auto region = MemoryRegion::create(mem_->regionMsg(), UniqueFd(::dup(mem_->fd())));
		ASSERT_TRUE(region) << region.error().what;
		auto memory = GuestMemory::create({ std::move(*region) });
		ASSERT_TRUE(memory);
		memory_ = std::move(*memory);
		queue_ = std::make_unique<PackedQueue>(256);
		configure(*queue_, eventIdx, indirect);
		posted_.assign(size, Posted{});
	}
	void configure(PackedQueue &queue, bool eventIdx, bool indirect)
	{
		ASSERT_TRUE(queue.setSize(driver_->size()).has_value());
		ASSERT_TRUE(queue.setAddresses(driver_->descQva(), driver_->driverEventQva(),
					       driver_->deviceEventQva())
				    .has_value());
		auto translated = queue.translate(*memory_);
		ASSERT_TRUE(translated.has_value()) << translated.error().what;
		queue.setEventIdx(eventIdx);
		queue.setIndirect(indirect);
		queue.setReady(true);
	}

	/* A chain of 1..maxLen buffers from the pool, readable ones first. */
	std::vector<BufferSpec> randomChain(Lcg &rng, uint32_t maxLen)
	{
		uint32_t n = 1 + rng.next(maxLen);
		uint32_t readable = rng.next(n + 1);
		std::vector<BufferSpec> bufs;
		for (uint32_t k = 0; k < n; k++) {
			uint64_t gpa = pool_ + uint64_t{ kBufSize } * rng.next(64);
			uint32_t len = 1 + rng.next(kBufSize);
			bufs.push_back(BufferSpec{ gpa, len, k >= readable });
		}
		return bufs;
	}
	/* Post \a bufs and remember them under their id. \return the id, -1 without room. */
	int post(std::vector<BufferSpec> bufs, bool indirect = false)
	{
		int id = indirect ? driver_->addIndirectChain(bufs) : driver_->addChain(bufs);
		if (id >= 0)
			posted_[id] = Posted{ std::move(bufs), indirect };
		return id;
	}
	/* Post chains while the driver has room. \return how many. */
	unsigned postWhileRoom(Lcg &rng, uint32_t maxLen, bool mixIndirect = false)
	{
		unsigned n = 0;
		for (;;) {
			bool indirect = mixIndirect && rng.next(2) == 0;
			if (post(randomChain(rng, maxLen), indirect) < 0)
				return n;
			n++;
		}
	}
	/* Pop everything, checking each chain against what was posted under its id. */
	void popAll(PackedQueue &queue, std::vector<Held> &held)
	{
		for (;;) {
			auto status = queue.pop(*memory_, storage_, chain_);
			if (status == PopStatus::Empty)
				return;
			ASSERT_EQ(status, PopStatus::Ok) << chainErrorName(queue.lastError());
			ASSERT_LT(chain_.head, posted_.size());
			const Posted &p = posted_[chain_.head];
			ASSERT_EQ(chain_.bufferCount, p.bufs.size()) << "id " << chain_.head;
			uint32_t writable = 0;
			for (size_t k = 0; k < p.bufs.size(); k++) {
				const DescBuffer &b = chain_.buffers[k];
				EXPECT_EQ(b.hva,
					  memory_->translateGpa(p.bufs[k].gpa, p.bufs[k].len));
				EXPECT_EQ(b.len, p.bufs[k].len);
				EXPECT_EQ(b.writable, p.bufs[k].writable);
				writable += b.writable ? b.len : 0;
			}
			EXPECT_EQ(chain_.writableBytes, writable);
			EXPECT_EQ(queue.lastDescCount(), p.indirect ? 1u : p.bufs.size());
			held.push_back(Held{ chain_.head, queue.lastDescCount(), writable });
		}
	}
	/* Give back \a held (in the order given) and publish once. */
	void giveBack(PackedQueue &queue, std::vector<Held> &held)
	{
		for (const Held &h : held)
			queue.addUsed(h.id, h.written, h.descCount);
		queue.publishUsed();
		held.clear();
	}
	/* The driver collects exactly \a expected, in order. */
	void expectCollected(const std::vector<Held> &expected)
	{
		std::vector<PackedUsedElem> used = driver_->collectUsed();
		ASSERT_EQ(used.size(), expected.size());
		for (size_t k = 0; k < used.size(); k++) {
			EXPECT_EQ(used[k].id, expected[k].id);
			EXPECT_EQ(used[k].len, expected[k].written);
		}
	}

	std::unique_ptr<GuestMemoryFd> mem_;
	std::unique_ptr<PackedDriver> driver_;
	std::unique_ptr<GuestMemory> memory_;
	std::unique_ptr<PackedQueue> queue_;
	std::vector<Posted> posted_;
	uint64_t pool_ = 0;
	std::array<DescBuffer, 16> storage_{};
	DescriptorChain chain_;
};

TEST_F(PackedDriverLoop, HundredsOfChainsOverManyLapsOfARingOfFive)
{
	start(5);
	Lcg rng(1);
	unsigned chains = 0;
	unsigned descriptors = 0;
	std::vector<Held> held;
	while (chains < 600) {
		postWhileRoom(rng, 3);
		popAll(*queue_, held);
		ASSERT_FALSE(held.empty());
		EXPECT_EQ(queue_->nextAvail(), driver_->availIdx());
		EXPECT_EQ(queue_->availWrap(), driver_->availWrap());
		/* Complete in another order than the ring's, sometimes only part of them. */
		std::reverse(held.begin(), held.end());
		std::vector<Held> rest;
		if (held.size() > 1 && rng.next(3) == 0) {
			rest.assign(held.begin() + 1, held.end());
			held.erase(held.begin() + 1, held.end());
		}
		std::vector<Held> returned = held;
		for (const Held &h : held)
			descriptors += h.descCount;
		chains += static_cast<unsigned>(held.size());
		giveBack(*queue_, held);
		expectCollected(returned);
		held = std::move(rest);
		if (HasFatalFailure())
			return;
	}
	EXPECT_GT(descriptors / 5, 100u) << "laps of the ring";
	EXPECT_EQ(queue_->stats().chains.get(), chains + held.size());
	EXPECT_EQ(driver_->badUsedIds(), 0u);
	EXPECT_FALSE(queue_->isBroken());
	/* Return what is left: both sides then agree on every position. */
	giveBack(*queue_, held);
	driver_->collectUsed();
	EXPECT_EQ(queue_->nextUsed(), driver_->usedIdx());
	EXPECT_EQ(queue_->usedWrap(), driver_->usedWrap());
	EXPECT_EQ(queue_->inFlight(), 0u);
	EXPECT_EQ(driver_->inFlight(), 0u);
	EXPECT_EQ(driver_->numFree(), 5u);
}

TEST_F(PackedDriverLoop, OneChainAtATimeOverManyLaps)
{
	/* A ring of 3 and chains of 1 or 2: every alignment of a chain against the ring end. */
	start(3);
	Lcg rng(7);
	for (unsigned i = 0; i < 500; i++) {
		ASSERT_GE(post(randomChain(rng, 2)), 0);
		std::vector<Held> held;
		popAll(*queue_, held);
		ASSERT_EQ(held.size(), 1u);
		std::vector<Held> returned = held;
		giveBack(*queue_, held);
		expectCollected(returned);
		ASSERT_EQ(queue_->base() & 0xffff, queue_->base() >> 16) << "nothing in flight";
		ASSERT_EQ(queue_->nextUsed(), driver_->usedIdx());
		ASSERT_EQ(queue_->usedWrap(), driver_->usedWrap());
	}
}

TEST_F(PackedDriverLoop, IndirectAndDirectChainsOverManyLaps)
{
	start(5, false, true);
	Lcg rng(3);
	unsigned chains = 0;
	while (chains < 400) {
		postWhileRoom(rng, 4, true);
		std::vector<Held> held;
		popAll(*queue_, held);
		ASSERT_FALSE(held.empty());
		chains += static_cast<unsigned>(held.size());
		std::vector<Held> returned = held;
		giveBack(*queue_, held);
		expectCollected(returned);
		if (HasFatalFailure())
			return;
	}
	EXPECT_EQ(queue_->stats().chains.get(), chains);
	EXPECT_EQ(driver_->badUsedIds(), 0u);
	EXPECT_EQ(driver_->numFree(), 5u);
}

TEST_F(PackedDriverLoop, KicksFollowTheDeviceEventArea)
{
	start(5);
	BufferSpec buf{ pool_, 64, false };
	std::vector<Held> held;

	/* A new ring: ENABLE (zero). */
	ASSERT_GE(post({ buf }), 0);
	EXPECT_TRUE(driver_->needsKick());
	queue_->disableNotification();
	ASSERT_GE(post({ buf }), 0);
	EXPECT_FALSE(driver_->needsKick());
	popAll(*queue_, held);
	giveBack(*queue_, held);
	driver_->collectUsed();
	EXPECT_FALSE(queue_->enableNotification());
	ASSERT_GE(post({ buf }), 0);
	EXPECT_TRUE(driver_->needsKick());
	popAll(*queue_, held);
	giveBack(*queue_, held);
	driver_->collectUsed();

	/* EVENT_IDX: the device asks for a kick at its next avail position, over many laps. */
	queue_->setEventIdx(true);
	Lcg rng(11);
	for (unsigned round = 0; round < 100; round++) {
		EXPECT_FALSE(queue_->enableNotification());
		ASSERT_GE(post(randomChain(rng, 2)), 0);
		EXPECT_TRUE(driver_->needsKick()) << "round " << round;
		ASSERT_GE(post(randomChain(rng, 2)), 0);
		EXPECT_FALSE(driver_->needsKick()) << "round " << round << ": event already passed";
		EXPECT_TRUE(queue_->enableNotification());
		popAll(*queue_, held);
		ASSERT_EQ(held.size(), 2u);
		giveBack(*queue_, held);
		driver_->collectUsed();
	}
}

TEST_F(PackedDriverLoop, NotificationsFollowTheDriverEventAreaOverManyLaps)
{
	start(5, true);
	Lcg rng(5);
	std::vector<Held> held;
	unsigned sent = 0;
	for (unsigned round = 0; round < 300; round++) {
		ASSERT_GE(post(randomChain(rng, 3)), 0);
		popAll(*queue_, held);
		giveBack(*queue_, held);
		bool notify = queue_->needsNotification();
		/* Linux's enable_cb: an event at the driver's own used position, on even rounds. */
		if (round == 0)
			EXPECT_TRUE(notify) << "the first is always sent";
		else
			EXPECT_EQ(notify, round % 2 == 1) << "round " << round;
		sent += notify ? 1 : 0;
		driver_->collectUsed();
		if (round % 2 == 0)
			driver_->setDriverEvent(
				kPackedEventFlagDesc,
				static_cast<uint16_t>(driver_->usedIdx() |
						      (driver_->usedWrap() ? 0x8000 : 0)));
		else
			driver_->setDriverEvent(
				kPackedEventFlagDesc,
				static_cast<uint16_t>(driver_->driverEventOffWrap()));
	}
	EXPECT_EQ(queue_->stats().notificationsSent.get(), sent);
	EXPECT_EQ(queue_->stats().notificationsSuppressed.get(), 300u - sent);
}

TEST_F(PackedDriverLoop, BaseCarriesTheRingToANewQueue)
{
	start(5);
	Lcg rng(9);
	std::vector<Held> held;
	for (unsigned round = 0; round < 7; round++) {
		postWhileRoom(rng, 2);
		popAll(*queue_, held);
		std::vector<Held> returned = held;
		giveBack(*queue_, held);
		expectCollected(returned);
	}
	/* Two chains in flight across the hand-over, as after GET_VRING_BASE. */
	BufferSpec buf{ pool_, 32, true };
	int a = post({ buf });
	int b = post({ buf });
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	popAll(*queue_, held);
	ASSERT_EQ(held.size(), 2u);
	uint32_t base = queue_->base();
	EXPECT_EQ(queue_->inFlight(), 2u);

	PackedQueue next(256);
	configure(next, false, false);
	ASSERT_TRUE(next.setBase(base).has_value());
	EXPECT_EQ(next.base(), base);
	EXPECT_EQ(next.inFlight(), 2u);
	std::vector<Held> returned = held;
	giveBack(next, held);
	expectCollected(returned);
	for (unsigned round = 0; round < 20; round++) {
		postWhileRoom(rng, 3);
		popAll(next, held);
		returned = held;
		giveBack(next, held);
		expectCollected(returned);
	}
	EXPECT_EQ(driver_->badUsedIds(), 0u);
	EXPECT_GT(next.stats().chains.get(), 20u);
	EXPECT_FALSE(next.isBroken());
}

TEST_F(PackedDriverLoop, DriverStopsAtAUsedIdThatWasNotInFlight)
{
	start(5);
	BufferSpec buf{ pool_, 32, false };
	ASSERT_EQ(post({ buf }), 0);
	std::vector<Held> held;
	popAll(*queue_, held);
	queue_->addUsed(4, 0, 1); /* an id the driver never posted */
	queue_->publishUsed();
	EXPECT_TRUE(driver_->collectUsed().empty());
	EXPECT_EQ(driver_->badUsedIds(), 1u);
	EXPECT_EQ(driver_->inFlight(), 1u);
}

TEST_F(PackedDriverLoop, ChainsComeBackOnceAcrossRestartsOverManyLaps)
{
	/*
	 * Back-ends that die at random points (between bursts, with used descriptors added and
	 * not published) and come back on the same rings and inflight region, with a stale base:
	 * every chain the driver posts comes back used exactly once.
	 */
	start(5);
	std::vector<uint64_t> storage((inflightQueueBytesPacked(5) + 7) / 8);
	auto *region = reinterpret_cast<InflightQueuePacked *>(storage.data());
	queue_->setInflight(region);
	ASSERT_EQ(queue_->recoverInflight(), 0u);
	Lcg rng(17);
	std::vector<Held> held;
	unsigned restarts = 0;
	unsigned posted = 0;
	unsigned collected = 0;
	for (unsigned round = 0; round < 400; round++) {
		posted += postWhileRoom(rng, 3);
		popAll(*queue_, held);
		if (HasFatalFailure())
			return;
		/* Return some of them, in another order. */
		for (size_t k = held.size(); k > 1; k--)
			std::swap(held[k - 1], held[rng.next(static_cast<uint32_t>(k))]);
		size_t back = rng.next(static_cast<uint32_t>(held.size() + 1));
		if (rng.next(6) == 0) {
			/* Dies after adding used descriptors, before publishing them. */
			for (size_t k = 0; k < back; k++)
				queue_->addUsed(held[k].id, held[k].written, held[k].descCount);
		} else {
			std::vector<Held> returned(held.begin(), held.begin() + back);
			held.erase(held.begin(), held.begin() + back);
			giveBack(*queue_, returned);
			collected += static_cast<unsigned>(driver_->collectUsed().size());
			if (rng.next(5) != 0)
				continue;
		}
		/* A new back-end: SET_VRING_NUM/ADDR/BASE (stale), then the kick. */
		restarts++;
		queue_ = std::make_unique<PackedQueue>(256);
		ASSERT_TRUE(queue_->setSize(driver_->size()).has_value());
		ASSERT_TRUE(queue_->setAddresses(driver_->descQva(), driver_->driverEventQva(),
						 driver_->deviceEventQva())
				    .has_value());
		ASSERT_TRUE(queue_->translate(*memory_).has_value());
		ASSERT_TRUE(queue_->setBase(0x80008000).has_value());
		queue_->setInflight(region);
		ASSERT_EQ(queue_->recoverInflight(), held.size()) << "round " << round;
		queue_->setReady(true);
		EXPECT_EQ(queue_->nextUsed(), driver_->usedIdx());
		EXPECT_EQ(queue_->usedWrap(), driver_->usedWrap());
		held.clear(); /* the new back-end takes them again */
	}
	popAll(*queue_, held);
	giveBack(*queue_, held);
	collected += static_cast<unsigned>(driver_->collectUsed().size());
	EXPECT_GT(restarts, 50u);
	EXPECT_EQ(collected, posted);
	EXPECT_EQ(driver_->badUsedIds(), 0u) << "a chain came back twice";
	EXPECT_EQ(driver_->inFlight(), 0u) << "a chain was lost";
	EXPECT_EQ(driver_->numFree(), 5u);
	EXPECT_FALSE(queue_->isBroken());
}

} /* namespace */
} /* namespace vub::vhost */
