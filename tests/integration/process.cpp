/* SPDX-License-Identifier: Apache-2.0 */
#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

extern char **environ;

namespace vub::test {

namespace {

using Clock = std::chrono::steady_clock;

/** How often the waits look at the log and the child. */
constexpr auto kPollInterval = std::chrono::milliseconds(10);

std::string errnoText(const char *what, int err)
{
	return std::string(what) + ": " + std::strerror(err);
}

void setError(std::string *error, std::string text)
{
	if (error)
		*error = std::move(text);
}

/** \a program itself when it has a '/', else the first executable match in $PATH. */
std::optional<std::string> resolveProgram(const std::string &program)
{
	if (program.find('/') != std::string::npos)
		return program;
	const char *path = std::getenv("PATH");
	std::string_view dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
	while (!dirs.empty()) {
		size_t colon = dirs.find(':');
		std::string_view dir = dirs.substr(0, colon);
		dirs = colon == std::string_view::npos ? std::string_view{}
						       : dirs.substr(colon + 1);
		std::string candidate = std::string(dir.empty() ? "." : dir) + "/" + program;
		struct stat st = {};
		if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
		    ::access(candidate.c_str(), X_OK) == 0)
			return candidate;
	}
	return std::nullopt;
}

/** The parent's environment with \a overrides ("NAME=VALUE") added or replacing. */
std::vector<std::string> buildEnvironment(const std::vector<std::string> &overrides)
{
	std::vector<std::string> env;
	for (char **e = environ; e && *e; e++) {
		std::string_view entry(*e);
		std::string_view name = entry.substr(0, entry.find('='));
		bool replaced = false;
		for (const std::string &o : overrides) {
			if (std::string_view(o).substr(0, o.find('=')) == name)
				replaced = true;
		}
		if (!replaced)
			env.emplace_back(entry);
	}
	env.insert(env.end(), overrides.begin(), overrides.end());
	return env;
}

std::vector<char *> pointers(std::vector<std::string> &strings)
{
	std::vector<char *> out;
	out.reserve(strings.size() + 1);
	for (std::string &s : strings)
		out.push_back(s.data());
	out.push_back(nullptr);
	return out;
}

/*
 * The child between fork() and exec(): async-signal-safe calls only, since the test process
 * may run other threads. Reports a failure as an errno on \a errorFd and exits 127.
 */
[[noreturn]] void execChild(const char *path, char *const *argv, char *const *envp, int stdinFd,
			    int logFd, int errorFd, bool ignoreSigpipe, pid_t parent)
{
	::setpgid(0, 0);
	/*
	 * Die with the test program: meson's timeout SIGTERMs it, and no destructor runs then. A
	 * child in its own group would otherwise outlive it (testpmd quits on stdin EOF; a
	 * back-end does not).
	 */
	if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || ::getppid() != parent)
		::_exit(127);
	if (::dup2(stdinFd, STDIN_FILENO) < 0 || ::dup2(logFd, STDOUT_FILENO) < 0 ||
	    ::dup2(logFd, STDERR_FILENO) < 0) {
		int err = errno;
		(void)!::write(errorFd, &err, sizeof(err));
		::_exit(127);
	}
	/* Undo what the test process set up: handlers, ignored signals, the blocked mask. */
	struct sigaction dfl = {};
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig != SIGKILL && sig != SIGSTOP)
			::sigaction(sig, &dfl, nullptr);
	}
	if (ignoreSigpipe) {
		struct sigaction ign = {};
		ign.sa_handler = SIG_IGN;
		::sigaction(SIGPIPE, &ign, nullptr);
	}
	sigset_t none;
	sigemptyset(&none);
	::sigprocmask(SIG_SETMASK, &none, nullptr);
	/* No fd of the test process leaks into the child (errorFd is close-on-exec already). */
	::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	::execve(path, argv, envp);
	int err = errno;
	(void)!::write(errorFd, &err, sizeof(err));
	::_exit(127);
}

} /* namespace */

std::string ExitStatus::toString() const
{
	if (exited)
		return "exit " + std::to_string(code);
	if (signal == 0)
		return "unknown (reaped elsewhere)";
	return "signal " + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
}

Process::~Process()
{
	if (pid_ > 0 && !reaped_) {
		::kill(-pid_, SIGKILL);
		::kill(pid_, SIGKILL);
		waitForExit(5000);
	}
}

