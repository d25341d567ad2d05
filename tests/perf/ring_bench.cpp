/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Micro-benchmarks of the split ring data path on memfd guest memory: address translation,
 * pop / addUsed / publishUsed bursts, and the copy of a packet out of a chain. They print
 * figures and check nothing but that the setup worked (a failed setup skips the benchmark
 * with an error). Run: build/tests/perf/perf-ring [--benchmark_min_time=0.2]
 */
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include <benchmark/benchmark.h>

#include "vub/base/log.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/split_queue.h"
#include "vub/virtio/split_ring.h"

#include "guest_memory_fd.h"
#include "split_driver.h"

namespace {

using vub::UniqueFd;
using vub::test::BufferSpec;
using vub::test::GuestMemoryFd;
using vub::test::SplitDriver;
using vub::vhost::DescBuffer;
using vub::vhost::DescriptorChain;
using vub::vhost::GuestMemory;
using vub::vhost::MemoryRegion;
using vub::vhost::SplitQueue;

/*
 * Guest RAM of \a count memfd regions of \a sizeBytes each, 256 MiB apart in guest physical
 * space: the guest's own mappings (GuestMemoryFd), and the back-end's snapshot built from a
 * second mapping of the same fds, as after SET_MEM_TABLE.
 */
struct Guest {
	std::vector<std::unique_ptr<GuestMemoryFd>> parts;
	std::unique_ptr<GuestMemory> memory;
};

bool makeGuest(Guest &guest, unsigned count, size_t sizeBytes)
{
	std::vector<std::shared_ptr<MemoryRegion>> regions;
	for (unsigned i = 0; i < count; i++) {
		auto part = GuestMemoryFd::create(sizeBytes, 0x10000000ull * (i + 1));
		if (!part)
			return false;
		auto region = MemoryRegion::create(part->regionMsg(), UniqueFd(::dup(part->fd())));
		if (!region)
			return false;
		regions.push_back(std::move(*region));
		guest.parts.push_back(std::move(part));
	}
	auto memory = GuestMemory::create(std::move(regions));
	if (!memory)
		return false;
	guest.memory = std::move(*memory);
	return true;
}

/*
 * GuestMemory::translateGpa of 64-byte buffers, 256 addresses spread over the last region (the
 * one a linear scan from region 0 reaches last). Args: regions, whether a hint is kept (as a
 * queue does across a burst).
 */
void BM_TranslateGpa(benchmark::State &state)
{
	const auto regionCount = static_cast<unsigned>(state.range(0));
	const bool useHint = state.range(1) != 0;
	constexpr size_t kRegionBytes = 2u << 20;
	Guest guest;
	if (!makeGuest(guest, regionCount, kRegionBytes)) {
		state.SkipWithError("guest memory setup failed");
		return;
	}
	constexpr unsigned kAddrs = 256;
	std::array<uint64_t, kAddrs> gpas;
	const uint64_t base = guest.parts.back()->gpa();
	for (unsigned i = 0; i < kAddrs; i++)
		gpas[i] = base + (i * 4099u * 64u) % (kRegionBytes - 64);

	uint32_t hint = 0;
	uint32_t *hintPtr = useHint ? &hint : nullptr;
	for (auto _ : state) {
		for (uint64_t gpa : gpas) {
			uint8_t *hva = guest.memory->translateGpa(gpa, 64, hintPtr);
			benchmark::DoNotOptimize(hva);
		}
	}
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kAddrs);
}
BENCHMARK(BM_TranslateGpa)
	->ArgNames({ "regions", "hint" })
	->ArgsProduct({ { 1, 2, 8 }, { 0, 1 } });

/*
 * The device side of one split queue of 256 entries that the driver keeps full: each iteration
 * pops a burst of 32 chains, puts them on the used ring and publishes it. Only that part is
 * timed (manual time, two steady_clock reads per burst); the driver's collectUsed() and
 * reposting happen between bursts, untimed. Args: descriptors per chain (64 bytes each,
 * device-readable), and whether the chain is one INDIRECT descriptor pointing at a table.
 */
