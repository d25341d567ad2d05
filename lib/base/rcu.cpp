/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/rcu.h"

#include <thread>

namespace vub {

Rcu::Reader::Reader(Reader &&other) noexcept
	: rcu_(std::exchange(other.rcu_, nullptr)), slot_(std::exchange(other.slot_, nullptr))
{
}

Rcu::Reader &Rcu::Reader::operator=(Reader &&other) noexcept
{
	release();
	rcu_ = std::exchange(other.rcu_, nullptr);
	slot_ = std::exchange(other.slot_, nullptr);
	return *this;
}

Rcu::Reader::~Reader()
{
	release();
}

void Rcu::Reader::release()
{
	if (!slot_)
		return;
	slot_->epoch.store(0, std::memory_order_release);
	slot_->used.store(false, std::memory_order_release);
	slot_ = nullptr;
	rcu_ = nullptr;
}

Rcu::Rcu() = default;

Rcu &Rcu::global()
{
	static Rcu rcu;
	return rcu;
}

Result<Rcu::Reader> Rcu::registerReader()
{
	for (auto &slot : slots_) {
		bool expected = false;
		if (slot.used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
			Reader reader(this, &slot);
			reader.online();
			return reader;
		}
	}
	return Error{ ENOSPC, "too many RCU readers" };
}

void Rcu::synchronize()
{
	std::lock_guard<std::mutex> guard(writerLock_);
	/* Order the publication of the new snapshot before the epoch bump. */
	std::atomic_thread_fence(std::memory_order_seq_cst);
	uint64_t target = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
	std::atomic_thread_fence(std::memory_order_seq_cst);
	for (auto &slot : slots_) {
		unsigned spins = 0;
		for (;;) {
			uint64_t seen = slot.epoch.load(std::memory_order_acquire);
			if (seen == 0 || seen >= target)
				break;
			if (++spins < 64)
				std::this_thread::yield();
			else
				std::this_thread::sleep_for(std::chrono::microseconds(20));
		}
	}
	std::atomic_thread_fence(std::memory_order_seq_cst);
}

} /* namespace vub */
