/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Self-tests of the test peers in tests/common: the guest driver (SplitDriver) is checked against
 * the VIRTIO split-ring layout by playing the device by hand on a second mapping of the memfd, as
 * a back-end would; the test front-end is checked against a fake back-end on a socket.
 */
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/event_fd.h"
#include "vub/base/memory_mapping.h"
#include "vub/vhost/connection.h"
#include "vub/vhost/message.h"
#include "vub/virtio/features.h"
#include "vub/virtio/split_ring.h"

#include "guest_memory_fd.h"
#include "split_driver.h"
#include "test_frontend.h"

namespace vub::test {
namespace {

using vhost::FrontendRequest;
using virtio::SplitDesc;
using virtio::SplitUsedElem;

constexpr uint64_t kGpaBase = 0x100000000ull;
constexpr uint64_t kQvaBase = 0x7f0000000000ull;
constexpr size_t kMemSize = 1 << 20;

/*
 * The device side, played by hand: maps the memfd a second time (as the back-end does after
 * SET_MEM_TABLE) and reads and writes the rings through guest physical addresses.
 */
class HandDevice
{
public:
	HandDevice(const GuestMemoryFd &mem, const SplitDriver &drv)
		: gpa_(mem.gpa()), num_(drv.size()), desc_(drv.descGpa()), avail_(drv.availGpa()),
		  used_(drv.usedGpa())
	{
		auto m = MemoryMapping::mapShared(mem.fd(), mem.size(), 0);
		EXPECT_TRUE(m.has_value());
		map_ = std::move(*m);
	}

	template <typename T>
	T read(uint64_t gpa) const
	{
		T v;
		std::memcpy(&v, map_.data() + (gpa - gpa_), sizeof(T));
		return v;
	}
	template <typename T>
	void write(uint64_t gpa, const T &v)
	{
		std::memcpy(map_.data() + (gpa - gpa_), &v, sizeof(T));
	}

	SplitDesc desc(uint16_t i) const { return read<SplitDesc>(desc_ + 16 * uint64_t{ i }); }
	uint16_t availFlags() const { return read<uint16_t>(avail_); }
	uint16_t availIdx() const
	{
		return std::atomic_ref<uint16_t>(*ptr<uint16_t>(avail_ + 2))
			.load(std::memory_order_acquire);
	}
	uint16_t availRing(uint16_t slot) const
	{
		return read<uint16_t>(avail_ + 4 + 2 * uint64_t{ uint16_t(slot % num_) });
	}
	uint16_t usedEvent() const { return read<uint16_t>(avail_ + 4 + 2 * uint64_t{ num_ }); }
	void setAvailEvent(uint16_t v) { write(used_ + 4 + 8 * uint64_t{ num_ }, v); }
	void setUsedFlags(uint16_t v) { write(used_, v); }

	/* Return \a id / \a len as the next used entry and publish it. */
	void pushUsed(uint32_t id, uint32_t len)
	{
		SplitUsedElem e{ id, len };
		write(used_ + 4 + 8 * uint64_t{ uint16_t(usedIdx_ % num_) }, e);
		usedIdx_++;
		std::atomic_ref<uint16_t>(*ptr<uint16_t>(used_ + 2))
			.store(usedIdx_, std::memory_order_release);
	}

	/* Walk the chain at \a head (direct descriptors only). */
	std::vector<SplitDesc> chain(uint16_t head) const
	{
		std::vector<SplitDesc> out;
		uint16_t i = head;
		for (unsigned n = 0; n < num_; n++) {
			SplitDesc d = desc(i);
			out.push_back(d);
			if (!(d.flags & virtio::kDescFNext))
				break;
			i = d.next;
		}
		return out;
	}

private:
	template <typename T>
	T *ptr(uint64_t gpa) const
	{
		return reinterpret_cast<T *>(map_.data() + (gpa - gpa_));
	}

