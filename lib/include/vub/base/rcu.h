/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "vub/base/result.h"

namespace vub {

/**
 * \brief Quiescent-state-based reclamation (QSBR), as DPDK's rte_rcu_qsbr and liburcu-qsbr.
 *
 * Readers (worker threads) register once, then call quiescent() between units of work, and go
 * offline() before blocking. A writer publishes a new snapshot with a release store, then
 * synchronize() returns once every online reader has passed a quiescent state, after which no
 * reader can still hold the old snapshot: it can be freed.
 *
 * Readers never lock or write shared lines other than their own slot. Thread-safe.
 */
class Rcu
{
	struct Slot;

public:
	static constexpr unsigned kMaxReaders = 256;

	/** \brief A reader's registration; owned by the reader thread, RAII. */
	class Reader
	{
	public:
		Reader() = default;
		Reader(const Reader &) = delete;
		Reader &operator=(const Reader &) = delete;
		Reader(Reader &&other) noexcept;
		Reader &operator=(Reader &&other) noexcept;
		~Reader();

		/** \brief Report a quiescent state: no snapshot loaded before is used after. */
		void quiescent()
		{
			slot_->epoch.store(rcu_->epoch_.load(std::memory_order_acquire),
					   std::memory_order_release);
		}
		/** \brief Stop taking part (before a blocking wait). */
		void offline() { slot_->epoch.store(0, std::memory_order_release); }
		/** \brief Take part again; snapshots may be loaded after this returns. */
		void online()
		{
			slot_->epoch.store(rcu_->epoch_.load(std::memory_order_acquire),
					   std::memory_order_relaxed);
			std::atomic_thread_fence(std::memory_order_seq_cst);
		}
		bool isValid() const { return slot_ != nullptr; }

	private:
		friend class Rcu;
		Reader(Rcu *rcu, Slot *slot) : rcu_(rcu), slot_(slot) {}
		void release();

		Rcu *rcu_ = nullptr;
		Slot *slot_ = nullptr;
	};

	Rcu();
	Rcu(const Rcu &) = delete;
	Rcu &operator=(const Rcu &) = delete;

	/** \brief The process-wide domain that guest memory snapshots use. */
	static Rcu &global();

	/** \brief Register the calling thread as a reader, online. \return ENOSPC when full. */
	Result<Reader> registerReader();

	/** \brief Wait until every online reader has been quiescent since this call began. */
	void synchronize();

private:
	struct alignas(64) Slot {
		std::atomic<uint64_t> epoch{ 0 };
		std::atomic<bool> used{ false };
	};

	alignas(64) std::atomic<uint64_t> epoch_{ 1 };
	std::mutex writerLock_;
	Slot slots_[kMaxReaders];
};

} /* namespace vub */
