/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <memory>
#include <string>

#include "vub/base/event_loop.h"
#include "vub/base/result.h"
#include "vub/vhost/daemon.h"
#include "vub/vhost/listener.h"

#include "port.h"
#include "vhost_net_port.h"

namespace vub::net {

struct VhostUserPortOptions {
	std::string name; /**< for logs */
	std::string path; /**< the socket */
	unsigned queuePairs = 1;
	bool client = false; /**< connect (and reconnect) to the front-end's socket */
	bool iommu = false;  /**< offer VIRTIO_F_IOMMU_PLATFORM (guests behind a vIOMMU) */
	int socket = -1;     /**< NUMA node for the queue state, -1 for any */
	uint8_t mac[6] = {}; /**< the switch side's address (mac forwarding's source) */
};

/**
 * \brief A vhost-user virtio-net port: a VhostNetPort served by a daemon on the control loop,
 * in server mode (it owns the listening socket) or client mode (it connects, waits for the
 * socket to appear and reconnects with back-off).
 *
 * Created, queried and destroyed on the control loop's thread; the burst functions run on
 * worker lcores.
 */
class VhostUserPort final : public Port
{
public:
	/**
	 * \brief Create the port and start serving (or connecting to) its socket on \a control.
	 * \return EINVAL for a bad option, or the socket's error (EADDRINUSE, EACCES...); \a why
	 * gets a sentence naming the socket.
	 */
	static Result<std::unique_ptr<VhostUserPort>> create(const VhostUserPortOptions &options,
							     EventLoop &control, std::string *why);
	~VhostUserPort() override;

	const char *kind() const override { return "vhost-user"; }
	unsigned rxQueues() const override { return net_->queuePairs(); }
	unsigned txQueues() const override { return net_->queuePairs(); }
	uint16_t rxBurst(unsigned queue, rte_mempool *pool, rte_mbuf **pkts, uint16_t n) override
	{
		return net_->dequeueBurst(queue, pool, pkts, n);
	}
	/**
	 * Takes all \a n (what the guest had no room for is counted as its drop), but those
	 * that wait for a vIOMMU translation of the guest's next buffer: see txWaits().
	 */
	uint16_t txBurst(unsigned queue, rte_mbuf **pkts, uint16_t n) override;
	bool txWaits() const override { return true; }
	bool txQueueReady(unsigned queue) const override { return net_->rxReady(queue); }
	int numaNode(unsigned queue) const override { return net_->numaNode(queue); }
	bool linkUp() const override;
	void macAddress(uint8_t (&mac)[6]) const override;
	std::string describe() const override;
	PortStats stats() const override;
	std::vector<PortXstat> xstats() const override;

	const VhostUserPortOptions &options() const { return options_; }
	VhostNetPort &net() { return *net_; }
	/** \brief Front-end connections served so far. */
	uint64_t connections() const { return daemon_->connectionCount(); }

private:
	explicit VhostUserPort(const VhostUserPortOptions &options) : options_(options) {}

	VhostUserPortOptions options_;
	std::shared_ptr<VhostNetPort> net_;
	std::unique_ptr<vhost::VhostUserDaemon> daemon_;
	vhost::Listener listener_;
};

} /* namespace vub::net */
