/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/packed_queue.h"

#include <algorithm>
#include <cstring>

#include "vub/base/log.h"

#include "chain.h"

namespace vub::vhost {

using virtio::PackedDesc;
using virtio::PackedEventSuppress;

namespace {

constexpr uint16_t kOffMask = 0x7fff;
constexpr unsigned kWrapShift = 15;

/**
 * Read the rest of a descriptor whose flags were just loaded (with acquire): once, because
 * the guest may rewrite it while we look at it.
 */
PackedDesc readDesc(PackedDesc *d, uint16_t flags)
{
	PackedDesc out;
	out.addr = std::atomic_ref<uint64_t>(d->addr).load(std::memory_order_relaxed);
	out.len = std::atomic_ref<uint32_t>(d->len).load(std::memory_order_relaxed);
	out.id = std::atomic_ref<uint16_t>(d->id).load(std::memory_order_relaxed);
	out.flags = flags;
	return out;
}

uint16_t loadFlags(PackedDesc *d)
{
	return std::atomic_ref<uint16_t>(d->flags).load(std::memory_order_acquire);
}

/**
 * One read of a field of the inflight region: the front-end maps it too, so a value is read
 * once, checked, and the checked copy used.
 */
template <typename T>
T once(T &field)
{
	return std::atomic_ref<T>(field).load(std::memory_order_relaxed);
}

/*
 * The region is read after the back-end died, not while it runs: its stores need only keep
 * their program order, which the compiler must not change across these points.
 */
void keepOrder()
{
	std::atomic_signal_fence(std::memory_order_seq_cst);
}

} /* namespace */

Result<void> PackedQueue::setSize(uint32_t size)
{
	if (size == 0 || size > maxSize_ || size > virtio::kMaxQueueSize)
		return Error{ EINVAL, "queue size is 0 or above the maximum" };
	size_ = static_cast<uint16_t>(size);
	/* A position from an earlier SET_VRING_BASE that no longer fits would index past the ring.
	 */
	if (lastAvailIdx_ >= size_ || usedIdx_ >= size_) {
		lastAvailIdx_ = 0;
		usedIdx_ = 0;
		availWrap_ = true;
		usedWrap_ = true;
	}
	signalledUsedValid_ = false;
	waitingCount_ = 0;
	headPending_ = false;
	/* The region's states are for the old size: recoverInflight() starts them again. */
	inflight_ = nullptr;
	resubmit_.clear();
	resubmitDescs_.clear();
	resubmitNext_ = 0;
	resubmitting_ = false;
	untranslate();
	return {};
}

Result<void> PackedQueue::setAddresses(uint64_t descQva, uint64_t driverEventQva,
				       uint64_t deviceEventQva)
{
	if (descQva % virtio::kPackedDescAlign || driverEventQva % virtio::kPackedEventAlign ||
	    deviceEventQva % virtio::kPackedEventAlign)
		return Error{ EINVAL, "ring address not aligned as the packed layout requires" };
	descQva_ = descQva;
	driverEventQva_ = driverEventQva;
	deviceEventQva_ = deviceEventQva;
	waitingCount_ = 0;
	headPending_ = false;
	untranslate();
	return {};
}

Result<void> PackedQueue::translate(const GuestMemory &mem)
{
	/* Chains given back and not yet published survive: publishUsed() publishes them there. */
	untranslate();
	if (size_ == 0)
		return Error{ EINVAL, "queue size not set" };
	constexpr uint64_t eventSize = sizeof(PackedEventSuppress);
	auto *desc = translateRingPart(mem, descQva_, virtio::packedDescRingSize(size_),
				       kAccessReadWrite);
	auto *driverEvent = translateRingPart(mem, driverEventQva_, eventSize, kAccessRead);
	auto *deviceEvent = translateRingPart(mem, deviceEventQva_, eventSize, kAccessWrite);
	if (!desc || !driverEvent || !deviceEvent)
		return ringNotTranslated(mem);
	/* Aligned front-end addresses are not enough: a region's address can be unaligned. */
	if (reinterpret_cast<uintptr_t>(desc) % 16 ||
	    reinterpret_cast<uintptr_t>(driverEvent) % 4 ||
	    reinterpret_cast<uintptr_t>(deviceEvent) % 4)
		return Error{ EINVAL, "ring not aligned in the back-end's mapping" };
	desc_ = reinterpret_cast<PackedDesc *>(desc);
	driverEvent_ = reinterpret_cast<PackedEventSuppress *>(driverEvent);
	deviceEvent_ = reinterpret_cast<PackedEventSuppress *>(deviceEvent);
	mem.hvaToGpa(desc, &descGpa_);
	mem.hvaToGpa(deviceEvent, &deviceEventGpa_);
	return {};
}

void PackedQueue::untranslate()
{
	desc_ = nullptr;
	driverEvent_ = nullptr;
	deviceEvent_ = nullptr;
}

uint32_t PackedQueue::base() const
{
	return uint32_t{ lastAvailIdx_ } | (availWrap_ ? virtio::kPackedBaseAvailWrap : 0) |
	       uint32_t{ usedIdx_ } << 16 | (usedWrap_ ? virtio::kPackedBaseUsedWrap : 0);
}

Result<void> PackedQueue::setBase(uint32_t base)
{
	if (size_ == 0)
		return Error{ EINVAL, "queue size not set" };
	uint16_t avail = base & kOffMask;
	bool availWrap = (base & virtio::kPackedBaseAvailWrap) != 0;
	uint16_t used = avail;
	bool usedWrap = availWrap;
	if ((base >> 16) != 0) {
		used = (base >> 16) & kOffMask;
		usedWrap = (base & virtio::kPackedBaseUsedWrap) != 0;
	}
	if (avail >= size_ || used >= size_)
		return Error{ EINVAL, "packed ring base index not below the queue size" };
	/* Same lap: used may not be ahead; next lap: used may not be more than a ring behind. */
	if (availWrap == usedWrap ? avail < used : avail > used)
		return Error{ EINVAL, "packed ring base used position inconsistent with avail" };
	lastAvailIdx_ = avail;
	availWrap_ = availWrap;
	usedIdx_ = used;
	usedWrap_ = usedWrap;
	signalledUsedValid_ = false;
	waitingCount_ = 0;
	headPending_ = false;
	/* A ring the guest broke is set up again: it may run again. */
	broken_ = false;
	return {};
}

void PackedQueue::reset()
{
	untranslate();
	descQva_ = driverEventQva_ = deviceEventQva_ = 0;
	lastAvailIdx_ = 0;
	usedIdx_ = 0;
	availWrap_ = true;
	usedWrap_ = true;
	signalledUsed_ = 0;
	signalledUsedValid_ = false;
	waitingCount_ = 0;
	headPending_ = false;
	lastDescCount_ = 0;
	ready_ = false;
	broken_ = false;
	lastError_ = ChainError::None;
	regionHint_ = 0;
	inflight_ = nullptr;
	inflightRegion_ = nullptr;
	inflightStates_.clear();
	inflightHeadOfId_.clear();
	inflightBatch_.clear();
	inflightBatchCount_ = 0;
	resubmitDescs_.clear();
	resubmit_.clear();
	resubmitNext_ = 0;
	resubmitting_ = false;
}

PackedQueue::PopStatus PackedQueue::refuse(ChainError error)
{
	lastError_ = error;
	stats_.badChains[static_cast<int>(error)]++;
	return PopStatus::BadChain;
}

PackedQueue::PopStatus PackedQueue::breakRing(const char *why, uint32_t value)
{
	VUB_LOG(Vring, Error,
		"packed ring (size %u, avail %u/%u, used %u/%u): %s (%u): queue broken", size_,
		lastAvailIdx_, availWrap_, usedIdx_, usedWrap_, why, value);
	broken_ = true;
	return PopStatus::Broken;
}

ChainError PackedQueue::takeDesc(const GuestMemory &mem, const PackedDesc &d, bool alone,
				 std::span<DescBuffer> storage, DescriptorChain &chain)
{
	if (!(d.flags & virtio::kPackedDescFIndirect))
		return appendDescBuffer(mem, d.addr, d.len, (d.flags & writeFlag_) != 0, storage,
					chain, &regionHint_);

	if (!indirect_)
		return ChainError::IndirectNotNegotiated;
	/* "MUST NOT write direct descriptors with INDIRECT set in a list linked by NEXT". */
	if (!alone)
		return ChainError::IndirectWithNext;
	if (d.len == 0 || d.len % sizeof(PackedDesc) != 0 ||
	    d.len / sizeof(PackedDesc) > virtio::kMaxQueueSize)
		return ChainError::IndirectBadLength;
	/* The table must be contiguous in one region: it is read in place, each entry once. */
	auto *table = reinterpret_cast<PackedDesc *>(mem.translateGpa(d.addr, d.len, &regionHint_));
	if (!table)
		return translationFailed(mem, d.addr, d.len, kAccessRead);
	/* Every entry is used in order; only WRITE means anything, the ids are ignored. */
	uint32_t entries = d.len / sizeof(PackedDesc);
	for (uint32_t i = 0; i < entries; i++) {
		PackedDesc *e = table + i;
		uint16_t flags =
			std::atomic_ref<uint16_t>(e->flags).load(std::memory_order_relaxed);
		uint64_t addr = std::atomic_ref<uint64_t>(e->addr).load(std::memory_order_relaxed);
		uint32_t len = std::atomic_ref<uint32_t>(e->len).load(std::memory_order_relaxed);
		if (flags & virtio::kPackedDescFIndirect)
			return ChainError::IndirectNested;
		ChainError error = appendDescBuffer(mem, addr, len, (flags & writeFlag_) != 0,
						    storage, chain, &regionHint_);
		if (error != ChainError::None)
			return error;
	}
	return ChainError::None;
}

PackedQueue::PopStatus PackedQueue::popSlow(const GuestMemory &mem, std::span<DescBuffer> storage,
					    DescriptorChain &chain)
{
	if (!ready_ || !desc_ || broken_)
		return PopStatus::Empty;
	if (resubmitting_) [[unlikely]]
		return popResubmitted(mem, storage, chain);
	uint16_t idx = lastAvailIdx_;
	bool wrap = availWrap_;
	uint16_t flags = loadFlags(desc_ + idx);
	if (!virtio::packedDescIsAvail(flags, wrap)) {
		stats_.emptyPolls++;
		return PopStatus::Empty;
	}

	chain.bufferCount = 0;
	chain.readableBytes = 0;
	chain.writableBytes = 0;
	chain.buffers = storage.data();

	/*
	 * Walk the whole chain even after an error: its length and its buffer id (in the last
	 * descriptor) are needed to give it back. The driver makes the first descriptor
	 * available last, so every later one must already be available.
	 */
	uint32_t room = size_ - inFlight();
	uint32_t count = 0;
	ChainError error = ChainError::None;
	PackedDesc d;
	/* Inflight tracking: each descriptor is copied into the free states as it is read. */
	bool record = inflight_ != nullptr;
	uint16_t state = inflightFreeHead_;
	uint16_t lastState = kNoState;
	uint32_t position = availPosition();
	for (;;) {
		if (count == room)
			return breakRing("driver made available a descriptor the device holds",
					 idx);
		d = readDesc(desc_ + idx, flags);
		count++;
		if (record && !stageInflight(state, lastState, d)) [[unlikely]] {
			/* Used descriptors not yet published hold the states the chain needs. */
			if (inflightBatchCount_ != 0)
				return PopStatus::Empty;
			record = false;
		}
		if (++idx == size_) {
			idx = 0;
			wrap = !wrap;
		}
		if (error == ChainError::None) {
			bool alone = count == 1 && !(d.flags & virtio::kPackedDescFNext);
			error = takeDesc(mem, d, alone, storage, chain);
		}
		if (!(d.flags & virtio::kPackedDescFNext))
			break;
		if (count == size_) {
			/* A chain of more descriptors than the ring holds. */
			if (error == ChainError::None)
				error = ChainError::TooLong;
			break;
		}
		flags = loadFlags(desc_ + idx);
		if (!virtio::packedDescIsAvail(flags, wrap))
			return breakRing("chain runs into a descriptor that is not available", idx);
	}
	if (d.id >= size_)
		return breakRing("buffer id beyond the ring", d.id);
	if (error == ChainError::IotlbMiss) {
		/* Nothing committed: the chain is walked again once the translation comes. */
		stats_.badChains[static_cast<int>(error)]++;
		return PopStatus::Deferred;
	}

	lastAvailIdx_ = idx;
	availWrap_ = wrap;
	lastDescCount_ = static_cast<uint16_t>(count);
	chain.head = d.id;
	chain.descCount = lastDescCount_;
	/* A refused chain too: it is returned like any other. */
	if (record) [[unlikely]]
		commitInflight(lastState, lastDescCount_, d.id, position);
	if (error != ChainError::None)
		return refuse(error);
	stats_.chains++;
	return PopStatus::Ok;
}

PackedQueue::PopStatus PackedQueue::popResubmitted(const GuestMemory &mem,
						   std::span<DescBuffer> storage,
						   DescriptorChain &chain)
{
	const Resubmit r = resubmit_[resubmitNext_];
	chain.bufferCount = 0;
	chain.readableBytes = 0;
	chain.writableBytes = 0;
	chain.buffers = storage.data();
	chain.head = r.id;
	chain.descCount = r.num;
	lastDescCount_ = r.num;
	/* Copies read once and placed by recoverInflight(); their buffers are checked here. */
	ChainError error = ChainError::None;
	for (uint16_t k = 0; k < r.num && error == ChainError::None; k++) {
		const PackedDesc &d = resubmitDescs_[r.first + k];
		bool alone = r.num == 1 && !(d.flags & virtio::kPackedDescFNext);
		error = takeDesc(mem, d, alone, storage, chain);
		/* The ring walk stops a chain there only when it is as long as the ring. */
		if (error == ChainError::None && k + 1 == r.num &&
		    (d.flags & virtio::kPackedDescFNext))
			error = ChainError::TooLong;
	}
	if (error == ChainError::IotlbMiss) {
		stats_.badChains[static_cast<int>(error)]++;
		return PopStatus::Deferred;
	}
	if (++resubmitNext_ == resubmit_.size()) {
		resubmit_.clear();
		resubmitDescs_.clear();
		resubmitNext_ = 0;
		resubmitting_ = false;
	}
	if (error != ChainError::None)
		return refuse(error);
	stats_.chains++;
	return PopStatus::Ok;
}

void PackedQueue::addUsedWaiting(uint16_t id, uint32_t len, uint16_t descCount)
{
	/* The used position moves on at once: this is where the chain will be written. */
	if (waitingCount_ == 0) {
		waitingIdx_ = usedIdx_;
		waitingWrap_ = usedWrap_;
	}
	/* More chains than that returned while no ring is mapped: a caller's bug. */
	VUB_CHECK(waitingCount_ < kUsedBatchMax);
	waiting_[waitingCount_++] = UsedEntry{ id, descCount, len };
}

void PackedQueue::writeWaiting()
{
	if (!desc_)
		return; /* still not mapped */
	uint16_t idx = waitingIdx_;
	bool wrap = waitingWrap_;
	for (uint16_t i = 0; i < waitingCount_; i++) {
		const UsedEntry &e = waiting_[i];
		writeUsed(idx, wrap, e.id, e.len);
		idx = static_cast<uint16_t>(idx + e.descCount);
		if (idx >= size_) [[unlikely]] {
			idx = static_cast<uint16_t>(idx - size_);
			wrap = !wrap;
		}
	}
	waitingCount_ = 0;
}

uint16_t PackedQueue::available(uint16_t max) const
{
	if (!ready_ || !desc_ || broken_)
		return 0;
	uint16_t idx = lastAvailIdx_;
	bool wrap = availWrap_;
	uint16_t room = static_cast<uint16_t>(size_ - inFlight());
	uint16_t n = 0;
	while (n < max && n < room && virtio::packedDescIsAvail(loadFlags(desc_ + idx), wrap)) {
		n++;
		if (++idx == size_) {
			idx = 0;
			wrap = !wrap;
		}
	}
	if (resubmitting_) [[unlikely]]
		n = static_cast<uint16_t>(
			std::min<size_t>(max, n + (resubmit_.size() - resubmitNext_)));
	return n;
}

bool PackedQueue::needsNotification()
{
	if (!driverEvent_)
		return false;
	/* Order the used descriptors' flags stores before reading the driver's event area. */
	std::atomic_thread_fence(std::memory_order_seq_cst);
	uint16_t flags =
		std::atomic_ref<uint16_t>(driverEvent_->flags).load(std::memory_order_acquire);
	bool notify;
	if (!eventIdx_) {
		notify = flags != virtio::kPackedEventFlagDisable;
	} else {
		uint16_t old = signalledUsed_;
		uint16_t now = usedIdx_;
		bool valid = signalledUsedValid_;
		signalledUsed_ = now;
		signalledUsedValid_ = true;
		if (flags != virtio::kPackedEventFlagDesc) {
			notify = flags != virtio::kPackedEventFlagDisable;
		} else if (!valid) {
			notify = true;
		} else {
			/* DPDK vhost_vring_call_packed: compare in one lap, the current used one.
			 */
			uint16_t offWrap = std::atomic_ref<uint16_t>(driverEvent_->offWrap)
						   .load(std::memory_order_relaxed);
			uint16_t off = offWrap & kOffMask;
			bool wrap = (offWrap >> kWrapShift) != 0;
			if (now <= old)
				old = static_cast<uint16_t>(old - size_);
			if (wrap != usedWrap_)
				off = static_cast<uint16_t>(off - size_);
			notify = virtio::needEvent(off, now, old);
		}
	}
	if (notify)
		stats_.notificationsSent++;
	else
		stats_.notificationsSuppressed++;
	return notify;
}

void PackedQueue::disableNotification()
{
	if (!deviceEvent_)
		return;
	std::atomic_ref<uint16_t> flags(deviceEvent_->flags);
	/* Leave the cache line clean when it already says so. */
	if (flags.load(std::memory_order_relaxed) != virtio::kPackedEventFlagDisable)
		flags.store(virtio::kPackedEventFlagDisable, std::memory_order_relaxed);
}

bool PackedQueue::enableNotification()
{
	if (!deviceEvent_)
		return false;
	std::atomic_ref<uint16_t> flags(deviceEvent_->flags);
	if (eventIdx_) {
		uint16_t offWrap =
			static_cast<uint16_t>(lastAvailIdx_ | (availWrap_ ? 1u << kWrapShift : 0u));
		std::atomic_ref<uint16_t>(deviceEvent_->offWrap)
			.store(offWrap, std::memory_order_relaxed);
		/* The driver that sees DESC sees the offset with it. */
		flags.store(virtio::kPackedEventFlagDesc, std::memory_order_release);
	} else {
		flags.store(virtio::kPackedEventFlagEnable, std::memory_order_relaxed);
	}
	/* The driver reads our flags after making a descriptor available; we read it after. */
	std::atomic_thread_fence(std::memory_order_seq_cst);
	return resubmitting_ ||
	       virtio::packedDescIsAvail(loadFlags(desc_ + lastAvailIdx_), availWrap_);
}

/* ---- Inflight I/O tracking (vhost-user "Inflight I/O tracking", packed virtqueues) ---- */

/*
 * The region's states are a free list and, for each chain taken and not returned, the copies
 * of its descriptors linked from its head state (num, last, counter, inflight 1). The queue
 * keeps its own copy of those links (inflightStates_) and only writes the region while it
 * runs. Between two calls of the data path, the region's freeHead equals oldFreeHead and its
 * usedIdx/usedWrapCounter equal the old ones: a pop stages the copies in free states, then
 * marks the head and moves both free heads past the chain; publishUsed() puts the batch's
 * states back on the free list and moves the used position, publishes, clears the heads'
 * inflight, then moves the old values. recoverInflight() keeps the batch when the driver can
 * see it and rolls back to the old values otherwise, as the specification says.
 */

namespace {

/** The region's end of a list: the queue size (DPDK's `next = i + 1`), where ours is kNoState. */
uint16_t regionLink(uint16_t state, uint16_t size, uint16_t none)
{
	return state == none ? size : state;
}

} /* namespace */

bool PackedQueue::stageInflight(uint16_t &state, uint16_t &last, const PackedDesc &d)
{
	if (state == kNoState)
		return false;
	InflightDescPacked &e = inflight_->desc()[state];
	e.id = d.id;
	e.flags = d.flags;
	e.len = d.len;
	e.addr = d.addr;
	last = state;
	state = inflightStates_[state].next;
	return true;
}

void PackedQueue::commitInflight(uint16_t last, uint16_t num, uint16_t id, uint32_t position)
{
	/* A driver that reuses a buffer id in flight: that chain is not recorded. */
	if (id >= size_ || inflightHeadOfId_[id] != kNoState)
		return;
	uint16_t head = inflightFreeHead_;
	uint16_t nextFree = inflightStates_[last].next;
	InflightDescPacked &e = inflight_->desc()[head];
	e.num = num;
	e.last = last;
	e.counter = inflightCounter_++;
	keepOrder();
	e.inflight = 1;
	keepOrder();
	uint16_t link = regionLink(nextFree, size_, kNoState);
	inflight_->freeHead = link;
	inflight_->oldFreeHead = link;

	inflightFreeHead_ = nextFree;
	InflightState &h = inflightStates_[head];
	h.last = last;
	h.num = num;
	h.id = id;
	h.position = position;
	linkNewest(head);
	inflightHeadOfId_[id] = head;
}

void PackedQueue::linkNewest(uint16_t head)
{
	InflightState &h = inflightStates_[head];
	h.older = inflightNewest_;
	h.newer = kNoState;
	if (inflightNewest_ != kNoState)
		inflightStates_[inflightNewest_].newer = head;
	else
		inflightOldest_ = head;
	inflightNewest_ = head;
}

bool PackedQueue::takeInflight(const PackedDesc &d, uint32_t position)
{
	uint16_t state = inflightFreeHead_;
	uint16_t last = kNoState;
	/* No free state: wait for publishUsed() if it frees some, else go on unrecorded. */
	if (!stageInflight(state, last, d))
		return inflightBatchCount_ == 0;
	commitInflight(last, 1, d.id, position);
	return true;
}

void PackedQueue::unlinkInflight(uint16_t head)
{
	InflightState &h = inflightStates_[head];
	if (h.older != kNoState)
		inflightStates_[h.older].newer = h.newer;
	else
		inflightOldest_ = h.newer;
	if (h.newer != kNoState)
		inflightStates_[h.newer].older = h.older;
	else
		inflightNewest_ = h.older;
	inflightHeadOfId_[h.id] = kNoState;
}

void PackedQueue::returnInflight(uint16_t id, uint16_t descCount)
{
	if (id >= size_)
		return;
	uint16_t head = inflightHeadOfId_[id];
	if (head == kNoState)
		return; /* not recorded */
	if (descCount <= inflightStates_[head].num) {
		unlinkInflight(head);
		inflightBatch_[inflightBatchCount_++] = head;
		return;
	}
	/* IN_ORDER: one used descriptor for every chain taken up to this one. */
	uint32_t left = descCount;
	while (left > 0 && inflightOldest_ != kNoState) {
		uint16_t oldest = inflightOldest_;
		left -= std::min<uint32_t>(left, inflightStates_[oldest].num);
		unlinkInflight(oldest);
		inflightBatch_[inflightBatchCount_++] = oldest;
		if (oldest == head)
			break;
	}
}

void PackedQueue::publishInflight()
{
	if (!desc_)
		return; /* nothing is published: the batch waits with the used descriptors */
	InflightQueuePacked &region = *inflight_;
	InflightDescPacked *desc = region.desc();
	uint16_t freeHead = inflightFreeHead_;
	for (uint16_t i = 0; i < inflightBatchCount_; i++) {
		uint16_t head = inflightBatch_[i];
		uint16_t last = inflightStates_[head].last;
		inflightStates_[last].next = freeHead;
		desc[last].next = regionLink(freeHead, size_, kNoState);
		freeHead = head;
	}
	inflightFreeHead_ = freeHead;
	uint16_t link = regionLink(freeHead, size_, kNoState);
	region.freeHead = link;
	region.usedIdx = usedIdx_;
	region.usedWrapCounter = usedWrap_;
	keepOrder();
	if (headPending_) {
		std::atomic_ref<uint16_t>(desc_[headIdx_].flags)
			.store(headFlags_, std::memory_order_release);
		headPending_ = false;
	}
	keepOrder();
	for (uint16_t i = 0; i < inflightBatchCount_; i++)
		desc[inflightBatch_[i]].inflight = 0;
	keepOrder();
	region.oldFreeHead = link;
	region.oldUsedIdx = usedIdx_;
	region.oldUsedWrapCounter = usedWrap_;
	inflightBatchCount_ = 0;
}

void PackedQueue::rewindInflight(uint32_t position)
{
	uint16_t idx = position & 0x7fff;
	bool wrap = (position & virtio::kPackedBaseAvailWrap) != 0;
	auto distance = [&](uint16_t fromIdx, bool fromWrap, uint16_t toIdx, bool toWrap) {
		return uint32_t{ toIdx } + (fromWrap != toWrap ? size_ : 0) - fromIdx;
	};
	uint32_t rewound = distance(idx, wrap, lastAvailIdx_, availWrap_);
	InflightDescPacked *desc = inflight_->desc();
	/* The newest chains first: those taken at or after \a position go back on the free list. */
	while (inflightNewest_ != kNoState) {
		uint16_t head = inflightNewest_;
		const InflightState h = inflightStates_[head];
		if (h.position == kNoPosition)
			break;
		uint16_t hIdx = h.position & 0x7fff;
		bool hWrap = (h.position & virtio::kPackedBaseAvailWrap) != 0;
		if (distance(idx, wrap, hIdx, hWrap) >= rewound)
			break;
		unlinkInflight(head);
		desc[head].inflight = 0;
		keepOrder();
		inflightStates_[h.last].next = inflightFreeHead_;
		desc[h.last].next = regionLink(inflightFreeHead_, size_, kNoState);
		inflightFreeHead_ = head;
		keepOrder();
		inflight_->freeHead = head;
		inflight_->oldFreeHead = head;
	}
}

void PackedQueue::scrubUnpublished(uint32_t descs)
{
	/*
	 * A back-end writes a batch's used descriptors at once and only the first one's flags
	 * at publishUsed(). One that died in between left used descriptors with their flags
	 * after the used position: the driver, which reads them in order, would take them as
	 * used once the next back-end publishes fewer before them, and see chains come back
	 * twice. They lie among the descriptors of the chains in flight, which the driver does
	 * not touch and the next back-end takes from the region: give them back their
	 * available bits. The first one never has used flags, so the driver reads none of them
	 * meanwhile.
	 */
	constexpr uint16_t kBits = virtio::kPackedDescFAvail | virtio::kPackedDescFUsed;
	uint16_t idx = usedIdx_;
	bool wrap = usedWrap_;
	for (uint32_t k = 0; k < descs; k++) {
		std::atomic_ref<uint16_t> flags(desc_[idx].flags);
		uint16_t old = flags.load(std::memory_order_relaxed);
		if ((old & kBits) == (wrap ? kBits : 0))
			flags.store(static_cast<uint16_t>((old & ~kBits) |
							  (wrap ? virtio::kPackedDescFAvail
								: virtio::kPackedDescFUsed)),
				    std::memory_order_relaxed);
		if (++idx == size_) {
			idx = 0;
			wrap = !wrap;
		}
	}
}

void PackedQueue::settleInflight(uint16_t freeLink, uint16_t used, bool usedWrap)
{
	InflightQueuePacked &region = *inflightRegion_;
	region.freeHead = freeLink;
	region.oldFreeHead = freeLink;
	region.usedIdx = used;
	region.oldUsedIdx = used;
	region.usedWrapCounter = usedWrap;
	region.oldUsedWrapCounter = usedWrap;
}

void PackedQueue::adoptInflight(uint16_t freeHead)
{
	inflightFreeHead_ = freeHead;
	inflightBatchCount_ = 0;
	inflightOldest_ = kNoState;
	inflightNewest_ = kNoState;
	inflight_ = inflightRegion_;
}

void PackedQueue::restartInflight()
{
	InflightQueuePacked &region = *inflightRegion_;
	InflightDescPacked *desc = region.desc();
	inflightStates_.assign(size_,
			       InflightState{ kNoState, 0, 0, 0, kNoState, kNoState, kNoPosition });
	inflightHeadOfId_.assign(size_, kNoState);
	region.version = 0;
	keepOrder();
	std::memset(static_cast<void *>(desc), 0, sizeof(InflightDescPacked) * size_);
	for (uint16_t i = 0; i < size_; i++) {
		desc[i].next = static_cast<uint16_t>(i + 1);
		inflightStates_[i].next = i + 1 < size_ ? static_cast<uint16_t>(i + 1) : kNoState;
	}
	region.features = 0;
	region.descNum = size_;
	settleInflight(0, usedIdx_, usedWrap_);
	keepOrder();
	region.version = kInflightVersion;
	inflightCounter_ = 0;
	adoptInflight(0);
}

uint16_t PackedQueue::recoverInflight()
{
	inflight_ = nullptr;
	resubmit_.clear();
	resubmitDescs_.clear();
	resubmitNext_ = 0;
	resubmitting_ = false;
	if (!inflightRegion_ || !desc_)
		return 0;
	const uint16_t n = size_;
	inflightBatch_.assign(n, 0);
	InflightQueuePacked &region = *inflightRegion_;
	InflightDescPacked *desc = region.desc();

	uint16_t version = once(region.version);
	uint16_t descNum = once(region.descNum);
	if (version != kInflightVersion || descNum != n) {
		if (version != 0)
			VUB_LOG(Vring, Warning,
				"inflight region of version %u for %u entries on a packed ring of %u: "
				"started afresh",
				version, descNum, n);
		restartInflight();
		return 0;
	}
	uint16_t freeHead = once(region.freeHead);
	uint16_t oldFreeHead = once(region.oldFreeHead);
	uint16_t used = once(region.usedIdx);
	uint16_t oldUsed = once(region.oldUsedIdx);
	uint8_t usedWrap = once(region.usedWrapCounter);
	uint8_t oldUsedWrap = once(region.oldUsedWrapCounter);
	auto afresh = [&](const char *why) -> uint16_t {
		VUB_LOG(Vring, Warning,
			"inflight region of a packed ring of %u: %s: started afresh", n, why);
		resubmit_.clear();
		resubmitDescs_.clear();
		restartInflight();
		return 0;
	};
	inflightStates_.assign(n,
			       InflightState{ kNoState, 0, 0, 0, kNoState, kNoState, kNoPosition });
	inflightHeadOfId_.assign(n, kNoState);
	if (used >= n || oldUsed >= n || usedWrap > 1 || oldUsedWrap > 1)
		return afresh("used position beyond the ring");
	/* A batch of used descriptors in progress is done if the driver can see its first. */
	if ((used != oldUsed || usedWrap != oldUsedWrap) &&
	    !virtio::packedDescIsAvail(loadFlags(desc_ + oldUsed), oldUsedWrap != 0)) {
		oldFreeHead = freeHead;
		oldUsed = used;
		oldUsedWrap = usedWrap;
	}
	/* Anything else in progress is rolled back. */
	enum : uint8_t { kUnknown, kFree, kChain, kHead };
	std::vector<uint8_t> owner(n, kUnknown);
	for (uint16_t state = oldFreeHead; state < n && owner[state] == kUnknown;
	     state = once(desc[state].next))
		owner[state] = kFree;

	struct Taken {
		uint64_t counter;
		uint16_t head;
	};
	std::vector<Taken> taken;
	for (uint16_t state = 0; state < n; state++) {
		if (owner[state] == kUnknown && once(desc[state].inflight) == 1)
			taken.push_back(Taken{ once(desc[state].counter), state });
	}
	std::sort(taken.begin(), taken.end(), [](const Taken &a, const Taken &b) {
		return a.counter != b.counter ? a.counter < b.counter : a.head < b.head;
	});
	uint32_t descs = 0;
	for (const Taken &t : taken) {
		uint16_t num = once(desc[t.head].num);
		uint16_t last = once(desc[t.head].last);
		if (num == 0 || num > n - descs)
			return afresh("a chain longer than the ring");
		Resubmit r{ static_cast<uint32_t>(resubmitDescs_.size()), num, 0 };
		uint16_t state = t.head;
		for (uint16_t k = 0;; k++) {
			if (state >= n || owner[state] != kUnknown)
				return afresh("a chain leaves the table or meets another list");
			owner[state] = kChain;
			InflightDescPacked &e = desc[state];
			resubmitDescs_.push_back(
				PackedDesc{ once(e.addr), once(e.len), once(e.id), once(e.flags) });
			if (k + 1 == num)
				break;
			uint16_t next = once(e.next);
			inflightStates_[state].next = next;
			state = next;
		}
		if (state != last)
			return afresh("a chain whose last state is not its end");
		r.id = resubmitDescs_.back().id;
		if (r.id >= n || inflightHeadOfId_[r.id] != kNoState)
			return afresh(
				"a chain with a buffer id beyond the ring or in flight twice");
		inflightHeadOfId_[r.id] = t.head;
		InflightState &h = inflightStates_[t.head];
		h.last = last;
		h.num = num;
		h.id = r.id;
		resubmit_.push_back(r);
		descs += num;
	}

	/*
	 * Write the region back whole: heads of the chains kept, every other state cleared, and
	 * one free list of all states no chain holds, so that garbage costs no state.
	 */
	for (const Taken &t : taken)
		owner[t.head] = kHead;
	for (uint16_t state = 0; state < n; state++) {
		if (owner[state] != kHead)
			desc[state].inflight = 0;
	}
	keepOrder();
	uint16_t firstFree = kNoState;
	uint16_t lastFree = kNoState;
	for (uint16_t state = 0; state < n; state++) {
		if (owner[state] == kChain || owner[state] == kHead)
			continue;
		if (lastFree == kNoState)
			firstFree = state;
		else {
			desc[lastFree].next = state;
			inflightStates_[lastFree].next = state;
		}
		lastFree = state;
	}
	if (lastFree != kNoState) {
		desc[lastFree].next = n;
		inflightStates_[lastFree].next = kNoState;
	}
	keepOrder();
	settleInflight(regionLink(firstFree, n, kNoState), oldUsed, oldUsedWrap != 0);

	/* The used position is the region's; the chains taken and not returned follow it. */
	uint32_t avail = uint32_t{ oldUsed } + descs;
	bool availWrap = oldUsedWrap != 0;
	if (avail >= n) {
		avail -= n;
		availWrap = !availWrap;
	}
	if (oldUsed != usedIdx_ || (oldUsedWrap != 0) != usedWrap_ || avail != lastAvailIdx_ ||
	    availWrap != availWrap_)
		VUB_LOG(Vring, Info,
			"packed ring of %u: avail %u/%u, used %u/%u from the inflight region "
			"(the front-end said avail %u/%u, used %u/%u)",
			n, avail, availWrap, oldUsed, oldUsedWrap, lastAvailIdx_, availWrap_,
			usedIdx_, usedWrap_);
	usedIdx_ = oldUsed;
	usedWrap_ = oldUsedWrap != 0;
	lastAvailIdx_ = static_cast<uint16_t>(avail);
	availWrap_ = availWrap;
	signalledUsedValid_ = false;
	waitingCount_ = 0;
	headPending_ = false;
	scrubUnpublished(descs);

	adoptInflight(firstFree);
	inflightCounter_ = taken.empty() ? 0 : taken.back().counter + 1;
	for (const Taken &t : taken)
		linkNewest(t.head); /* position: kNoPosition, not on the ring */
	resubmitting_ = !resubmit_.empty();
	return static_cast<uint16_t>(resubmit_.size());
}

} /* namespace vub::vhost */
