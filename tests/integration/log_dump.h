/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "process.h"

namespace vub::test {

/** Prints the tails of the logs when the test failed (meson shows them with the failure). */
class LogDump
{
public:
	LogDump() = default;
	LogDump(const LogDump &) = delete;
	LogDump &operator=(const LogDump &) = delete;
	~LogDump()
	{
		if (!::testing::Test::HasFailure())
			return;
		for (const auto &[name, path] : logs_) {
			std::ifstream file(path);
			std::stringstream text;
			text << file.rdbuf();
			std::fprintf(stderr, "---- last lines of %s (%s) ----\n%s\n", name.c_str(),
				     path.c_str(), tail(text.str(), 60).c_str());
		}
	}

	void add(std::string name, std::string logPath)
	{
		logs_.emplace_back(std::move(name), std::move(logPath));
	}

private:
	std::vector<std::pair<std::string, std::string>> logs_;
};

} /* namespace vub::test */
