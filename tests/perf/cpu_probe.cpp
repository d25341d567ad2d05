/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How far apart two CPUs are right now: the round-trip time of one cache line bounced between a
 * thread on each, measured every period for as long as it runs. usertools/vub-perf runs it
 * beside every round, because on a virtual machine the hypervisor can move the vCPUs between
 * cores that share a cache and cores that do not, and every figure of a poller pair that hands
 * packets across the two CPUs moves with it (2-4x on the AMD EPYC guest of doc/performance.md).
 *
 *   perf-cpu-probe CPU_A CPU_B [PERIOD_MS [ROUND_TRIPS]]
 *
 * prints one line per probe, `MONOTONIC_NS ROUND_TRIP_NS`, flushed, until SIGTERM or SIGINT.
 * Both threads run SCHED_FIFO when allowed (as root), so that a probe is not a scheduling
 * delay behind the pollers it shares the CPUs with; a probe takes ROUND_TRIPS round trips
 * (2000: 0.2 to 1 ms) every PERIOD_MS (100); both threads sleep in between.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace {

std::atomic<bool> stopRequested{false};

/** The bounced line: A writes odd values, B answers each with the next even one. */
alignas(64) std::atomic<uint64_t> line{0};

uint64_t nowNs()
{
	timespec ts{};
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

bool pinAndRaise(int cpu, bool *realtime)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
		return false;
	sched_param param{};
	param.sched_priority = 1;
	*realtime = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
	return true;
}

void sleepUntil(uint64_t ns)
{
	timespec ts{time_t(ns / 1000000000u), long(ns % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0 &&
	       !stopRequested.load())
	{
	}
}

unsigned parseArg(const char *text, unsigned low, unsigned high, const char *what)
{
	char *end = nullptr;
	unsigned long v = std::strtoul(text, &end, 10);
	if (*text == '\0' || *end != '\0' || v < low || v > high) {
		std::fprintf(stderr, "perf-cpu-probe: %s must be %u to %u, not '%s'\n", what, low, high,
		             text);
		std::exit(2);
	}
	return unsigned(v);
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 5) {
		std::fprintf(stderr, "usage: perf-cpu-probe CPU_A CPU_B [PERIOD_MS [ROUND_TRIPS]]\n");
		return 2;
	}
	const int cpuA = int(parseArg(argv[1], 0, CPU_SETSIZE - 1, "CPU_A"));
	const int cpuB = int(parseArg(argv[2], 0, CPU_SETSIZE - 1, "CPU_B"));
	const uint64_t periodNs = uint64_t(argc > 3 ? parseArg(argv[3], 1, 60000, "PERIOD_MS") : 100) *
	                          1000000u;
	const uint64_t roundTrips = argc > 4 ? parseArg(argv[4], 1, 1000000, "ROUND_TRIPS") : 2000;

	std::signal(SIGTERM, [](int) { stopRequested.store(true); });
	std::signal(SIGINT, [](int) { stopRequested.store(true); });

	const uint64_t firstNs = nowNs();
	bool realtimeB = false;
	bool pinnedB = true;
	std::thread b([&] {
		if (!pinAndRaise(cpuB, &realtimeB)) {
			pinnedB = false;
			stopRequested.store(true);
			return;
		}
		/*
		 * Both threads wake at the same times; B answers each odd value of A's with the
		 * next even one, as many as A sends a probe, so that a late wake-up of either
		 * only delays that probe.
		 */
		for (uint64_t probe = 1; !stopRequested.load(); ++probe) {
			sleepUntil(firstNs + probe * periodNs);
			for (uint64_t i = 0; i < roundTrips; ++i) {
				uint64_t v;
				while (((v = line.load(std::memory_order_acquire)) & 1) == 0) {
					if (stopRequested.load(std::memory_order_relaxed))
						return;
				}
				line.store(v + 1, std::memory_order_release);
			}
		}
	});

	bool realtimeA = false;
	if (!pinAndRaise(cpuA, &realtimeA)) {
		std::fprintf(stderr, "perf-cpu-probe: cannot run on CPU %d\n", cpuA);
		stopRequested.store(true);
		b.join();
		return 1;
	}
	for (uint64_t probe = 1; !stopRequested.load(); ++probe) {
		sleepUntil(firstNs + probe * periodNs);
		// B answers once it is awake: the clock starts at its first answer.
		const uint64_t base = probe * 2 * roundTrips;
		line.store(base + 1, std::memory_order_release);
		while (line.load(std::memory_order_acquire) != base + 2) {
			if (stopRequested.load(std::memory_order_relaxed))
				break;
		}
		const uint64_t start = nowNs();
		for (uint64_t i = 1; i < roundTrips && !stopRequested.load(std::memory_order_relaxed);
		     ++i)
		{
			line.store(base + 2 * i + 1, std::memory_order_release);
			while (line.load(std::memory_order_acquire) != base + 2 * i + 2) {
				if (stopRequested.load(std::memory_order_relaxed))
					break;
			}
		}
		if (stopRequested.load())
			break;
		const uint64_t end = nowNs();
		std::printf("%llu %.1f\n", (unsigned long long)end,
		            double(end - start) / double(roundTrips - 1 ? roundTrips - 1 : 1));
		std::fflush(stdout);
	}
	b.join();
	if (!pinnedB) {
		std::fprintf(stderr, "perf-cpu-probe: cannot run on CPU %d\n", cpuB);
		return 1;
	}
	if (!realtimeA || !realtimeB)
		std::fprintf(stderr, "perf-cpu-probe: not SCHED_FIFO (not root?): a probe can wait "
		                     "behind the pollers on its CPUs\n");
	return 0;
}
