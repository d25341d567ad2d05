/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/split_queue.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "chain.h"
#include "vub/base/log.h"

namespace vub::vhost {

using virtio::SplitDesc;

const char *chainErrorName(ChainError error)
{
	static constexpr const char *kNames[] = {
		"none", "next_out_of_range", "too_long", "bad_address", "zero_length",
		"read_after_write", "indirect_not_negotiated", "indirect_bad_length",
		"indirect_nested", "indirect_with_next", "too_many_buffers", "length_overflow",
		"iotlb_miss",
	};
	static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(ChainError::Count));
	return kNames[static_cast<size_t>(error)];
}

namespace {

/** Read a descriptor once: the guest may rewrite it while we look at it. */
SplitDesc readDesc(SplitDesc *d)
{
	SplitDesc out;
	out.addr = std::atomic_ref<uint64_t>(d->addr).load(std::memory_order_relaxed);
	out.len = std::atomic_ref<uint32_t>(d->len).load(std::memory_order_relaxed);
	out.flags = std::atomic_ref<uint16_t>(d->flags).load(std::memory_order_relaxed);
	out.next = std::atomic_ref<uint16_t>(d->next).load(std::memory_order_relaxed);
	return out;
}

} /* namespace */

Result<void> SplitQueue::setSize(uint32_t size)
{
	if (size == 0 || size > maxSize_ || (size & (size - 1)) != 0)
		return Error{ EINVAL, "queue size is 0, above the maximum or not a power of two" };
	size_ = static_cast<uint16_t>(size);
	untranslate();
	return {};
}

Result<void> SplitQueue::setAddresses(uint64_t descQva, uint64_t availQva, uint64_t usedQva)
{
	if (descQva % virtio::kSplitDescAlign || availQva % virtio::kSplitAvailAlign ||
	    usedQva % virtio::kSplitUsedAlign)
		return Error{ EINVAL, "ring address not aligned as the split layout requires" };
	descQva_ = descQva;
	availQva_ = availQva;
	usedQva_ = usedQva;
	untranslate();
	return {};
}

Result<void> SplitQueue::translate(const GuestMemory &mem)
{
	untranslate();
	if (size_ == 0)
		return Error{ EINVAL, "queue size not set" };
	auto *desc = translateRingPart(mem, descQva_, virtio::splitDescTableSize(size_), kAccessRead);
	auto *avail = translateRingPart(mem, availQva_, virtio::splitAvailSize(size_), kAccessRead);
	auto *used = translateRingPart(mem, usedQva_, virtio::splitUsedSize(size_), kAccessWrite);
	if (!desc || !avail || !used)
		return ringNotTranslated(mem);
	/* Aligned front-end addresses are not enough: a region's address can be unaligned. */
	if (reinterpret_cast<uintptr_t>(desc) % 16 || reinterpret_cast<uintptr_t>(avail) % 2 ||
	    reinterpret_cast<uintptr_t>(used) % 4)
		return Error{ EINVAL, "ring not aligned in the back-end's mapping" };
	desc_ = reinterpret_cast<SplitDesc *>(desc);
	avail_ = reinterpret_cast<virtio::SplitAvail *>(avail);
	used_ = reinterpret_cast<virtio::SplitUsed *>(used);
	mem.hvaToGpa(used, &usedGpa_);
	return {};
}

void SplitQueue::untranslate()
{
	desc_ = nullptr;
	avail_ = nullptr;
	used_ = nullptr;
}

uint16_t SplitQueue::guestUsedIdx() const
{
	if (!used_)
		return 0;
	return std::atomic_ref<uint16_t>(used_->idx).load(std::memory_order_acquire);
}

