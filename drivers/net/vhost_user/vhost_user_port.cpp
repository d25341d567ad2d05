/* SPDX-License-Identifier: Apache-2.0 */
#include "vhost_user_port.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <rte_mbuf.h>

#include "vub/virtio/features.h"

namespace vub::net {

using vhost::DaemonOptions;
using vhost::Listener;
using vhost::VhostUserDaemon;
using vhost::VringPolled;

Result<std::unique_ptr<VhostUserPort>> VhostUserPort::create(const VhostUserPortOptions &options,
							     EventLoop &control, std::string *why)
{
	if (options.queuePairs < 1 || options.queuePairs > VhostNetPort::kMaxQueuePairs) {
		*why = "queues must be 1 to " + std::to_string(VhostNetPort::kMaxQueuePairs);
		return Error{ EINVAL, "bad queue count" };
	}
	std::unique_ptr<VhostUserPort> port(new VhostUserPort(options));
	port->net_ = std::make_shared<VhostNetPort>(options.queuePairs, options.socket, options.iommu);
	DaemonOptions daemonOptions;
	daemonOptions.controlLoop = &control;
	daemonOptions.polling = true;
	daemonOptions.pollThreads = false;
	daemonOptions.waitForServer = true;
	auto daemon = VhostUserDaemon::create<VringPolled>(options.name, port->net_, nullptr,
							   daemonOptions);
	if (!daemon) {
		*why = std::string("cannot create its device: ") + daemon.error().what;
		return daemon.error();
	}
	port->daemon_ = std::move(*daemon);
	if (auto attached = port->net_->attach(port->daemon_->vrings()); !attached) {
		*why = std::string("cannot attach its vrings: ") + attached.error().what;
		return attached.error();
	}
	if (options.client) {
		/* Waits for the socket in the background when nobody listens yet. */
		if (auto started = port->daemon_->startClient(options.path); !started) {
			*why = "connect " + options.path + ": " +
			       std::strerror(started.error().code);
			return started.error();
		}
		return port;
	}
	/* A socket file somebody still accepts on belongs to a running process: keep it. */
	if (vhost::connectUnixSocket(options.path)) {
		*why = options.path + " is served by another process";
		return Error{ EADDRINUSE, "socket in use" };
	}
	auto listener = Listener::create(options.path);
	if (!listener) {
		*why = "listen on " + options.path + ": " + std::strerror(listener.error().code);
		return listener.error();
	}
	port->listener_ = std::move(*listener);
	if (auto started = port->daemon_->start(port->listener_); !started) {
		*why = std::string("cannot serve ") + options.path + ": " + started.error().what;
		return started.error();
	}
	return port;
}

VhostUserPort::~VhostUserPort()
{
	if (daemon_)
		daemon_->stop();
}

uint16_t VhostUserPort::txBurst(unsigned queue, rte_mbuf **pkts, uint16_t n)
{
	uint16_t waiting = 0;
	net_->enqueueBurst(queue, pkts, n, &waiting);
	/* The guest's buffers wait for a vIOMMU translation: the caller offers these again. */
	uint16_t taken = static_cast<uint16_t>(n - waiting);
	rte_pktmbuf_free_bulk(pkts, taken);
	return taken;
}

bool VhostUserPort::linkUp() const
{
	return net_->started(0);
}

void VhostUserPort::macAddress(uint8_t (&mac)[6]) const
{
	std::memcpy(mac, options_.mac, sizeof(mac));
}

std::string VhostUserPort::describe() const
{
	uint64_t features = net_->negotiatedFeatures();
	char line[256];
	std::snprintf(line, sizeof(line),
		      "vhost-user %s %s, %u queue pair(s), %s, %s ring, features 0x%" PRIx64,
		      options_.client ? "client of" : "server on", options_.path.c_str(),
		      net_->queuePairs(), linkUp() ? "guest driving" : "no guest",
		      features & virtio::bit(virtio::kFRingPacked) ? "packed" : "split", features);
	return line;
}

PortStats VhostUserPort::stats() const
{
	PortStats s;
	for (unsigned pair = 0; pair < net_->queuePairs(); pair++) {
		NetQueueCounters fromGuest = net_->counters(pair, true);
		NetQueueCounters toGuest = net_->counters(pair, false);
		s.rxPackets += fromGuest.packets;
		s.rxBytes += fromGuest.bytes;
		s.rxMissed += fromGuest.dropDisabled;
		s.rxErrors += fromGuest.dropBadChain + fromGuest.dropTooShort +
			      fromGuest.dropTooLong + fromGuest.dropBadOffload;
		s.rxNoMbuf += fromGuest.dropNoMbuf;
		s.txPackets += toGuest.packets;
		s.txBytes += toGuest.bytes;
		s.txErrors += toGuest.dropNoBuffer + toGuest.dropBadChain + toGuest.dropTooLong +
			      toGuest.dropBadOffload;
	}
	return s;
}

std::vector<PortXstat> VhostUserPort::xstats() const
{
	std::vector<PortXstat> all;
	for (unsigned pair = 0; pair < net_->queuePairs(); pair++) {
		for (bool fromGuest : { true, false }) {
			NetQueueCounters c = net_->counters(pair, fromGuest);
			std::string prefix =
				(fromGuest ? "rx_q" : "tx_q") + std::to_string(pair) + "_";
			const std::pair<const char *, uint64_t> named[] = {
				{ "packets", c.packets },
				{ "bytes", c.bytes },
				{ "drop_no_buffer", c.dropNoBuffer },
				{ "drop_bad_chain", c.dropBadChain },
				{ "drop_too_short", c.dropTooShort },
				{ "drop_too_long", c.dropTooLong },
				{ "drop_no_mbuf", c.dropNoMbuf },
				{ "drop_bad_offload", c.dropBadOffload },
				{ "drop_disabled", c.dropDisabled },
				{ "empty_polls", c.emptyPolls },
				{ "notifications", c.notificationsSent },
				{ "notifications_suppressed", c.notificationsSuppressed },
				{ "kicks", c.kicks },
			};
			for (const auto &[name, value] : named)
				all.emplace_back(prefix + name, value);
			for (int e = 1; e < static_cast<int>(vhost::ChainError::Count); e++)
				all.emplace_back(prefix + "chain_" +
							 vhost::chainErrorName(
								 static_cast<vhost::ChainError>(e)),
						 c.badChains[e]);
		}
	}
	return all;
}

} /* namespace vub::net */
