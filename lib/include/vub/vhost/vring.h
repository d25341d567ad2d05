/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "vub/base/event_fd.h"
#include "vub/base/rcu.h"
#include "vub/vhost/backend_channel.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/packed_queue.h"
#include "vub/vhost/split_queue.h"

namespace vub::vhost {

/**
 * \brief The state of one vring: its queue, its kick, call and err notifiers, and the enabled
 * and started bits (separate, as the specification's ring states are).
 *
 * The queue is split or packed, as VIRTIO_F_RING_PACKED was negotiated: getQueue() and
 * getPackedQueue() give each, visitQueue() the one in use. The calls that both layouts share
 * (started, notifications) go to the one in use; addUsed() is the split ring's.
 *
 * No lock: VringState has a single owner at a time. VringMutex and VringRwLock put it behind a
 * lock for back-ends whose workers and the control thread share it.
 */
class VringState
{
public:
	VringState(const GuestMemoryAtomic &mem, uint16_t maxQueueSize)
		: mem_(&mem), queue_(maxQueueSize), packedQueue_(maxQueueSize)
	{
	}

	/** \brief The guest memory snapshot this vring's descriptors are translated in. */
	const GuestMemoryAtomic &memory() const { return *mem_; }
	SplitQueue &getQueue() { return queue_; }
	const SplitQueue &getQueue() const { return queue_; }
	PackedQueue &getPackedQueue() { return packedQueue_; }
	const PackedQueue &getPackedQueue() const { return packedQueue_; }
	/** \brief Whether the packed layout is in use (VIRTIO_F_RING_PACKED negotiated). */
	bool isPacked() const { return packed_; }
	/** \brief Choose the layout; control thread, ring not started. */
	void setPacked(bool packed) { packed_ = packed; }
	/** \brief \a f(queue) on the queue in use, SplitQueue or PackedQueue. */
	template <typename F>
	decltype(auto) visitQueue(F &&f)
	{
		return packed_ ? f(packedQueue_) : f(queue_);
	}

	bool isEnabled() const { return enabled_; }
	void setEnabled(bool enabled)
	{
		enabled_ = enabled;
		enabledSinceStop_ |= enabled;
	}
	/**
	 * \brief Whether the ring was enabled since it last stopped. A started ring that is
	 * disabled is processed without side effects (a net device drains its TX); one that was
	 * not enabled since it stopped is still being set up (DPDK's virtio-user sends the
	 * enable after the kick that starts it) and is better left alone: draining it would drop
	 * what a guest that kept its rings across a back-end restart had queued.
	 */
	bool enabledSinceStop() const { return enabledSinceStop_; }
	/** \brief The ring stopped (GET_VRING_BASE, a reset): enabledSinceStop() starts over. */
	void markStopped() { enabledSinceStop_ = enabled_; }
	/**
	 * \brief The NUMA node of the descriptor ring, found when the ring last started; -1 when
	 * unknown. Any thread.
	 */
	int numaNode() const { return numaNode_.load(std::memory_order_relaxed); }
	void setNumaNode(int node) { numaNode_.store(node, std::memory_order_relaxed); }
	/** \brief Started: configured and kicked; the queue may be processed. */
	bool isStarted() const { return packed_ ? packedQueue_.isReady() : queue_.isReady(); }

	/** \brief Put (\a head, \a len) on the split used ring and publish it at once. */
	void addUsed(uint16_t head, uint32_t len)
	{
		queue_.addUsed(head, len);
		queue_.publishUsed();
	}
	/** \brief Notify the guest: write the call eventfd, or send BACKEND_VRING_CALL in-band. */
	bool signalUsedQueue();
	/** \brief Signal the err eventfd, or BACKEND_VRING_ERR in-band. */
	bool signalError();
	bool enableNotification()
	{
		return packed_ ? packedQueue_.enableNotification() : queue_.enableNotification();
	}
	void disableNotification()
	{
		if (packed_)
			packedQueue_.disableNotification();
		else
			queue_.disableNotification();
	}
	bool needsNotification()
	{
		return packed_ ? packedQueue_.needsNotification() : queue_.needsNotification();
	}
	/** \brief The counters of the queue in use. */
	QueueStats &queueStats() { return packed_ ? packedQueue_.stats() : queue_.stats(); }

	/** \brief Set the front-end addresses of the rings (SET_VRING_ADDR). */
	Result<void> setQueueInfo(uint64_t descQva, uint64_t availQva, uint64_t usedQva)
	{
		return visitQueue(
			[&](auto &q) { return q.setAddresses(descQva, availQva, usedQva); });
	}

