/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The split and packed descriptor walkers over guest memory the input writes: descriptor
 * table, rings, indirect tables and buffers are the input's bytes, the queue's size, start
 * index and features its first bytes. Every chain the queue hands out must lie wholly inside
 * one mapped region; the fuzzer then writes into the writable pieces, as a device would, and
 * returns every chain (hostile-inputs.md 9, 14; vhost-user-and-virtio.md 4.5).
 *
 * Input: [mode] [size] [start lo] [start hi] [guest memory...]. mode bit 0: packed ring,
 * bit 1: INDIRECT_DESC, bit 2: EVENT_IDX, bit 3: a queue the device only reads.
 */
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "vub/base/memory_mapping.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/message.h"
#include "vub/vhost/packed_queue.h"
#include "vub/vhost/split_queue.h"

using namespace vub;
using namespace vub::vhost;

namespace {

/* Two regions, adjacent in guest-physical space but not in the back-end's mapping: a buffer
 * across the boundary must be refused, not read through (CVE-2018-1059). */
constexpr uint64_t kGpaA = 0x100000;
constexpr uint64_t kSizeA = 64 << 10;
constexpr uint64_t kGpaB = kGpaA + kSizeA;
constexpr uint64_t kSizeB = 16 << 10;
constexpr uint64_t kQvaOffset = 0x7f0000000000; /* front-end addresses differ from guest ones */
constexpr size_t kPieces = 64;

struct Part {
	MemoryMapping local; /* the guest's view, which the input is written to */
	std::shared_ptr<MemoryRegion> region;
};

struct Guest {
	Part a, b;
	std::unique_ptr<GuestMemory> mem;
};

[[noreturn]] void fail(const char *what)
{
	std::fprintf(stderr, "ring fuzz: %s\n", what);
	std::abort();
}

Part makePart(uint64_t gpa, uint64_t size)
{
	UniqueFd fd(::memfd_create("vub-ring-fuzz", MFD_CLOEXEC));
	if (!fd.isValid() || ::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
		fail("memfd");
	auto local = MemoryMapping::mapShared(fd.get(), size, 0);
	auto region = MemoryRegion::create(MemoryRegionMsg{ gpa, size, gpa + kQvaOffset, 0 },
					   std::move(fd));
	if (!local || !region)
		fail("mapping");
	return { std::move(*local), std::move(*region) };
}

Guest &guest()
{
	static Guest *g = [] {
		auto *made = new Guest{ makePart(kGpaA, kSizeA), makePart(kGpaB, kSizeB), nullptr };
		auto mem = GuestMemory::create({ made->a.region, made->b.region });
		if (!mem)
			fail("guest memory");
		made->mem = std::move(*mem);
		return made;
	}();
	return *g;
}

bool inside(const MemoryRegion &r, const DescBuffer &b)
{
	return b.hva >= r.hva() && b.len <= r.size() &&
	       static_cast<uint64_t>(b.hva - r.hva()) <= r.size() - b.len;
}

/* Check a chain the queue accepted, and use its buffers as a device would. */
void useChain(const Guest &g, const DescriptorChain &chain, size_t storage)
{
	if (chain.bufferCount > storage)
		fail("more pieces than the storage");
	uint64_t readable = 0, writable = 0;
	for (const DescBuffer &b : chain.pieces()) {
		if (!inside(*g.a.region, b) && !inside(*g.b.region, b))
			fail("a piece outside guest memory");
		if (b.len == 0)
			fail("a zero-length piece");
		(b.writable ? writable : readable) += b.len;
		volatile uint8_t first = b.hva[0], last = b.hva[b.len - 1];
		(void)first;
		(void)last;
		if (b.writable) {
			std::memset(b.hva, 0xa5, std::min<uint32_t>(b.len, 256));
			b.hva[b.len - 1] = 0x5a;
		}
	}
	if (readable != chain.readableBytes || writable != chain.writableBytes)
		fail("chain lengths differ from its pieces'");
}

template <typename Queue, typename Status>
void walk(const Guest &g, Queue &q, unsigned rounds)
{
	DescBuffer storage[kPieces];
	for (unsigned i = 0; i < rounds; i++) {
		DescriptorChain chain;
		Status status = q.pop(*g.mem, storage, chain);
		if (status == Status::Empty || status == Status::Broken)
			break;
		uint32_t len = 0;
		if (status == Status::Ok) {
			useChain(g, chain, kPieces);
			len = chain.writableBytes;
		}
		if constexpr (std::is_same_v<Queue, PackedQueue>)
			q.addUsed(chain.head, len, chain.descCount);
		else
			q.addUsed(chain.head, len);
		if (i % 7 == 6)
			q.publishUsed();
	}
	q.publishUsed();
	q.needsNotification();
	q.enableNotification();
	q.disableNotification();
}

} /* namespace */

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	Guest &g = guest();
	uint8_t mode = data[0];
	bool packed = mode & 1;
	uint16_t start = static_cast<uint16_t>(data[2] | data[3] << 8);
	data += 4;
	size -= 4;
	std::memset(g.a.local.data(), 0, kSizeA);
	std::memset(g.b.local.data(), 0, kSizeB);
	size_t toA = std::min<size_t>(size, kSizeA);
	std::memcpy(g.a.local.data(), data, toA);
	std::memcpy(g.b.local.data(), data + toA, std::min<size_t>(size - toA, kSizeB));

	/* The rings packed at the start of region A, so that short inputs write them. */
	uint64_t qva = kGpaA + kQvaOffset;
	if (packed) {
		uint32_t ringSize = 1 + data[-3];
		PackedQueue q(256);
		if (!q.setSize(ringSize) ||
		    !q.setAddresses(qva, qva + 16 * ringSize, qva + 16 * ringSize + 4))
			return 0;
		if (!q.translate(*g.mem) || !q.setBase(start))
			return 0;
		q.setIndirect(mode & 2);
		q.setEventIdx(mode & 4);
		q.setDeviceReadsOnly(mode & 8);
		q.setReady(true);
		walk<PackedQueue, PackedQueue::PopStatus>(g, q, 3 * ringSize + 3);
		return 0;
	}
	uint32_t ringSize = 2u << (data[-3] % 8);
	uint64_t avail = qva + 16 * ringSize;
	uint64_t used = (avail + 6 + 2 * ringSize + 3) & ~uint64_t{ 3 };
	SplitQueue q(256);
	if (!q.setSize(ringSize) || !q.setAddresses(qva, avail, used) || !q.translate(*g.mem))
		return 0;
	q.setIndirect(mode & 2);
	q.setEventIdx(mode & 4);
	q.setDeviceReadsOnly(mode & 8);
	q.setNextAvail(start);
	q.setNextUsed(start);
	q.setReady(true);
	walk<SplitQueue, SplitQueue::PopStatus>(g, q, 3 * ringSize + 3);
	return 0;
}
