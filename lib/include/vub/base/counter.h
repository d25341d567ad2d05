/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>

namespace vub {

/**
 * \brief A statistics counter with one writer (a worker) and any number of readers.
 *
 * add() is a relaxed load and store, not a locked read-modify-write: as cheap as a plain
 * increment on x86, and readers on other threads never see a torn value. Only the owning
 * thread may call add().
 */
class Counter
{
public:
	void add(uint64_t n = 1)
	{
		value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
	}
	uint64_t get() const { return value_.load(std::memory_order_relaxed); }
	void operator++(int) { add(1); }
	void operator+=(uint64_t n) { add(n); }

private:
	std::atomic<uint64_t> value_{ 0 };
};

} /* namespace vub */
