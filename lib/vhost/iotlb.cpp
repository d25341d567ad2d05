/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/iotlb.h"

#include <algorithm>

namespace vub::vhost {

namespace {

/** Misses are asked for by page: the front-end answers with the IOMMU page that holds one. */
constexpr uint64_t kMissPageMask = ~uint64_t{ 4095 };

bool samePage(const IotlbMisses::Miss &a, const IotlbMisses::Miss &b)
{
	return (a.iova & kMissPageMask) == (b.iova & kMissPageMask) && a.perm == b.perm;
}

} /* namespace */

Result<void> Iotlb::update(const IotlbMsg &msg)
{
	if (msg.size == 0)
		return Error{ EINVAL, "IOTLB update of size 0" };
	if (msg.iova + (msg.size - 1) < msg.iova || msg.uaddr + (msg.size - 1) < msg.uaddr)
		return Error{ EINVAL, "IOTLB update wraps around 2^64" };
	if (msg.perm == 0 || (msg.perm & ~kAccessReadWrite) != 0)
		return Error{ EINVAL, "IOTLB update with no access or unknown access bits" };
	erase(msg.iova, msg.iova + (msg.size - 1));
	if (entries_.size() >= kMaxEntries) {
		/* A simple, deterministic spread: the entry after the new one, or the first. */
		auto victim = entries_.upper_bound(msg.iova);
		entries_.erase(victim == entries_.end() ? entries_.begin() : victim);
		evictions_++;
	}
	entries_[msg.iova] = IotlbEntry{ msg.iova, msg.size, msg.uaddr, msg.perm };
	return {};
}

void Iotlb::invalidate(uint64_t iova, uint64_t size)
{
	if (size == 0)
		return;
	uint64_t last = iova + (size - 1) < iova ? UINT64_MAX : iova + (size - 1);
	erase(iova, last);
}

void Iotlb::erase(uint64_t iova, uint64_t last)
{
	auto it = entries_.upper_bound(iova);
	if (it != entries_.begin()) {
		auto before = std::prev(it);
		if (before->second.iova + (before->second.size - 1) >= iova)
			it = before;
	}
	while (it != entries_.end() && it->first <= last)
		it = entries_.erase(it);
}

Result<std::shared_ptr<IotlbMisses>> IotlbMisses::create()
{
	auto event = EventFd::create();
	if (!event)
		return event.error();
	std::shared_ptr<IotlbMisses> misses(new IotlbMisses());
	misses->event_ = std::move(*event);
	return misses;
}

void IotlbMisses::post(uint64_t iova, uint8_t perm)
{
	Miss miss{ iova, perm };
	auto match = [&](const Miss &m) { return samePage(m, miss); };
	std::lock_guard<std::mutex> guard(lock_);
	if (std::any_of(pending_.begin(), pending_.end(), match) ||
	    std::any_of(asked_.begin(), asked_.end(), match) || pending_.size() >= kMaxPending)
		return;
	pending_.push_back(miss);
	if (pending_.size() == 1)
		event_.notify();
}

std::vector<IotlbMisses::Miss> IotlbMisses::take()
{
	event_.drain();
	std::lock_guard<std::mutex> guard(lock_);
	std::vector<Miss> taken;
	taken.swap(pending_);
	if (asked_.size() + taken.size() <= kMaxPending)
		asked_.insert(asked_.end(), taken.begin(), taken.end());
	return taken;
}

void IotlbMisses::forget()
{
	std::lock_guard<std::mutex> guard(lock_);
	asked_.clear();
}

} /* namespace vub::vhost */
