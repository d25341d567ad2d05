/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "vub/base/unique_fd.h"

namespace vub::test {

/** \brief How a child process ended. */
struct ExitStatus {
	/** \brief True when it called exit(); false when a signal killed it. */
	bool exited = false;
	/** \brief The exit code when \a exited. */
	int code = -1;
	/** \brief The signal that killed it when not \a exited. */
	int signal = 0;

	/** \brief True for exit(0). */
	bool success() const { return exited && code == 0; }
	/** \brief "exit 0", "signal 9 (Killed)". */
	std::string toString() const;
};

/** \brief What Process::create() starts and how. */
struct ProcessOptions {
	/** \brief The program and its arguments; argv[0] without '/' is looked up in PATH. */
	std::vector<std::string> argv;
	/** \brief File that receives the child's stdout and stderr (created or truncated). */
	std::string logPath;
	/** \brief "NAME=VALUE" entries added to (or replacing in) the parent's environment. */
	std::vector<std::string> env;
	/**
	 * \brief Start the child with SIGPIPE ignored, so that writing to a peer that went away
	 * returns EPIPE instead of killing it (DPDK's vhost-user client does not use MSG_NOSIGNAL).
	 */
	bool ignoreSigpipe = false;
};

/** \brief One match of Process::waitForOutput(). */
struct OutputMatch {
	/** \brief Offset in the output just past the match: where the next wait may start. */
	size_t end = 0;
	/** \brief The whole match, then the regex's capture groups. */
	std::vector<std::string> groups;
};

/**
 * \brief A child process for integration tests: fork+exec in its own process group, stdin a
 * pipe the test writes commands to, stdout and stderr appended to a log file the test polls.
 *
 * Every wait takes a timeout, so no test hangs on a peer that stopped answering. The destructor
 * kills the whole process group (SIGKILL) and reaps the child if it still runs; the child also
 * gets SIGKILL when the thread that created it dies (PR_SET_PDEATHSIG), so a test program
 * killed by meson's timeout leaves no child behind.
 * Not thread-safe: one test thread owns a Process.
 */
class Process
{
public:
	Process(const Process &) = delete;
	Process &operator=(const Process &) = delete;
	~Process();

	/**
	 * \brief Start \a options.argv.
	 * \param[out] error Why it failed, when it returns nullptr (may be nullptr).
	 * \return The running child, or nullptr when the log file, the pipe, fork() or exec()
	 * failed (an exec failure is reported here, not as exit code 127).
	 */
	static std::unique_ptr<Process> create(const ProcessOptions &options,
					       std::string *error = nullptr);

	/** \brief The child's pid, which is also its process group id. */
	pid_t pid() const { return pid_; }
	/** \brief The log file given to create(). */
	const std::string &logPath() const { return logPath_; }

	/**
	 * \brief Write \a data to the child's stdin.
	 * \return False when the child closed its stdin or exited, or the pipe stayed full for
	 * \a timeoutMs. SIGPIPE is not raised in the test process.
	 */
	bool writeStdin(std::string_view data, int timeoutMs = 2000);
	/** \brief Close the child's stdin (it reads EOF). */
	void closeStdin();

	/** \brief Everything the child wrote to the log so far. */
	const std::string &output();
	/**
	 * \brief Poll the log (every 10 ms) until \a needle appears at or after \a from.
	 * \return The match, or std::nullopt on timeout or when the child exited without
	 * writing it.
	 */
	std::optional<OutputMatch> waitForOutput(std::string_view needle, int timeoutMs,
						 size_t from = 0);
	/** \brief As above, for the first match of \a pattern at or after \a from. */
	std::optional<OutputMatch> waitForOutput(const std::regex &pattern, int timeoutMs,
						 size_t from = 0);

	/** \brief True until the child has exited and been reaped. */
	bool running();
	/** \brief Wait up to \a timeoutMs for the child to exit. \return true when it has. */
	bool waitForExit(int timeoutMs);
	/**
	 * \brief Send \a signal to the process group, wait up to \a timeoutMs, then SIGKILL the
	 * group and wait again (bounded).
	 * \return The exit status, or std::nullopt when even SIGKILL did not reap it in time.
	 */
	std::optional<ExitStatus> terminate(int signal, int timeoutMs);
	/** \brief How the child ended; std::nullopt while it runs. */
	std::optional<ExitStatus> exitStatus();

private:
	Process() = default;

	bool reap(bool block);
	void refreshOutput();

	pid_t pid_ = -1;
	bool reaped_ = false;
	ExitStatus status_;
	UniqueFd stdin_;
	UniqueFd log_;
	std::string logPath_;
	std::string output_;
};

/**
 * \brief A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction
 * unless VUB_TEST_KEEP_TMP is set (to a value other than 0).
 */
class TempDir
{
public:
	/** \brief Create "<tmp>/<prefix>XXXXXX". Throws std::runtime_error when it cannot. */
	explicit TempDir(std::string_view prefix);
	TempDir(const TempDir &) = delete;
	TempDir &operator=(const TempDir &) = delete;
	~TempDir();

	const std::string &path() const { return path_; }
	/** \brief path() / \a name. */
	std::string file(std::string_view name) const;
	/** \brief Leave the directory in place (to look at the logs of a failed test). */
	void keep() { keep_ = true; }

private:
	std::string path_;
	bool keep_ = false;
};

/** \brief The last \a lines lines of \a text (for failure messages). */
std::string tail(std::string_view text, size_t lines);

} /* namespace vub::test */
