/* SPDX-License-Identifier: Apache-2.0 */
#include "testpmd.h"

#include <mntent.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

namespace vub::test {

namespace {

constexpr std::string_view kPrompt = "testpmd> ";

bool isExecutable(const std::string &path)
{
	struct stat st = {};
	return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
	       ::access(path.c_str(), X_OK) == 0;
}

/** "0@A,1@B" on the first two CPUs this process may run on (both on A when there is one). */
std::string defaultLcores()
{
	std::vector<int> cpus = allowedCpus(2);
	return "0@" + std::to_string(cpus[0]) + ",1@" + std::to_string(cpus[1]);
}

/*
 * EAL runtime directories that earlier test programs, killed before their Testpmd destructors
 * ran, left behind: "vubtest-<pid>-<n>" whose pid is gone.
 */
void removeStaleRuntimeDirs()
{
	std::error_code ec;
	std::filesystem::path base = std::filesystem::path(dpdkRuntimeDir("x")).parent_path();
	for (const auto &entry : std::filesystem::directory_iterator(base, ec)) {
		std::string name = entry.path().filename().string();
		unsigned long pid = 0;
		unsigned long n = 0;
		char tail = 0;
		if (std::sscanf(name.c_str(), "vubtest-%lu-%lu%c", &pid, &n, &tail) != 2 ||
		    pid == 0)
			continue;
		if (::kill(static_cast<pid_t>(pid), 0) < 0 && errno == ESRCH)
			std::filesystem::remove_all(entry.path(), ec);
	}
}

std::string uniquePrefix()
{
	static std::atomic<unsigned> counter{ 0 };
	return "vubtest-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

/** A border line of testpmd's stats blocks: only '-', '+' or '#' (at least 8 of them). */
bool isBorder(std::string_view line)
{
	size_t first = line.find_first_not_of(' ');
	if (first == std::string_view::npos)
		return false;
	line.remove_prefix(first);
	while (!line.empty() && (line.back() == ' ' || line.back() == '\r'))
		line.remove_suffix(1);
	if (line.size() < 8)
		return false;
	char c = line[0];
	if (c != '-' && c != '+' && c != '#')
		return false;
	return line.find_first_not_of(c) == std::string_view::npos;
}

/** The lines after the header that ends at \a headerEnd, up to the closing border line. */
std::string_view blockAfter(std::string_view text, size_t headerEnd)
{
	size_t start = text.find('\n', headerEnd);
	if (start == std::string_view::npos)
		return {};
	start++;
	size_t pos = start;
	while (pos < text.size()) {
		size_t nl = text.find('\n', pos);
		size_t end = nl == std::string_view::npos ? text.size() : nl;
		if (isBorder(text.substr(pos, end - pos)))
			return text.substr(start, pos - start);
		pos = end + 1;
	}
	return text.substr(start);
}

/** Every "Key: 123" in \a block ("RX-packets" -> 123). */
std::map<std::string, uint64_t> counters(std::string_view block)
{
	static const std::regex kCounter("([A-Za-z][A-Za-z-]*):\\s*([0-9]+)");
	std::map<std::string, uint64_t> out;
	std::string text(block);
	for (auto it = std::sregex_iterator(text.begin(), text.end(), kCounter);
	     it != std::sregex_iterator(); ++it)
		out[(*it)[1].str()] = std::stoull((*it)[2].str());
	return out;
}

uint64_t get(const std::map<std::string, uint64_t> &c, const char *key)
{
	auto it = c.find(key);
	return it == c.end() ? 0 : it->second;
}

ForwardStats toForwardStats(std::string_view block)
{
	auto c = counters(block);
	ForwardStats s;
	s.rxPackets = get(c, "RX-packets");
	s.rxDropped = get(c, "RX-dropped");
	s.rxTotal = get(c, "RX-total");
	s.txPackets = get(c, "TX-packets");
	s.txDropped = get(c, "TX-dropped");
	s.txTotal = get(c, "TX-total");
	return s;
}

/** Each "<header> N" in \a text: (N, end of the header) in order. */
std::vector<std::pair<unsigned, size_t>> numberedHeaders(std::string_view text,
							 std::string_view header)
{
	std::vector<std::pair<unsigned, size_t>> out;
	for (size_t pos = text.find(header); pos != std::string_view::npos;
	     pos = text.find(header, pos + 1)) {
		size_t num = pos + header.size();
		while (num < text.size() && text[num] == ' ')
			num++;
		size_t end = num;
		unsigned port = 0;
		while (end < text.size() && text[end] >= '0' && text[end] <= '9')
			port = port * 10 + static_cast<unsigned>(text[end++] - '0');
		if (end > num)
			out.emplace_back(port, end);
	}
	return out;
}

} /* namespace */

std::optional<std::string> findInPath(const std::string &name,
				      std::initializer_list<const char *> fallbacks)
{
	const char *path = std::getenv("PATH");
	std::vector<std::string> dirs;
	std::stringstream list(path ? path : "");
	for (std::string dir; std::getline(list, dir, ':');) {
		if (!dir.empty())
			dirs.push_back(dir);
	}
	dirs.insert(dirs.end(), fallbacks.begin(), fallbacks.end());
	for (std::string candidate : dirs) {
		candidate += '/';
		candidate += name;
		if (isExecutable(candidate))
			return candidate;
	}
	return std::nullopt;
}

std::vector<int> allowedCpus(size_t count)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	std::vector<int> cpus;
	if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < count; cpu++) {
			if (CPU_ISSET(cpu, &set))
				cpus.push_back(cpu);
		}
	}
	if (cpus.empty())
		cpus.push_back(0);
	while (cpus.size() < count)
		cpus.push_back(cpus.back());
	return cpus;
}

