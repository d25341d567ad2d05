/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch driven at its vub> prompt, and testpmd guests on its ports: what the switch
 * tests share (starting the switch, reading its tables and counters, waiting for links and
 * traffic, counting what it holds).
 */
#pragma once

#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "log_dump.h"
#include "process.h"
#include "testpmd.h"

namespace vub::test {

inline constexpr std::string_view kPrompt = "vub> ";
/** How long a guest sends in txonly for a "brief" send. */
inline constexpr auto kSendTime = std::chrono::milliseconds(300);
/** How often a wait polls the switch. */
inline constexpr auto kPollInterval = std::chrono::milliseconds(100);
/** EAL on --no-huge memory and a vhost-user handshake, with every CPU busy. */
inline constexpr int kStartTimeoutMs = 60000;
/** A condition the switch should reach at once (a link, a learnt MAC, a drained ring). */
inline constexpr int kSettleTimeoutMs = 15000;

/** The guests' MAC addresses. */
inline constexpr const char *kMac1 = "02:00:00:00:00:01";
inline constexpr const char *kMac2 = "02:00:00:00:00:02";
inline constexpr const char *kMac3 = "02:00:00:00:00:03";

/** One port of `show port info all`. */
struct PortInfo {
	std::string name;
	std::string kind;
	bool linkUp = false;
};

/** The "Infos for port N" blocks of `show port info all`, by port. */
inline std::map<unsigned, PortInfo> parsePortInfo(const std::string &text)
{
	static const std::regex kHeader("Infos for port ([0-9]+)");
	static const std::regex kName("\nName: ([^\n]*)");
	static const std::regex kKind("\nKind: ([^\n]*)");
	static const std::regex kLink("\nLink status: (up|down)");
	std::vector<std::pair<unsigned, size_t>> headers;
	for (auto it = std::sregex_iterator(text.begin(), text.end(), kHeader);
	     it != std::sregex_iterator(); ++it)
		headers.emplace_back(static_cast<unsigned>(std::stoul((*it)[1].str())),
				     static_cast<size_t>(it->position(0)));
	std::map<unsigned, PortInfo> out;
	for (size_t i = 0; i < headers.size(); i++) {
		size_t end = i + 1 < headers.size() ? headers[i + 1].second : text.size();
		std::string block = text.substr(headers[i].second, end - headers[i].second);
		PortInfo &info = out[headers[i].first];
		std::smatch m;
		if (std::regex_search(block, m, kName))
			info.name = m[1].str();
		if (std::regex_search(block, m, kKind))
			info.kind = m[1].str();
		info.linkUp = std::regex_search(block, m, kLink) && m[1].str() == "up";
	}
	return out;
}

/** One row of `show mac table`. */
struct MacEntry {
	unsigned port = 0;
	std::string name;
};

/** `show mac table`: by MAC (upper case), and the "flooded N" count of its summary line. */
struct MacTableView {
	std::map<std::string, MacEntry> entries;
	uint64_t flooded = 0;
};

inline std::string upper(std::string text)
{
	for (char &c : text)
		c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
	return text;
}

inline MacTableView parseMacTable(const std::string &text)
{
	static const std::regex kRow("(?:^|\n)([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})\\s+([0-9]+)"
				     "\\s+(\\S+)\\s+[0-9]+");
	static const std::regex kFlooded("flooded ([0-9]+)");
	MacTableView view;
	for (auto it = std::sregex_iterator(text.begin(), text.end(), kRow);
	     it != std::sregex_iterator(); ++it)
		view.entries[upper((*it)[1].str())] =
			MacEntry{ static_cast<unsigned>(std::stoul((*it)[2].str())),
				  (*it)[3].str() };
	std::smatch m;
	if (std::regex_search(text, m, kFlooded))
		view.flooded = std::stoull(m[1].str());
	return view;
}

/** "0@B,1@A": the switch's control thread on the second CPU, its worker on the first. */
inline std::string switchLcores()
{
	const std::vector<int> cpus = allowedCpus(2);
	return "0@" + std::to_string(cpus[1]) + ",1@" + std::to_string(cpus[0]);
}

/** "0@A,1@B": a guest's main lcore on the first CPU, its forwarding lcore on the second. */
inline std::string guestLcores()
{
	const std::vector<int> cpus = allowedCpus(2);
	return "0@" + std::to_string(cpus[0]) + ",1@" + std::to_string(cpus[1]);
}

/**
 * vub-switch as a child process: `stdbuf -oL -eL vub-switch --no-pci --file-prefix=P
 * --lcores 0@B,1@A --no-huge -m N -- ARGS`. With -i in ARGS, command() drives its vub>
 * prompt. The destructor kills it (Process) and removes its EAL runtime directory.
 * Not thread-safe.
 */
class VubSwitchCli
{
public:
	VubSwitchCli(const VubSwitchCli &) = delete;
	VubSwitchCli &operator=(const VubSwitchCli &) = delete;
	~VubSwitchCli()
	{
		process_.reset();
		std::error_code ec;
		std::filesystem::remove_all(dpdkRuntimeDir(filePrefix_), ec);
	}