	MemoryMapping map_;
	uint64_t gpa_;
	uint16_t num_;
	uint64_t desc_, avail_, used_;
	uint16_t usedIdx_ = 0;
};

std::unique_ptr<GuestMemoryFd> makeMemory(uint64_t qva = kQvaBase)
{
	auto mem = GuestMemoryFd::create(kMemSize, kGpaBase, qva);
	EXPECT_NE(mem, nullptr);
	return mem;
}

/* ---- GuestMemoryFd ---- */

TEST(GuestMemoryFd, TranslatesGuestPhysicalToLocalAndFrontendAddresses)
{
	auto mem = makeMemory();
	EXPECT_EQ(mem->gpa(), kGpaBase);
	EXPECT_EQ(mem->qva(), kQvaBase);
	EXPECT_EQ(mem->size(), kMemSize);
	EXPECT_EQ(mem->hostPtr(kGpaBase), mem->base());
	EXPECT_EQ(mem->hostPtr(kGpaBase + 100), mem->base() + 100);
	EXPECT_EQ(mem->hostPtr(kGpaBase - 1), nullptr);
	EXPECT_EQ(mem->hostPtr(kGpaBase + kMemSize), nullptr);
	EXPECT_EQ(mem->gpaToQva(kGpaBase + 0x40), kQvaBase + 0x40);
	EXPECT_EQ(mem->qvaToGpa(kQvaBase + 0x40), kGpaBase + 0x40);
	EXPECT_TRUE(mem->containsGpa(kGpaBase + kMemSize - 8, 8));
	EXPECT_FALSE(mem->containsGpa(kGpaBase + kMemSize - 8, 9));
}

TEST(GuestMemoryFd, UsesTheLocalMappingAsFrontendAddressByDefault)
{
	auto mem = GuestMemoryFd::create(kMemSize, 0);
	ASSERT_NE(mem, nullptr);
	EXPECT_EQ(mem->qva(), reinterpret_cast<uintptr_t>(mem->base()));
}

TEST(GuestMemoryFd, SharesItsBytesThroughTheMemfd)
{
	auto mem = makeMemory();
	auto other = MemoryMapping::mapShared(mem->fd(), mem->size(), 0);
	ASSERT_TRUE(other.has_value());
	const char text[] = "guest";
	mem->write(kGpaBase + 4096, text, sizeof(text));
	EXPECT_EQ(std::memcmp(other->data() + 4096, text, sizeof(text)), 0);
}

TEST(GuestMemoryFd, DescribesItselfAsAMemoryRegion)
{
	auto mem = makeMemory();
	vhost::MemoryRegionMsg r = mem->regionMsg();
	EXPECT_EQ(r.guestPhysAddr, kGpaBase);
	EXPECT_EQ(r.memorySize, kMemSize);
	EXPECT_EQ(r.userspaceAddr, kQvaBase);
	EXPECT_EQ(r.mmapOffset, 0u);
	vhost::MemoryRegionMsg o = mem->regionMsg(0x2000);
	EXPECT_EQ(o.guestPhysAddr, kGpaBase + 0x2000);
	EXPECT_EQ(o.memorySize, kMemSize - 0x2000);
	EXPECT_EQ(o.userspaceAddr, kQvaBase + 0x2000);
	EXPECT_EQ(o.mmapOffset, 0x2000u);
}

TEST(GuestMemoryFd, AllocatesAlignedAndStopsWhenFull)
{
	auto mem = GuestMemoryFd::create(8192, 0x1001, 0x5000);
	ASSERT_NE(mem, nullptr);
	uint64_t a = mem->alloc(3, 1);
	EXPECT_EQ(a, 0x1001u);
	uint64_t b = mem->alloc(16, 16);
	EXPECT_EQ(b % 16, 0u);
	EXPECT_GT(b, a);
	uint64_t c = mem->alloc(4096, 4096);
	EXPECT_EQ(c % 4096, 0u);
	EXPECT_THROW((void)mem->alloc(8192, 8), std::bad_alloc);
	EXPECT_THROW((void)mem->alloc(8, 3), std::invalid_argument);
}

TEST(GuestMemoryFd, MakesIndependentRegions)
{
	auto a = GuestMemoryFd::create(1 << 16, 0, 0);
	auto b = GuestMemoryFd::create(1 << 16, 1 << 20, 0);
	ASSERT_NE(a, nullptr);
	ASSERT_NE(b, nullptr);
	EXPECT_NE(a->fd(), b->fd());
	EXPECT_NE(a->qva(), b->qva());
	EXPECT_EQ(a->hostPtr(1 << 20), nullptr);
	EXPECT_NE(b->hostPtr(1 << 20), nullptr);
}

/* ---- SplitDriver ---- */

TEST(SplitDriver, LaysOutTheRingsWithTheSpecAlignment)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 256);
	EXPECT_EQ(drv.size(), 256);
	EXPECT_EQ(drv.descGpa() % 16, 0u);
	EXPECT_EQ(drv.availGpa() % 2, 0u);
	EXPECT_EQ(drv.usedGpa() % 4, 0u);
	EXPECT_GE(drv.availGpa(), drv.descGpa() + 16 * 256);
	EXPECT_GE(drv.usedGpa(), drv.availGpa() + 6 + 2 * 256);
	EXPECT_LE(drv.usedGpa() + 6 + 8 * 256, kGpaBase + mem->allocated());
	EXPECT_EQ(drv.descQva(), kQvaBase + (drv.descGpa() - kGpaBase));
	EXPECT_EQ(drv.availQva(), kQvaBase + (drv.availGpa() - kGpaBase));
	EXPECT_EQ(drv.usedQva(), kQvaBase + (drv.usedGpa() - kGpaBase));
	EXPECT_EQ(drv.numFree(), 256);
	EXPECT_EQ(drv.usedIdx(), 0);
	EXPECT_EQ(drv.publishedAvailIdx(), 0);

	SplitDriver legacy(*mem, 256, 4096);
	EXPECT_EQ(legacy.usedGpa() % 4096, 0u);
}

TEST(SplitDriver, RejectsQueueSizesThatAreNotPowersOfTwo)
{
	auto mem = makeMemory();
	EXPECT_THROW(SplitDriver(*mem, 0), std::invalid_argument);
	EXPECT_THROW(SplitDriver(*mem, 100), std::invalid_argument);
	EXPECT_THROW(SplitDriver(*mem, 65535), std::invalid_argument);
}