	const EventFd &getKick() const { return kick_; }
	const EventFd &getCall() const { return call_; }
	const EventFd &getErr() const { return err_; }
	void setKick(EventFd kick) { kick_ = std::move(kick); }
	void setCall(EventFd call) { call_ = std::move(call); }
	void setErr(EventFd err) { err_ = std::move(err); }
	/** \brief Drain the kick eventfd. \return whether the vring is enabled. */
	bool readKick()
	{
		if (kick_.isValid() && kick_.drain() != 0)
			queueStats().kicks++;
		return enabled_;
	}

	/** \brief The in-band channel for calls and errors when the call/err fd is absent. */
	void setInbandChannel(std::shared_ptr<BackendChannel> channel, uint32_t index)
	{
		inband_ = std::move(channel);
		index_ = index;
	}

private:
	const GuestMemoryAtomic *mem_;
	SplitQueue queue_;
	PackedQueue packedQueue_;
	EventFd kick_;
	EventFd call_;
	EventFd err_;
	std::shared_ptr<BackendChannel> inband_;
	uint32_t index_ = 0;
	bool enabled_ = false;
	bool enabledSinceStop_ = false;
	bool packed_ = false;
	std::atomic<int> numaNode_{ -1 };
};

/**
 * \brief The seed's `VringT`: a vring whose state sits behind a lock the implementation picks.
 *
 * The daemon and the back-end reach the VringState through guards: getRef() for shared and
 * getMut() for exclusive access. The convenience calls lock for the one call. Thread-safe.
 */
class VringT
{
public:
	/** \brief Access to the VringState for the guard's lifetime. Move-only. */
	class Guard
	{
	public:
		using Unlock = void (*)(void *lock);
		Guard(VringState *state, void *lock, Unlock unlock) : state_(state), lock_(lock), unlock_(unlock) {}
		Guard(Guard &&other) noexcept
			: state_(std::exchange(other.state_, nullptr)), lock_(other.lock_), unlock_(other.unlock_)
		{
		}
		Guard(const Guard &) = delete;
		Guard &operator=(const Guard &) = delete;
		Guard &operator=(Guard &&) = delete;
		~Guard()
		{
			if (state_)
				unlock_(lock_);
		}
		VringState *operator->() const { return state_; }
		VringState &operator*() const { return *state_; }

	private:
		VringState *state_;
		void *lock_;
		Unlock unlock_;
	};

	virtual ~VringT() = default;

	/** \brief Shared access (a read lock for VringRwLock, the mutex for VringMutex). */
	virtual Guard getRef() = 0;
	/** \brief Exclusive access. */
	virtual Guard getMut() = 0;
	/** \brief This vring as a VringPolled, or null. */
	virtual class VringPolled *asPolled() { return nullptr; }

	void addUsed(uint16_t head, uint32_t len) { getMut()->addUsed(head, len); }
	bool signalUsedQueue() { return getRef()->signalUsedQueue(); }
	bool enableNotification() { return getMut()->enableNotification(); }
	void disableNotification() { getMut()->disableNotification(); }
	bool needsNotification() { return getMut()->needsNotification(); }
	bool isEnabled() { return getRef()->isEnabled(); }
	void setEnabled(bool enabled) { getMut()->setEnabled(enabled); }
	Result<void> setQueueInfo(uint64_t desc, uint64_t avail, uint64_t used)
	{
		return getMut()->setQueueInfo(desc, avail, used);
	}
	uint16_t queueNextAvail() { return getRef()->getQueue().nextAvail(); }
	void setQueueNextAvail(uint16_t idx) { getMut()->getQueue().setNextAvail(idx); }
	void setQueueNextUsed(uint16_t idx) { getMut()->getQueue().setNextUsed(idx); }
	uint16_t queueUsedIdx() { return getRef()->getQueue().guestUsedIdx(); }
	Result<void> setQueueSize(uint16_t size)
	{
		return getMut()->visitQueue([&](auto &q) { return q.setSize(size); });
	}
	void setQueueEventIdx(bool enabled)
	{
		getMut()->visitQueue([&](auto &q) { q.setEventIdx(enabled); });
	}
	void setQueueReady(bool ready)
	{
		getMut()->visitQueue([&](auto &q) { q.setReady(ready); });
	}
	void setKick(EventFd kick) { getMut()->setKick(std::move(kick)); }
	bool readKick() { return getMut()->readKick(); }
	void setCall(EventFd call) { getMut()->setCall(std::move(call)); }
	void setErr(EventFd err) { getMut()->setErr(std::move(err)); }
};

/** \brief A VringT behind a std::mutex: every access, getRef() too, is exclusive. */
class VringMutex final : public VringT
{
public:
	VringMutex(const GuestMemoryAtomic &mem, uint16_t maxQueueSize) : state_(mem, maxQueueSize) {}