	/**
	 * \brief Start vub-switch with the application arguments \a appArgs (after "--").
	 * \param memoryMb EAL -m; the switch's mbuf pool needs ~40 MiB, a run that fails in its
	 * configuration needs little.
	 * \return nullptr, and \a error, when stdbuf is missing or the process does not start.
	 */
	static std::unique_ptr<VubSwitchCli> start(const std::string &binary,
						   const std::vector<std::string> &appArgs,
						   const std::string &logPath, std::string *error,
						   unsigned memoryMb = 256)
	{
		auto stdbuf = findStdbuf();
		if (!stdbuf) {
			*error = "stdbuf not found (coreutils)";
			return nullptr;
		}
		std::unique_ptr<VubSwitchCli> sw(new VubSwitchCli());
		sw->filePrefix_ = uniqueFilePrefix();
		ProcessOptions p;
		/* Line-buffered: its stdout is a file, and the test waits on it. */
		p.argv = { *stdbuf,
			   "-oL",
			   "-eL",
			   binary,
			   "--no-pci",
			   "--file-prefix=" + sw->filePrefix_,
			   "--lcores",
			   switchLcores(),
			   "--no-huge",
			   "-m",
			   std::to_string(memoryMb),
			   "--" };
		p.argv.insert(p.argv.end(), appArgs.begin(), appArgs.end());
		p.logPath = logPath;
		sw->process_ = Process::create(p, error);
		if (!sw->process_)
			return nullptr;
		return sw;
	}

	/** \brief Wait for the first vub> prompt. \return false on timeout or exit. */
	bool waitForPrompt(int timeoutMs = kStartTimeoutMs)
	{
		return process_->waitForOutput(kPrompt, timeoutMs).has_value();
	}

	/**
	 * \brief Send one command line and wait for the next prompt.
	 * \return What was printed between the prompt it was typed at and the next one (the
	 * switch does not echo its input), or std::nullopt on timeout or exit.
	 */
	std::optional<std::string> command(std::string_view line, int timeoutMs = 10000)
	{
		return commandAtPrompt(*process_, kPrompt, line, timeoutMs);
	}

	/** \brief `show port stats all`, by port. */
	std::optional<std::map<unsigned, PortStats>> showPortStats()
	{
		auto reply = command("show port stats all");
		if (!reply)
			return std::nullopt;
		return parsePortStats(*reply);
	}

	/** \brief `show port xstats PORT`: name -> value (empty when it does not answer). */
	std::map<std::string, uint64_t> showPortXstats(unsigned port)
	{
		std::map<std::string, uint64_t> out;
		auto reply = command("show port xstats " + std::to_string(port));
		if (!reply)
			return out;
		static const std::regex kLine("(?:^|\n)([a-z0-9_]+): ([0-9]+)");
		for (auto it = std::sregex_iterator(reply->begin(), reply->end(), kLine);
		     it != std::sregex_iterator(); ++it)
			out[(*it)[1].str()] = std::stoull((*it)[2].str());
		return out;
	}