TEST(SplitDriver, LinksAChainWithNextAndMarksWritableBuffers)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 8);
	HandDevice dev(*mem, drv);
	const BufferSpec bufs[] = {
		{ kGpaBase + 0x10000, 12, false },
		{ kGpaBase + 0x11000, 1500, false },
		{ kGpaBase + 0x12000, 2048, true },
	};
	int head = drv.addChain(bufs);
	ASSERT_GE(head, 0);
	EXPECT_EQ(drv.numFree(), 5);

	std::vector<SplitDesc> chain = dev.chain(static_cast<uint16_t>(head));
	ASSERT_EQ(chain.size(), 3u);
	for (size_t k = 0; k < 3; k++) {
		EXPECT_EQ(chain[k].addr, bufs[k].gpa);
		EXPECT_EQ(chain[k].len, bufs[k].len);
		EXPECT_EQ((chain[k].flags & virtio::kDescFWrite) != 0, bufs[k].writable);
		EXPECT_EQ((chain[k].flags & virtio::kDescFNext) != 0, k < 2);
		EXPECT_EQ(chain[k].flags & virtio::kDescFIndirect, 0);
	}
	/* The head sits in the avail ring but is not visible before publish(). */
	EXPECT_EQ(dev.availRing(0), head);
	EXPECT_EQ(dev.availIdx(), 0);
	EXPECT_EQ(drv.availIdx(), 1);
	drv.publish();
	EXPECT_EQ(dev.availIdx(), 1);
	EXPECT_EQ(drv.publishedAvailIdx(), 1);
}

TEST(SplitDriver, PublishesEveryPostedChainAtOnce)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 8);
	HandDevice dev(*mem, drv);
	const BufferSpec one[] = { { kGpaBase + 0x10000, 64, false } };
	const BufferSpec two[] = { { kGpaBase + 0x20000, 64, true },
				   { kGpaBase + 0x21000, 64, true } };
	int a = drv.addChain(one);
	int b = drv.addChain(two);
	int c = drv.addChain(one);
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	ASSERT_GE(c, 0);
	EXPECT_NE(a, b);
	EXPECT_NE(b, c);
	drv.publish();
	EXPECT_EQ(dev.availIdx(), 3);
	EXPECT_EQ(dev.availRing(0), a);
	EXPECT_EQ(dev.availRing(1), b);
	EXPECT_EQ(dev.availRing(2), c);
	EXPECT_EQ(drv.inFlight(), 3u);
}

TEST(SplitDriver, RefusesChainsLongerThanTheFreeDescriptors)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 4);
	std::vector<BufferSpec> five(5, BufferSpec{ kGpaBase + 0x10000, 64, false });
	EXPECT_EQ(drv.addChain(five), -1);
	EXPECT_EQ(drv.addChain(std::span<const BufferSpec>()), -1);
	EXPECT_GE(drv.addChain(std::span(five).first(4)), 0);
	EXPECT_EQ(drv.addChain(std::span(five).first(1)), -1);
	EXPECT_EQ(drv.addIndirectChain(std::span(five).first(1)), -1);
	EXPECT_EQ(drv.numFree(), 0);
}

TEST(SplitDriver, CollectUsedReturnsEntriesAndRecyclesTheirChains)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 4);
	HandDevice dev(*mem, drv);
	const BufferSpec three[] = { { kGpaBase + 0x10000, 64, false },
				     { kGpaBase + 0x11000, 64, false },
				     { kGpaBase + 0x12000, 64, true } };
	const BufferSpec one[] = { { kGpaBase + 0x20000, 64, true } };
	int a = drv.addChain(three);
	int b = drv.addChain(one);
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	drv.publish();
	EXPECT_EQ(drv.numFree(), 0);
	EXPECT_TRUE(drv.collectUsed().empty());

	/* The device completes b first, then a (out of order is allowed). */
	dev.pushUsed(static_cast<uint32_t>(b), 64);
	std::vector<SplitUsedElem> used = drv.collectUsed();
	ASSERT_EQ(used.size(), 1u);
	EXPECT_EQ(used[0].id, static_cast<uint32_t>(b));
	EXPECT_EQ(used[0].len, 64u);
	EXPECT_EQ(drv.numFree(), 1);
	dev.pushUsed(static_cast<uint32_t>(a), 0);
	used = drv.collectUsed();
	ASSERT_EQ(used.size(), 1u);
	EXPECT_EQ(used[0].id, static_cast<uint32_t>(a));
	EXPECT_EQ(drv.numFree(), 4);
	EXPECT_EQ(drv.inFlight(), 0u);
	EXPECT_EQ(drv.lastUsedIdx(), 2);
	EXPECT_EQ(drv.badUsedIds(), 0u);

	/* Every descriptor is free again: a chain of the whole queue fits. */
	const BufferSpec four[] = { { kGpaBase + 0x30000, 1, false },
				    { kGpaBase + 0x30001, 1, false },
				    { kGpaBase + 0x30002, 1, false },
				    { kGpaBase + 0x30003, 1, true } };
	int c = drv.addChain(four);
	ASSERT_GE(c, 0);
	EXPECT_EQ(dev.chain(static_cast<uint16_t>(c)).size(), 4u);
	drv.publish();
	EXPECT_EQ(dev.availRing(2), c);
}

TEST(SplitDriver, CountsUsedIdsThatWereNotInFlight)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 8);
	HandDevice dev(*mem, drv);
	const BufferSpec one[] = { { kGpaBase + 0x10000, 64, true } };
	int a = drv.addChain(one);
	ASSERT_GE(a, 0);
	drv.publish();
	dev.pushUsed(5, 0); /* never posted */
	dev.pushUsed(8 + 3, 0); /* beyond the queue */
	dev.pushUsed(static_cast<uint32_t>(a), 10);
	dev.pushUsed(static_cast<uint32_t>(a), 10); /* returned twice */
	std::vector<SplitUsedElem> used = drv.collectUsed();
	EXPECT_EQ(used.size(), 4u);
	EXPECT_EQ(drv.badUsedIds(), 3u);
	EXPECT_EQ(drv.numFree(), 8);
}

