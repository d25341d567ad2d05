/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "vub/base/counter.h"
#include "vub/vhost/backend.h"
#include "vub/vhost/split_queue.h"
#include "vub/vhost/vring.h"

struct rte_mbuf;
struct rte_mempool;

namespace vub::net {

/** \brief Counters of one virtqueue, written only by the lcore that polls it, read anywhere. */
struct alignas(64) NetQueueStats {
	Counter packets;
	Counter bytes;
	Counter dropNoBuffer; /**< RX: the guest posted no (big enough) buffer */
	Counter dropBadChain; /**< a chain vub refused (see the queue stats for why) */
	Counter dropTooShort; /**< TX: a chain no longer than the virtio-net header */
	Counter dropTooLong;  /**< larger than vub carries */
	Counter dropNoMbuf;   /**< TX: the mempool ran dry */
	Counter dropBadOffload; /**< an offload request vub does not honour (header or mbuf) */
	Counter emptyPolls;	/**< bursts that found nothing to do */
	Counter dropDisabled;	/**< TX of a started but disabled ring: consumed and dropped */
};

/**
 * \brief A snapshot of one virtqueue's counters: the port's (NetQueueStats) and the ring's
 * (vhost::QueueStats), read without stopping the lcore that polls it.
 */
struct NetQueueCounters {
	uint64_t packets = 0;
	uint64_t bytes = 0;
	uint64_t dropNoBuffer = 0;
	uint64_t dropBadChain = 0;
	uint64_t dropTooShort = 0;
	uint64_t dropTooLong = 0;
	uint64_t dropNoMbuf = 0;
	uint64_t dropBadOffload = 0;
	uint64_t emptyPolls = 0;
	uint64_t dropDisabled = 0;
	uint64_t notificationsSent = 0;
	uint64_t notificationsSuppressed = 0;
	uint64_t kicks = 0;
	/** Chains refused, by vhost::ChainError. */
	uint64_t badChains[static_cast<int>(vhost::ChainError::Count)] = {};
};

/**
 * \brief A vhost-user virtio-net port: the device of one VhostUserDaemon in polling mode, with
 * burst functions between guest descriptor chains and rte_mbufs.
 *
 * Queue pair p is virtqueues 2p (the guest's RX) and 2p+1 (the guest's TX). Each pair is
 * polled by one lcore at a time, which must be an RCU reader of Rcu::global() reporting a
 * quiescent state once per loop. Per packet: no lock, syscall, allocation (except extra mbuf
 * segments of a jumbo frame) or virtual call; per burst: one used-index store and at most one
 * guest notification. Every chain is validated by SplitQueue or PackedQueue; a bad one is dropped
 * and counted.
 */
class VhostNetPort final : public vhost::VhostUserBackend
{
public:
	static constexpr unsigned kMaxQueuePairs = 8;
	static constexpr uint32_t kMaxPacketBytes = 9728; /**< jumbo frames, as DPDK's vhost */

	/**
	 * \param queuePairs 1 to kMaxQueuePairs (clamped)
	 * \param socket the NUMA node of the lcore that will poll the port: its per-queue
	 * state is allocated there (DPDK memory; the heap when that fails or EAL is not up);
	 * SOCKET_ID_ANY (-1) for no preference
	 * \param iommu offer VIRTIO_F_IOMMU_PLATFORM, for guests behind a vIOMMU (opt-in, as
	 * DPDK's iommu-support and OVS's vhost-iommu-support), with the BACKEND_REQ channel
	 * that IOTLB misses go on
	 */
	explicit VhostNetPort(unsigned queuePairs, int socket = -1, bool iommu = false);
	~VhostNetPort() override;

	/* VhostUserBackend. */
	size_t numQueues() const override { return queues_.size(); }
	size_t maxQueueSize() const override { return 32768; }
	uint64_t queueNum() const override { return queuePairs(); }
	uint64_t features() const override;
	uint64_t protocolFeatures() const override;
	void ackedFeatures(uint64_t features) override;
	void setEventIdx(bool) override {}
	Result<void> updateMemory(const vhost::GuestMemoryAtomic &) override { return {}; }
	Result<void> handleEvent(uint16_t, uint32_t, std::span<vhost::VringT *const>, size_t) override
	{
		return {};
	}
	Result<void> setMtu(uint16_t mtu) override;
	/**
	 * \brief SEND_RARP: the next dequeueBurst() of pair 0 hands out a RARP broadcast from
	 * \a mac before the guest's packets, as if the guest had sent it (DPDK's vhost does the
	 * same), so that switches learn where the migrated guest is.
	 */
	Result<void> sendRarp(const uint8_t (&mac)[6]) override;

