/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "vub/base/log.h"

namespace vub {
namespace {

/* Every test starts and ends with the default levels (info everywhere). */
class LogTest : public ::testing::Test
{
protected:
	void SetUp() override { Log::setLevelAll(LogLevel::Info); }
	void TearDown() override { Log::setLevelAll(LogLevel::Info); }
};

/* What \a fn writes to stderr. */
template <typename Fn>
std::string captureStderr(Fn fn)
{
	int pipeFds[2];
	if (::pipe2(pipeFds, O_CLOEXEC) < 0)
		return "<pipe failed>";
	int saved = ::dup(STDERR_FILENO);
	::dup2(pipeFds[1], STDERR_FILENO);
	fn();
	::dup2(saved, STDERR_FILENO);
	::close(saved);
	::close(pipeFds[1]);
	std::string out;
	char buf[512];
	ssize_t n;
	while ((n = ::read(pipeFds[0], buf, sizeof(buf))) > 0)
		out.append(buf, static_cast<size_t>(n));
	::close(pipeFds[0]);
	return out;
}

TEST_F(LogTest, ParsesEveryLevelName)
{
	const std::pair<const char *, LogLevel> cases[] = {
		{ "error", LogLevel::Error },
		{ "warning", LogLevel::Warning },
		{ "info", LogLevel::Info },
		{ "debug", LogLevel::Debug },
	};
	for (const auto &[word, expected] : cases) {
		LogLevel level = expected == LogLevel::Error ? LogLevel::Debug : LogLevel::Error;
		EXPECT_TRUE(Log::parseLevel(word, &level)) << word;
		EXPECT_EQ(level, expected) << word;
	}
}

TEST_F(LogTest, RejectsUnknownLevelAndLeavesTheOutputAlone)
{
	for (const char *word : { "verbose", "", "errors", "inf" }) {
		LogLevel level = LogLevel::Warning;
		EXPECT_FALSE(Log::parseLevel(word, &level)) << '"' << word << '"';
		EXPECT_EQ(level, LogLevel::Warning);
	}
}

TEST_F(LogTest, ParsesEveryCategoryNameAndNamesItBack)
{
	const std::pair<const char *, LogCategory> cases[] = {
		{ "base", LogCategory::Base },	       { "memory", LogCategory::Memory },
		{ "protocol", LogCategory::Protocol }, { "vring", LogCategory::Vring },
		{ "daemon", LogCategory::Daemon },     { "net", LogCategory::Net },
		{ "app", LogCategory::App },
	};
	static_assert(std::size(cases) == static_cast<size_t>(LogCategory::Count));
	for (const auto &[word, expected] : cases) {
		LogCategory category = LogCategory::Count;
		EXPECT_TRUE(Log::parseCategory(word, &category)) << word;
		EXPECT_EQ(category, expected) << word;
		EXPECT_STREQ(Log::categoryName(expected), word);
	}
}

TEST_F(LogTest, RejectsUnknownCategoryAndLeavesTheOutputAlone)
{
	for (const char *word : { "nets", "", "vhost", "mem" }) {
		LogCategory category = LogCategory::Vring;
		EXPECT_FALSE(Log::parseCategory(word, &category)) << '"' << word << '"';
		EXPECT_EQ(category, LogCategory::Vring);
	}
}

TEST_F(LogTest, InfoIsTheDefaultLevel)
{
	EXPECT_TRUE(Log::enabled(LogCategory::Net, LogLevel::Error));
	EXPECT_TRUE(Log::enabled(LogCategory::Net, LogLevel::Warning));
	EXPECT_TRUE(Log::enabled(LogCategory::Net, LogLevel::Info));
	EXPECT_FALSE(Log::enabled(LogCategory::Net, LogLevel::Debug));
}

TEST_F(LogTest, LevelIsSetPerCategory)
{
	Log::setLevel(LogCategory::Memory, LogLevel::Debug);
	Log::setLevel(LogCategory::Protocol, LogLevel::Error);
	EXPECT_TRUE(Log::enabled(LogCategory::Memory, LogLevel::Debug));
	EXPECT_FALSE(Log::enabled(LogCategory::Protocol, LogLevel::Warning));
	EXPECT_TRUE(Log::enabled(LogCategory::Protocol, LogLevel::Error));
	EXPECT_FALSE(Log::enabled(LogCategory::Vring, LogLevel::Debug))
		<< "other categories keep theirs";
	EXPECT_TRUE(Log::enabled(LogCategory::Vring, LogLevel::Info));
}

TEST_F(LogTest, SetLevelAllChangesEveryCategory)
{
	Log::setLevelAll(LogLevel::Error);
	for (int i = 0; i < static_cast<int>(LogCategory::Count); i++) {
		auto category = static_cast<LogCategory>(i);
		EXPECT_TRUE(Log::enabled(category, LogLevel::Error));
		EXPECT_FALSE(Log::enabled(category, LogLevel::Warning));
	}
}

TEST_F(LogTest, DisabledLogDoesNotEvaluateItsArguments)
{
	Log::setLevel(LogCategory::Vring, LogLevel::Info);
	int evaluated = 0;
	std::string out = captureStderr([&] { VUB_LOG(Vring, Debug, "%d", ++evaluated); });
	EXPECT_EQ(evaluated, 0);
	EXPECT_EQ(out, "");
}

TEST_F(LogTest, EnabledLogWritesOneLineWithCategoryAndLevel)
{
	std::string out =
		captureStderr([] { VUB_LOG(Memory, Warning, "region %d of %s", 3, "guest"); });
	ASSERT_FALSE(out.empty());
	EXPECT_NE(out.find("memory warning: region 3 of guest\n"), std::string::npos) << out;
	EXPECT_EQ(out.find('\n'), out.size() - 1) << "exactly one line: " << out;
}

TEST_F(LogTest, LongLineIsTruncatedButEndsWithNewline)
{
	std::string big(4000, 'x');
	std::string out = captureStderr([&] { VUB_LOG(App, Error, "%s", big.c_str()); });
	ASSERT_FALSE(out.empty());
	EXPECT_LT(out.size(), 1024u + 1);
	EXPECT_EQ(out.back(), '\n');
	EXPECT_EQ(out.find('\n'), out.size() - 1);
}

} /* namespace */
} /* namespace vub */