TEST(SplitDriver, WrapsTheAvailAndUsedRingsAroundTheQueueSize)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 4);
	HandDevice dev(*mem, drv);
	uint16_t lastAvail = 0;
	for (unsigned round = 0; round < 11; round++) {
		const BufferSpec bufs[] = { { kGpaBase + 0x10000 + round, round + 1, false },
					    { kGpaBase + 0x20000 + round, 100, true } };
		int head = drv.addChain(bufs);
		ASSERT_GE(head, 0) << "round " << round;
		drv.publish();
		/* Device: consume from the avail ring, check the chain, return it. */
		ASSERT_EQ(dev.availIdx(), static_cast<uint16_t>(round + 1));
		uint16_t got = dev.availRing(lastAvail++);
		EXPECT_EQ(got, head);
		std::vector<SplitDesc> chain = dev.chain(got);
		ASSERT_EQ(chain.size(), 2u);
		EXPECT_EQ(chain[0].len, round + 1);
		dev.pushUsed(got, 100);
		ASSERT_EQ(drv.collectUsed().size(), 1u);
		EXPECT_EQ(drv.numFree(), 4);
	}
	EXPECT_EQ(drv.usedIdx(), 11);
	EXPECT_EQ(drv.badUsedIds(), 0u);
}

TEST(SplitDriver, BuildsAnIndirectTableInGuestMemory)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 8);
	HandDevice dev(*mem, drv);
	const BufferSpec bufs[] = { { kGpaBase + 0x10000, 12, false },
				    { kGpaBase + 0x11000, 64, false },
				    { kGpaBase + 0x12000, 4096, true } };
	int head = drv.addIndirectChain(bufs);
	ASSERT_GE(head, 0);
	EXPECT_EQ(drv.numFree(), 7);
	drv.publish();
	EXPECT_EQ(dev.availRing(0), head);

	SplitDesc d = dev.desc(static_cast<uint16_t>(head));
	EXPECT_EQ(d.flags, virtio::kDescFIndirect);
	EXPECT_EQ(d.len, 3 * sizeof(SplitDesc));
	EXPECT_EQ(d.addr, drv.indirectTableGpa(static_cast<uint16_t>(head)));
	EXPECT_EQ(d.addr % 16, 0u);
	ASSERT_TRUE(mem->containsGpa(d.addr, d.len));
	for (uint16_t k = 0; k < 3; k++) {
		SplitDesc t = dev.read<SplitDesc>(d.addr + 16 * k);
		EXPECT_EQ(t.addr, bufs[k].gpa);
		EXPECT_EQ(t.len, bufs[k].len);
		EXPECT_EQ((t.flags & virtio::kDescFWrite) != 0, bufs[k].writable);
		EXPECT_EQ((t.flags & virtio::kDescFNext) != 0, k < 2);
		EXPECT_EQ(t.flags & virtio::kDescFIndirect, 0);
		if (k < 2) {
			EXPECT_EQ(t.next, k + 1);
		}
	}

	dev.pushUsed(static_cast<uint32_t>(head), 4096);
	ASSERT_EQ(drv.collectUsed().size(), 1u);
	EXPECT_EQ(drv.numFree(), 8);

	/* The same head comes back first and reuses its table: no new allocation. */
	size_t allocated = mem->allocated();
	int again = drv.addIndirectChain(std::span(bufs).first(2));
	EXPECT_EQ(again, head);
	EXPECT_EQ(mem->allocated(), allocated);
	EXPECT_EQ(dev.desc(static_cast<uint16_t>(again)).len, 2 * sizeof(SplitDesc));
}

TEST(SplitDriver, PlacesTheEventIndexFieldsAfterTheRings)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 16);
	HandDevice dev(*mem, drv);
	drv.setUsedEvent(7);
	EXPECT_EQ(dev.usedEvent(), 7);
	EXPECT_EQ(drv.usedEvent(), 7);
	drv.setAvailFlags(virtio::kAvailFNoInterrupt);
	EXPECT_EQ(dev.availFlags(), virtio::kAvailFNoInterrupt);

	dev.setAvailEvent(0);
	EXPECT_EQ(drv.availEvent(), 0);
	const BufferSpec one[] = { { kGpaBase + 0x10000, 64, false } };
	ASSERT_GE(drv.addChain(one), 0);
	drv.publish();
	/* avail_event 0: the device wants a kick when idx moves past 0. */
	EXPECT_TRUE(drv.needsKick(true));
	ASSERT_GE(drv.addChain(one), 0);
	drv.publish();
	/* idx moved 1 -> 2 while avail_event is still 0: no kick. */
	EXPECT_FALSE(drv.needsKick(true));
	dev.setAvailEvent(2);
	ASSERT_GE(drv.addChain(one), 0);
	drv.publish();
	EXPECT_TRUE(drv.needsKick(true));

	/* Without EVENT_IDX, used->flags NO_NOTIFY decides. */
	dev.setUsedFlags(virtio::kUsedFNoNotify);
	EXPECT_EQ(drv.usedFlags(), virtio::kUsedFNoNotify);
	EXPECT_FALSE(drv.needsKick(false));
	dev.setUsedFlags(0);
	EXPECT_TRUE(drv.needsKick(false));
}

