/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch: the virtio-net switch. This first version serves vhost-user ports (server or
 * client mode) on the EAL main lcore and forwards in testpmd's io mode on one worker lcore:
 * what port p's guest sends goes to port (p + 1) % nports; with one port, back to its guest.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "vhost_net_port.h"
#include "vub/base/counter.h"
#include "vub/base/event_loop.h"
#include "vub/base/log.h"
#include "vub/base/rcu.h"
#include "vub/vhost/daemon.h"

using namespace vub;
using namespace vub::vhost;
using vub::net::VhostNetPort;

namespace {

constexpr unsigned kMaxBurst = 512;

struct PortConfig {
	std::string path;
	unsigned queues = 1;
	bool client = false;
};

/** Forwarding counters of a port, written by the worker lcore only. */
struct alignas(64) PortCounters {
	Counter rxPackets;
	Counter rxBytes;
	Counter txPackets;
	Counter txBytes;
	Counter txDropped;
};

struct Port {
	PortConfig config;
	std::shared_ptr<VhostNetPort> net;
	std::unique_ptr<VhostUserDaemon> daemon;
	Listener listener;
	PortCounters counters;
	/** The NUMA node last reported for each queue pair's rings (control thread). */
	std::vector<int> reportedNode;
};

struct Forwarding {
	std::vector<std::unique_ptr<Port>> ports;
	rte_mempool *pool = nullptr;
	unsigned burst = 32;
	std::atomic<bool> stop{ false };
};

/** Parse "vhost-user:path=SOCK[,queues=N][,client=1]". */
Result<PortConfig> parsePort(const std::string &spec, std::string *why)
{
	const std::string prefix = "vhost-user:";
	if (spec.compare(0, prefix.size(), prefix) != 0) {
		*why = "port '" + spec + "': only vhost-user ports exist so far (vhost-user:path=SOCK)";
		return Error{ EINVAL, "bad port" };
	}
	PortConfig config;
	size_t pos = prefix.size();
	while (pos <= spec.size()) {
		size_t comma = spec.find(',', pos);
		std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
		pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
		size_t eq = item.find('=');
		std::string key = item.substr(0, eq);
		std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
		char *end = nullptr;
		if (key == "path" && !value.empty()) {
			config.path = value;
		} else if (key == "queues") {
			unsigned long q = std::strtoul(value.c_str(), &end, 0);
			if (value.empty() || *end || q < 1 || q > VhostNetPort::kMaxQueuePairs) {
				*why = "port '" + spec + "': queues must be 1 to " +
				       std::to_string(VhostNetPort::kMaxQueuePairs);
				return Error{ EINVAL, "bad port" };
			}
			config.queues = static_cast<unsigned>(q);
		} else if (key == "client" && (value == "0" || value == "1")) {
			config.client = value == "1";
		} else {
			*why = "port '" + spec + "': unknown or empty key '" + key + "'";
			return Error{ EINVAL, "bad port" };
		}
	}
	if (config.path.empty()) {
		*why = "port '" + spec + "': path= is required";
		return Error{ EINVAL, "bad port" };
	}
	return config;
}

int forwardLoop(void *arg)
{
	auto *fwd = static_cast<Forwarding *>(arg);
	auto reader = Rcu::global().registerReader();
	if (!reader) {
		std::fprintf(stderr, "vub-switch: lcore %u: %s\n", rte_lcore_id(), reader.error().what);
		return -1;
	}
	rte_mbuf *pkts[kMaxBurst];
	size_t nports = fwd->ports.size();
	while (!fwd->stop.load(std::memory_order_relaxed)) {
		for (size_t p = 0; p < nports; p++) {
			Port &src = *fwd->ports[p];
			Port &dst = *fwd->ports[(p + 1) % nports];
			unsigned pairs = src.net->queuePairs();
			for (unsigned q = 0; q < pairs; q++) {
				uint16_t n = src.net->dequeueBurst(q, fwd->pool, pkts, static_cast<uint16_t>(fwd->burst));
				if (n == 0)
					continue;
				uint64_t bytes = 0;
				for (uint16_t i = 0; i < n; i++)
					bytes += pkts[i]->pkt_len;
				uint16_t sent = dst.net->enqueueBurst(q % dst.net->queuePairs(), pkts, n);
				uint64_t sentBytes = 0;
				for (uint16_t i = 0; i < sent; i++)
					sentBytes += pkts[i]->pkt_len;
				rte_pktmbuf_free_bulk(pkts, n);
				src.counters.rxPackets += n;
				src.counters.rxBytes += bytes;
				dst.counters.txPackets += sent;
				dst.counters.txBytes += sentBytes;
				dst.counters.txDropped += n - sent;
			}
		}
		reader->quiescent();
	}
	return 0;
}

/**
 * Say where each started queue pair's guest memory is, next to the lcore that polls it, once
 * each time it changes: a pair polled from another NUMA node pays a remote access per packet.
 */
void reportPlacement(Forwarding &fwd, unsigned worker)
{
	int workerNode = static_cast<int>(rte_lcore_to_socket_id(worker));
	for (size_t p = 0; p < fwd.ports.size(); p++) {
		Port &port = *fwd.ports[p];
		for (unsigned q = 0; q < port.net->queuePairs(); q++) {
			int node = port.net->numaNode(q);
			if (node < 0 || node == port.reportedNode[q])
				continue;
			port.reportedNode[q] = node;
			std::printf(
				"vub-switch: port %zu queue %u: guest rings on numa node %d, polled by "
				"lcore %u on numa node %d%s\n",
				p, q, node, worker, workerNode,
				node == workerNode ? ""
						   : " (remote: give the switch an lcore on the "
						     "guest's node)");
			std::fflush(stdout);
		}
	}
}

void printQueueStats(size_t port, unsigned pair, bool guestTx, const vub::net::NetQueueCounters &c)
{
	std::printf("port %zu queue %u %s: packets %" PRIu64 " bytes %" PRIu64
		    " drop-no-buffer %" PRIu64 " drop-bad-chain %" PRIu64 " drop-too-short %" PRIu64
		    " drop-too-long %" PRIu64 " drop-no-mbuf %" PRIu64 " drop-bad-offload %" PRIu64
		    " notifications %" PRIu64 " notifications-suppressed %" PRIu64 " kicks %" PRIu64
		    " empty-polls %" PRIu64 " drop-disabled %" PRIu64,
		    port, pair, guestTx ? "guest-tx" : "guest-rx", c.packets, c.bytes,
		    c.dropNoBuffer, c.dropBadChain, c.dropTooShort, c.dropTooLong, c.dropNoMbuf,
		    c.dropBadOffload, c.notificationsSent, c.notificationsSuppressed, c.kicks,
		    c.emptyPolls, c.dropDisabled);
	for (int e = 1; e < static_cast<int>(vub::vhost::ChainError::Count); e++) {
		if (c.badChains[e])
			std::printf(
				" chain-%s %" PRIu64,
				vub::vhost::chainErrorName(static_cast<vub::vhost::ChainError>(e)),
				c.badChains[e]);
	}
	std::printf("\n");
}

void printStats(const Forwarding &fwd)
{
	for (size_t p = 0; p < fwd.ports.size(); p++) {
		const Port &port = *fwd.ports[p];
		uint64_t rxDropped = 0;
		for (unsigned q = 0; q < port.net->queuePairs(); q++) {
			auto tx = port.net->counters(q, true);
			rxDropped += tx.dropBadChain + tx.dropTooShort + tx.dropTooLong +
				     tx.dropNoMbuf + tx.dropBadOffload;
		}
		std::printf("port %zu: rx-packets %" PRIu64 " rx-bytes %" PRIu64
			    " tx-packets %" PRIu64 " tx-bytes %" PRIu64 " tx-dropped %" PRIu64
			    " rx-dropped %" PRIu64 " features %" PRIu64 "\n",
			    p, port.counters.rxPackets.get(), port.counters.rxBytes.get(),
			    port.counters.txPackets.get(), port.counters.txBytes.get(),
			    port.counters.txDropped.get(), rxDropped,
			    port.net->negotiatedFeatures());
		for (unsigned q = 0; q < port.net->queuePairs(); q++) {
			printQueueStats(p, q, false, port.net->counters(q, false));
			printQueueStats(p, q, true, port.net->counters(q, true));
		}
	}
	std::fflush(stdout);
}

void usage()
{
	std::printf("Usage: vub-switch [EAL options] -- --port vhost-user:path=SOCK[,queues=N][,client=1]\n"
		    "                  [--port ...] [--forward-mode=io] [--burst N] [--stats-period N]\n"
		    "  --port            a vhost-user port: the switch creates SOCK (server) or connects\n"
		    "                    to it (client=1, reconnecting); queues= queue pairs (1-%u)\n"
		    "  --forward-mode    io: port p's packets go out of port (p+1) %% nports\n"
		    "  --burst           packets per burst (1-%u, default 32)\n"
		    "  --stats-period    print the port counters every N seconds\n"
		    "Needs two lcores: the main lcore serves the sockets, a worker forwards.\n",
		    VhostNetPort::kMaxQueuePairs, kMaxBurst);
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
		std::fprintf(stderr, "vub-switch: EAL initialisation failed: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	argc -= consumed;
	argv += consumed;

	Forwarding fwd;
	std::vector<PortConfig> configs;
	unsigned statsPeriod = 0;
	static const option longOptions[] = {
		{ "port", required_argument, nullptr, 'p' },
		{ "forward-mode", required_argument, nullptr, 'f' },
		{ "burst", required_argument, nullptr, 'b' },
		{ "stats-period", required_argument, nullptr, 's' },
		{ "help", no_argument, nullptr, 'h' },
		{ nullptr, 0, nullptr, 0 },
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "h", longOptions, nullptr)) != -1) {
		switch (opt) {
		case 'p': {
			std::string why;
			auto config = parsePort(optarg, &why);
			if (!config) {
				std::fprintf(stderr, "vub-switch: %s\n", why.c_str());
				return 2;
			}
			configs.push_back(*config);
			break;
		}
		case 'f':
			if (std::strcmp(optarg, "io") != 0) {
				std::fprintf(stderr, "vub-switch: forward mode '%s' is not implemented yet (io)\n", optarg);
				return 2;
			}
			break;
		case 'b':
			fwd.burst = static_cast<unsigned>(std::strtoul(optarg, nullptr, 0));
			if (fwd.burst < 1 || fwd.burst > kMaxBurst) {
				std::fprintf(stderr, "vub-switch: --burst must be 1 to %u\n", kMaxBurst);
				return 2;
			}
			break;
		case 's':
			statsPeriod = static_cast<unsigned>(std::strtoul(optarg, nullptr, 0));
			break;
		case 'h':
			usage();
			return 0;
		default:
			usage();
			return 2;
		}
	}
	if (configs.empty()) {
		std::fprintf(stderr, "vub-switch: no port; give at least one --port\n");
		usage();
		return 2;
	}
	unsigned worker = rte_get_next_lcore(-1, 1, 0);
	if (worker >= RTE_MAX_LCORE) {
		std::fprintf(stderr, "vub-switch: no worker lcore: give two lcores (e.g. --lcores 0@0,1@1)\n");
		return 2;
	}

