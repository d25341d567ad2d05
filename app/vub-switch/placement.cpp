/* SPDX-License-Identifier: Apache-2.0 */
#include "placement.h"

#include <map>
#include <utility>

namespace vub::sw {

std::vector<unsigned> groupStreams(const std::vector<StreamRoute> &routes)
{
	std::map<std::pair<unsigned, unsigned>, unsigned> groupOfDst;
	std::vector<unsigned> groups;
	groups.reserve(routes.size());
	for (const StreamRoute &r : routes) {
		auto [it, added] = groupOfDst.try_emplace({ r.dstPort, r.dstPair },
							  static_cast<unsigned>(groupOfDst.size()));
		groups.push_back(it->second);
	}
	return groups;
}

int pickWorker(const std::vector<WorkerLoad> &workers, int node)
{
	if (node < 0)
		return -1;
	int best = -1;
	for (size_t i = 0; i < workers.size(); i++) {
		if (workers[i].node != node)
			continue;
		if (best < 0 || workers[i].groups < workers[static_cast<size_t>(best)].groups)
			best = static_cast<int>(i);
	}
	return best;
}

} /* namespace vub::sw */