std::unique_ptr<Process> Process::create(const ProcessOptions &options, std::string *error)
{
	if (options.argv.empty()) {
		setError(error, "empty argv");
		return nullptr;
	}
	auto path = resolveProgram(options.argv[0]);
	if (!path) {
		setError(error, options.argv[0] + ": not found in PATH");
		return nullptr;
	}

	/* Everything the child needs is built before fork(). */
	std::vector<std::string> argvStrings = options.argv;
	std::vector<char *> argv = pointers(argvStrings);
	std::vector<std::string> envStrings = buildEnvironment(options.env);
	std::vector<char *> envp = pointers(envStrings);

	UniqueFd logWrite(::open(options.logPath.c_str(),
				 O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644));
	if (!logWrite) {
		setError(error, errnoText(options.logPath.c_str(), errno));
		return nullptr;
	}
	UniqueFd logRead(::open(options.logPath.c_str(), O_RDONLY | O_CLOEXEC));
	if (!logRead) {
		setError(error, errnoText(options.logPath.c_str(), errno));
		return nullptr;
	}
	int stdinPipe[2];
	if (::pipe2(stdinPipe, O_CLOEXEC) < 0) {
		setError(error, errnoText("pipe2", errno));
		return nullptr;
	}
	UniqueFd stdinRead(stdinPipe[0]);
	UniqueFd stdinWrite(stdinPipe[1]);
	int errorPipe[2];
	if (::pipe2(errorPipe, O_CLOEXEC) < 0) {
		setError(error, errnoText("pipe2", errno));
		return nullptr;
	}
	UniqueFd errorRead(errorPipe[0]);
	UniqueFd errorWrite(errorPipe[1]);

	pid_t parent = ::getpid();
	pid_t pid = ::fork();
	if (pid < 0) {
		setError(error, errnoText("fork", errno));
		return nullptr;
	}
	if (pid == 0) {
		execChild(path->c_str(), argv.data(), envp.data(), stdinRead.get(), logWrite.get(),
			  errorWrite.get(), options.ignoreSigpipe, parent);
	}

	/* Both sides set the group, so that kill(-pid) works whichever runs first. */
	::setpgid(pid, pid);
	stdinRead.reset();
	logWrite.reset();
	errorWrite.reset();

	std::unique_ptr<Process> process(new Process());
	process->pid_ = pid;
	process->logPath_ = options.logPath;
	process->log_ = std::move(logRead);

	/* EOF: exec() succeeded and closed the pipe. An int: the errno of a failed exec(). */
	int childErrno = 0;
	ssize_t n;
	do {
		n = ::read(errorRead.get(), &childErrno, sizeof(childErrno));
	} while (n < 0 && errno == EINTR);
	if (n == sizeof(childErrno)) {
		process->waitForExit(5000);
		setError(error, errnoText(("exec " + *path).c_str(), childErrno));
		return nullptr;
	}

	int flags = ::fcntl(stdinWrite.get(), F_GETFL);
	::fcntl(stdinWrite.get(), F_SETFL, flags | O_NONBLOCK);
	process->stdin_ = std::move(stdinWrite);
	return process;
}

bool Process::writeStdin(std::string_view data, int timeoutMs)
{
	if (!stdin_)
		return false;
	/* A closed pipe must give EPIPE here, not kill the test program with SIGPIPE. */
	sigset_t pipeSet, oldMask, pending;
	sigemptyset(&pipeSet);
	sigaddset(&pipeSet, SIGPIPE);
	sigpending(&pending);
	bool wasPending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeSet, &oldMask);

	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	bool ok = true;
	bool gotEpipe = false;
	while (!data.empty()) {
		ssize_t n = ::write(stdin_.get(), data.data(), data.size());
		if (n > 0) {
			data.remove_prefix(static_cast<size_t>(n));
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
				deadline - Clock::now());
			pollfd pfd{ stdin_.get(), POLLOUT, 0 };
			if (left.count() > 0 &&
			    ::poll(&pfd, 1, static_cast<int>(left.count())) >= 0)
				continue;
		}
		gotEpipe = n < 0 && errno == EPIPE;
		ok = false;
		break;
	}

	if (gotEpipe && !wasPending) {
		timespec zero{};
		while (sigtimedwait(&pipeSet, nullptr, &zero) < 0 && errno == EINTR) {
		}
	}
	pthread_sigmask(SIG_SETMASK, &oldMask, nullptr);
	return ok;
}

void Process::closeStdin()
{
	stdin_.reset();
}