std::optional<std::string> findTestpmd()
{
	const char *override = std::getenv("VUB_TESTPMD");
	if (override && *override)
		return isExecutable(override) ? std::optional<std::string>(override) : std::nullopt;
	return findInPath("dpdk-testpmd", { "/usr/bin", "/usr/local/bin" });
}

std::optional<std::string> findStdbuf()
{
	return findInPath("stdbuf", { "/usr/bin", "/bin" });
}

bool hugepagesUsable(std::string *reason)
{
	auto fail = [reason](std::string why) {
		if (reason)
			*reason = std::move(why);
		return false;
	};
	std::ifstream meminfo("/proc/meminfo");
	std::string line;
	std::optional<uint64_t> free;
	while (std::getline(meminfo, line)) {
		if (line.rfind("HugePages_Free:", 0) == 0)
			free = std::stoull(line.substr(line.find(':') + 1));
	}
	if (!free)
		return fail("no HugePages_Free in /proc/meminfo");
	if (*free < kMinFreeHugepages) {
		return fail("only " + std::to_string(*free) + " free hugepages, need " +
			    std::to_string(kMinFreeHugepages) + " (usertools/vub-hugepages)");
	}

	bool mounted = false;
	if (FILE *mounts = ::setmntent("/proc/mounts", "r")) {
		while (mntent *m = ::getmntent(mounts)) {
			if (std::string_view(m->mnt_type) == "hugetlbfs")
				mounted = true;
		}
		::endmntent(mounts);
	}
	if (!mounted)
		return fail("no hugetlbfs mounted (usertools/vub-hugepages)");
	return true;
}

std::vector<std::string> testpmdArgs(const std::string &binary, const TestpmdOptions &options)
{
	std::string vdev = options.vdev;
	if (vdev.empty()) {
		vdev = "net_virtio_user0,path=" + options.socketPath +
		       ",queues=" + std::to_string(options.queues) +
		       ",queue_size=" + std::to_string(options.queueSize);
		/* Each said both ways: virtio-user's defaults differ (in_order is on by default).
		 */
		vdev += options.packedVq ? ",packed_vq=1" : ",packed_vq=0";
		vdev += options.mrgRxbuf ? ",mrg_rxbuf=1" : ",mrg_rxbuf=0";
		vdev += options.inOrder ? ",in_order=1" : ",in_order=0";
		if (options.server)
			vdev += ",server=1";
	}
	std::string prefix = options.filePrefix.empty() ? uniquePrefix() : options.filePrefix;
	std::vector<std::string> args = {
		binary,
		"--lcores",
		options.lcores.empty() ? defaultLcores() : options.lcores,
		"--no-pci",
		"--no-telemetry",
		"--file-prefix=" + prefix,
		"--vdev",
		vdev,
	};
	if (options.hugepages) {
		/*
		 * --in-memory: the hugepages are memfds, gone with testpmd even after SIGKILL (a
		 * plain run leaves its files in /dev/hugepages, and DPDK 22.11 refuses
		 * --huge-unlink with --single-file-segments). --single-file-segments: one fd per
		 * memseg list, so the memory table fits in the 8 regions of vhost-user.
		 */
		args.insert(args.end(),
			    { "--in-memory", "--single-file-segments", "-m",
			      std::to_string(options.memoryMb ? options.memoryMb : 512) });
	} else {
		/* --no-huge memory is a memfd in DPDK 22.11, so virtio-user can share it. */
		args.insert(args.end(),
			    { "--no-huge", "-m",
			      std::to_string(options.memoryMb ? options.memoryMb : 1024) });
	}
	args.insert(args.end(), options.extraEalArgs.begin(), options.extraEalArgs.end());
	const std::vector<std::string> app = {
		"--",
		"-i",
		"--rxq=" + std::to_string(options.queues),
		"--txq=" + std::to_string(options.queues),
		"--rxd=" + std::to_string(options.queueSize),
		"--txd=" + std::to_string(options.queueSize),
		"--total-num-mbufs=" + std::to_string(options.totalNumMbufs),
	};
	args.insert(args.end(), app.begin(), app.end());
	args.insert(args.end(), options.extraAppArgs.begin(), options.extraAppArgs.end());
	return args;
}

