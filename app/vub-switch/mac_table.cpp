/* SPDX-License-Identifier: Apache-2.0 */
#include "mac_table.h"

#include <bit>

namespace vub::sw {

MacTable::MacTable(size_t maxEntries) : maxEntries_(maxEntries)
{
	size_t slots = std::bit_ceil(maxEntries * 2 < 16 ? size_t{ 16 } : maxEntries * 2);
	entries_ = std::make_unique<Entry[]>(slots);
	mask_ = slots - 1;
	shift_ = 64 - static_cast<unsigned>(std::countr_zero(slots));
}

bool MacTable::insert(uint64_t key, uint32_t port, uint32_t lastSeen)
{
	for (size_t i = slotOf(key);; i = (i + 1) & mask_) {
		Entry &e = entries_[i];
		if (e.key == key) {
			e.port = port;
			e.lastSeen.store(lastSeen, std::memory_order_relaxed);
			return true;
		}
		if (e.key == kEmpty) {
			if (size_ == maxEntries_)
				return false;
			e.key = key;
			e.port = port;
			e.lastSeen.store(lastSeen, std::memory_order_relaxed);
			size_++;
			return true;
		}
	}
}

MacLearning::MacLearning(size_t maxEntries, uint32_t agingS)
	: current_(std::make_unique<MacTable>(maxEntries)), maxEntries_(maxEntries), agingS_(agingS)
{
}

MacTable *MacLearning::update(const std::vector<MacLearnEvent> &events, uint32_t nowS,
			      uint64_t flushPorts)
{
	auto expired = [&](const MacTable::Entry &e) {
		return nowS - e.lastSeen.load(std::memory_order_relaxed) > agingS_ ||
		       (e.port < 64 && (flushPorts >> e.port) & 1);
	};
	bool changed = false;
	current_->forEach([&](const MacTable::Entry &e) { changed = changed || expired(e); });
	for (const MacLearnEvent &event : events) {
		if (isGroupMac(event.key))
			continue;
		MacTable::Entry *e = current_->find(event.key);
		if (e && e->port == event.port) {
			e->lastSeen.store(nowS, std::memory_order_relaxed);
			continue;
		}
		changed = true;
	}
	if (!changed)
		return nullptr;

	auto next = std::make_unique<MacTable>(maxEntries_);
	current_->forEach([&](const MacTable::Entry &e) {
		if (!expired(e))
			next->insert(e.key, e.port, e.lastSeen.load(std::memory_order_relaxed));
	});
	for (const MacLearnEvent &event : events) {
		if (isGroupMac(event.key))
			continue;
		const MacTable::Entry *known = next->find(event.key);
		if (known && known->port != event.port)
			moves_++;
		if (!next->insert(event.key, event.port, nowS))
			fullDrops_++;
	}
	retired_ = std::move(current_);
	current_ = std::move(next);
	return current_.get();
}

} /* namespace vub::sw */