TEST(SplitDriver, RawAccessorsWriteWhateverAHostileTestWants)
{
	auto mem = makeMemory();
	SplitDriver drv(*mem, 8);
	HandDevice dev(*mem, drv);
	*drv.desc(3) = SplitDesc{ 0xdead0000, 77, virtio::kDescFNext, 3 }; /* a loop */
	drv.setAvailRing(0, 3);
	drv.setAvailRing(9, 200); /* slot 9 is slot 1 */
	drv.setAvailIdx(2);
	EXPECT_EQ(dev.desc(3).addr, 0xdead0000u);
	EXPECT_EQ(dev.desc(3).next, 3);
	EXPECT_EQ(dev.availRing(0), 3);
	EXPECT_EQ(dev.availRing(1), 200);
	EXPECT_EQ(drv.availRing(1), 200);
	EXPECT_EQ(dev.availIdx(), 2);
	EXPECT_THROW((void)drv.desc(8), std::out_of_range);
}

/* ---- TestFrontend against a fake back-end ---- */

/* One message the fake back-end received. */
struct Seen {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
	unsigned fds;
	std::vector<uint8_t> payload;

	template <typename T>
	T as() const
	{
		T v{};
		std::memcpy(&v, payload.data(), std::min(sizeof(T), payload.size()));
		return v;
	}
};

/*
 * A scripted back-end on a socket: answers the requests that always get a reply, acks when
 * NEED_REPLY is set, records everything, and stops when the front-end closes.
 */
class FakeBackend
{
public:
	explicit FakeBackend(UniqueFd socket) : conn_(std::move(socket)) {}
	~FakeBackend() { join(); }

	void start()
	{
		thread_ = std::thread([this] { serve(); });
	}
	void join()
	{
		if (thread_.joinable())
			thread_.join();
	}
	std::vector<uint32_t> requests() const
	{
		std::vector<uint32_t> out;
		for (const Seen &s : seen)
			out.push_back(s.request);
		return out;
	}
	const Seen *find(FrontendRequest r, unsigned nth = 0) const
	{
		for (const Seen &s : seen)
			if (s.request == static_cast<uint32_t>(r) && nth-- == 0)
				return &s;
		return nullptr;
	}

	uint64_t features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFEventIdx) |
			    virtio::bit(virtio::kFIndirectDesc) |
			    virtio::bit(virtio::kVhostUserFProtocolFeatures);
	uint64_t protocolFeatures = vhost::protocol::mask(vhost::protocol::kMq) |
				    vhost::protocol::mask(vhost::protocol::kReplyAck) |
				    vhost::protocol::mask(vhost::protocol::kStatus);
	std::atomic<uint64_t> ackValue = 0;
	uint64_t status = 0;
	std::vector<Seen> seen;

private:
	void reply(uint32_t request, const void *payload, uint32_t size)
	{
		vhost::MessageHeader h{ request, vhost::kFlagReply | vhost::kVersion, size };
		(void)conn_.send(h, payload);
	}

	void serve()
	{
		auto msg = std::make_unique<vhost::Message>();
		for (;;) {
			if (!conn_.receiveBlocking(*msg, 5000))
				return;
			const vhost::Message &m = *msg;
			seen.push_back(
				Seen{ m.header.request, m.header.flags, m.header.size, m.fdCount,
				      std::vector<uint8_t>(m.payload, m.payload + m.header.size) });
			uint64_t u = 0;
			switch (static_cast<FrontendRequest>(m.request())) {
			case FrontendRequest::GetFeatures:
				reply(m.request(), &features, 8);
				continue;
			case FrontendRequest::GetProtocolFeatures:
				reply(m.request(), &protocolFeatures, 8);
				continue;
			case FrontendRequest::GetQueueNum:
				u = 4;
				reply(m.request(), &u, 8);
				continue;
			case FrontendRequest::GetMaxMemSlots:
				u = 32;
				reply(m.request(), &u, 8);
				continue;
			case FrontendRequest::GetStatus:
				reply(m.request(), &status, 8);
				continue;
			case FrontendRequest::SetStatus:
				status = m.payloadAs<uint64_t>();
				break;
			case FrontendRequest::GetVringBase: {
				vhost::VringStateMsg s{ m.payloadAs<vhost::VringStateMsg>().index,
							42 };
				reply(m.request(), &s, sizeof(s));
				continue;
			}
			default:
				break;
			}
			if (m.needsReply()) {
				uint64_t ack = ackValue.load();
				reply(m.request(), &ack, 8);
			}
		}
	}

	vhost::Connection conn_;
	std::thread thread_;
};

struct Pair {
	std::unique_ptr<TestFrontend> fe;
	std::unique_ptr<FakeBackend> be;
};

Pair makePair()
{
	int sv[2];
	EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	Pair p;
	p.fe = TestFrontend::adopt(UniqueFd(sv[0]));
	p.be = std::make_unique<FakeBackend>(UniqueFd(sv[1]));
	EXPECT_NE(p.fe, nullptr);
	return p;
}

uint32_t id(FrontendRequest r)
{
	return static_cast<uint32_t>(r);
}