void SplitQueue::reset()
{
	untranslate();
	descQva_ = availQva_ = usedQva_ = 0;
	lastAvailIdx_ = 0;
	availIdxSeen_ = 0;
	usedIdx_ = 0;
	signalledUsed_ = 0;
	signalledUsedValid_ = false;
	ready_ = false;
	broken_ = false;
	lastError_ = ChainError::None;
	regionHint_ = 0;
	inflight_ = nullptr;
	inflightCounter_ = 0;
	inflightUsedIdx_ = 0;
	resubmit_.clear();
	resubmitNext_ = 0;
	resubmitting_ = false;
}

SplitQueue::PopStatus SplitQueue::refuse(ChainError error)
{
	if (error == ChainError::IotlbMiss) {
		stats_.badChains[static_cast<int>(error)]++;
		return PopStatus::Deferred;
	}
	lastError_ = error;
	stats_.badChains[static_cast<int>(error)]++;
	return PopStatus::BadChain;
}

SplitQueue::PopStatus SplitQueue::popSlow(const GuestMemory &mem, std::span<DescBuffer> storage,
					  DescriptorChain &chain)
{
	if (!ready_ || !desc_ || broken_)
		return PopStatus::Empty;
	if (resubmitting_) [[unlikely]] {
		/* Validated when it was lined up; its inflight state is set already. */
		PopStatus status = walkChain(mem, resubmit_[resubmitNext_], storage, chain);
		if (status == PopStatus::Deferred)
			return status;
		if (++resubmitNext_ == resubmit_.size()) {
			resubmit_.clear();
			resubmitNext_ = 0;
			resubmitting_ = false;
		}
		return status;
	}
	uint16_t pending = static_cast<uint16_t>(availIdxSeen_ - lastAvailIdx_);
	if (pending == 0 || pending > size_) {
		/* The acquire orders the ring entries below the index after it. */
		uint16_t availIdx =
			std::atomic_ref<uint16_t>(avail_->idx).load(std::memory_order_acquire);
		pending = static_cast<uint16_t>(availIdx - lastAvailIdx_);
		if (pending == 0) {
			stats_.emptyPolls++;
			return PopStatus::Empty;
		}
		if (pending > size_) {
			VUB_LOG(Vring, Error,
				"guest moved avail index from %u to %u (size %u): queue broken",
				lastAvailIdx_, availIdx, size_);
			broken_ = true;
			return PopStatus::Broken;
		}
		availIdxSeen_ = availIdx;
	}
	uint16_t head = std::atomic_ref<uint16_t>(availRing()[lastAvailIdx_ & (size_ - 1)])
				.load(std::memory_order_relaxed);
	if (head >= size_) {
		VUB_LOG(Vring, Error, "guest made head %u available (size %u): queue broken", head,
			size_);
		broken_ = true;
		return PopStatus::Broken;
	}
	PopStatus status = walkChain(mem, head, storage, chain);
	if (status == PopStatus::Deferred)
		return status;
	lastAvailIdx_++;
	if (inflight_) [[unlikely]]
		markInflight(&head, 1);
	return status;
}

SplitQueue::PopStatus SplitQueue::walkChain(const GuestMemory &mem, uint16_t head,
					    std::span<DescBuffer> storage, DescriptorChain &chain)
{
	chain.head = head;
	chain.bufferCount = 0;
	chain.readableBytes = 0;
	chain.writableBytes = 0;
	chain.buffers = storage.data();

	SplitDesc *table = desc_;
	uint32_t tableSize = size_;
	uint32_t index = head;
	uint32_t seen = 0;
	bool inIndirect = false;
	for (;;) {
		if (++seen > tableSize)
			return refuse(ChainError::TooLong);
		SplitDesc d = readDesc(table + index);
		if (d.flags & virtio::kDescFIndirect) {
			if (inIndirect)
				return refuse(ChainError::IndirectNested);
			if (!indirect_)
				return refuse(ChainError::IndirectNotNegotiated);
			if (d.flags & virtio::kDescFNext)
				return refuse(ChainError::IndirectWithNext);
			if (d.len == 0 || d.len % sizeof(SplitDesc) != 0 ||
			    d.len / sizeof(SplitDesc) > virtio::kMaxQueueSize)
				return refuse(ChainError::IndirectBadLength);
			/* The table must be contiguous in one region: it is read in place. */
			auto *indirect = mem.translateGpa(d.addr, d.len, &regionHint_);
			if (!indirect)
				return refuse(translationFailed(mem, d.addr, d.len, kAccessRead));
			table = reinterpret_cast<SplitDesc *>(indirect);
			tableSize = d.len / sizeof(SplitDesc);
			index = 0;
			seen = 0;
			inIndirect = true;
			continue;
		}
		ChainError error = appendDescBuffer(mem, d.addr, d.len, (d.flags & writeFlag_) != 0,
						    storage, chain, &regionHint_);
		if (error != ChainError::None)
			return refuse(error);
		if (!(d.flags & virtio::kDescFNext))
			break;
		index = d.next;
		if (index >= tableSize)
			return refuse(ChainError::NextOutOfRange);
	}
	stats_.chains++;
	return PopStatus::Ok;
}

