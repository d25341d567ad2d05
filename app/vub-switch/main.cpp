/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-switch: the virtio-net switch. This first version serves vhost-user ports (server or
 * client mode) on the EAL main lcore and forwards in testpmd's io mode on the worker lcores:
 * what port p's guest sends goes to port (p + 1) % nports; with one port, back to its guest.
 * Each stream (source queue pair) is polled by one worker, chosen on the NUMA node of the
 * guest's rings once they start.
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

#include "vub/base/counter.h"
#include "vub/base/event_loop.h"
#include "vub/base/log.h"
#include "vub/base/rcu.h"
#include "vub/vhost/daemon.h"

#include "placement.h"
#include "vhost_net_port.h"

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

struct Port {
	PortConfig config;
	std::shared_ptr<VhostNetPort> net;
	std::unique_ptr<VhostUserDaemon> daemon;
	Listener listener;
};

/**
 * One source queue pair and where its packets go, with its counters: written by the worker
 * that owns the stream's group, read anywhere.
 */
struct alignas(64) Stream {
	sw::StreamRoute route;
	unsigned group = 0;
	Counter rxPackets; /**< from the source port's guest */
	Counter rxBytes;
	Counter txPackets; /**< to the destination port's guest */
	Counter txBytes;
	Counter txDropped;
};

/** Streams that write the same queue pair: one worker polls them all. */
struct alignas(64) StreamGroup {
	/** The index of the worker that polls the group, -1 while it moves. */
	std::atomic<int> owner{ -1 };
	/** The NUMA node of the source rings last acted on (control thread). */
	int placedNode = -1;
};

struct Worker {
	unsigned lcore;
	int node;
	rte_mempool *pool = nullptr; /**< mbufs on the worker's node */
};

struct Forwarding {
	std::vector<std::unique_ptr<Port>> ports;
	std::vector<std::unique_ptr<Stream>> streams;
	std::vector<std::unique_ptr<StreamGroup>> groups;
	std::vector<Worker> workers;
	unsigned burst = 32;
	std::atomic<bool> stop{ false };
};

/** What one worker lcore is started with. */
struct WorkerArgs {
	Forwarding *fwd;
	int index;
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
	auto *args = static_cast<WorkerArgs *>(arg);
	Forwarding *fwd = args->fwd;
	const int me = args->index;
	rte_mempool *pool = fwd->workers[static_cast<size_t>(me)].pool;
	auto reader = Rcu::global().registerReader();
	if (!reader) {
		std::fprintf(stderr, "vub-switch: lcore %u: %s\n", rte_lcore_id(), reader.error().what);
		return -1;
	}
	rte_mbuf *pkts[kMaxBurst];
	const uint16_t burst = static_cast<uint16_t>(fwd->burst);
	while (!fwd->stop.load(std::memory_order_relaxed)) {
		for (auto &stream : fwd->streams) {
			/* Read once per round: a move waits for this round to end (RCU). */
			if (fwd->groups[stream->group]->owner.load(std::memory_order_acquire) != me)
				continue;
			const sw::StreamRoute &r = stream->route;
			VhostNetPort &src = *fwd->ports[r.srcPort]->net;
			VhostNetPort &dst = *fwd->ports[r.dstPort]->net;
			uint16_t n = src.dequeueBurst(r.srcPair, pool, pkts, burst);
			if (n == 0)
				continue;
			uint64_t bytes = 0;
			for (uint16_t i = 0; i < n; i++)
				bytes += pkts[i]->pkt_len;
			uint16_t sent = dst.enqueueBurst(r.dstPair, pkts, n);
			uint64_t sentBytes = 0;
			for (uint16_t i = 0; i < sent; i++)
				sentBytes += pkts[i]->pkt_len;
			rte_pktmbuf_free_bulk(pkts, n);
			stream->rxPackets += n;
			stream->rxBytes += bytes;
			stream->txPackets += sent;
			stream->txBytes += sentBytes;
			stream->txDropped += n - sent;
		}
		reader->quiescent();
	}
	return 0;
}

/** Build the io-mode streams of every port and their groups, placed round-robin. */
void buildStreams(Forwarding &fwd)
{
	size_t nports = fwd.ports.size();
	std::vector<sw::StreamRoute> routes;
	for (size_t p = 0; p < nports; p++) {
		unsigned dstPort = static_cast<unsigned>((p + 1) % nports);
		unsigned dstPairs = fwd.ports[dstPort]->net->queuePairs();
		for (unsigned q = 0; q < fwd.ports[p]->net->queuePairs(); q++)
			routes.push_back({ static_cast<unsigned>(p), q, dstPort, q % dstPairs });
	}
	std::vector<unsigned> groups = sw::groupStreams(routes);
	for (size_t i = 0; i < routes.size(); i++) {
		auto stream = std::make_unique<Stream>();
		stream->route = routes[i];
		stream->group = groups[i];
		fwd.streams.push_back(std::move(stream));
		while (fwd.groups.size() <= groups[i])
			fwd.groups.push_back(std::make_unique<StreamGroup>());
	}
	for (size_t g = 0; g < fwd.groups.size(); g++)
		fwd.groups[g]->owner.store(static_cast<int>(g % fwd.workers.size()));
}

/**
 * Once a group's source rings have started, move it to a worker on their NUMA node when one
 * runs there (the least loaded), and say where it is polled from; once per change.
 */
