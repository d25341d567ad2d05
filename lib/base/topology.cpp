/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/topology.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "vub_build_config.h"

#if VUB_HAVE_HWLOC
#include <hwloc.h>
#endif
#if VUB_HAVE_NUMA
#include <numaif.h>
#endif

namespace vub {

Result<Topology> Topology::discover()
{
	Topology topo;
#if VUB_HAVE_HWLOC
	hwloc_topology_t handle;
	if (hwloc_topology_init(&handle) == 0) {
		if (hwloc_topology_load(handle) == 0) {
			int npu = hwloc_get_nbobjs_by_type(handle, HWLOC_OBJ_PU);
			for (int i = 0; i < npu; i++) {
				hwloc_obj_t pu = hwloc_get_obj_by_type(handle, HWLOC_OBJ_PU, i);
				CpuInfo info{ pu->os_index, -1, pu->os_index };
				hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(handle, HWLOC_OBJ_CORE, pu);
				if (core)
					info.core = core->logical_index;
				if (pu->nodeset) {
					int node = static_cast<int>(hwloc_bitmap_first(pu->nodeset));
					info.numaNode = node;
				}
				topo.cpus_.push_back(info);
			}
			int nodes = hwloc_get_nbobjs_by_type(handle, HWLOC_OBJ_NUMANODE);
			topo.numaNodes_ = nodes > 0 ? static_cast<unsigned>(nodes) : 1;
		}
		hwloc_topology_destroy(handle);
	}
#endif
	if (topo.cpus_.empty()) {
		cpu_set_t set;
		CPU_ZERO(&set);
		if (sched_getaffinity(0, sizeof(set), &set) < 0)
			return errnoError("sched_getaffinity");
		for (unsigned cpu = 0; cpu < CPU_SETSIZE; cpu++) {
			if (CPU_ISSET(cpu, &set))
				topo.cpus_.push_back(CpuInfo{ cpu, 0, cpu });
		}
	}
	std::sort(topo.cpus_.begin(), topo.cpus_.end(),
		  [](const CpuInfo &a, const CpuInfo &b) { return a.cpu < b.cpu; });
	return topo;
}

std::vector<unsigned> Topology::cpusOfNode(int node) const
{
	std::vector<unsigned> out;
	for (const auto &cpu : cpus_) {
		if (node < 0 || cpu.numaNode == node || cpu.numaNode < 0)
			out.push_back(cpu.cpu);
	}
	return out;
}

std::string Topology::describe() const
{
	std::map<int, std::string> nodes;
	for (const auto &cpu : cpus_) {
		std::string &line = nodes[cpu.numaNode];
		line += (line.empty() ? "" : ",") + std::to_string(cpu.cpu);
	}
	std::string out;
	for (const auto &[node, cpus] : nodes)
		out += "numa node " + std::to_string(node) + ": cpus " + cpus + "\n";
	return out;
}

int Topology::nodeOfAddress([[maybe_unused]] const void *addr)
{
#if VUB_HAVE_NUMA
	int node = -1;
	if (get_mempolicy(&node, nullptr, 0, const_cast<void *>(addr), MPOL_F_NODE | MPOL_F_ADDR) == 0)
		return node;
#endif
	return -1;
}

Result<void> Topology::pinThisThread(unsigned cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (err)
		return Error{ err, "pthread_setaffinity_np" };
	return {};
}

} /* namespace vub */
