/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>

namespace vub {

enum class LogLevel : int { Error = 0, Warning = 1, Info = 2, Debug = 3 };

/** \brief Log categories: one per subsystem; each has its own level. */
enum class LogCategory : int { Base = 0, Memory, Protocol, Vring, Daemon, Net, App, Count };

/**
 * \brief The per-category levels and the sink. Thread-safe: levels are atomics, and each line
 * is written with one write(2) call.
 */
class Log
{
public:
	static bool enabled(LogCategory category, LogLevel level)
	{
		return static_cast<int>(level) <=
		       levels_[static_cast<int>(category)].load(std::memory_order_relaxed);
	}
	static void setLevel(LogCategory category, LogLevel level);
	static void setLevelAll(LogLevel level);
	/** \brief Parse "error|warning|info|debug". \return false for another word. */
	static bool parseLevel(const char *word, LogLevel *level);
	/** \brief Parse a category name ("memory", "protocol"...). \return false if unknown. */
	static bool parseCategory(const char *word, LogCategory *category);
	static const char *categoryName(LogCategory category);

	[[gnu::format(printf, 3, 4)]] static void write(LogCategory category, LogLevel level,
							  const char *fmt, ...);

private:
	static std::atomic<int> levels_[static_cast<int>(LogCategory::Count)];
};

} /* namespace vub */

/** Log a line when \a level is enabled for \a category; the arguments are not evaluated otherwise. */
#define VUB_LOG(category, level, ...)                                                          \
	do {                                                                                   \
		if (::vub::Log::enabled(::vub::LogCategory::category, ::vub::LogLevel::level)) \
			::vub::Log::write(::vub::LogCategory::category, ::vub::LogLevel::level, \
					  __VA_ARGS__);                                         \
	} while (0)

#ifdef NDEBUG
#define VUB_ASSERT(cond) ((void)0)
#else
#define VUB_ASSERT(cond) ((cond) ? (void)0 : ::vub::assertFailed(#cond, __FILE__, __LINE__))
#endif
/** Always-on invariant for what cannot happen after initialisation; fatal. */
#define VUB_CHECK(cond) ((cond) ? (void)0 : ::vub::assertFailed(#cond, __FILE__, __LINE__))

namespace vub {
[[noreturn]] void assertFailed(const char *cond, const char *file, int line);
}
