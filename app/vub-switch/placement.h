/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

/*
 * Which worker lcore polls which rx queue: plain logic, no DPDK, so that it is tested alone.
 */
namespace vub::sw {

/** \brief An rx queue to place: where its memory is, what it cost, where it is pinned. */
struct RxqLoad {
	unsigned port;
	unsigned queue;
	int node = -1;	      /**< NUMA node of its memory, -1 while unknown */
	uint64_t cycles = 0;  /**< busy cycles measured over the last interval */
	int pinnedLcore = -1; /**< rxq-affinity: the lcore that must poll it */
};

/** \brief A worker lcore and the NUMA node it runs on. */
struct WorkerSlot {
	unsigned lcore;
	int node;
};

/** \brief Where an rx queue goes: the worker's index, and whether it is on another node. */
struct RxqPlace {
	int worker = -1;
	bool remote = false;
};

/**
 * \brief Place every rx queue on a worker, as OVS's "cycles" assignment does:
 * - a pinned queue goes to its lcore's worker, and that worker takes no other (isolated);
 * - the others, most cycles first, each to the least loaded worker (cycles assigned so far,
 *   then queue count) on the queue's node; to the least loaded on any node when no worker
 *   runs there (remote) or the node is unknown.
 * When every worker is isolated, the unpinned queues share them all.
 * \return one RxqPlace per entry of \a rxqs, in order; worker -1 only when \a workers is empty
 */
std::vector<RxqPlace> assignRxqs(const std::vector<RxqLoad> &rxqs,
				 const std::vector<WorkerSlot> &workers);

/** \brief The busiest worker's cycles under \a places: what rebalancing tries to lower. */
uint64_t maxWorkerCycles(const std::vector<RxqLoad> &rxqs, const std::vector<RxqPlace> &places,
			 size_t workers);

} /* namespace vub::sw */