void Process::refreshOutput()
{
	char buf[16384];
	for (;;) {
		ssize_t n =
			::pread(log_.get(), buf, sizeof(buf), static_cast<off_t>(output_.size()));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		output_.append(buf, static_cast<size_t>(n));
	}
}

const std::string &Process::output()
{
	refreshOutput();
	return output_;
}

std::optional<OutputMatch> Process::waitForOutput(std::string_view needle, int timeoutMs,
						  size_t from)
{
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	for (;;) {
		bool exited = !running();
		refreshOutput();
		if (from <= output_.size()) {
			size_t pos = output_.find(needle, from);
			if (pos != std::string::npos)
				return OutputMatch{ pos + needle.size(), { std::string(needle) } };
		}
		if (exited || Clock::now() >= deadline)
			return std::nullopt;
		std::this_thread::sleep_for(kPollInterval);
	}
}

std::optional<OutputMatch> Process::waitForOutput(const std::regex &pattern, int timeoutMs,
						  size_t from)
{
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	for (;;) {
		bool exited = !running();
		refreshOutput();
		std::smatch m;
		if (from <= output_.size() &&
		    std::regex_search(output_.cbegin() + static_cast<std::ptrdiff_t>(from),
				      output_.cend(), m, pattern)) {
			OutputMatch match;
			match.end = from + static_cast<size_t>(m.position(0) + m.length(0));
			for (const auto &group : m)
				match.groups.push_back(group.str());
			return match;
		}
		if (exited || Clock::now() >= deadline)
			return std::nullopt;
		std::this_thread::sleep_for(kPollInterval);
	}
}

bool Process::reap(bool block)
{
	if (reaped_)
		return true;
	int st = 0;
	pid_t r;
	do {
		r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
	} while (r < 0 && errno == EINTR);
	if (r == 0)
		return false;
	reaped_ = true;
	if (r < 0)
		return true; /* ECHILD: someone else reaped it; the status is unknown */
	if (WIFEXITED(st)) {
		status_.exited = true;
		status_.code = WEXITSTATUS(st);
	} else if (WIFSIGNALED(st)) {
		status_.signal = WTERMSIG(st);
	}
	stdin_.reset();
	return true;
}

bool Process::running()
{
	return !reap(false);
}

bool Process::waitForExit(int timeoutMs)
{
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	while (!reap(false)) {
		if (Clock::now() >= deadline)
			return false;
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
	return true;
}

std::optional<ExitStatus> Process::terminate(int signal, int timeoutMs)
{
	if (running()) {
		if (::kill(-pid_, signal) < 0)
			::kill(pid_, signal);
		if (!waitForExit(timeoutMs)) {
			::kill(-pid_, SIGKILL);
			::kill(pid_, SIGKILL);
			waitForExit(5000);
		}
	}
	return exitStatus();
}

std::optional<ExitStatus> Process::exitStatus()
{
	if (!reap(false))
		return std::nullopt;
	return status_;
}

TempDir::TempDir(std::string_view prefix)
{
	const char *tmp = std::getenv("TMPDIR");
	std::string templ =
		std::string(tmp && *tmp ? tmp : "/tmp") + "/" + std::string(prefix) + "XXXXXX";
	if (!::mkdtemp(templ.data()))
		throw std::runtime_error(errnoText(("mkdtemp " + templ).c_str(), errno));
	path_ = templ;
	/* VUB_TEST_KEEP_TMP=1 keeps the logs and sockets of every test for a look afterwards. */
	const char *keep = std::getenv("VUB_TEST_KEEP_TMP");
	if (keep && *keep && std::string_view(keep) != "0") {
		keep_ = true;
		std::fprintf(stderr, "keeping %s\n", path_.c_str());
	}
}

TempDir::~TempDir()
{
	if (keep_)
		return;
	std::error_code ec;
	std::filesystem::remove_all(path_, ec);
}

std::string TempDir::file(std::string_view name) const
{
	return path_ + "/" + std::string(name);
}

std::string tail(std::string_view text, size_t lines)
{
	size_t pos = text.size();
	if (pos > 0 && text[pos - 1] == '\n')
		pos--;
	for (size_t n = 0; n < lines && pos > 0; n++) {
		pos = text.rfind('\n', pos - 1);
		if (pos == std::string_view::npos) {
			pos = 0;
			break;
		}
	}
	if (pos > 0)
		pos++;
	return std::string(text.substr(pos));
}

} /* namespace vub::test */
