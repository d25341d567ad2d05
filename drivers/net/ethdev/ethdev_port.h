/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vub/base/result.h"

#include "port.h"

struct rte_device;
struct rte_mbuf;
struct rte_mempool;

namespace vub::net {

/** \brief How to find (or hot-plug) and configure a DPDK ethdev port. */
struct EthdevPortOptions {
	/**
	 * DPDK devargs: a PCI address ("0000:03:00.0") or a virtual device ("net_tap0,iface=t0"),
	 * with optional driver arguments after the first comma.
	 */
	std::string devargs;
	unsigned queues = 1;	       /**< rx queues; also tx queues unless txQueues is set */
	unsigned rxDescriptors = 1024; /**< per rx queue, adjusted to the device's limits */
	unsigned txDescriptors = 1024; /**< per tx queue, adjusted to the device's limits */
	bool promiscuous = true;       /**< where the device supports it */
	unsigned txQueues = 0;	       /**< 0: as many as queues */
};

/**
 * \brief A switch port on a DPDK ethdev: a NIC bound to a PMD, or a virtual device (net_tap,
 * net_ring, net_null...).
 *
 * The port is owned by vub (rte_eth_dev_owner_set) while the object lives, so that two
 * EthdevPorts cannot drive one ethdev; an owned port is not listed by RTE_ETH_FOREACH_DEV nor
 * counted by rte_eth_dev_count_avail(). Burst functions follow Port's threading rules (one
 * caller per queue); everything else belongs to the control thread.
 */
class EthdevPort final : public Port
{
public:
	/**
	 * \brief Find the ethdev of \a options.devargs, or hot-plug it, then configure and start
	 * it.
	 *
	 * A port already probed (an EAL -a or --vdev argument, or an earlier hot-plug) is found by
	 * its port name, its device name or the devargs; otherwise the device is hot-plugged with
	 * rte_dev_probe() and removed again when the EthdevPort is destroyed. The driver arguments
	 * in \a options.devargs only count for a hot-plug: a port already probed keeps its own.
	 * Queues are set up on the device's NUMA node (any node when it has none).
	 *
	 * \param options what to open and how many queues and descriptors
	 * \param rxPool the mempool the PMD fills its rx descriptors from; must outlive the port
	 * \param why where to store a readable reason on failure (naming the devargs and DPDK's
	 * error); when null, the reason is logged (category Net, level Error) instead
	 * \return the started port, or an Error whose code is a positive errno (DPDK's) and whose
	 * \a what says which step failed: EINVAL for bad options, ENODEV when no bus knows the
	 * device or probing made no ethdev port, EBUSY when another owner (another EthdevPort)
	 * holds the port, E2BIG for more queues than the device has, else DPDK's errno of the
	 * failed step (EINVAL when the PMD refuses the device's arguments).
	 * Nothing is left hot-plugged, owned or started on failure.
	 */
	static Result<std::unique_ptr<EthdevPort>>
	create(const EthdevPortOptions &options, rte_mempool *rxPool, std::string *why = nullptr);

	/** \brief Stop the port; close and remove the device when create() hot-plugged it. */
	~EthdevPort() override;

	EthdevPort(const EthdevPort &) = delete;
	EthdevPort &operator=(const EthdevPort &) = delete;

	/** \brief The DPDK port id. */
	uint16_t portId() const { return portId_; }
	/** \brief Whether create() hot-plugged the device (and destruction will remove it). */
	bool hotPlugged() const { return hotPlugged_; }
	/** \brief The devargs the port was created from. */
	const std::string &devargs() const { return devargs_; }

	/* Port. */
	const char *kind() const override { return "ethdev"; }
	unsigned rxQueues() const override { return rxQueues_; }
	unsigned txQueues() const override { return txQueues_; }
	/** \brief rte_eth_rx_burst(); \a pool is ignored: the PMD uses create()'s rxPool. */
	uint16_t rxBurst(unsigned queue, rte_mempool *pool, rte_mbuf **pkts, uint16_t n) override;
	/** \brief rte_eth_tx_burst(). */
	uint16_t txBurst(unsigned queue, rte_mbuf **pkts, uint16_t n) override;
	/** \brief The device's NUMA node (the same for every queue), -1 when unknown. */
	int numaNode(unsigned queue) const override;
	/** \brief The link state, without waiting for autonegotiation. */
	bool linkUp() const override;
	void macAddress(uint8_t (&mac)[6]) const override;
	/** \brief Driver, device, port id, MAC, link, queues and descriptors, on one line. */
	std::string describe() const override;
	/** \brief rte_eth_stats_get() in Port's terms (zeros when it fails). */
	PortStats stats() const override;
	/** \brief rte_eth_xstats_get() with their names (empty when it fails). */
	std::vector<PortXstat> xstats() const override;

private:
	EthdevPort(uint16_t portId, std::string devargs);

	std::string devargs_;
	rte_device *device_ = nullptr; /**< for rte_dev_remove() */
	uint64_t ownerId_ = 0;	       /**< 0: not owned (yet) */
	uint16_t portId_;
	bool hotPlugged_ = false;
	bool started_ = false;
	unsigned rxQueues_ = 0;
	unsigned txQueues_ = 0;
	unsigned rxDescriptors_ = 0;
	unsigned txDescriptors_ = 0;
	int socket_ = -1;
	uint8_t mac_[6] = {};
};

} /* namespace vub::net */
