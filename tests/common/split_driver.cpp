/* SPDX-License-Identifier: Apache-2.0 */
#include "split_driver.h"

#include <atomic>
#include <cstring>
#include <stdexcept>

#include "guest_memory_fd.h"

namespace vub::test {

using virtio::SplitDesc;
using virtio::SplitUsedElem;

namespace {

uint16_t loadAcquire(uint16_t *field)
{
	return std::atomic_ref<uint16_t>(*field).load(std::memory_order_acquire);
}

void storeRelease(uint16_t *field, uint16_t value)
{
	std::atomic_ref<uint16_t>(*field).store(value, std::memory_order_release);
}

} /* namespace */

SplitDriver::SplitDriver(GuestMemoryFd &mem, uint16_t queueSize, size_t usedAlign)
	: mem_(mem), num_(queueSize)
{
	if (queueSize == 0 || (queueSize & (queueSize - 1)) != 0 ||
	    queueSize > virtio::kMaxQueueSize)
		throw std::invalid_argument(
			"SplitDriver: queue size is not a power of two <= 32768");
	if (usedAlign < virtio::kSplitUsedAlign)
		usedAlign = virtio::kSplitUsedAlign;

	/* Page-align the table like a Linux guest; the spec asks for 16. */
	descGpa_ = mem_.alloc(virtio::splitDescTableSize(num_), 4096);
	availGpa_ = mem_.alloc(virtio::splitAvailSize(num_), virtio::kSplitAvailAlign);
	usedGpa_ = mem_.alloc(virtio::splitUsedSize(num_), usedAlign);
	descs_ = reinterpret_cast<SplitDesc *>(mem_.hostPtr(descGpa_));
	avail_ = mem_.hostPtr(availGpa_);
	used_ = mem_.hostPtr(usedGpa_);
	next_.resize(num_);
	heads_.resize(num_);
	reset();
}

uint64_t SplitDriver::descQva() const
{
	return mem_.gpaToQva(descGpa_);
}

uint64_t SplitDriver::availQva() const
{
	return mem_.gpaToQva(availGpa_);
}

uint64_t SplitDriver::usedQva() const
{
	return mem_.gpaToQva(usedGpa_);
}

void SplitDriver::reset()
{
	std::memset(descs_, 0, virtio::splitDescTableSize(num_));
	std::memset(avail_, 0, virtio::splitAvailSize(num_));
	std::memset(used_, 0, virtio::splitUsedSize(num_));
	for (uint16_t i = 0; i < num_; i++) {
		next_[i] = static_cast<uint16_t>(i + 1 < num_ ? i + 1 : 0);
		heads_[i].inFlight = false;
		heads_[i].count = 0;
	}
	freeHead_ = 0;
	numFree_ = num_;
	availShadow_ = 0;
	published_ = 0;
	kickChecked_ = 0;
	lastUsed_ = 0;
	badUsedIds_ = 0;
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

uint16_t *SplitDriver::availField(size_t offset) const
{
	return reinterpret_cast<uint16_t *>(avail_ + offset);
}

uint16_t *SplitDriver::availSlot(uint16_t slot) const
{
	return availField(virtio::kSplitAvailRingOffset +
			  2 * size_t{ uint16_t(slot & (num_ - 1)) });
}

uint16_t *SplitDriver::usedField(size_t offset) const
{
	return reinterpret_cast<uint16_t *>(used_ + offset);
}

uint16_t SplitDriver::takeFree()
{
	uint16_t i = freeHead_;
	freeHead_ = next_[i];
	numFree_--;
	return i;
}

void SplitDriver::freeChain(uint16_t head)
{
	HeadState &h = heads_[head];
	uint16_t last = head;
	for (uint16_t k = 1; k < h.count; k++)
		last = next_[last];
	next_[last] = freeHead_;
	freeHead_ = head;
	numFree_ = static_cast<uint16_t>(numFree_ + h.count);
	h.inFlight = false;
	h.count = 0;
}

int SplitDriver::addChain(std::span<const BufferSpec> bufs)
{
	if (bufs.empty() || bufs.size() > numFree_)
		return -1;
	uint16_t head = takeFree();
	uint16_t cur = head;
	for (size_t k = 0; k < bufs.size(); k++) {
		bool last = k + 1 == bufs.size();
		uint16_t nxt = last ? 0 : takeFree();
		next_[cur] = nxt;
		SplitDesc d{};
		d.addr = bufs[k].gpa;
		d.len = bufs[k].len;
		d.flags = static_cast<uint16_t>((bufs[k].writable ? virtio::kDescFWrite : 0) |
						(last ? 0 : virtio::kDescFNext));
		d.next = nxt;
		std::memcpy(&descs_[cur], &d, sizeof(d));
		cur = nxt;
	}
	heads_[head].inFlight = true;
	heads_[head].count = static_cast<uint16_t>(bufs.size());
	setAvailRing(availShadow_, head);
	availShadow_++;
	return head;
}

int SplitDriver::addIndirectChain(std::span<const BufferSpec> bufs)
{
	if (bufs.empty() || numFree_ == 0 || bufs.size() > 0xffffffffu / sizeof(SplitDesc))
		return -1;
	uint16_t head = takeFree();
	HeadState &h = heads_[head];
	uint32_t n = static_cast<uint32_t>(bufs.size());
	if (h.indirectCap < n) {
		try {
			h.indirectGpa = mem_.alloc(n * sizeof(SplitDesc), 16);
		} catch (...) {
			next_[head] = freeHead_;
			freeHead_ = head;
			numFree_++;
			throw;
		}
		h.indirectCap = n;
	}
	auto *table = reinterpret_cast<SplitDesc *>(mem_.hostPtr(h.indirectGpa));
	for (uint32_t k = 0; k < n; k++) {
		bool last = k + 1 == n;
		SplitDesc d{};
		d.addr = bufs[k].gpa;
		d.len = bufs[k].len;
		d.flags = static_cast<uint16_t>((bufs[k].writable ? virtio::kDescFWrite : 0) |
						(last ? 0 : virtio::kDescFNext));
		d.next = static_cast<uint16_t>(last ? 0 : k + 1);
		std::memcpy(&table[k], &d, sizeof(d));
	}
	SplitDesc d{};
	d.addr = h.indirectGpa;
	d.len = n * static_cast<uint32_t>(sizeof(SplitDesc));
	d.flags = virtio::kDescFIndirect;
	d.next = 0;
	std::memcpy(&descs_[head], &d, sizeof(d));
	h.inFlight = true;
	h.count = 1;
	setAvailRing(availShadow_, head);
	availShadow_++;
	return head;
}

uint64_t SplitDriver::indirectTableGpa(uint16_t head) const
{
	if (head >= num_)
		throw std::out_of_range("SplitDriver::indirectTableGpa: head >= queue size");
	return heads_[head].indirectGpa;
}

void SplitDriver::publish()
{
	published_ = availShadow_;
	storeRelease(availField(2), published_);
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool SplitDriver::needsKick(bool eventIdx)
{
	uint16_t oldIdx = kickChecked_;
	kickChecked_ = published_;
	std::atomic_thread_fence(std::memory_order_seq_cst);
	if (eventIdx)
		return virtio::needEvent(availEvent(), published_, oldIdx);
	return (usedFlags() & virtio::kUsedFNoNotify) == 0;
}

unsigned SplitDriver::inFlight() const
{
	unsigned n = 0;
	for (const HeadState &h : heads_)
		n += h.inFlight ? 1 : 0;
	return n;
}

void SplitDriver::setAvailFlags(uint16_t flags)
{
	storeRelease(availField(0), flags);
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

uint16_t SplitDriver::availFlags() const
{
	return loadAcquire(availField(0));
}

void SplitDriver::setUsedEvent(uint16_t idx)
{
	storeRelease(availField(virtio::splitUsedEventOffset(num_)), idx);
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

uint16_t SplitDriver::usedEvent() const
{
	return loadAcquire(availField(virtio::splitUsedEventOffset(num_)));
}

uint16_t SplitDriver::usedIdx() const
{
	return loadAcquire(usedField(2));
}

uint16_t SplitDriver::usedFlags() const
{
	return loadAcquire(usedField(0));
}

uint16_t SplitDriver::availEvent() const
{
	return loadAcquire(usedField(virtio::splitAvailEventOffset(num_)));
}

SplitUsedElem SplitDriver::usedElem(uint16_t slot) const
{
	SplitUsedElem e{};
	size_t off = virtio::kSplitUsedRingOffset + sizeof(SplitUsedElem) * (slot & (num_ - 1));
	std::memcpy(&e, used_ + off, sizeof(e));
	return e;
}

std::vector<SplitUsedElem> SplitDriver::collectUsed()
{
	std::vector<SplitUsedElem> out;
	uint16_t end = usedIdx(); /* acquire: the entries below are read after it */
	while (lastUsed_ != end) {
		SplitUsedElem e = usedElem(lastUsed_);
		lastUsed_++;
		out.push_back(e);
		if (e.id >= num_ || !heads_[e.id].inFlight) {
			badUsedIds_++;
			continue;
		}
		freeChain(static_cast<uint16_t>(e.id));
	}
	return out;
}

SplitDesc *SplitDriver::desc(uint16_t i)
{
	if (i >= num_)
		throw std::out_of_range("SplitDriver::desc: index >= queue size");
	return &descs_[i];
}

void SplitDriver::setAvailRing(uint16_t slot, uint16_t head)
{
	std::atomic_ref<uint16_t>(*availSlot(slot)).store(head, std::memory_order_relaxed);
}

uint16_t SplitDriver::availRing(uint16_t slot) const
{
	return std::atomic_ref<uint16_t>(*availSlot(slot)).load(std::memory_order_relaxed);
}

void SplitDriver::setAvailIdx(uint16_t idx)
{
	storeRelease(availField(2), idx);
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

uint16_t SplitDriver::publishedAvailIdx() const
{
	return loadAcquire(availField(2));
}

} /* namespace vub::test */