	/** \brief Bind to the daemon's vrings (VringPolled), once, after the daemon is created. */
	Result<void> attach(const std::vector<vhost::VringT *> &vrings);
	unsigned queuePairs() const { return static_cast<unsigned>(queues_.size() / 2); }
	/**
	 * \brief The NUMA node of the guest's rings of \a pair (its TX ring, found when it
	 * started), -1 when unknown or not started. Any thread.
	 */
	int numaNode(unsigned pair) const;
	/** \brief Whether the guest has started pair \a pair's TX ring (control thread). */
	bool started(unsigned pair) const;
	/** \brief Whether pair \a pair's RX ring takes packets: started and enabled (control). */
	bool rxReady(unsigned pair) const;
	/** \brief The virtio features the front-end acked last (0 before SET_FEATURES). */
	uint64_t negotiatedFeatures() const { return features_.load(std::memory_order_relaxed); }

	/**
	 * \brief Take up to \a n packets the guest sent on pair \a pair into mbufs from \a pool.
	 * \return the packets stored in \a pkts; the caller owns them.
	 */
	uint16_t dequeueBurst(unsigned pair, rte_mempool *pool, rte_mbuf **pkts, uint16_t n);
	/**
	 * \brief Copy up to \a n packets into the guest's RX buffers of pair \a pair.
	 * \return how many the guest got, in order; the others are counted as drops by reason
	 * (dropNoBuffer while the ring is stopped or disabled), except the last \a *waiting
	 * when given: they were not tried, for the guest's next buffer waits for a vIOMMU
	 * translation that is asked for; the caller may offer them again soon (a poll later).
	 * The caller still owns all \a n.
	 */
	uint16_t enqueueBurst(unsigned pair, rte_mbuf *const *pkts, uint16_t n,
			      uint16_t *waiting = nullptr);

	/** \brief All counters of the guest's RX (\a guestTx false) or TX virtqueue of \a pair. Any
	 * thread. */
	NetQueueCounters counters(unsigned pair, bool guestTx) const;
	/** \brief The port's counters of the guest's RX (\a guestTx false) or TX virtqueue of \a
	 * pair. */
	const NetQueueStats &stats(unsigned pair, bool guestTx) const
	{
		return queues_[2 * pair + (guestTx ? 1 : 0)]->stats;
	}

private:
	static constexpr size_t kMaxPieces = 1024;
	static constexpr unsigned kMaxChainsPerPacket = 64;
	/** Usual chains taken before any is copied (their cache misses overlap). */
	static constexpr uint16_t kUsualGroup = 32;
	static constexpr unsigned kDrainBurst =
		32; /**< chains a disabled TX ring loses per burst */

	struct alignas(64) Queue {
		vhost::PolledRing ring;
		NetQueueStats stats;
		vhost::DescBuffer storage[kMaxPieces];
		bool fromHeap = false; /**< else from rte_malloc */
	};
	struct QueueDeleter {
		void operator()(Queue *q) const;
	};

	/** A RARP waiting since SEND_RARP, as a fresh mbuf in \a out. */
	bool takeRarp(rte_mempool *pool, rte_mbuf **out);
	template <typename Ring>
	static void notify(vhost::VringState &state, Ring &ring);
	/* The burst functions for one ring layout, SplitQueue or PackedQueue. */
	template <typename Ring>
	uint16_t dequeue(Queue &q, vhost::VringState &state, Ring &ring, rte_mempool *pool,
			 rte_mbuf **pkts, uint16_t n);
	template <typename Ring>
	void drainDisabled(Queue &q, vhost::VringState &state, Ring &ring);
	template <typename Ring>
	uint16_t enqueue(Queue &q, vhost::VringState &state, Ring &ring, rte_mbuf *const *pkts,
			 uint16_t n, uint16_t *waiting);

	std::vector<std::unique_ptr<Queue, QueueDeleter>> queues_;
	/* Written on SET_FEATURES, when no ring runs; read once per burst. */
	std::atomic<uint64_t> features_{ 0 };
	/* SEND_RARP: the MAC (low 48 bits) and whether a RARP waits to go out. */
	std::atomic<uint64_t> rarpMac_{ 0 };
	std::atomic<bool> rarpPending_{ false };
	bool iommu_ = false; /**< VIRTIO_F_IOMMU_PLATFORM offered */
	std::atomic<uint32_t> headerBytes_{ 12 };
	std::atomic<bool> mergeable_{ false };
	std::atomic<bool> inOrder_{ false };
	std::atomic<bool> guestTxOffloads_{ false }; /**< CSUM: the guest may ask for offloads */
	std::atomic<uint8_t> guestRxOffloads_{ 0 };  /**< GUEST_CSUM, GUEST_TSO4, GUEST_TSO6 bits */
	std::atomic<uint16_t> mtu_{ 1500 };
};

} /* namespace vub::net */
