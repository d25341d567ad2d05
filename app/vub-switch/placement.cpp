/* SPDX-License-Identifier: Apache-2.0 */
#include "placement.h"

#include <algorithm>
#include <numeric>

namespace vub::sw {

std::vector<RxqPlace> assignRxqs(const std::vector<RxqLoad> &rxqs,
				 const std::vector<WorkerSlot> &workers)
{
	std::vector<RxqPlace> places(rxqs.size());
	if (workers.empty())
		return places;
	std::vector<uint64_t> cycles(workers.size(), 0);
	std::vector<unsigned> counts(workers.size(), 0);
	std::vector<bool> isolated(workers.size(), false);
	auto place = [&](size_t i, size_t w) {
		places[i].worker = static_cast<int>(w);
		places[i].remote = rxqs[i].node >= 0 && workers[w].node != rxqs[i].node;
		cycles[w] += rxqs[i].cycles;
		counts[w]++;
	};

	std::vector<size_t> unpinned;
	for (size_t i = 0; i < rxqs.size(); i++) {
		auto pinned =
			std::find_if(workers.begin(), workers.end(), [&](const WorkerSlot &w) {
				return rxqs[i].pinnedLcore >= 0 &&
				       w.lcore == static_cast<unsigned>(rxqs[i].pinnedLcore);
			});
		if (pinned == workers.end()) {
			unpinned.push_back(i);
			continue;
		}
		size_t w = static_cast<size_t>(pinned - workers.begin());
		isolated[w] = true;
		place(i, w);
	}
	bool allIsolated = std::all_of(isolated.begin(), isolated.end(), [](bool b) { return b; });

	std::stable_sort(unpinned.begin(), unpinned.end(),
			 [&](size_t a, size_t b) { return rxqs[a].cycles > rxqs[b].cycles; });
	for (size_t i : unpinned) {
		auto leastLoaded = [&](bool sameNode) {
			int best = -1;
			for (size_t w = 0; w < workers.size(); w++) {
				if (isolated[w] && !allIsolated)
					continue;
				if (sameNode && workers[w].node != rxqs[i].node)
					continue;
				auto key = [&](size_t x) {
					return std::make_pair(cycles[x], counts[x]);
				};
				if (best < 0 || key(w) < key(static_cast<size_t>(best)))
					best = static_cast<int>(w);
			}
			return best;
		};
		int w = rxqs[i].node >= 0 ? leastLoaded(true) : -1;
		if (w < 0)
			w = leastLoaded(false);
		place(i, static_cast<size_t>(w));
	}
	return places;
}

uint64_t maxWorkerCycles(const std::vector<RxqLoad> &rxqs, const std::vector<RxqPlace> &places,
			 size_t workers)
{
	std::vector<uint64_t> cycles(workers, 0);
	for (size_t i = 0; i < rxqs.size() && i < places.size(); i++) {
		if (places[i].worker >= 0)
			cycles[static_cast<size_t>(places[i].worker)] += rxqs[i].cycles;
	}
	return cycles.empty() ? 0 : *std::max_element(cycles.begin(), cycles.end());
}

} /* namespace vub::sw */
