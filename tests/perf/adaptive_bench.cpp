/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What adaptive polling costs and saves: the sample back-end served by one polling thread,
 * driven by the in-tree test front-end, with the poller busy all the time (pollIdleUs 0) or
 * going to sleep on the kick eventfds after pollIdleUs of idle rings.
 *
 * For each mode it prints the CPU the whole process used while no traffic ran (1 s), and the
 * latency of one chain made available after 5 ms of silence: from the moment it is published
 * (and kicked, when the back-end asked for kicks) to the moment its used entry appears. The
 * front-end spins on the used index, so the figure includes the back-end's wake-up.
 *
 *   perf-adaptive [samples]      (meson test --benchmark --suite perf)
 *
 * It prints figures and asserts nothing.
 */
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "vub/base/topology.h"
#include "vub/vhost/daemon.h"
#include "vub/vhost/listener.h"

#include "sample_backend.h"
#include "test_frontend.h"

using namespace vub;
using namespace vub::vhost;
using namespace vub::test;
using vub::sample::SampleBackend;

namespace {

constexpr uint64_t kGpaBase = 0x100000;
constexpr unsigned kGuestCpu = 0;
constexpr unsigned kPollerCpu = 1;

double cpuSeconds()
{
	timespec ts{};
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct ModeResult {
	double idleCpuPercent = 0;
	double medianUs = 0;
	double p99Us = 0;
	bool ok = false;
};

ModeResult measure(unsigned idleUs, unsigned samples)
{
	ModeResult r;
	std::string path = "/tmp/vub-perf-adaptive-" + std::to_string(getpid()) + ".sock";
	auto backend = std::make_shared<SampleBackend>(2, 256, 1);
	DaemonOptions o;
	o.polling = true;
	o.pollIdleUs = idleUs;
	/*
	 * The poller and this thread (the guest) each on its own CPU, as a deployment pins them:
	 * sharing one, a woken poller waits for the spinning guest's time slice.
	 */
	o.pollCpus = { kPollerCpu };
	auto daemon = VhostUserDaemon::create<VringPolled>("perf", backend, nullptr, o);
	auto listener = Listener::create(path);
	if (!daemon || !listener || !(*daemon)->start(*listener))
		return r;
	auto mem = GuestMemoryFd::create(16 << 20, kGpaBase);
	auto frontend = TestFrontend::connect(path);
	NegotiateOptions n;
	n.queues = 2;
	n.features = virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFEventIdx);
	n.memory = { mem.get() };
	if (!frontend || !frontend->negotiateQemu(n))
		return r;

	/* Idle: let an adaptive poller fall asleep, then count the CPU of one second. */
	std::this_thread::sleep_for(std::chrono::milliseconds(200));
	double before = cpuSeconds();
	std::this_thread::sleep_for(std::chrono::seconds(1));
	r.idleCpuPercent = (cpuSeconds() - before) * 100.0;

	SplitDriver &tx = frontend->queue(1);
	uint64_t gpa = mem->alloc(64, 16);
	std::vector<double> us;
	for (unsigned i = 0; i < samples; i++) {
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
		BufferSpec spec{ gpa, 64, false };
		if (tx.addChain(std::span(&spec, 1)) < 0)
			return r;
		uint16_t want = static_cast<uint16_t>(tx.usedIdx() + 1);
		auto start = std::chrono::steady_clock::now();
		tx.publish();
		frontend->kickIfNeeded(1);
		auto deadline = start + std::chrono::seconds(1);
		while (tx.usedIdx() != want) {
			if (std::chrono::steady_clock::now() > deadline)
				return r;
		}
		us.push_back(std::chrono::duration<double, std::micro>(
				     std::chrono::steady_clock::now() - start)
				     .count());
		tx.collectUsed();
	}
	std::sort(us.begin(), us.end());
	r.medianUs = us[us.size() / 2];
	r.p99Us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
	r.ok = true;
	frontend.reset();
	daemon->reset();
	return r;
}

} /* namespace */

int main(int argc, char **argv)
{
	unsigned samples =
		argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 0)) : 200;
	if (!Topology::pinThisThread(kGuestCpu))
		std::fprintf(stderr, "perf-adaptive: cannot pin to cpu %u; figures will be noisy\n",
			     kGuestCpu);
	if (samples == 0)
		samples = 1;
	std::printf("%-26s %14s %14s %14s\n", "poller", "idle CPU %", "median us", "p99 us");
	for (unsigned idleUs : { 0u, 50u, 1000u }) {
		ModeResult r = measure(idleUs, samples);
		std::string name = idleUs == 0
					   ? "busy (pollIdleUs 0)"
					   : "adaptive (pollIdleUs " + std::to_string(idleUs) + ")";
		if (!r.ok) {
			std::printf("%-26s failed to run\n", name.c_str());
			return 1;
		}
		std::printf("%-26s %14.1f %14.1f %14.1f\n", name.c_str(), r.idleCpuPercent,
			    r.medianUs, r.p99Us);
	}
	return 0;
}