void placeStreams(Forwarding &fwd)
{
	std::vector<sw::WorkerLoad> loads;
	for (const Worker &w : fwd.workers)
		loads.push_back({ w.lcore, w.node, 0 });
	for (const auto &group : fwd.groups)
		loads[static_cast<size_t>(group->owner.load())].groups++;
	for (size_t g = 0; g < fwd.groups.size(); g++) {
		StreamGroup &group = *fwd.groups[g];
		const Stream *first = nullptr;
		for (const auto &stream : fwd.streams) {
			if (stream->group == g) {
				first = stream.get();
				break;
			}
		}
		const sw::StreamRoute &r = first->route;
		int node = fwd.ports[r.srcPort]->net->numaNode(r.srcPair);
		if (node < 0 || node == group.placedNode)
			continue;
		group.placedNode = node;
		int owner = group.owner.load();
		int pick = sw::pickWorker(loads, node);
		if (pick >= 0 && fwd.workers[static_cast<size_t>(owner)].node != node) {
			/* Nobody polls the group for one grace period: no burst of the old owner
			 * runs. */
			group.owner.store(-1);
			Rcu::global().synchronize();
			group.owner.store(pick);
			loads[static_cast<size_t>(owner)].groups--;
			loads[static_cast<size_t>(pick)].groups++;
			owner = pick;
		}
		const Worker &w = fwd.workers[static_cast<size_t>(owner)];
		std::printf(
			"vub-switch: port %u queue %u: guest rings on numa node %d, polled by lcore %u "
			"on numa node %d%s\n",
			r.srcPort, r.srcPair, node, w.lcore, w.node,
			w.node == node ? "" : " (remote: no worker lcore on the guest's node)");
		std::fflush(stdout);
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
		uint64_t rxPackets = 0, rxBytes = 0, txPackets = 0, txBytes = 0, txDropped = 0;
		for (const auto &stream : fwd.streams) {
			if (stream->route.srcPort == p) {
				rxPackets += stream->rxPackets.get();
				rxBytes += stream->rxBytes.get();
			}
			if (stream->route.dstPort == p) {
				txPackets += stream->txPackets.get();
				txBytes += stream->txBytes.get();
				txDropped += stream->txDropped.get();
			}
		}
		uint64_t rxDropped = 0;
		for (unsigned q = 0; q < port.net->queuePairs(); q++) {
			auto tx = port.net->counters(q, true);
			rxDropped += tx.dropBadChain + tx.dropTooShort + tx.dropTooLong +
				     tx.dropNoMbuf + tx.dropBadOffload;
		}
		std::printf("port %zu: rx-packets %" PRIu64 " rx-bytes %" PRIu64
			    " tx-packets %" PRIu64 " tx-bytes %" PRIu64 " tx-dropped %" PRIu64
			    " rx-dropped %" PRIu64 " features %" PRIu64 "\n",
			    p, rxPackets, rxBytes, txPackets, txBytes, txDropped, rxDropped,
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
	unsigned lcore;
	RTE_LCORE_FOREACH_WORKER (lcore)
		fwd.workers.push_back({ lcore, static_cast<int>(rte_lcore_to_socket_id(lcore)) });
	if (fwd.workers.empty()) {
		std::fprintf(stderr, "vub-switch: no worker lcore: give two lcores (e.g. --lcores 0@0,1@1)\n");
		return 2;
	}
	/* A worker allocates the mbufs and writes them: one pool per node that runs workers. */
	std::vector<rte_mempool *> pools;
	for (Worker &w : fwd.workers) {
		for (rte_mempool *pool : pools) {
			if (pool->socket_id == w.node)
				w.pool = pool;
		}
		if (w.pool)
			continue;
		std::string name = "vub_mbufs_" + std::to_string(w.node);
		w.pool = rte_pktmbuf_pool_create(name.c_str(), 16383, 256, 0,
						 RTE_MBUF_DEFAULT_BUF_SIZE, w.node);
		if (!w.pool) {
			std::fprintf(stderr, "vub-switch: mbuf pool on node %d: %s\n", w.node,
				     rte_strerror(rte_errno));
			return 1;
		}
		pools.push_back(w.pool);
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
		/* Its queues' state where the first worker runs; a guest elsewhere is reported. */
		port->net = std::make_shared<VhostNetPort>(configs[i].queues, fwd.workers[0].node);
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
	buildStreams(fwd);
	std::function<void()> placement = [&] {
		placeStreams(fwd);
		control.addTimer(std::chrono::seconds(1), placement);
	};
	control.addTimer(std::chrono::seconds(1), placement);

	std::vector<WorkerArgs> args;
	for (size_t w = 0; w < fwd.workers.size(); w++)
		args.push_back({ &fwd, static_cast<int>(w) });
	std::string lcores;
	for (size_t w = 0; w < fwd.workers.size(); w++) {
		if (rte_eal_remote_launch(forwardLoop, &args[w], fwd.workers[w].lcore) != 0) {
			std::fprintf(stderr, "vub-switch: cannot launch lcore %u\n",
				     fwd.workers[w].lcore);
			fwd.stop.store(true);
			rte_eal_mp_wait_lcore();
			return 1;
		}
		lcores += (lcores.empty() ? "" : ",") + std::to_string(fwd.workers[w].lcore);
	}
	std::printf("vub-switch: forwarding started on lcore %s\n", lcores.c_str());
	std::fflush(stdout);

	control.run();

	fwd.stop.store(true);
	rte_eal_mp_wait_lcore();
	printStats(fwd);
	fwd.ports.clear();
	loop->reset();
	for (rte_mempool *pool : pools)
		rte_mempool_free(pool);
	rte_eal_cleanup();
	return 0;
}