bool SplitQueue::resumeFromUsedIndex()
{
	if (!used_)
		return false;
	uint16_t used = guestUsedIdx();
	usedIdx_ = used;
	if (static_cast<uint16_t>(lastAvailIdx_ - used) <= size_)
		return false;
	VUB_LOG(Vring, Warning,
		"next avail index %u does not fit the used index %u (size %u): resuming from %u; "
		"frames taken before may be taken again",
		lastAvailIdx_, used, size_, used);
	setNextAvail(used);
	return true;
}

void SplitQueue::markInflight(const uint16_t *heads, uint16_t n)
{
	InflightDescSplit *desc = inflight_->desc();
	for (uint16_t i = 0; i < n; i++) {
		desc[heads[i]].counter = inflightCounter_++;
		desc[heads[i]].inflight = 1;
	}
}

void SplitQueue::linkInflightBatch()
{
	InflightDescSplit *desc = inflight_->desc();
	for (uint16_t i = inflightUsedIdx_; i != usedIdx_; i++) {
		uint32_t head = std::atomic_ref<uint32_t>(usedRing()[i & (size_ - 1)].id)
					.load(std::memory_order_relaxed);
		if (head >= size_)
			continue; /* rewritten by the guest: its own recovery suffers, no one else's */
		desc[head].next = inflight_->lastBatchHead;
		inflight_->lastBatchHead = static_cast<uint16_t>(head);
	}
}

void SplitQueue::clearInflightBatch()
{
	/*
	 * Only after the used index: a back-end that dies in between leaves the batch in flight,
	 * and the next one finishes it (recoverInflight()). x86 keeps the stores in order; the
	 * compiler must too, even with this function inlined.
	 */
	std::atomic_signal_fence(std::memory_order_seq_cst);
	InflightDescSplit *desc = inflight_->desc();
	uint16_t head = inflight_->lastBatchHead;
	uint16_t batch = static_cast<uint16_t>(usedIdx_ - inflightUsedIdx_);
	for (uint16_t i = 0; i < batch && head < size_; i++) {
		desc[head].inflight = 0;
		head = desc[head].next;
	}
	inflight_->usedIdx = usedIdx_;
	inflightUsedIdx_ = usedIdx_;
}

void SplitQueue::restartInflight(uint16_t guestUsed)
{
	std::memset(inflight_->desc(), 0, sizeof(InflightDescSplit) * size_);
	inflight_->features = 0;
	inflight_->descNum = size_;
	inflight_->lastBatchHead = 0;
	inflight_->usedIdx = guestUsed;
	inflight_->version = kInflightVersion;
	inflightCounter_ = 0;
}