TEST(TestFrontend, ConnectRetriesUntilTheBackendListens)
{
	std::string path = ::testing::TempDir() + "vub-fe-test-" + std::to_string(::getpid()) +
			   ".sock";
	::unlink(path.c_str());
	std::unique_ptr<FakeBackend> be;
	std::thread server([&] {
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
		UniqueFd l = TestFrontend::listenUnix(path);
		if (!l)
			return;
		pollfd pfd{ l.get(), POLLIN, 0 };
		if (::poll(&pfd, 1, 2000) != 1)
			return;
		UniqueFd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
		be = std::make_unique<FakeBackend>(std::move(s));
		be->features = 0x1234;
		be->start();
	});
	auto fe = TestFrontend::connect(path, 2000);
	server.join();
	ASSERT_NE(fe, nullptr);
	ASSERT_NE(be, nullptr);
	auto f = fe->getFeatures();
	ASSERT_TRUE(f.has_value()) << f.error().what;
	EXPECT_EQ(*f, 0x1234u);
	EXPECT_EQ(fe->offeredFeatures(), 0x1234u);
	fe->close();
	be->join();
	ASSERT_EQ(be->seen.size(), 1u);
	EXPECT_EQ(be->seen[0].flags, vhost::kVersion);
	EXPECT_EQ(be->seen[0].size, 0u);
	::unlink(path.c_str());
}

TEST(TestFrontend, AcceptsABackendInClientMode)
{
	std::string path = ::testing::TempDir() + "vub-fe-client-" + std::to_string(::getpid()) +
			   ".sock";
	UniqueFd l = TestFrontend::listenUnix(path);
	ASSERT_TRUE(l.isValid());
	EXPECT_EQ(TestFrontend::accept(l.get(), 50), nullptr);
	std::unique_ptr<TestFrontend> client = TestFrontend::connect(path, 1000);
	ASSERT_NE(client, nullptr);
	auto fe = TestFrontend::accept(l.get(), 1000);
	ASSERT_NE(fe, nullptr);
	EXPECT_FALSE(fe->peerClosed(20));
	client.reset();
	EXPECT_TRUE(fe->peerClosed(1000));
	::unlink(path.c_str());
}

TEST(TestFrontend, AsksForAcksOnceReplyAckIsNegotiated)
{
	Pair p = makePair();
	p.be->start();
	auto pf = p.fe->getProtocolFeatures();
	ASSERT_TRUE(pf.has_value()) << pf.error().what;
	EXPECT_FALSE(p.fe->replyAckActive());
	ASSERT_TRUE(p.fe->setOwner().has_value());
	ASSERT_TRUE(p.fe->setProtocolFeatures(*pf).has_value());
	EXPECT_TRUE(p.fe->replyAckActive());
	ASSERT_TRUE(p.fe->setVringNum(0, 256).has_value());
	p.be->ackValue = 1; /* safe: the fake only reads it after the next request arrives */
	auto nack = p.fe->setVringNum(1, 256);
	ASSERT_FALSE(nack.has_value());
	EXPECT_EQ(nack.error().code, EREMOTEIO);
	EXPECT_EQ(p.fe->lastAck(), 1u);
	/* Requests that always get a reply do not carry NEED_REPLY. */
	auto base = p.fe->getVringBase(1);
	ASSERT_TRUE(base.has_value()) << base.error().what;
	EXPECT_EQ(*base, 42u);
	p.fe->close();
	p.be->join();

	const std::vector<uint32_t> want = {
		id(FrontendRequest::GetProtocolFeatures), id(FrontendRequest::SetOwner),
		id(FrontendRequest::SetProtocolFeatures), id(FrontendRequest::SetVringNum),
		id(FrontendRequest::SetVringNum),	  id(FrontendRequest::GetVringBase)
	};
	ASSERT_EQ(p.be->requests(), want);
	EXPECT_EQ(p.be->seen[1].flags, vhost::kVersion);
	EXPECT_EQ(p.be->seen[2].flags, vhost::kVersion);
	EXPECT_EQ(p.be->seen[3].flags, vhost::kVersion | vhost::kFlagNeedReply);
	EXPECT_EQ(p.be->seen[3].as<vhost::VringStateMsg>().num, 256u);
	EXPECT_EQ(p.be->seen[5].flags, vhost::kVersion);
	EXPECT_EQ(p.be->seen[5].size, 8u);
}

/* A back-end that answers with whatever header the test gives it. */
void answerOnce(int fd, vhost::MessageHeader h, uint64_t value)
{
	auto m = std::make_unique<vhost::Message>();
	vhost::Connection c{ UniqueFd(::dup(fd)) };
	if (c.receiveBlocking(*m, 2000))
		(void)c.send(h, &value);
}

TEST(TestFrontend, RejectsMalformedReplies)
{
	int sv[2];
	ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	UniqueFd be(sv[1]);
	auto fe = TestFrontend::adopt(UniqueFd(sv[0]));
	ASSERT_NE(fe, nullptr);
	struct Case {
		vhost::MessageHeader h;
		const char *why;
	} cases[] = {
		{ { 1, vhost::kVersion, 8 }, "no REPLY flag" },
		{ { 1, vhost::kFlagReply | vhost::kVersion | vhost::kFlagNeedReply, 8 },
		  "extra flag" },
		{ { 2, vhost::kFlagReply | vhost::kVersion, 8 }, "other request id" },
		{ { 1, vhost::kFlagReply | vhost::kVersion, 4 }, "short payload" },
	};
	for (const Case &c : cases) {
		std::thread t(answerOnce, be.get(), c.h, 7);
		auto f = fe->getFeatures();
		t.join();
		ASSERT_FALSE(f.has_value()) << c.why;
		EXPECT_EQ(f.error().code, EPROTO) << c.why;
		/* Drop what is left of a reply that was larger than the header said. */
		(void)fe->receiveReply(10);
	}
}

