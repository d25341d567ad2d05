/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/packed_queue.h"

#include "chain.h"
#include "vub/base/log.h"

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
	auto *desc = mem.translateQva(descQva_, virtio::packedDescRingSize(size_));
	auto *driverEvent = mem.translateQva(driverEventQva_, sizeof(PackedEventSuppress));
	auto *deviceEvent = mem.translateQva(deviceEventQva_, sizeof(PackedEventSuppress));
	if (!desc || !driverEvent || !deviceEvent)
		return Error{ EFAULT, "ring not wholly inside one guest memory region" };
	/* Aligned front-end addresses are not enough: a region's address can be unaligned. */
	if (reinterpret_cast<uintptr_t>(desc) % 16 ||
	    reinterpret_cast<uintptr_t>(driverEvent) % 4 ||
	    reinterpret_cast<uintptr_t>(deviceEvent) % 4)
		return Error{ EINVAL, "ring not aligned in the back-end's mapping" };
	desc_ = reinterpret_cast<PackedDesc *>(desc);
	driverEvent_ = reinterpret_cast<PackedEventSuppress *>(driverEvent);
	deviceEvent_ = reinterpret_cast<PackedEventSuppress *>(deviceEvent);
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
		return ChainError::BadAddress;
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
	for (;;) {
		if (count == room)
			return breakRing("driver made available a descriptor the device holds",
					 idx);
		d = readDesc(desc_ + idx, flags);
		count++;
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

	lastAvailIdx_ = idx;
	availWrap_ = wrap;
	lastDescCount_ = static_cast<uint16_t>(count);
	chain.head = d.id;
	chain.descCount = lastDescCount_;
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
	return virtio::packedDescIsAvail(loadFlags(desc_ + lastAvailIdx_), availWrap_);
}

} /* namespace vub::vhost */
