/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-sample-backend: the seed's example device in C++ (sample_backend.h) served on a socket.
 * It is the smallest complete device built on VhostUserDaemon, and the peer that the
 * framework's tests drive.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sample_backend.h"
#include "vub/base/log.h"
#include "vub/vhost/daemon.h"

using namespace vub;
using namespace vub::vhost;

namespace {

void usage(const char *prog)
{
	std::printf("Usage: %s --socket PATH [--client] [--queues N] [--queue-size N] [--threads N]\n"
		    "          [--poll [--poll-idle-us N] [--cpus C0,C1...]] [--log-level LEVEL]\n"
		    "--poll runs one polling worker per thread instead of sleeping on kicks; with\n"
		    "--poll-idle-us it sleeps on kicks after N us without work; --cpus pins them.\n"
		    "Serves the sample vhost-user device on PATH (server mode, or client mode with\n"
		    "--client). Prints per-queue counters on SIGINT/SIGTERM and exits.\n",
		    prog);
}

} /* namespace */

int main(int argc, char **argv)
{
	std::string socketPath;
	bool client = false;
	size_t queues = 2;
	size_t queueSize = 1024;
	size_t threads = 1;
	DaemonOptions daemonOptions;
	static const option longOptions[] = {
		{ "poll", no_argument, nullptr, 'p' },
		{ "poll-idle-us", required_argument, nullptr, 'i' },
		{ "cpus", required_argument, nullptr, 'u' },
		{ "socket", required_argument, nullptr, 's' },
		{ "client", no_argument, nullptr, 'c' },
		{ "queues", required_argument, nullptr, 'q' },
		{ "queue-size", required_argument, nullptr, 'n' },
		{ "threads", required_argument, nullptr, 't' },
		{ "log-level", required_argument, nullptr, 'l' },
		{ "help", no_argument, nullptr, 'h' },
		{ nullptr, 0, nullptr, 0 },
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "s:cpi:u:q:n:t:l:h", longOptions, nullptr)) != -1) {
		switch (opt) {
		case 's':
			socketPath = optarg;
			break;
		case 'c':
			client = true;
			break;
		case 'p':
			daemonOptions.polling = true;
			break;
		case 'i':
			daemonOptions.pollIdleUs = static_cast<unsigned>(std::strtoul(optarg, nullptr, 0));
			break;
		case 'u':
			for (char *p = optarg; *p;) {
				daemonOptions.pollCpus.push_back(static_cast<int>(std::strtol(p, &p, 0)));
				if (*p == ',')
					p++;
				else if (*p)
					break;
			}
			break;
		case 'q':
			queues = std::strtoul(optarg, nullptr, 0);
			break;
		case 'n':
			queueSize = std::strtoul(optarg, nullptr, 0);
			break;
		case 't':
			threads = std::strtoul(optarg, nullptr, 0);
			break;
		case 'l': {
			LogLevel level;
			if (!Log::parseLevel(optarg, &level)) {
				std::fprintf(stderr, "unknown log level '%s'\n", optarg);
				return 2;
			}
			Log::setLevelAll(level);
			break;
		}
		case 'h':
			usage(argv[0]);
			return 0;
		default:
			usage(argv[0]);
			return 2;
		}
	}
	if (socketPath.empty() || queues == 0 || queues > 64 || threads == 0 || threads > queues ||
	    queueSize == 0 || queueSize > 32768) {
		std::fprintf(stderr, "vub-sample-backend: need --socket; 1-64 queues, 1..queues threads, "
				     "queue size 1-32768\n");
		usage(argv[0]);
		return 2;
	}

	/* Signals are read from a signalfd on this thread; every other thread blocks them. */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &signals, nullptr);
	signal(SIGPIPE, SIG_IGN);

	auto backend = std::make_shared<sample::SampleBackend>(queues, queueSize, threads);
	auto daemon = daemonOptions.polling
			      ? VhostUserDaemon::create<VringPolled>("sample", backend, nullptr, daemonOptions)
			      : VhostUserDaemon::create<VringMutex>("sample", backend, nullptr, daemonOptions);
	if (!daemon) {
		std::fprintf(stderr, "vub-sample-backend: %s: %s\n", daemon.error().what,
			     std::strerror(daemon.error().code));
		return 1;
	}
	Listener listener;
	if (client) {
		auto started = (*daemon)->startClient(socketPath);
		if (!started) {
			std::fprintf(stderr, "vub-sample-backend: connect %s: %s\n", socketPath.c_str(),
				     std::strerror(started.error().code));
			return 1;
		}
		std::printf("vub-sample-backend: connected to %s\n", socketPath.c_str());
	} else {
		auto created = Listener::create(socketPath);
		if (!created) {
			std::fprintf(stderr, "vub-sample-backend: %s %s: %s\n", created.error().what,
				     socketPath.c_str(), std::strerror(created.error().code));
			return 1;
		}
		listener = std::move(*created);
		auto started = (*daemon)->start(listener);
		if (!started) {
			std::fprintf(stderr, "vub-sample-backend: %s\n", started.error().what);
			return 1;
		}
		std::printf("vub-sample-backend: listening on %s\n", socketPath.c_str());
	}
	std::fflush(stdout);

	int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
	signalfd_siginfo info;
	while (read(sfd, &info, sizeof(info)) < 0 && errno == EINTR) {
	}
	(*daemon)->stop();
	backend->printStats();
	return 0;
}
