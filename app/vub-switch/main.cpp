/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch: the virtio-net switch. The EAL main lcore runs the control loop (vhost-user
 * sockets, the vub> command line, telemetry); every other lcore forwards (switch.h).
 */
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include "vub/base/event_loop.h"
#include "vub/base/unique_fd.h"

#include "cli.h"
#include "config.h"
#include "switch.h"
#include "telemetry.h"

using namespace vub;
using namespace vub::sw;

namespace {

/** Every rxq-affinity names a worker lcore: else the queue would silently go elsewhere. */
bool checkAffinity(const SwitchConfig &config)
{
	for (const PortConfig &port : config.ports) {
		for (const RxqAffinity &a : port.rxqAffinity) {
			if (a.lcore >= RTE_MAX_LCORE || !rte_lcore_is_enabled(a.lcore) ||
			    a.lcore == rte_get_main_lcore()) {
				std::fprintf(
					stderr,
					"vub-switch: port %s: rxq-affinity %u:%u: lcore %u is not a "
					"worker lcore of this run (see --lcores)\n",
					port.name.c_str(), a.queue, a.lcore, a.lcore);
				return false;
			}
		}
	}
	return true;
}

void describePorts(const Switch &sw)
{
	for (const auto &p : sw.ports()) {
		if (!p)
			continue;
		const PortConfig &c = p->config;
		if (c.type == PortType::VhostUser)
			std::printf("vub-switch: port %u (%s) %s %s\n", p->id, c.name.c_str(),
				    c.client ? "connecting to" : "listening on", c.path.c_str());
		else
			std::printf("vub-switch: port %u (%s) ethdev %s\n", p->id, c.name.c_str(),
				    p->port->describe().c_str());
	}
}

} /* namespace */

int main(int argc, char **argv)
{
	/* Every thread, EAL's included, inherits this mask: signals are read from a signalfd. */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &signals, nullptr);
	signal(SIGPIPE, SIG_IGN);

	int consumed = rte_eal_init(argc, argv);
	if (consumed < 0) {
		std::fprintf(stderr, "vub-switch: EAL initialisation failed: %s\n",
			     rte_strerror(rte_errno));
		return 1;
	}
	argv[consumed] = argv[0];
	SwitchConfig config;
	bool help = false;
	if (auto bad = parseCommandLine(argc - consumed, argv + consumed, config, help)) {
		std::fprintf(stderr, "vub-switch: %s\n", bad->message().c_str());
		rte_eal_cleanup();
		return 2;
	}
	if (help) {
		std::printf("%s", usageText().c_str());
		rte_eal_cleanup();
		return 0;
	}
	if (!checkAffinity(config)) {
		rte_eal_cleanup();
		return 2;
	}
	std::error_code ec;
	std::filesystem::create_directories(config.runtimeDir, ec);
	if (ec) {
		std::fprintf(stderr, "vub-switch: runtime directory %s: %s\n",
			     config.runtimeDir.c_str(), ec.message().c_str());
		rte_eal_cleanup();
		return 1;
	}

	auto loop = EventLoop::create();
	if (!loop) {
		std::fprintf(stderr, "vub-switch: %s\n", loop.error().what);
		return 1;
	}
	EventLoop &control = **loop;
	std::string why;
	auto created = Switch::create(config, control, &why);
	if (!created) {
		std::fprintf(stderr, "vub-switch: %s\n", why.c_str());
		loop->reset();
		rte_eal_cleanup();
		return 1;
	}
	std::unique_ptr<Switch> sw = std::move(*created);
	describePorts(*sw);
	auto telemetry = std::make_unique<Telemetry>(*sw, control);
	Cli cli(*sw);

	UniqueFd signalFd(signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
	(void)control.watch(signalFd.get(), EPOLLIN, [&](uint32_t) { control.stop(); });
	std::function<void()> tick = [&] {
		bool quit = false;
		std::printf("%s", cli.execute("show port stats all", quit).c_str());
		std::fflush(stdout);
		control.addTimer(std::chrono::seconds(config.statsPeriodS), tick);
	};
	if (config.statsPeriodS)
		control.addTimer(std::chrono::seconds(config.statsPeriodS), tick);

	/* The vub> prompt: commands from stdin, one a line; end of input quits, as testpmd. */
	std::string input;
	auto prompt = [] {
		std::printf("vub> ");
		std::fflush(stdout);
	};
	if (config.interactive) {
		auto watched = control.watch(STDIN_FILENO, EPOLLIN, [&](uint32_t) {
			char buffer[4096];
			ssize_t n = read(STDIN_FILENO, buffer, sizeof(buffer));
			if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
				control.unwatch(STDIN_FILENO);
				control.stop();
				return;
			}
			input.append(buffer, static_cast<size_t>(n > 0 ? n : 0));
			size_t eol;
			while ((eol = input.find('\n')) != std::string::npos) {
				std::string line = input.substr(0, eol);
				input.erase(0, eol + 1);
				bool quit = false;
				std::printf("%s", cli.execute(line, quit).c_str());
				if (quit) {
					std::fflush(stdout);
					control.unwatch(STDIN_FILENO);
					control.stop();
					return;
				}
				prompt();
			}
		});
		if (!watched) {
			std::fprintf(stderr, "vub-switch: -i: cannot read stdin: %s\n",
				     watched.error().what);
			return 1;
		}
	}

	if (auto launched = sw->launch(&why); !launched) {
		std::fprintf(stderr, "vub-switch: %s\n", why.c_str());
		return 1;
	}
	std::string lcores;
	for (const auto &w : sw->workers())
		lcores += (lcores.empty() ? "" : ",") + std::to_string(w->lcore);
	if (sw->running())
		std::printf("vub-switch: forwarding started on lcore %s: %s mode\n", lcores.c_str(),
			    forwardModeName(sw->mode()));
	else
		std::printf("vub-switch: lcore %s ready, forwarding stopped: type start\n",
			    lcores.c_str());
	std::fflush(stdout);
	if (config.interactive)
		prompt();

	control.run();

	sw->shutdown();
	std::printf("\n%s", cli.exitSummary().c_str());
	std::fflush(stdout);
	telemetry.reset();
	sw.reset();
	loop->reset();
	rte_eal_cleanup();
	return 0;
}
