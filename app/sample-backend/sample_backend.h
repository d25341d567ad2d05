/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "vub/vhost/backend.h"
#include "vub/vhost/split_queue.h"
#include "vub/vhost/vring.h"

namespace vub::sample {

/** \brief Counters of one queue, written by its worker, readable from any thread. */
struct alignas(64) QueueCounters {
	std::atomic<uint64_t> chains{ 0 };
	std::atomic<uint64_t> readBytes{ 0 };    /**< device-readable bytes consumed */
	std::atomic<uint64_t> readHash{ 0 };     /**< FNV-1a over every readable byte, in order */
	std::atomic<uint64_t> writtenBytes{ 0 }; /**< device-writable bytes filled */
	std::atomic<uint64_t> notifications{ 0 };
	std::atomic<uint64_t> badChains{ 0 };
	std::atomic<uint64_t> broken{ 0 };
};

/**
 * \brief The seed's example device: each queue handler walks every available chain, hashes what
 * the driver wrote, fills what the driver offered with a pattern (byte i of a chain's writable
 * part is (queue + i) & 0xff), returns the chain on the used ring with the bytes written, and
 * notifies the guest only when EVENT_IDX or NO_INTERRUPT says so. Refused chains are returned
 * with length 0 and counted. Split rings, and packed ones when asked to offer them. Each
 * burst returns every chain it took before it ends, so a ring stopped between two bursts
 * (GET_VRING_BASE) holds none. Thread-safe: each queue belongs to one worker.
 */
class SampleBackend final : public vhost::VhostUserBackend
{
public:
	static constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
	static constexpr uint64_t kFnvPrime = 0x100000001b3ull;

	/** \param packedRings offer VIRTIO_F_RING_PACKED too */
	SampleBackend(size_t queues, size_t queueSize, size_t threads, bool packedRings = false);

	size_t numQueues() const override { return counters_.size(); }
	size_t maxQueueSize() const override { return queueSize_; }
	uint64_t features() const override;
	uint64_t protocolFeatures() const override;
	void setEventIdx(bool) override {}
	Result<void> updateMemory(const vhost::GuestMemoryAtomic &) override { return {}; }
	/** \brief A 16-byte read-only config space whose bytes hold their own offsets. */
	std::vector<uint8_t> getConfig(uint32_t offset, uint32_t size) const override;
	std::vector<uint64_t> queuesPerThread() const override;
	/** \brief Records the MAC of the last SEND_RARP (a net device would broadcast a RARP). */
	Result<void> sendRarp(const uint8_t (&mac)[6]) override;
	/** \brief Records the MTU of NET_SET_MTU. */
	Result<void> setMtu(uint16_t mtu) override;
	void setStatus(uint8_t status) override { status_.store(status); }
	Result<void> handleEvent(uint16_t deviceEvent, uint32_t evset,
				 std::span<vhost::VringT *const> vrings, size_t threadId) override;
	unsigned pollQueue(uint16_t queueIndex, vhost::VringState &vring, size_t threadId) override;

	const QueueCounters &counters(size_t queue) const { return counters_[queue]; }
	uint64_t lastRarpMac() const { return rarpMac_.load(); }
	uint16_t mtu() const { return mtu_.load(); }
	uint8_t status() const { return status_.load(); }
	/** \brief One line per queue: "queue Q: chains C bytes B ...", for logs and tests. */
	void printStats() const;

private:
	static constexpr size_t kMaxPieces = 1024;
	static constexpr unsigned kBurst = 32;
	static constexpr unsigned kBurstsPerEvent = 16;

	void publish(vhost::VringState &vring, QueueCounters &c);
	/** \brief Take at most \a max chains, return them, publish and notify once. */
	unsigned processBurst(size_t queue, vhost::VringState &vring, unsigned max);
	template <typename Queue>
	unsigned processBurst(size_t queue, vhost::VringState &vring, Queue &q, unsigned max);

	size_t queueSize_;
	size_t threads_;
	bool packedRings_;
	std::vector<QueueCounters> counters_;
	std::atomic<uint64_t> rarpMac_{ 0 };
	std::atomic<uint16_t> mtu_{ 0 };
	std::atomic<uint8_t> status_{ 0 };
	/* Chain storage per queue: each queue is processed by one thread at a time. */
	std::vector<std::vector<vhost::DescBuffer>> storage_;
};

} /* namespace vub::sample */