	/** \brief `show port info all`, by port. */
	std::optional<std::map<unsigned, PortInfo>> showPortInfo()
	{
		auto reply = command("show port info all");
		if (!reply)
			return std::nullopt;
		return parsePortInfo(*reply);
	}

	/** \brief `show mac table`. */
	std::optional<MacTableView> showMacTable()
	{
		auto reply = command("show mac table");
		if (!reply)
			return std::nullopt;
		return parseMacTable(*reply);
	}

	/**
	 * \brief `quit`, then SIGTERM and SIGKILL after \a timeoutMs.
	 * \param[out] exitStats The exit summary lines, by port.
	 * \return How it ended; std::nullopt when even SIGKILL did not reap it.
	 */
	std::optional<ExitStatus> quit(std::map<unsigned, SwitchPortStats> *exitStats,
				       int timeoutMs = 20000)
	{
		if (process_->running()) {
			process_->writeStdin("quit\n", 1000);
			if (!process_->waitForExit(timeoutMs))
				process_->terminate(SIGTERM, 5000);
		}
		if (exitStats)
			*exitStats = parseSwitchStats(process_->output());
		return process_->exitStatus();
	}

	Process &process() { return *process_; }

private:
	VubSwitchCli() = default;

	std::unique_ptr<Process> process_;
	std::string filePrefix_;
};

/** The vub-switch binary, or why there is none (the test skips then). */
inline std::optional<std::string> switchBinary(std::string *why)
{
	const char *binary = std::getenv("VUB_SWITCH");
	if (!binary || !*binary) {
		*why = "VUB_SWITCH is not set: vub-switch is not built";
		return std::nullopt;
	}
	if (::access(binary, X_OK) != 0) {
		*why = std::string("VUB_SWITCH=") + binary + " is not an executable";
		return std::nullopt;
	}
	return std::string(binary);
}

/* GTEST_SKIP in a helper returns from the helper only: each test checks IsSkipped() after. */
inline void requireSwitchAndTestpmd(std::string &binary)
{
	std::string why;
	auto found = switchBinary(&why);
	if (!found)
		GTEST_SKIP() << why;
	if (!findTestpmd())
		GTEST_SKIP() << "dpdk-testpmd not found (apt-get install dpdk, or set VUB_TESTPMD)";
	if (!findStdbuf())
		GTEST_SKIP() << "stdbuf not found (coreutils)";
	binary = *found;
}

/**
 * A guest: testpmd with one virtio-user port on \a socket, MAC \a mac, one queue pair of 256
 * descriptors, on --no-huge memory, its forwarding lcore on the second CPU.
 */
inline TestpmdOptions guestOptions(const std::string &socket, const std::string &mac,
				   std::vector<std::string> extraAppArgs = {})
{
	TestpmdOptions o;
	o.socketPath = socket;
	/* testpmdArgs() adds no mac=: the whole vdev, as it builds it, with one. */
	o.vdev = "net_virtio_user0,path=" + socket +
		 ",queues=1,queue_size=" + std::to_string(o.queueSize) +
		 ",packed_vq=0,mrg_rxbuf=1,in_order=0,mac=" + mac;
	o.memoryMb = 256;
	o.lcores = guestLcores();
	o.extraAppArgs = std::move(extraAppArgs);
	return o;
}

/** A started guest, its log added to \a dump. */
inline std::unique_ptr<Testpmd> startGuest(const TestpmdOptions &options,
					   const std::string &logPath, const std::string &label,
					   LogDump &dump, std::string *error)
{
	auto guest = Testpmd::start(options, logPath, error);
	if (guest)
		dump.add(label, logPath);
	return guest;
}

/** Wait for testpmd's prompt and check that it found its one virtio-user port. */
inline ::testing::AssertionResult guestReady(Testpmd &guest, const char *label)
{
	if (!guest.waitForPrompt(kStartTimeoutMs))
		return ::testing::AssertionFailure()
		       << label << ": no testpmd prompt in " << kStartTimeoutMs / 1000 << " s";
	auto ports = guest.portCount();
	if (ports != 1u)
		return ::testing::AssertionFailure()
		       << label << ": virtio-user did not come up (ports: "
		       << (ports ? std::to_string(*ports) : "no answer") << ")";
	return ::testing::AssertionSuccess();
}

/**
 * Poll `show port info all` every 100 ms until each port in \a expected shows its link state
 * (true: up) and, when \a exactPorts, no other port is listed.
 */
inline ::testing::AssertionResult waitForLinks(VubSwitchCli &sw,
					       const std::map<unsigned, bool> &expected,
					       bool exactPorts = true,
					       int timeoutMs = kStartTimeoutMs)
{
	auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
	std::string last = "no answer";
	for (;;) {
		auto reply = sw.command("show port info all");
		if (!reply)
			return ::testing::AssertionFailure()
			       << "vub-switch does not answer 'show port info all'";
		last = *reply;
		auto info = parsePortInfo(*reply);
		bool ok = !exactPorts || info.size() == expected.size();
		for (const auto &[port, up] : expected)
			ok = ok && info.count(port) && info[port].linkUp == up;
		if (ok)
			return ::testing::AssertionSuccess();
		if (std::chrono::steady_clock::now() >= deadline)
			break;
		std::this_thread::sleep_for(kPollInterval);
	}
	::testing::AssertionResult failure = ::testing::AssertionFailure();
	failure << "after " << timeoutMs / 1000 << " s the links are not";
	for (const auto &[port, up] : expected)
		failure << " port " << port << (up ? " up" : " down");
	return failure << "; last 'show port info all':\n" << last;
}

/** Wait until every one of the \a count ports shows "Link status: up". */
inline ::testing::AssertionResult waitForAllLinksUp(VubSwitchCli &sw, unsigned count,
						    int timeoutMs = kStartTimeoutMs)
{
	std::map<unsigned, bool> expected;
	for (unsigned p = 0; p < count; p++)
		expected[p] = true;
	return waitForLinks(sw, expected, true, timeoutMs);
}

/**
 * Poll the switch's `show port stats all` every 100 ms until \a done holds for them, or
 * kSettleTimeoutMs passed. \return the last statistics (std::nullopt when it did not answer).
 */
template <typename Predicate>
std::optional<std::map<unsigned, PortStats>> waitForSwitchStats(VubSwitchCli &sw, Predicate done)
{
	auto deadline =
		std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs);
	std::optional<std::map<unsigned, PortStats>> stats;
	for (;;) {
		stats = sw.showPortStats();
		if (!stats || done(*stats) || std::chrono::steady_clock::now() >= deadline)
			return stats;
		std::this_thread::sleep_for(kPollInterval);
	}
}