std::string dpdkRuntimeDir(const std::string &filePrefix)
{
	std::string base;
	if (::getuid() == 0) {
		base = "/var/run";
	} else {
		const char *xdg = std::getenv("XDG_RUNTIME_DIR");
		base = xdg && *xdg ? xdg : "/tmp";
	}
	return base + "/dpdk/" + filePrefix;
}

std::optional<ForwardStats> parseForwardStats(std::string_view text)
{
	constexpr std::string_view kHeader = "Accumulated forward statistics for all ports";
	size_t pos = text.rfind(kHeader);
	if (pos == std::string_view::npos)
		return std::nullopt;
	return toForwardStats(blockAfter(text, pos + kHeader.size()));
}

std::map<unsigned, ForwardStats> parsePortForwardStats(std::string_view text)
{
	std::map<unsigned, ForwardStats> out;
	for (auto [port, end] : numberedHeaders(text, "Forward statistics for port"))
		out[port] = toForwardStats(blockAfter(text, end));
	return out;
}

std::map<unsigned, PortStats> parsePortStats(std::string_view text)
{
	std::map<unsigned, PortStats> out;
	for (auto [port, end] : numberedHeaders(text, "NIC statistics for port")) {
		auto c = counters(blockAfter(text, end));
		PortStats &s = out[port];
		s.rxPackets = get(c, "RX-packets");
		s.rxMissed = get(c, "RX-missed");
		s.rxBytes = get(c, "RX-bytes");
		s.rxErrors = get(c, "RX-errors");
		s.rxNombuf = get(c, "RX-nombuf");
		s.txPackets = get(c, "TX-packets");
		s.txErrors = get(c, "TX-errors");
		s.txBytes = get(c, "TX-bytes");
	}
	return out;
}

std::map<unsigned, PortRates> parsePortRates(std::string_view text)
{
	std::map<unsigned, PortRates> out;
	for (auto [port, end] : numberedHeaders(text, "NIC statistics for port")) {
		auto c = counters(blockAfter(text, end));
		PortRates &r = out[port];
		r.rxPps = get(c, "Rx-pps");
		r.rxBps = get(c, "Rx-bps");
		r.txPps = get(c, "Tx-pps");
		r.txBps = get(c, "Tx-bps");
	}
	return out;
}

std::map<unsigned, std::map<std::string, uint64_t>> parsePortXstats(std::string_view text)
{
	static const std::regex kXstat("^\\s*([A-Za-z0-9_]+):\\s*([0-9]+)\\s*$");
	std::map<unsigned, std::map<std::string, uint64_t>> out;
	auto headers = numberedHeaders(text, "NIC extended statistics for port");
	for (size_t i = 0; i < headers.size(); i++) {
		auto [port, end] = headers[i];
		size_t stop = i + 1 < headers.size() ? text.rfind('\n', headers[i + 1].second)
						     : text.size();
		if (stop == std::string_view::npos || stop < end)
			stop = end;
		auto &xstats = out[port];
		std::stringstream block{ std::string(text.substr(end, stop - end)) };
		std::smatch m;
		for (std::string line; std::getline(block, line);) {
			if (!line.empty() && line.back() == '\r')
				line.pop_back();
			if (std::regex_match(line, m, kXstat))
				xstats[m[1].str()] = std::stoull(m[2].str());
		}
	}
	return out;
}

std::string uniqueFilePrefix()
{
	return uniquePrefix();
}

Testpmd::~Testpmd()
{
	if (process_ && process_->running()) {
		process_->writeStdin("quit\n", 500);
		process_->waitForExit(3000);
	}
	process_.reset(); /* SIGKILLs the group if quit did not end it */
	if (!filePrefix_.empty()) {
		std::error_code ec;
		std::filesystem::remove_all(dpdkRuntimeDir(filePrefix_), ec);
	}
}

