/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vub/base/result.h"

namespace vub {

/** \brief One logical CPU and the NUMA node it belongs to. */
struct CpuInfo {
	unsigned cpu;
	int numaNode; /**< -1 when unknown */
	unsigned core; /**< physical core id (hyperthreads share it) */
};

/**
 * \brief The machine's CPUs and NUMA nodes, from hwloc (libnuma and sysfs as fallbacks).
 * Immutable after discover(); thread-safe to read.
 */
class Topology
{
public:
	static Result<Topology> discover();

	const std::vector<CpuInfo> &cpus() const { return cpus_; }
	unsigned numaNodeCount() const { return numaNodes_; }
	/** \brief CPUs of \a node, in id order; every CPU when the node is unknown. */
	std::vector<unsigned> cpusOfNode(int node) const;
	/** \brief A one-line-per-node description, for logs and `show` commands. */
	std::string describe() const;

	/**
	 * \brief The NUMA node that backs the page at \a addr (libnuma get_mempolicy).
	 * \return the node, or -1 when unknown or libnuma is not built in.
	 */
	static int nodeOfAddress(const void *addr);

	/** \brief Pin the calling thread to \a cpu. */
	static Result<void> pinThisThread(unsigned cpu);

private:
	std::vector<CpuInfo> cpus_;
	unsigned numaNodes_ = 1;
};

} /* namespace vub */
