/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "process.h"

namespace vub::test {

/**
 * \brief The first \a count CPUs this process may run on (sched_getaffinity), repeating the
 * last one when there are fewer; for --lcores maps.
 */
std::vector<int> allowedCpus(size_t count);

/** \brief Hugepages a test needs free (2 MiB each) before it runs testpmd on hugepages. */
constexpr uint64_t kMinFreeHugepages = 256;

/**
 * \brief The first executable \a name in $PATH, then in \a fallbacks (directories).
 * std::nullopt when there is none.
 */
std::optional<std::string> findInPath(const std::string &name,
				      std::initializer_list<const char *> fallbacks = {});

/** \brief dpdk-testpmd: $VUB_TESTPMD, else PATH, else /usr/bin. std::nullopt when absent. */
std::optional<std::string> findTestpmd();

/**
 * \brief stdbuf (coreutils), which testpmd runs under: testpmd's stdout is a file here, so
 * without -oL its printf output would sit in a 4 KiB stdio buffer until exit.
 */
std::optional<std::string> findStdbuf();

/**
 * \brief True when testpmd can run on hugepages: HugePages_Free in /proc/meminfo is at least
 * kMinFreeHugepages and a hugetlbfs is mounted.
 * \param[out] reason Why not, when it returns false (may be nullptr).
 */
bool hugepagesUsable(std::string *reason = nullptr);

/** \brief How to start testpmd; the defaults make a virtio-user client with one queue pair. */
struct TestpmdOptions {
	/** \brief The vhost-user socket. */
	std::string socketPath;
	/** \brief Queue pairs (virtio-user queues=, testpmd --rxq/--txq). */
	unsigned queues = 1;
	/** \brief Ring size (virtio-user queue_size=, testpmd --rxd/--txd). */
	unsigned queueSize = 256;
	/** \brief packed_vq=1. */
	bool packedVq = false;
	/** \brief false adds mrg_rxbuf=0. */
	bool mrgRxbuf = true;
	/** \brief in_order=1. */
	bool inOrder = false;
	/** \brief server=1: virtio-user listens, the back-end connects (its --client mode). */
	bool server = false;
	/**
	 * \brief The --vdev argument, replacing the net_virtio_user0 one built from the fields
	 * above (e.g. "net_vhost0,iface=SOCK" for DPDK's own vhost-user back-end).
	 */
	std::string vdev;
	/** \brief Hugepages (--in-memory --single-file-segments -m 512) or --no-huge -m 1024. */
	bool hugepages = false;
	/** \brief -m; 0 = 512 with hugepages, 1024 without. */
	unsigned memoryMb = 0;
	/** \brief --lcores; empty = main lcore and one forwarding lcore on the first two CPUs. */
	std::string lcores;
	/** \brief --file-prefix; empty = a unique one, so parallel testpmds never collide. */
	std::string filePrefix;
	/** \brief --total-num-mbufs: testpmd's default (~155k mbufs) takes seconds to set up. */
	unsigned totalNumMbufs = 8192;
	/** \brief More EAL arguments, before "--". */
	std::vector<std::string> extraEalArgs;
	/** \brief More testpmd arguments, after "-- -i". */
	std::vector<std::string> extraAppArgs;
};

/**
 * \brief The argument list for \a binary (without stdbuf), e.g.
 * `dpdk-testpmd --lcores 0@0,1@1 --no-pci --no-telemetry --file-prefix=P
 * --vdev net_virtio_user0,path=SOCK,queues=1,queue_size=256 --no-huge -m 1024
 * -- -i --rxq=1 --txq=1 --rxd=256 --txd=256 --total-num-mbufs=8192`.
 * DPDK 22.11 rejects -l together with --lcores, so only --lcores is given.
 */
std::vector<std::string> testpmdArgs(const std::string &binary, const TestpmdOptions &options);

/** \brief Where EAL keeps the runtime files of \a filePrefix (/var/run/dpdk/<prefix> as root). */
std::string dpdkRuntimeDir(const std::string &filePrefix);

/** \brief One "Forward statistics" block, as `stop` prints it. */
struct ForwardStats {
	uint64_t rxPackets = 0;
	uint64_t rxDropped = 0;
	uint64_t rxTotal = 0;
	uint64_t txPackets = 0;
	uint64_t txDropped = 0;
	uint64_t txTotal = 0;
};

/**
 * \brief The "Accumulated forward statistics for all ports" block in \a text (the last one
 * when there are several). std::nullopt when there is none.
 */
std::optional<ForwardStats> parseForwardStats(std::string_view text);

/** \brief The per-port "Forward statistics for port N" blocks in \a text, by port. */
std::map<unsigned, ForwardStats> parsePortForwardStats(std::string_view text);

/** \brief One "NIC statistics for port N" block, as `show port stats` prints it. */
struct PortStats {
	uint64_t rxPackets = 0;
	uint64_t rxMissed = 0;
	uint64_t rxBytes = 0;
	uint64_t rxErrors = 0;
	uint64_t rxNombuf = 0;
	uint64_t txPackets = 0;
	uint64_t txErrors = 0;
	uint64_t txBytes = 0;
};

/** \brief The "NIC statistics for port N" blocks in \a text, by port (the last one wins). */
std::map<unsigned, PortStats> parsePortStats(std::string_view text);

/**
 * \brief The "Throughput (since last show)" part of a "NIC statistics for port N" block.
 *
 * testpmd computes it from the counters and the time of the previous `show port stats` of
 * that port, so the first call after start-up reads 0: show the stats once to set the
 * baseline, and again after the interval to measure.
 */
struct PortRates {
	uint64_t rxPps = 0;
	uint64_t rxBps = 0;
	uint64_t txPps = 0;
	uint64_t txBps = 0;
};

/** \brief The rates in the "NIC statistics for port N" blocks in \a text, by port. */
std::map<unsigned, PortRates> parsePortRates(std::string_view text);

/**
 * \brief The "NIC extended statistics for port N" blocks of `show port xstats all` in
 * \a text: by port, every "name: value" (virtio: "rx_q1_good_packets", ...).
 */
std::map<unsigned, std::map<std::string, uint64_t>> parsePortXstats(std::string_view text);

/**
 * \brief A fresh EAL --file-prefix, "vubtest-<pid>-<n>", for another DPDK process a test
 * starts (a back-end): Testpmd::start() removes the runtime directories of such prefixes
 * whose pid is gone.
 */
/** One port of the switch, from its exit lines (or from the stand-in's statistics). */
struct SwitchPortStats {
	uint64_t rxPackets = 0;
	uint64_t rxBytes = 0;
	uint64_t txPackets = 0;
	uint64_t txBytes = 0;
	uint64_t txDropped = 0;
	uint64_t rxDropped = 0;
	/** The virtio features the port negotiated, when it says (vub-switch does). */
	std::optional<uint64_t> features;
};

/**
 * The "port P: rx-packets N rx-bytes N tx-packets N tx-bytes N tx-dropped N rx-dropped N"
 * lines vub-switch prints on SIGTERM, by port. Other "key N" pairs on the line are ignored; a
 * line missing one of the six is left out, so that the test reports it.
 */
std::map<unsigned, SwitchPortStats> parseSwitchStats(const std::string &text);

/**
 * \brief Type \a line at the prompt \a prompt of \a process and wait for the next one.
 * \return what was printed in between (the echoed line too, if the program echoes), or
 * std::nullopt when no prompt came in \a timeoutMs or the process is gone.
 */
std::optional<std::string> commandAtPrompt(Process &process, std::string_view prompt,
					   std::string_view line, int timeoutMs);

std::string uniqueFilePrefix();

/**
 * \brief dpdk-testpmd in interactive mode (-i), driven through a pipe on its stdin.
 *
 * testpmd's cmdline library reads commands from a pipe as from a terminal: it echoes each line
 * after the "testpmd> " prompt and prints the next prompt when the command is done, so
 * command() sends one line and returns what was printed up to the next prompt.
 *
 * testpmd runs under `stdbuf -oL -eL` (see findStdbuf()) with SIGPIPE ignored (it writes to
 * the vhost-user socket without MSG_NOSIGNAL, and dies on `quit` after its back-end went away
 * otherwise). The destructor quits it (SIGKILL after 3 s) and removes its EAL runtime
 * directory. Not thread-safe.
 */
class Testpmd
{
public:
	Testpmd(const Testpmd &) = delete;
	Testpmd &operator=(const Testpmd &) = delete;
	~Testpmd();