TEST(TestFrontend, TimesOutOnASilentBackendAndSeesItClose)
{
	int sv[2];
	ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	UniqueFd be(sv[1]);
	auto fe = TestFrontend::adopt(UniqueFd(sv[0]));
	ASSERT_NE(fe, nullptr);
	fe->setTimeoutMs(50);
	auto start = std::chrono::steady_clock::now();
	auto f = fe->getFeatures();
	ASSERT_FALSE(f.has_value());
	EXPECT_EQ(f.error().code, ETIMEDOUT);
	EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
	EXPECT_FALSE(fe->peerClosed(20));
	be.reset();
	EXPECT_TRUE(fe->peerClosed(1000));
	auto again = fe->getFeatures();
	EXPECT_FALSE(again.has_value());
}

TEST(TestFrontend, SendsVringFdsWithTheirIndexOrTheNoFdBit)
{
	Pair p = makePair();
	p.be->start();
	auto efd = EventFd::create();
	ASSERT_TRUE(efd.has_value());
	ASSERT_TRUE(p.fe->setVringCall(3, -1).has_value());
	ASSERT_TRUE(p.fe->setVringKick(1, efd->fd()).has_value());
	ASSERT_TRUE(p.fe->vringKick(2).has_value());
	ASSERT_TRUE(p.fe->sendRarp({ 0x52, 0x54, 0, 0x12, 0x34, 0x56 }).has_value());
	p.fe->close();
	p.be->join();
	ASSERT_EQ(p.be->seen.size(), 4u);
	EXPECT_EQ(p.be->seen[0].request, id(FrontendRequest::SetVringCall));
	EXPECT_EQ(p.be->seen[0].as<uint64_t>(), 3u | vhost::kVringNoFdMask);
	EXPECT_EQ(p.be->seen[0].fds, 0u);
	EXPECT_EQ(p.be->seen[1].as<uint64_t>(), 1u);
	EXPECT_EQ(p.be->seen[1].fds, 1u);
	EXPECT_EQ(p.be->seen[2].request, id(FrontendRequest::VringKick));
	EXPECT_EQ(p.be->seen[2].as<vhost::VringStateMsg>().index, 2u);
	EXPECT_EQ(p.be->seen[3].as<uint64_t>(), 0x563412005452ull);
}

TEST(TestFrontend, NegotiatesInQemuOrder)
{
	auto mem = makeMemory();
	Pair p = makePair();
	p.be->protocolFeatures |= vhost::protocol::mask(vhost::protocol::kConfigureMemSlots);
	p.be->start();
	NegotiateOptions o;
	o.queues = 2;
	o.queueSize = 64;
	o.features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFEventIdx) |
		     virtio::bit(virtio::kFRingPacked);
	o.protocolFeatures = kDefaultProtocolFeatures |
			     vhost::protocol::mask(vhost::protocol::kConfigureMemSlots);
	o.memory = { mem.get() };
	auto r = p.fe->negotiateQemu(o);
	ASSERT_TRUE(r.has_value()) << r.error().what;
	uint64_t features = p.fe->features();
	p.fe->close();
	p.be->join();

	using R = FrontendRequest;
	std::vector<uint32_t> want = {
		id(R::GetFeatures),  id(R::GetProtocolFeatures), id(R::SetProtocolFeatures),
		id(R::GetQueueNum),  id(R::GetMaxMemSlots),	 id(R::SetOwner),
		id(R::GetFeatures),  id(R::SetVringCall),	 id(R::SetVringErr),
		id(R::SetVringCall), id(R::SetVringErr),	 id(R::SetFeatures),
		id(R::GetStatus),    id(R::SetStatus),		 id(R::AddMemReg)
	};
	for (uint32_t q = 0; q < 2; q++)
		for (R x : { R::SetVringNum, R::SetVringBase, R::SetVringAddr, R::SetVringKick,
			     R::SetVringCall })
			want.push_back(id(x));
	for (R x : { R::SetVringEnable, R::SetVringEnable, R::GetStatus, R::SetStatus })
		want.push_back(id(x));
	EXPECT_EQ(p.be->requests(), want);

	EXPECT_EQ(features, virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFEventIdx) |
				    virtio::bit(virtio::kVhostUserFProtocolFeatures));
	EXPECT_EQ(p.fe->protocolFeatures(),
		  vhost::protocol::mask(vhost::protocol::kMq) |
			  vhost::protocol::mask(vhost::protocol::kReplyAck) |
			  vhost::protocol::mask(vhost::protocol::kStatus) |
			  vhost::protocol::mask(vhost::protocol::kConfigureMemSlots));
	EXPECT_EQ(p.fe->queueNum(), 4u);
	EXPECT_EQ(p.fe->maxMemSlots(), 32u);
	EXPECT_EQ(p.be->status, 0x0fu);

	/* Once REPLY_ACK is on, everything without its own reply asks for one. */
	for (const Seen &s : p.be->seen) {
		bool own = s.request == id(R::GetFeatures) ||
			   s.request == id(R::GetProtocolFeatures) ||
			   s.request == id(R::GetQueueNum) || s.request == id(R::GetMaxMemSlots) ||
			   s.request == id(R::GetStatus) || s.request == id(R::SetProtocolFeatures);
		EXPECT_EQ(s.flags, vhost::kVersion | (own ? 0 : vhost::kFlagNeedReply))
			<< vhost::frontendRequestName(s.request);
	}

	const Seen *reg = p.be->find(R::AddMemReg);
	ASSERT_NE(reg, nullptr);
	EXPECT_EQ(reg->fds, 1u);
	EXPECT_EQ(reg->size, sizeof(vhost::SingleRegionMsg));
	auto region = reg->as<vhost::SingleRegionMsg>().region;
	EXPECT_EQ(region.guestPhysAddr, kGpaBase);
	EXPECT_EQ(region.userspaceAddr, kQvaBase);
	EXPECT_EQ(region.memorySize, kMemSize);

	const Seen *addr = p.be->find(R::SetVringAddr, 1);
	ASSERT_NE(addr, nullptr);
	auto a = addr->as<vhost::VringAddrMsg>();
	EXPECT_EQ(a.index, 1u);
	EXPECT_EQ(a.desc, p.fe->queue(1).descQva());
	EXPECT_EQ(a.used, p.fe->queue(1).usedQva());
	EXPECT_EQ(a.avail, p.fe->queue(1).availQva());
	EXPECT_EQ(p.be->find(R::SetVringNum, 1)->as<vhost::VringStateMsg>().num, 64u);
	EXPECT_EQ(p.be->find(R::SetVringKick, 1)->as<uint64_t>(), 1u);
	EXPECT_EQ(p.be->find(R::SetVringKick, 1)->fds, 1u);
	EXPECT_EQ(p.be->find(R::SetVringEnable, 1)->as<vhost::VringStateMsg>().num, 1u);
}

