/* SPDX-License-Identifier: Apache-2.0 */
#include "packed_driver.h"

#include <atomic>
#include <cstring>
#include <stdexcept>

#include "vub/virtio/split_ring.h"

#include "guest_memory_fd.h"

namespace vub::test {

using virtio::PackedDesc;
using virtio::PackedEventSuppress;

namespace {

uint16_t loadAcquire(uint16_t *field)
{
	return std::atomic_ref<uint16_t>(*field).load(std::memory_order_acquire);
}

void storeRelease(uint16_t *field, uint16_t value)
{
	std::atomic_ref<uint16_t>(*field).store(value, std::memory_order_release);
}

/** Write a descriptor's address, length and id; its flags are stored on their own. */
void writeBody(PackedDesc *d, uint64_t addr, uint32_t len, uint16_t id)
{
	std::atomic_ref<uint64_t>(d->addr).store(addr, std::memory_order_relaxed);
	std::atomic_ref<uint32_t>(d->len).store(len, std::memory_order_relaxed);
	std::atomic_ref<uint16_t>(d->id).store(id, std::memory_order_relaxed);
}

} /* namespace */

PackedDriver::PackedDriver(GuestMemoryFd &mem, uint16_t queueSize) : mem_(mem), num_(queueSize)
{
	if (queueSize == 0 || queueSize > virtio::kMaxQueueSize)
		throw std::invalid_argument("PackedDriver: queue size is 0 or above 32768");
	/* Page-align the ring like a Linux guest; the spec asks for 16. */
	descGpa_ = mem_.alloc(virtio::packedDescRingSize(num_), 4096);
	driverEventGpa_ = mem_.alloc(sizeof(PackedEventSuppress), virtio::kPackedEventAlign);
	deviceEventGpa_ = mem_.alloc(sizeof(PackedEventSuppress), virtio::kPackedEventAlign);
	descs_ = reinterpret_cast<PackedDesc *>(mem_.hostPtr(descGpa_));
	ids_.resize(num_);
	freeIds_.reserve(num_);
	reset();
}

uint64_t PackedDriver::descQva() const
{
	return mem_.gpaToQva(descGpa_);
}

uint64_t PackedDriver::driverEventQva() const
{
	return mem_.gpaToQva(driverEventGpa_);
}

uint64_t PackedDriver::deviceEventQva() const
{
	return mem_.gpaToQva(deviceEventGpa_);
}

uint16_t PackedDriver::availFlags(bool wrap)
{
	return wrap ? virtio::kPackedDescFAvail : virtio::kPackedDescFUsed;
}

uint16_t PackedDriver::usedFlags(bool wrap)
{
	return wrap ? virtio::kPackedDescFAvail | virtio::kPackedDescFUsed : 0;
}

void PackedDriver::reset()
{
	std::memset(static_cast<void *>(descs_), 0, virtio::packedDescRingSize(num_));
	std::memset(driverEvent(), 0, sizeof(PackedEventSuppress));
	std::memset(deviceEvent(), 0, sizeof(PackedEventSuppress));
	freeIds_.clear();
	postedIds_.clear();
	for (uint16_t i = num_; i > 0; i--) {
		ids_[i - 1].inFlight = false;
		ids_[i - 1].count = 0;
		freeIds_.push_back(static_cast<uint16_t>(i - 1)); /* id 0 comes out first */
	}
	numFree_ = num_;
	availIdx_ = 0;
	availWrap_ = true;
	usedIdx_ = 0;
	usedWrap_ = true;
	numAdded_ = 0;
	usedBroken_ = false;
	badUsedIds_ = 0;
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

PackedEventSuppress *PackedDriver::driverEvent() const
{
	return reinterpret_cast<PackedEventSuppress *>(mem_.hostPtr(driverEventGpa_));
}

PackedEventSuppress *PackedDriver::deviceEvent() const
{
	return reinterpret_cast<PackedEventSuppress *>(mem_.hostPtr(deviceEventGpa_));
}

void PackedDriver::advance(uint16_t &idx, bool &wrap, uint16_t by) const
{
	uint32_t next = uint32_t{ idx } + by;
	if (next >= num_) {
		next -= num_;
		wrap = !wrap;
	}
	idx = static_cast<uint16_t>(next);
}

int PackedDriver::takeId()
{
	if (freeIds_.empty())
		return -1;
	uint16_t id = freeIds_.back();
	freeIds_.pop_back();
	return id;
}

int PackedDriver::addChain(std::span<const BufferSpec> bufs)
{
	if (bufs.empty() || bufs.size() > numFree_)
		return -1;
	int taken = takeId(); /* never fails: a free descriptor means a free id */
	if (taken < 0)
		return -1;
	uint16_t id = static_cast<uint16_t>(taken);
	uint16_t first = availIdx_;
	uint16_t firstFlags = 0;
	uint16_t idx = availIdx_;
	bool wrap = availWrap_;
	for (size_t k = 0; k < bufs.size(); k++) {
		bool last = k + 1 == bufs.size();
		uint16_t flags = static_cast<uint16_t>(
			availFlags(wrap) | (bufs[k].writable ? virtio::kPackedDescFWrite : 0) |
			(last ? 0 : virtio::kPackedDescFNext));
		/* The id belongs in the last descriptor; the others carry one that is not. */
		writeBody(&descs_[idx], bufs[k].gpa, bufs[k].len,
			  last ? id : static_cast<uint16_t>(~id));
		if (k == 0)
			firstFlags = flags;
		else
			std::atomic_ref<uint16_t>(descs_[idx].flags)
				.store(flags, std::memory_order_relaxed);
		advance(idx, wrap, 1);
	}
	/* The first descriptor is made available last: it publishes the whole chain. */
	publishHead(first, firstFlags);
	uint16_t count = static_cast<uint16_t>(bufs.size());
	ids_[id].inFlight = true;
	ids_[id].count = count;
	postedIds_.push_back(id);
	numFree_ = static_cast<uint16_t>(numFree_ - count);
	numAdded_ = static_cast<uint16_t>(numAdded_ + count);
	availIdx_ = idx;
	availWrap_ = wrap;
	return id;
}

int PackedDriver::addIndirectChain(std::span<const BufferSpec> bufs)
{
	if (bufs.empty() || numFree_ == 0 || bufs.size() > 0xffffffffu / sizeof(PackedDesc))
		return -1;
	int taken = takeId();
	if (taken < 0)
		return -1;
	uint16_t id = static_cast<uint16_t>(taken);
	IdState &s = ids_[id];
	uint32_t n = static_cast<uint32_t>(bufs.size());
	if (s.indirectCap < n) {
		try {
			s.indirectGpa = mem_.alloc(n * sizeof(PackedDesc), 16);
		} catch (...) {
			freeIds_.push_back(id);
			throw;
		}
		s.indirectCap = n;
	}
	auto *table = reinterpret_cast<PackedDesc *>(mem_.hostPtr(s.indirectGpa));
	for (uint32_t k = 0; k < n; k++) {
		PackedDesc d{};
		d.addr = bufs[k].gpa;
		d.len = bufs[k].len;
		d.id = 0; /* ignored in a table */
		d.flags = bufs[k].writable ? virtio::kPackedDescFWrite : 0;
		std::memcpy(&table[k], &d, sizeof(d));
	}
	writeBody(&descs_[availIdx_], s.indirectGpa, n * static_cast<uint32_t>(sizeof(PackedDesc)),
		  id);
	publishHead(availIdx_,
		    static_cast<uint16_t>(availFlags(availWrap_) | virtio::kPackedDescFIndirect));
	s.inFlight = true;
	s.count = 1;
	postedIds_.push_back(id);
	numFree_--;
	numAdded_++;
	advance(availIdx_, availWrap_, 1);
	return id;
}

void PackedDriver::publishHead(uint16_t idx, uint16_t flags)
{
	if (holdNextHead_) {
		holdNextHead_ = false;
		heldHead_ = { idx, flags };
		return;
	}
	storeRelease(&descs_[idx].flags, flags);
}

void PackedDriver::releaseHeldHead()
{
	if (!heldHead_)
		return;
	storeRelease(&descs_[heldHead_->first].flags, heldHead_->second);
	heldHead_.reset();
}

uint64_t PackedDriver::indirectTableGpa(uint16_t id) const
{
	if (id >= num_)
		throw std::out_of_range("PackedDriver::indirectTableGpa: id >= queue size");
	return ids_[id].indirectGpa;
}

bool PackedDriver::needsKick()
{
	/* Our descriptor stores before the read of the device's area (virtio_mb). */
	std::atomic_thread_fence(std::memory_order_seq_cst);
	uint16_t newIdx = availIdx_;
	uint16_t oldIdx = static_cast<uint16_t>(availIdx_ - numAdded_);
	numAdded_ = 0;
	uint16_t flags = deviceEventFlags();
	if (flags != virtio::kPackedEventFlagDesc)
		return flags != virtio::kPackedEventFlagDisable;
	uint16_t offWrap = deviceEventOffWrap();
	bool wrap = (offWrap >> 15) != 0;
	uint16_t event = offWrap & 0x7fff;
	if (wrap != availWrap_)
		event = static_cast<uint16_t>(event - num_);
	return virtio::needEvent(event, newIdx, oldIdx);
}

unsigned PackedDriver::inFlight() const
{
	unsigned n = 0;
	for (const IdState &s : ids_)
		n += s.inFlight ? 1 : 0;
	return n;
}

void PackedDriver::setDriverEvent(uint16_t flags, uint16_t offWrap)
{
	std::atomic_ref<uint16_t>(driverEvent()->offWrap).store(offWrap, std::memory_order_relaxed);
	storeRelease(&driverEvent()->flags, flags);
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

uint16_t PackedDriver::driverEventFlags() const
{
	return loadAcquire(&driverEvent()->flags);
}

uint16_t PackedDriver::driverEventOffWrap() const
{
	return loadAcquire(&driverEvent()->offWrap);
}

uint16_t PackedDriver::deviceEventFlags() const
{
	return loadAcquire(&deviceEvent()->flags);
}

uint16_t PackedDriver::deviceEventOffWrap() const
{
	return loadAcquire(&deviceEvent()->offWrap);
}

std::vector<PackedUsedElem> PackedDriver::collectUsed()
{
	std::vector<PackedUsedElem> out;
	while (!usedBroken_) {
		PackedDesc *d = &descs_[usedIdx_];
		uint16_t flags = loadAcquire(&d->flags); /* id and len are read after it */
		bool avail = (flags & virtio::kPackedDescFAvail) != 0;
		bool used = (flags & virtio::kPackedDescFUsed) != 0;
		if (avail != usedWrap_ || used != usedWrap_)
			break;
		uint16_t id = std::atomic_ref<uint16_t>(d->id).load(std::memory_order_relaxed);
		uint32_t len = std::atomic_ref<uint32_t>(d->len).load(std::memory_order_relaxed);
		if (id >= num_ || !ids_[id].inFlight) {
			badUsedIds_++;
			usedBroken_ = true;
			break;
		}
		usedDescsRead_++;
		/* In order: every chain posted before id comes back with it. */
		for (;;) {
			uint16_t next = inOrder_ ? postedIds_.front() : id;
			out.push_back(PackedUsedElem{ next, next == id ? len : 0 });
			IdState &s = ids_[next];
			advance(usedIdx_, usedWrap_, s.count);
			numFree_ = static_cast<uint16_t>(numFree_ + s.count);
			s.inFlight = false;
			s.count = 0;
			freeIds_.push_back(next);
			std::erase(postedIds_, next);
			if (next == id)
				break;
		}
	}
	return out;
}

PackedDesc *PackedDriver::desc(uint16_t i)
{
	if (i >= num_)
		throw std::out_of_range("PackedDriver::desc: index >= queue size");
	return &descs_[i];
}

void PackedDriver::setDescFlags(uint16_t i, uint16_t flags)
{
	storeRelease(&desc(i)->flags, flags);
}

uint16_t PackedDriver::descFlags(uint16_t i) const
{
	if (i >= num_)
		throw std::out_of_range("PackedDriver::descFlags: index >= queue size");
	return loadAcquire(&descs_[i].flags);
}

} /* namespace vub::test */