void BM_SplitPopPublish(benchmark::State &state)
{
	const auto descs = static_cast<unsigned>(state.range(0));
	const bool indirect = state.range(1) != 0;
	constexpr uint16_t kQueueSize = 256;
	constexpr unsigned kBurst = 32;
	constexpr uint32_t kBufBytes = 64;

	Guest guest;
	if (!makeGuest(guest, 1, 4u << 20)) {
		state.SkipWithError("guest memory setup failed");
		return;
	}
	GuestMemoryFd &mem = *guest.parts.front();
	SplitDriver driver(mem, kQueueSize);
	/* One buffer per descriptor slot, whatever chain a slot ends up in. */
	const uint64_t pool = mem.alloc(size_t{ kQueueSize } * 4 * kBufBytes, 64);
	unsigned nextBuf = 0;
	std::vector<BufferSpec> bufs(descs);
	auto post = [&]() {
		for (unsigned i = 0; i < descs; i++) {
			bufs[i] = { pool + uint64_t{ nextBuf } * kBufBytes, kBufBytes, false };
			nextBuf = (nextBuf + 1) % (kQueueSize * 4u);
		}
		return indirect ? driver.addIndirectChain(bufs) : driver.addChain(bufs);
	};
	while (post() >= 0) {
	}
	driver.publish();

	SplitQueue queue(kQueueSize);
	if (!queue.setSize(kQueueSize) ||
	    !queue.setAddresses(driver.descQva(), driver.availQva(), driver.usedQva()) ||
	    !queue.translate(*guest.memory)) {
		state.SkipWithError("queue setup failed");
		return;
	}
	queue.setIndirect(true);
	queue.setReady(true);

	std::array<DescBuffer, 8> storage;
	DescriptorChain chain;
	uint64_t popped = 0;
	uint64_t bytes = 0;
	for (auto _ : state) {
		auto start = std::chrono::steady_clock::now();
		unsigned n = 0;
		for (; n < kBurst; n++) {
			auto status = queue.pop(*guest.memory, storage, chain);
			if (status != SplitQueue::PopStatus::Ok)
				break;
			bytes += chain.readableBytes;
			queue.addUsed(chain.head, 0);
		}
		queue.publishUsed();
		auto end = std::chrono::steady_clock::now();
		state.SetIterationTime(std::chrono::duration<double>(end - start).count());
		if (n == 0) {
			state.SkipWithError("the queue ran dry: pop() found nothing");
			break;
		}
		popped += n;

		/* The driver recycles what came back (untimed). */
		for (size_t i = driver.collectUsed().size(); i > 0; i--) {
			if (post() < 0) {
				state.SkipWithError("driver could not repost a chain");
				break;
			}
		}
		driver.publish();
	}
	state.SetItemsProcessed(static_cast<int64_t>(popped));
	state.counters["bytes/chain"] =
		popped ? static_cast<double>(bytes) / static_cast<double>(popped) : 0.0;
	state.counters["bad"] = static_cast<double>(driver.badUsedIds());
}
BENCHMARK(BM_SplitPopPublish)
	->ArgNames({ "descs", "indirect" })
	->Args({ 1, 0 })
	->Args({ 4, 0 })
	->Args({ 4, 1 })
	->UseManualTime();

/*
 * Copying a 1518-byte frame out of a 2-piece chain (12-byte virtio-net header, then the rest)
 * into a flat buffer with memcpy: what the net port pays per packet, with the pieces already
 * translated. Arg: distinct packets cycled through (1: all in L1; 256: ~780 KB of guest
 * buffers and destinations, past L1 and L2 on most cores).
 */
void BM_CopyChainToBuffer(benchmark::State &state)
{
	const auto packets = static_cast<unsigned>(state.range(0));
	constexpr uint32_t kHdrBytes = 12;
	constexpr uint32_t kFrameBytes = 1518;
	constexpr uint32_t kStride = 2048;

	Guest guest;
	if (!makeGuest(guest, 1, 4u << 20)) {
		state.SkipWithError("guest memory setup failed");
		return;
	}
	GuestMemoryFd &mem = *guest.parts.front();
	struct Pieces {
		DescBuffer p[2];
	};
	std::vector<Pieces> chains(packets);
	for (unsigned i = 0; i < packets; i++) {
		uint64_t hdr = mem.alloc(kHdrBytes, 64);
		uint64_t data = mem.alloc(kStride, 64);
		mem.fill(hdr, 0, kHdrBytes);
		mem.fill(data, static_cast<uint8_t>(i), kFrameBytes - kHdrBytes);
		uint32_t hint = 0;
		uint8_t *h = guest.memory->translateGpa(hdr, kHdrBytes, &hint);
		uint8_t *d = guest.memory->translateGpa(data, kFrameBytes - kHdrBytes, &hint);
		if (!h || !d) {
			state.SkipWithError("translation failed");
			return;
		}
		chains[i] = { { { h, kHdrBytes, false }, { d, kFrameBytes - kHdrBytes, false } } };
	}
	std::vector<uint8_t> dst(size_t{ packets } * kStride);

	unsigned k = 0;
	for (auto _ : state) {
		uint8_t *out = dst.data() + size_t{ k } * kStride;
		size_t off = 0;
		for (const DescBuffer &piece : chains[k].p) {
			std::memcpy(out + off, piece.hva, piece.len);
			off += piece.len;
		}
		benchmark::DoNotOptimize(out);
		benchmark::ClobberMemory();
		k = k + 1 == packets ? 0 : k + 1;
	}
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kFrameBytes);
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_CopyChainToBuffer)->ArgName("packets")->Arg(1)->Arg(256);

} /* namespace */

int main(int argc, char **argv)
{
	/* Every setup maps regions, and each mapping logs at info level: keep the figures readable. */
	vub::Log::setLevelAll(vub::LogLevel::Warning);
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