	Guard getRef() override { return getMut(); }
	Guard getMut() override
	{
		lock_.lock();
		return Guard(&state_, &lock_, [](void *l) { static_cast<std::mutex *>(l)->unlock(); });
	}

private:
	std::mutex lock_;
	VringState state_;
};

/** \brief A VringT behind a std::shared_mutex: getRef() shares, getMut() excludes. */
class VringRwLock final : public VringT
{
public:
	VringRwLock(const GuestMemoryAtomic &mem, uint16_t maxQueueSize) : state_(mem, maxQueueSize) {}

	Guard getRef() override
	{
		lock_.lock_shared();
		return Guard(&state_, &lock_,
			     [](void *l) { static_cast<std::shared_mutex *>(l)->unlock_shared(); });
	}
	Guard getMut() override
	{
		lock_.lock();
		return Guard(&state_, &lock_, [](void *l) { static_cast<std::shared_mutex *>(l)->unlock(); });
	}

private:
	std::shared_mutex lock_;
	VringState state_;
};

/**
 * \brief A VringT for polling workers: the worker takes no lock at all; the control thread
 * parks the ring instead (the quiescent-state handshake).
 *
 * getMut()/getRef() mark the ring parked and, if a worker may be processing it, wait for an
 * RCU grace period, so no burst that began before is still running; the guard's release
 * publishes whether the ring may be touched (started) and unparks it. A VringPoller calls
 * pollable() once per burst: one acquire load of two words, no lock. Whether the started ring
 * is enabled is the state's isEnabled(), which does not change while the ring is unparked: a
 * started but disabled ring is processed without side effects (a net device consumes and drops
 * its TX, gives it no RX), as the specification's ring states say.
 * Control side: one thread at a time; pollable(): any number of workers.
 */
class VringPolled final : public VringT
{
public:
	VringPolled(const GuestMemoryAtomic &mem, uint16_t maxQueueSize)
		: state_(mem, maxQueueSize), rcu_(&mem.rcu())
	{
	}

	Guard getRef() override { return getMut(); }
	Guard getMut() override
	{
		if (parked_.fetch_add(1, std::memory_order_seq_cst) == 0 &&
		    active_.load(std::memory_order_seq_cst))
			rcu_->synchronize();
		return Guard(&state_, this, [](void *v) { static_cast<VringPolled *>(v)->unpark(); });
	}

	VringPolled *asPolled() override { return this; }

	/** \brief The state if a worker may touch the ring now (started), else null. Worker side.
	 */
	VringState *pollable()
	{
		if (parked_.load(std::memory_order_acquire) != 0 || !active_.load(std::memory_order_acquire))
			return nullptr;
		return &state_;
	}
	/**
	 * \brief The state, without the handshake: only for reading its counters (atomic), from
	 * any thread, while workers run.
	 */
	const VringState &peek() const { return state_; }
	/** \brief Bumped each time the control thread changed the ring: a worker re-arms then. */
	uint32_t generation() const { return generation_.load(std::memory_order_acquire); }

private:
	void unpark()
	{
		if (parked_.load(std::memory_order_relaxed) == 1) {
			generation_.fetch_add(1, std::memory_order_relaxed);
			active_.store(state_.isStarted(), std::memory_order_release);
		}
		parked_.fetch_sub(1, std::memory_order_release);
	}

	VringState state_;
	Rcu *rcu_;
	alignas(64) std::atomic<unsigned> parked_{ 0 };
	std::atomic<bool> active_{ false };
	std::atomic<uint32_t> generation_{ 0 };
};

/**
 * \brief A poller's handle on one VringPolled: gives out the state once per burst, and tells
 * the guest not to kick again whenever the control thread changed the ring. Thread-bound to
 * the thread that polls.
 */
struct PolledRing {
	VringPolled *vring = nullptr;
	uint32_t armedGeneration = 0; /**< generation for which kicks were last turned off */

	/** \brief The state if the ring may be processed now, else null. */
	VringState *acquire()
	{
		VringState *state = vring->pollable();
		if (!state)
			return nullptr;
		uint32_t generation = vring->generation();
		if (generation != armedGeneration) {
			state->disableNotification();
			armedGeneration = generation;
		}
		return state;
	}
};

} /* namespace vub::vhost */