std::unique_ptr<Testpmd> Testpmd::start(const TestpmdOptions &options, const std::string &logPath,
					std::string *error)
{
	auto binary = findTestpmd();
	if (!binary) {
		if (error)
			*error = "dpdk-testpmd not found (apt-get install dpdk)";
		return nullptr;
	}
	auto stdbuf = findStdbuf();
	if (!stdbuf) {
		if (error)
			*error = "stdbuf not found (coreutils)";
		return nullptr;
	}

	removeStaleRuntimeDirs();
	std::unique_ptr<Testpmd> testpmd(new Testpmd());
	TestpmdOptions opts = options;
	if (opts.filePrefix.empty())
		opts.filePrefix = uniquePrefix();
	testpmd->filePrefix_ = opts.filePrefix;
	testpmd->args_ = testpmdArgs(*binary, opts);

	ProcessOptions p;
	p.argv = { *stdbuf, "-oL", "-eL" };
	p.argv.insert(p.argv.end(), testpmd->args_.begin(), testpmd->args_.end());
	p.logPath = logPath;
	p.ignoreSigpipe = true;
	testpmd->process_ = Process::create(p, error);
	if (!testpmd->process_)
		return nullptr;
	return testpmd;
}

bool Testpmd::waitForPrompt(int timeoutMs)
{
	return process_->waitForOutput(kPrompt, timeoutMs).has_value();
}

std::optional<std::string> Testpmd::command(std::string_view line, int timeoutMs)
{
	auto reply = commandAtPrompt(*process_, kPrompt, line, timeoutMs);
	/* The echoed command line. */
	if (reply && reply->compare(0, line.size(), line) == 0) {
		size_t nl = reply->find('\n');
		reply->erase(0, nl == std::string::npos ? reply->size() : nl + 1);
	}
	return reply;
}

std::optional<unsigned> Testpmd::portCount()
{
	auto reply = command("show port summary all");
	if (!reply)
		return std::nullopt;
	static const std::regex kPorts("Number of available ports:\\s*([0-9]+)");
	std::smatch m;
	if (!std::regex_search(*reply, m, kPorts))
		return std::nullopt;
	return static_cast<unsigned>(std::stoul(m[1].str()));
}

bool Testpmd::setForwardMode(std::string_view mode)
{
	auto reply = command("set fwd " + std::string(mode));
	return reply && reply->find("forwarding mode") != std::string::npos;
}

bool Testpmd::startForwarding()
{
	auto reply = command("start");
	return reply && reply->find("packet forwarding - ports=") != std::string::npos;
}

std::optional<ForwardStats> Testpmd::stopForwarding()
{
	auto reply = command("stop", 20000);
	if (!reply)
		return std::nullopt;
	return parseForwardStats(*reply);
}

std::optional<std::map<unsigned, PortStats>> Testpmd::showPortStats()
{
	auto reply = command("show port stats all");
	if (!reply)
		return std::nullopt;
	return parsePortStats(*reply);
}

std::optional<ExitStatus> Testpmd::quit(int timeoutMs)
{
	if (process_->running()) {
		process_->writeStdin("quit\n", 1000);
		if (!process_->waitForExit(timeoutMs))
			return process_->terminate(SIGTERM, 5000);
	}
	return process_->exitStatus();
}

std::optional<std::string> commandAtPrompt(Process &process, std::string_view prompt,
					   std::string_view line, int timeoutMs)
{
	/* The reply is everything between the prompt the command was typed at and the next one. */
	const std::string &out = process.output();
	size_t last = out.rfind(prompt);
	if (last == std::string::npos)
		return std::nullopt;
	size_t from = last + prompt.size();
	if (!process.writeStdin(std::string(line) + "\n", timeoutMs))
		return std::nullopt;
	auto next = process.waitForOutput(prompt, timeoutMs, from);
	if (!next)
		return std::nullopt;
	return process.output().substr(from, next->end - prompt.size() - from);
}

std::map<unsigned, SwitchPortStats> parseSwitchStats(const std::string &text)
{
	static const std::regex kLine("(?:^|\n)port ([0-9]+):((?: [a-z-]+ [0-9]+)+)");
	static const std::regex kPair(" ([a-z-]+) ([0-9]+)");
	std::map<unsigned, SwitchPortStats> out;
	for (auto it = std::sregex_iterator(text.begin(), text.end(), kLine);
	     it != std::sregex_iterator(); ++it) {
		std::map<std::string, uint64_t> c;
		std::string pairs = (*it)[2].str();
		for (auto p = std::sregex_iterator(pairs.begin(), pairs.end(), kPair);
		     p != std::sregex_iterator(); ++p)
			c[(*p)[1].str()] = std::stoull((*p)[2].str());
		bool complete = true;
		for (const char *key : { "rx-packets", "rx-bytes", "tx-packets", "tx-bytes",
					 "tx-dropped", "rx-dropped" })
			complete = complete && c.count(key);
		if (!complete)
			continue;
		SwitchPortStats stats{
			c["rx-packets"], c["rx-bytes"],	  c["tx-packets"], c["tx-bytes"],
			c["tx-dropped"], c["rx-dropped"], std::nullopt,
		};
		if (c.count("features"))
			stats.features = c["features"];
		out[static_cast<unsigned>(std::stoul((*it)[1].str()))] = stats;
	}
	return out;
}

} /* namespace vub::test */
