/* SPDX-License-Identifier: Apache-2.0 */
#include "sample_backend.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "vub/vhost/guest_memory.h"
#include "vub/vhost/message.h"
#include "vub/virtio/features.h"

namespace vub::sample {

using namespace vub::vhost;

SampleBackend::SampleBackend(size_t queues, size_t queueSize, size_t threads, bool packedRings)
	: queueSize_(queueSize), threads_(threads), packedRings_(packedRings), counters_(queues),
	  storage_(queues)
{
	for (auto &s : storage_)
		s.resize(kMaxPieces);
	for (auto &c : counters_)
		c.readHash.store(kFnvOffset);
}

uint64_t SampleBackend::features() const
{
	return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFEventIdx) |
	       virtio::bit(virtio::kFIndirectDesc) |
	       virtio::bit(virtio::kVhostUserFProtocolFeatures) |
	       (packedRings_ ? virtio::bit(virtio::kFRingPacked) : 0);
}

uint64_t SampleBackend::protocolFeatures() const
{
	return protocol::mask(protocol::kMq) | protocol::mask(protocol::kReplyAck) |
	       protocol::mask(protocol::kConfig) | protocol::mask(protocol::kBackendReq) |
	       protocol::mask(protocol::kResetDevice) | protocol::mask(protocol::kStatus) |
	       protocol::mask(protocol::kConfigureMemSlots) |
	       protocol::mask(protocol::kInbandNotifications) | protocol::mask(protocol::kRarp) |
	       protocol::mask(protocol::kMtu) | protocol::mask(protocol::kInflightShmfd);
}

Result<void> SampleBackend::sendRarp(const uint8_t (&mac)[6])
{
	uint64_t value = 0;
	std::memcpy(&value, mac, sizeof(mac));
	rarpMac_.store(value);
	return {};
}

Result<void> SampleBackend::setMtu(uint16_t mtu)
{
	mtu_.store(mtu);
	return {};
}

std::vector<uint8_t> SampleBackend::getConfig(uint32_t offset, uint32_t size) const
{
	if (offset > 16 || size > 16 - offset)
		return {};
	std::vector<uint8_t> out(size);
	for (uint32_t i = 0; i < size; i++)
		out[i] = static_cast<uint8_t>(offset + i);
	return out;
}

std::vector<uint64_t> SampleBackend::queuesPerThread() const
{
	/* Queues spread round-robin over the threads. */
	std::vector<uint64_t> masks(threads_, 0);
	for (size_t q = 0; q < counters_.size(); q++)
		masks[q % threads_] |= uint64_t{ 1 } << q;
	return masks;
}

void SampleBackend::publish(VringState &vring, QueueCounters &c)
{
	vring.visitQueue([](auto &q) { q.publishUsed(); });
	if (vring.needsNotification()) {
		vring.signalUsedQueue();
		c.notifications.fetch_add(1, std::memory_order_relaxed);
	}
}

unsigned SampleBackend::processBurst(size_t queue, VringState &vring, unsigned max)
{
	return vring.visitQueue([&](auto &q) { return processBurst(queue, vring, q, max); });
}

template <typename Queue>
unsigned SampleBackend::processBurst(size_t queue, VringState &vring, Queue &q, unsigned max)
{
	using PopStatus = typename Queue::PopStatus;
	QueueCounters &c = counters_[queue];
	const GuestMemory *mem = vring.memory().memory();
	uint64_t hash = c.readHash.load(std::memory_order_relaxed);
	uint64_t readBytes = 0, writtenBytes = 0;
	unsigned n = 0, good = 0;
	for (; n < max; n++) {
		DescriptorChain chain;
		auto status = q.pop(*mem, storage_[queue], chain);
		/* Deferred: it waits for an IOTLB translation, asked for already. */
		if (status == PopStatus::Empty || status == PopStatus::Deferred)
			break;
		if (status == PopStatus::Broken) {
			c.broken.fetch_add(1, std::memory_order_relaxed);
			vring.signalError();
			break;
		}
		uint32_t written = 0;
		if (status == PopStatus::BadChain) {
			c.badChains.fetch_add(1, std::memory_order_relaxed);
		} else {
			for (const DescBuffer &b : chain.pieces()) {
				if (b.writable) {
					for (uint32_t i = 0; i < b.len; i++)
						b.hva[i] = static_cast<uint8_t>(queue + written + i);
					written += b.len;
				} else {
					for (uint32_t i = 0; i < b.len; i++)
						hash = (hash ^ b.hva[i]) * kFnvPrime;
				}
			}
			readBytes += chain.readableBytes;
			writtenBytes += written;
			good++;
		}
		if constexpr (std::is_same_v<Queue, PackedQueue>)
			q.addUsed(chain.head, written, chain.descCount);
		else
			q.addUsed(chain.head, written);
	}
	if (n == 0)
		return 0;
	/* One used-index store and at most one notification per burst. */
	c.chains.fetch_add(good, std::memory_order_relaxed);
	c.readBytes.fetch_add(readBytes, std::memory_order_relaxed);
	c.writtenBytes.fetch_add(writtenBytes, std::memory_order_relaxed);
	c.readHash.store(hash, std::memory_order_relaxed);
	publish(vring, c);
	return n;
}

Result<void> SampleBackend::handleEvent(uint16_t deviceEvent, uint32_t, std::span<VringT *const> vrings,
					size_t threadId)
{
	if (deviceEvent >= vrings.size())
		return {};
	size_t queue = threadId + deviceEvent * threads_; /* the inverse of queuesPerThread() */
	auto vring = vrings[deviceEvent]->getMut();
	/*
	 * A bounded amount of work per event: the control thread takes this vring's lock to stop
	 * it, and a guest can keep its ring full for ever (even write its avail index through a
	 * buffer it gives us to fill). Work left over comes back through our own kick, after the
	 * worker's other events.
	 */
	vring->disableNotification();
	for (unsigned bursts = 0; bursts < kBurstsPerEvent; bursts++) {
		if (processBurst(queue, *vring, kBurst) == kBurst)
			continue;
		if (vring->visitQueue([](auto &q) { return q.isBroken(); }) ||
		    !vring->enableNotification())
			return {};
		vring->disableNotification();
	}
	vring->getKick().notify();
	return {};
}

unsigned SampleBackend::pollQueue(uint16_t queueIndex, VringState &vring, size_t)
{
	return processBurst(queueIndex, vring, kBurst);
}

void SampleBackend::printStats() const
{
	for (size_t q = 0; q < counters_.size(); q++) {
		const QueueCounters &c = counters_[q];
		std::printf("queue %zu: chains %" PRIu64 " bytes %" PRIu64 " written %" PRIu64
			    " notifications %" PRIu64 " bad %" PRIu64 " broken %" PRIu64 "\n",
			    q, c.chains.load(), c.readBytes.load(), c.writtenBytes.load(),
			    c.notifications.load(), c.badChains.load(), c.broken.load());
	}
	std::fflush(stdout);
}

} /* namespace vub::sample */