TEST(TestFrontend, NegotiatesInDpdkOrder)
{
	auto a = makeMemory();
	auto b = GuestMemoryFd::create(1 << 20, 0x200000000ull);
	ASSERT_NE(b, nullptr);
	Pair p = makePair();
	p.be->start();
	NegotiateOptions o;
	o.queues = 4;
	o.queueSize = 32;
	o.memory = { a.get(), b.get() };
	auto r = p.fe->negotiateDpdk(o);
	ASSERT_TRUE(r.has_value()) << r.error().what;
	p.fe->close();
	p.be->join();

	using R = FrontendRequest;
	std::vector<uint32_t> want = { id(R::SetOwner), id(R::GetFeatures),
				       id(R::GetProtocolFeatures), id(R::SetProtocolFeatures) };
	for (int q = 0; q < 4; q++)
		want.push_back(id(R::SetVringCall));
	want.push_back(id(R::SetFeatures));
	want.push_back(id(R::SetMemTable));
	for (int q = 0; q < 4; q++)
		for (R x : { R::SetVringNum, R::SetVringBase, R::SetVringAddr, R::SetVringKick })
			want.push_back(id(x));
	want.push_back(id(R::SetVringEnable));
	want.push_back(id(R::SetVringEnable));
	want.push_back(id(R::SetStatus));
	EXPECT_EQ(p.be->requests(), want);

	const Seen *mt = p.be->find(R::SetMemTable);
	ASSERT_NE(mt, nullptr);
	EXPECT_EQ(mt->size, vhost::memoryTableMsgSize(2));
	EXPECT_EQ(mt->fds, 2u);
	auto table = mt->as<vhost::MemoryTableMsg>();
	EXPECT_EQ(table.nregions, 2u);
	EXPECT_EQ(table.regions[1].guestPhysAddr, 0x200000000ull);
	EXPECT_EQ(table.regions[1].userspaceAddr, b->qva());
	EXPECT_EQ(p.be->find(R::SetVringEnable, 1)->as<vhost::VringStateMsg>().index, 1u);
	EXPECT_EQ(p.fe->numQueues(), 4u);
}

TEST(TestFrontend, CountsCallsAndKicksThroughItsEventfds)
{
	auto mem = makeMemory();
	Pair p = makePair();
	NegotiateOptions o;
	o.memory = { mem.get() };
	ASSERT_TRUE(p.fe->prepareQueues(o).has_value());
	ASSERT_EQ(p.fe->numQueues(), 2u);
	EXPECT_FALSE(p.fe->waitCall(0, 20));
	EventFd call(UniqueFd(::dup(p.fe->callFd(0))));
	call.notify();
	call.notify();
	EXPECT_TRUE(p.fe->waitCall(0, 1000));
	EXPECT_EQ(p.fe->callCount(0), 2u);
	call.notify();
	EXPECT_EQ(p.fe->callCount(0), 3u);
	EventFd kick(UniqueFd(::dup(p.fe->kickFd(1))));
	p.fe->kick(1);
	EXPECT_EQ(kick.drain(), 1u);
	EXPECT_EQ(p.fe->errCount(1), 0u);
	EXPECT_THROW((void)p.fe->queue(2), std::out_of_range);
}

TEST(TestFrontend, ForwardsBackendRequestsOnItsChannel)
{
	Pair p = makePair();
	p.be->start();
	ASSERT_TRUE(p.fe->setBackendReqFd().has_value());
	p.fe->close();
	p.be->join();
	const Seen *s = p.be->find(FrontendRequest::SetBackendReqFd);
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(s->fds, 1u);
	ASSERT_TRUE(p.fe->backendChannel().isValid());
	/* The fake closed its copy of our peer's end: reading the channel ends there. */
	auto m = p.fe->receiveBackendRequest(100);
	EXPECT_FALSE(m.has_value());
}

} /* namespace */
} /* namespace vub::test */
