/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <vector>

/*
 * Which worker lcore polls which queue pair: plain logic, no DPDK, so that it is tested alone.
 */
namespace vub::sw {

/** \brief Packets of one source queue pair go to one destination queue pair. */
struct StreamRoute {
	unsigned srcPort;
	unsigned srcPair;
	unsigned dstPort;
	unsigned dstPair;
};

/**
 * \brief Group the streams that must be polled by the same worker: those that write the same
 * destination queue pair (a ring has one writer at a time).
 * \return the group of each stream, numbered 0.. in order of first appearance
 */
std::vector<unsigned> groupStreams(const std::vector<StreamRoute> &routes);

/** \brief A worker lcore, the NUMA node it runs on, and how many groups it polls. */
struct WorkerLoad {
	unsigned lcore;
	int node;
	unsigned groups;
};

/**
 * \brief The worker that should poll a group whose guest rings are on NUMA node \a node: the
 * least loaded one on that node (the first of equals).
 * \return its index in \a workers, or -1 when no worker runs on \a node or \a node is unknown
 */
int pickWorker(const std::vector<WorkerLoad> &workers, int node);

} /* namespace vub::sw */