/**
 * Wait until the switch's port \a port has RX-packets \a atLeast (what a guest's TX counter
 * says it sent): the switch may still be taking what the guest left in its TX ring when it
 * stopped. \return the last statistics of every port.
 */
inline std::optional<std::map<unsigned, PortStats>> waitForSwitchRx(VubSwitchCli &sw, unsigned port,
								    uint64_t atLeast)
{
	return waitForSwitchStats(
		sw, [&](std::map<unsigned, PortStats> &s) { return s[port].rxPackets >= atLeast; });
}

/** Poll `show mac table` until \a mac is listed (on any port). */
inline std::optional<MacTableView> waitForMac(VubSwitchCli &sw, const std::string &mac)
{
	auto deadline =
		std::chrono::steady_clock::now() + std::chrono::milliseconds(kSettleTimeoutMs);
	std::optional<MacTableView> view;
	for (;;) {
		view = sw.showMacTable();
		if (!view || view->entries.count(upper(mac)) ||
		    std::chrono::steady_clock::now() >= deadline)
			return view;
		std::this_thread::sleep_for(kPollInterval);
	}
}

/** The guest's port 0 TX-packets (testpmd's `show port stats all`). */
inline std::optional<uint64_t> guestTxPackets(Testpmd &guest)
{
	auto stats = guest.showPortStats();
	if (!stats || !stats->count(0))
		return std::nullopt;
	return (*stats)[0].txPackets;
}

/** The guest's port 0 RX-packets. */
inline std::optional<uint64_t> guestRxPackets(Testpmd &guest)
{
	auto stats = guest.showPortStats();
	if (!stats || !stats->count(0))
		return std::nullopt;
	return (*stats)[0].rxPackets;
}