uint16_t SplitQueue::recoverInflight()
{
	resubmit_.clear();
	resubmitNext_ = 0;
	resubmitting_ = false;
	if (!inflight_ || !used_)
		return 0;
	InflightQueueSplit &region = *inflight_;
	InflightDescSplit *desc = region.desc();
	uint16_t guestUsed = guestUsedIdx();
	usedIdx_ = guestUsed;
	inflightUsedIdx_ = guestUsed;
	if (region.version != kInflightVersion || region.descNum != size_) {
		if (region.version != 0)
			VUB_LOG(Vring, Warning,
				"inflight region of version %u for %u entries on a ring of %u: "
				"started afresh",
				region.version, region.descNum, size_);
		restartInflight(guestUsed);
		return 0;
	}
	/* Died between publishing a batch and clearing it: the batch is done. */
	uint16_t lastBatch = static_cast<uint16_t>(guestUsed - region.usedIdx);
	if (lastBatch > size_) {
		VUB_LOG(Vring, Warning,
			"inflight region at used index %u, the ring at %u (size %u): started afresh",
			region.usedIdx, guestUsed, size_);
		restartInflight(guestUsed);
		return 0;
	}
	uint16_t head = region.lastBatchHead;
	for (uint16_t i = 0; i < lastBatch && head < size_; i++) {
		desc[head].inflight = 0;
		head = desc[head].next;
	}
	region.usedIdx = guestUsed;

	std::vector<std::pair<uint64_t, uint16_t>> taken;
	for (uint16_t h = 0; h < size_; h++) {
		if (desc[h].inflight == 1)
			taken.emplace_back(desc[h].counter, h);
		else
			desc[h].inflight = 0;
	}
	std::sort(taken.begin(), taken.end());
	inflightCounter_ = taken.empty() ? 0 : taken.back().first + 1;
	for (const auto &[counter, h] : taken)
		resubmit_.push_back(h);
	resubmitting_ = !resubmit_.empty();
	/* Every chain taken is used or lined up again: the next new one follows them. */
	setNextAvail(static_cast<uint16_t>(guestUsed + resubmit_.size()));
	return static_cast<uint16_t>(resubmit_.size());
}

bool SplitQueue::needsNotification()
{
	/* Order the used index store before reading the guest's suppression fields. */
	std::atomic_thread_fence(std::memory_order_seq_cst);
	bool notify;
	if (eventIdx_) {
		uint16_t old = signalledUsed_;
		bool valid = signalledUsedValid_;
		signalledUsed_ = usedIdx_;
		signalledUsedValid_ = true;
		uint16_t event = std::atomic_ref<uint16_t>(*usedEvent()).load(std::memory_order_relaxed);
		notify = !valid || virtio::needEvent(event, usedIdx_, old);
	} else {
		uint16_t flags = std::atomic_ref<uint16_t>(avail_->flags).load(std::memory_order_relaxed);
		notify = !(flags & virtio::kAvailFNoInterrupt);
	}
	if (notify)
		stats_.notificationsSent++;
	else
		stats_.notificationsSuppressed++;
	return notify;
}

void SplitQueue::disableNotification()
{
	if (!used_ || eventIdx_)
		return; /* with EVENT_IDX, leaving avail_event behind suppresses kicks */
	std::atomic_ref<uint16_t> flags(used_->flags);
	flags.store(flags.load(std::memory_order_relaxed) | virtio::kUsedFNoNotify,
		    std::memory_order_relaxed);
}

bool SplitQueue::enableNotification()
{
	if (!used_)
		return false;
	if (eventIdx_) {
		std::atomic_ref<uint16_t>(*availEvent()).store(lastAvailIdx_, std::memory_order_relaxed);
	} else {
		std::atomic_ref<uint16_t> flags(used_->flags);
		flags.store(flags.load(std::memory_order_relaxed) & ~virtio::kUsedFNoNotify,
			    std::memory_order_relaxed);
	}
	/* The guest reads our flag after writing its index; we read its index after our flag. */
	std::atomic_thread_fence(std::memory_order_seq_cst);
	uint16_t availIdx = std::atomic_ref<uint16_t>(avail_->idx).load(std::memory_order_acquire);
	return availIdx != lastAvailIdx_;
}

} /* namespace vub::vhost */
