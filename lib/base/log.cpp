/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/log.h"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace vub {

std::atomic<int> Log::levels_[static_cast<int>(LogCategory::Count)] = {
	static_cast<int>(LogLevel::Info), static_cast<int>(LogLevel::Info),
	static_cast<int>(LogLevel::Info), static_cast<int>(LogLevel::Info),
	static_cast<int>(LogLevel::Info), static_cast<int>(LogLevel::Info),
	static_cast<int>(LogLevel::Info),
};

namespace {

constexpr const char *kCategoryNames[] = { "base", "memory", "protocol", "vring",
					   "daemon", "net", "app" };
constexpr const char *kLevelNames[] = { "error", "warning", "info", "debug" };

} /* namespace */

void Log::setLevel(LogCategory category, LogLevel level)
{
	levels_[static_cast<int>(category)].store(static_cast<int>(level), std::memory_order_relaxed);
}

void Log::setLevelAll(LogLevel level)
{
	for (auto &l : levels_)
		l.store(static_cast<int>(level), std::memory_order_relaxed);
}

bool Log::parseLevel(const char *word, LogLevel *level)
{
	for (int i = 0; i < 4; i++) {
		if (std::strcmp(word, kLevelNames[i]) == 0) {
			*level = static_cast<LogLevel>(i);
			return true;
		}
	}
	return false;
}

bool Log::parseCategory(const char *word, LogCategory *category)
{
	for (int i = 0; i < static_cast<int>(LogCategory::Count); i++) {
		if (std::strcmp(word, kCategoryNames[i]) == 0) {
			*category = static_cast<LogCategory>(i);
			return true;
		}
	}
	return false;
}

const char *Log::categoryName(LogCategory category)
{
	return kCategoryNames[static_cast<int>(category)];
}

void Log::write(LogCategory category, LogLevel level, const char *fmt, ...)
{
	char line[1024];
	timespec ts{};
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int n = std::snprintf(line, sizeof(line), "[%5ld.%06ld] vub %s %s: ",
			      static_cast<long>(ts.tv_sec), ts.tv_nsec / 1000,
			      kCategoryNames[static_cast<int>(category)],
			      kLevelNames[static_cast<int>(level)]);
	va_list ap;
	va_start(ap, fmt);
	int m = std::vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t ignored = ::write(STDERR_FILENO, line, len);
	(void)ignored;
}

void assertFailed(const char *cond, const char *file, int line)
{
	std::fprintf(stderr, "vub: %s:%d: check failed: %s\n", file, line, cond);
	std::abort();
}

} /* namespace vub */