/** txonly for kSendTime: `set fwd txonly`, `start`, sleep, `stop`. */
inline ::testing::AssertionResult sendBriefly(Testpmd &guest, const char *label)
{
	if (!guest.setForwardMode("txonly"))
		return ::testing::AssertionFailure() << label << ": set fwd txonly failed";
	if (!guest.startForwarding())
		return ::testing::AssertionFailure() << label << ": start failed";
	std::this_thread::sleep_for(kSendTime);
	auto stats = guest.stopForwarding();
	if (!stats)
		return ::testing::AssertionFailure() << label << ": no statistics after stop";
	if (stats->txPackets == 0)
		return ::testing::AssertionFailure()
		       << label << ": testpmd sent nothing in " << kSendTime.count() << " ms";
	return ::testing::AssertionSuccess();
}

/** What the switch tried to give a port's guest: delivered, or dropped for want of room. */
inline uint64_t offered(const PortStats &s)
{
	return s.txPackets + s.txErrors;
}

inline std::string describe(const std::map<unsigned, PortStats> &stats)
{
	std::string text;
	for (const auto &[port, s] : stats)
		text += "port " + std::to_string(port) + ": RX-packets " +
			std::to_string(s.rxPackets) + " TX-packets " + std::to_string(s.txPackets) +
			" TX-errors " + std::to_string(s.txErrors) + "\n";
	return text;
}

/* ---- 1. MAC learning ---- */
/**
 * vub-switch in io mode at its prompt: port 0 <-> port 1, port 2 loops back to itself, on
 * \a sock. \return nullptr, with a failure recorded, when it does not start.
 */
inline std::unique_ptr<VubSwitchCli> startIoSwitchOfThreePorts(const std::string &binary,
							       TempDir &dir,
							       const std::string (&sock)[3],
							       LogDump &dump)
{
	std::string error;
	auto sw = VubSwitchCli::start(binary,
				      { "-i", "--runtime-dir", dir.path(), "--forward-mode=io",
					"--auto-start", "--port", "vhost-user:path=" + sock[0],
					"--port", "vhost-user:path=" + sock[1], "--port",
					"vhost-user:path=" + sock[2] },
				      dir.file("switch.log"), &error);
	if (!sw) {
		ADD_FAILURE() << "cannot start vub-switch: " << error;
		return nullptr;
	}
	dump.add("vub-switch", sw->process().logPath());
	if (!sw->waitForPrompt()) {
		ADD_FAILURE() << "no vub> prompt from vub-switch";
		return nullptr;
	}
	return sw;
}

/** What a process holds that a connection could leak: fds, mappings, the switch's mbufs. */
struct Holdings {
	size_t fds = 0;
	size_t mappings = 0;
	uint64_t mbufsInUse = 0;

	bool operator==(const Holdings &) const = default;
	std::string toString() const
	{
		return std::to_string(fds) + " fds, " + std::to_string(mappings) + " mappings, " +
		       std::to_string(mbufsInUse) + " mbufs in use";
	}
};

/** The switch's fds and mappings (/proc) and its pools' mbufs in use (`show mempool`). */
inline std::optional<Holdings> holdings(VubSwitchCli &sw)
{
	Holdings h;
	const std::string proc = "/proc/" + std::to_string(sw.process().pid());
	std::error_code ec;
	for (auto it = std::filesystem::directory_iterator(proc + "/fd", ec);
	     !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
		h.fds++;
	std::ifstream maps(proc + "/maps");
	for (std::string line; std::getline(maps, line);)
		h.mappings++;
	auto reply = sw.command("show mempool");
	if (ec || !maps.eof() || !reply)
		return std::nullopt;
	static const std::regex kInUse("([0-9]+) in use");
	auto it = std::sregex_iterator(reply->begin(), reply->end(), kInUse);
	if (it == std::sregex_iterator())
		return std::nullopt;
	for (; it != std::sregex_iterator(); ++it)
		h.mbufsInUse += std::stoull((*it)[1].str());
	return h;
}

} /* namespace vub::test */