	/**
	 * \brief Start testpmd; does not wait for it: see waitForPrompt().
	 * \param[out] error Why it failed, when it returns nullptr (may be nullptr).
	 * \return nullptr when dpdk-testpmd or stdbuf is missing or does not start.
	 */
	static std::unique_ptr<Testpmd> start(const TestpmdOptions &options,
					      const std::string &logPath,
					      std::string *error = nullptr);

	/** \brief Wait for the first prompt (EAL and ports set up). \return false on timeout. */
	bool waitForPrompt(int timeoutMs = 60000);
	/**
	 * \brief Send one command line and wait for the next prompt.
	 * \return What the command printed (without the echoed command), or std::nullopt when no
	 * prompt came back in \a timeoutMs or testpmd exited.
	 */
	std::optional<std::string> command(std::string_view line, int timeoutMs = 10000);

	/** \brief `show port summary all`. \return the number of ports; std::nullopt on error. */
	std::optional<unsigned> portCount();
	/** \brief `set fwd MODE`. */
	bool setForwardMode(std::string_view mode);
	/** \brief `start`. */
	bool startForwarding();
	/** \brief `stop`. \return The accumulated forward statistics it printed. */
	std::optional<ForwardStats> stopForwarding();
	/** \brief `show port stats all`. */
	std::optional<std::map<unsigned, PortStats>> showPortStats();
	/** \brief `quit`, then SIGTERM/SIGKILL after \a timeoutMs. \return how it ended. */
	std::optional<ExitStatus> quit(int timeoutMs = 10000);

	Process &process() { return *process_; }
	const std::string &filePrefix() const { return filePrefix_; }
	/** \brief The whole command line, for failure messages. */
	const std::vector<std::string> &args() const { return args_; }

private:
	Testpmd() = default;

	std::unique_ptr<Process> process_;
	std::string filePrefix_;
	std::vector<std::string> args_;
};

} /* namespace vub::test */
