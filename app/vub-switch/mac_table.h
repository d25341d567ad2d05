/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

/*
 * The L2 switch's MAC table: immutable snapshots that workers read without a lock, rebuilt by
 * the control thread from what workers report learning, and published RCU-style. Plain logic,
 * no DPDK: unit-tested alone.
 */
namespace vub::sw {

/** \brief A MAC address as the low 48 bits of a word, first byte most significant. */
inline uint64_t macKey(const uint8_t *mac)
{
	return (uint64_t{ mac[0] } << 40) | (uint64_t{ mac[1] } << 32) |
	       (uint64_t{ mac[2] } << 24) | (uint64_t{ mac[3] } << 16) | (uint64_t{ mac[4] } << 8) |
	       uint64_t{ mac[5] };
}

/** \brief Whether the group bit is set: broadcast and multicast addresses. */
inline bool isGroupMac(uint64_t key)
{
	return (key >> 40) & 1;
}

/**
 * \brief One snapshot: an open-addressed hash of MAC to port. Only lastSeen changes after it
 * is published (workers refresh it; relaxed, a lost refresh costs nothing).
 */
class MacTable
{
public:
	struct Entry {
		uint64_t key = kEmpty;
		uint32_t port = 0;
		std::atomic<uint32_t> lastSeen{ 0 }; /**< seconds on the switch's clock */
	};
	static constexpr uint64_t kEmpty = ~uint64_t{ 0 };

	/** \brief Room for \a maxEntries (the table is twice that, a power of two). */
	explicit MacTable(size_t maxEntries);

	/** \brief The entry of \a key, null when unknown. Lock-free. */
	Entry *find(uint64_t key) const
	{
		for (size_t i = slotOf(key);; i = (i + 1) & mask_) {
			Entry &e = entries_[i];
			if (e.key == key)
				return &e;
			if (e.key == kEmpty)
				return nullptr;
		}
	}
	/** \brief Add or move \a key (building only, before publishing). \return false when full.
	 */
	bool insert(uint64_t key, uint32_t port, uint32_t lastSeen);

	size_t size() const { return size_; }
	size_t maxEntries() const { return maxEntries_; }
	/** \brief Call \a f(const Entry &) for every entry. */
	template <typename F>
	void forEach(F &&f) const
	{
		for (size_t i = 0; i <= mask_; i++) {
			if (entries_[i].key != kEmpty)
				f(entries_[i]);
		}
	}

private:
	size_t slotOf(uint64_t key) const
	{
		return static_cast<size_t>((key * 0x9e3779b97f4a7c15ull) >> shift_) & mask_;
	}

	std::unique_ptr<Entry[]> entries_;
	size_t mask_;
	unsigned shift_;
	size_t size_ = 0;
	size_t maxEntries_;
};

/** \brief What a worker saw: \a key sending from \a port. */
struct MacLearnEvent {
	uint64_t key;
	uint32_t port;
};

/**
 * \brief Lossy single-producer single-consumer queue of learn events from one worker to the
 * control thread. A full queue drops the event (the next packet from that MAC reports again).
 */
class LearnQueue
{
public:
	static constexpr size_t kSize = 1024;

	bool push(const MacLearnEvent &event)
	{
		uint32_t head = head_.load(std::memory_order_relaxed);
		if (head - tail_.load(std::memory_order_acquire) == kSize)
			return false;
		events_[head % kSize] = event;
		head_.store(head + 1, std::memory_order_release);
		return true;
	}
	template <typename F>
	void drain(F &&f)
	{
		uint32_t tail = tail_.load(std::memory_order_relaxed);
		uint32_t head = head_.load(std::memory_order_acquire);
		for (; tail != head; tail++)
			f(events_[tail % kSize]);
		tail_.store(tail, std::memory_order_release);
	}

private:
	alignas(64) std::atomic<uint32_t> head_{ 0 };
	alignas(64) std::atomic<uint32_t> tail_{ 0 };
	MacLearnEvent events_[kSize];
};

/**
 * \brief The control thread's side: applies learn events, ages and flushes entries, and says
 * when a new snapshot must be published. Thread-bound to the control thread.
 */
class MacLearning
{
public:
	MacLearning(size_t maxEntries, uint32_t agingS);

	/** \brief The snapshot workers read now. */
	MacTable *current() const { return current_.get(); }

	/**
	 * \brief Apply \a events, forget entries older than the aging time at \a nowS and those
	 * of ports \a flushPorts (a bit per port id). \return the new snapshot to publish when
	 * anything changed (current() becomes it; the caller frees the old one it returned from
	 * retire() after a grace period), else null.
	 */
	MacTable *update(const std::vector<MacLearnEvent> &events, uint32_t nowS,
			 uint64_t flushPorts = 0);
	/** \brief The snapshot replaced by the last update(), to free after a grace period. */
	std::unique_ptr<MacTable> retire() { return std::move(retired_); }

	uint32_t agingS() const { return agingS_; }
	void setAgingS(uint32_t agingS) { agingS_ = agingS; }
	/** \brief Learns refused because the table was full. */
	uint64_t fullDrops() const { return fullDrops_; }
	/** \brief MACs seen moving from one port to another. */
	uint64_t moves() const { return moves_; }

private:
	std::unique_ptr<MacTable> current_;
	std::unique_ptr<MacTable> retired_;
	size_t maxEntries_;
	uint32_t agingS_;
	uint64_t fullDrops_ = 0;
	uint64_t moves_ = 0;
};

} /* namespace vub::sw */