	/* The worker allocates the mbufs and writes them: its socket's memory. */
	fwd.pool =
		rte_pktmbuf_pool_create("vub_mbuf_pool", 16383, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
					static_cast<int>(rte_lcore_to_socket_id(worker)));
	if (!fwd.pool) {
		std::fprintf(stderr, "vub-switch: mbuf pool: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	auto loop = EventLoop::create();
	if (!loop) {
		std::fprintf(stderr, "vub-switch: %s\n", loop.error().what);
		return 1;
	}

	/* The ports: each a daemon on the main lcore's loop, polled by the worker lcore. */
	for (size_t i = 0; i < configs.size(); i++) {
		auto port = std::make_unique<Port>();
		port->config = configs[i];
		port->net = std::make_shared<VhostNetPort>(
			configs[i].queues, static_cast<int>(rte_lcore_to_socket_id(worker)));
		port->reportedNode.assign(port->net->queuePairs(), -1);
		DaemonOptions options;
		options.controlLoop = loop->get();
		options.polling = true;
		options.pollThreads = false;
		auto daemon = VhostUserDaemon::create<VringPolled>("port" + std::to_string(i), port->net,
								   nullptr, options);
		if (!daemon) {
			std::fprintf(stderr, "vub-switch: port %zu: %s\n", i, daemon.error().what);
			return 1;
		}
		port->daemon = std::move(*daemon);
		if (!port->net->attach(port->daemon->vrings())) {
			std::fprintf(stderr, "vub-switch: port %zu: cannot attach its vrings\n", i);
			return 1;
		}
		if (port->config.client) {
			auto started = port->daemon->startClient(port->config.path);
			if (!started) {
				std::fprintf(stderr, "vub-switch: port %zu: connect %s: %s\n", i,
					     port->config.path.c_str(), std::strerror(started.error().code));
				return 1;
			}
			std::printf("vub-switch: port %zu connected to %s\n", i, port->config.path.c_str());
		} else {
			auto listener = Listener::create(port->config.path);
			if (!listener) {
				std::fprintf(stderr, "vub-switch: port %zu: %s %s: %s\n", i, listener.error().what,
					     port->config.path.c_str(), std::strerror(listener.error().code));
				return 1;
			}
			port->listener = std::move(*listener);
			auto started = port->daemon->start(port->listener);
			if (!started) {
				std::fprintf(stderr, "vub-switch: port %zu: %s\n", i, started.error().what);
				return 1;
			}
			std::printf("vub-switch: port %zu listening on %s\n", i, port->config.path.c_str());
		}
		fwd.ports.push_back(std::move(port));
	}

	int sfd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
	EventLoop &control = **loop;
	(void)control.watch(sfd, EPOLLIN, [&](uint32_t) { control.stop(); });
	std::function<void()> tick = [&] {
		printStats(fwd);
		control.addTimer(std::chrono::seconds(statsPeriod), tick);
	};
	if (statsPeriod)
		control.addTimer(std::chrono::seconds(statsPeriod), tick);
	std::function<void()> placement = [&] {
		reportPlacement(fwd, worker);
		control.addTimer(std::chrono::seconds(1), placement);
	};
	control.addTimer(std::chrono::seconds(1), placement);

	if (rte_eal_remote_launch(forwardLoop, &fwd, worker) != 0) {
		std::fprintf(stderr, "vub-switch: cannot launch lcore %u\n", worker);
		return 1;
	}
	std::printf("vub-switch: forwarding started on lcore %u\n", worker);
	std::fflush(stdout);

	control.run();

	fwd.stop.store(true);
	rte_eal_mp_wait_lcore();
	printStats(fwd);
	fwd.ports.clear();
	loop->reset();
	rte_mempool_free(fwd.pool);
	rte_eal_cleanup();
	return 0;
}
