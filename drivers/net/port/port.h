/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct rte_mbuf;
struct rte_mempool;

namespace vub::net {

/**
 * \brief A port's counters, in testpmd's terms: rx is what the switch received from the port
 * (a guest's TX, a NIC's RX), tx what it handed to the port.
 */
struct PortStats {
	uint64_t rxPackets = 0;
	uint64_t rxBytes = 0;
	uint64_t rxMissed = 0; /**< the port had no room or no descriptor for them */
	uint64_t rxErrors = 0; /**< refused as malformed */
	uint64_t rxNoMbuf = 0; /**< the mbuf pool ran dry */
	uint64_t txPackets = 0;
	uint64_t txBytes = 0;
	uint64_t txErrors = 0; /**< handed to the port but not delivered */
};

/** \brief One named counter of a port, as testpmd's `show port xstats` lists them. */
using PortXstat = std::pair<std::string, uint64_t>;

/**
 * \brief A switch port: a vhost-user device or a DPDK ethdev, behind one burst interface.
 *
 * The burst functions are called by worker lcores, one caller per queue at a time; everything
 * else may be called from the control thread while workers run. Queues are numbered from 0;
 * a vhost-user port's queue q is its queue pair q.
 */
class Port
{
public:
	virtual ~Port() = default;

	/** \brief "vhost-user" or "ethdev". */
	virtual const char *kind() const = 0;
	virtual unsigned rxQueues() const = 0;
	virtual unsigned txQueues() const = 0;

	/**
	 * \brief Receive up to \a n packets from queue \a queue into \a pkts, allocated from
	 * \a pool. \return how many; the caller owns them.
	 */
	virtual uint16_t rxBurst(unsigned queue, rte_mempool *pool, rte_mbuf **pkts,
				 uint16_t n) = 0;
	/**
	 * \brief Send up to \a n packets on queue \a queue. \return how many were taken: the
	 * port owns (and frees) those, the caller keeps the rest (DPDK's rte_eth_tx_burst rule).
	 */
	virtual uint16_t txBurst(unsigned queue, rte_mbuf **pkts, uint16_t n) = 0;
	/**
	 * \brief Whether what txBurst() does not take is worth offering again a poll later
	 * rather than dropping: the port is waiting for something already on its way (a vIOMMU
	 * translation), not for room.
	 */
	virtual bool txWaits() const { return false; }

	/**
	 * \brief Whether tx queue \a queue delivers now: a guest may use fewer queue pairs than
	 * the port has, and a disabled ring drops what it is given.
	 */
	virtual bool txQueueReady(unsigned queue) const { return queue < txQueues(); }
	/** \brief The NUMA node of rx queue \a queue's memory, -1 while unknown. */
	virtual int numaNode(unsigned queue) const = 0;
	/** \brief Whether a peer is there: a front-end connected and driving, a NIC's link up. */
	virtual bool linkUp() const = 0;
	/** \brief The port's MAC address, where it has one (zeros otherwise). */
	virtual void macAddress(uint8_t (&mac)[6]) const = 0;
	/** \brief A line of what the port is and what it negotiated, for `show port info`. */
	virtual std::string describe() const = 0;

	virtual PortStats stats() const = 0;
	/** \brief Every counter of the port, per queue where it has them. */
	virtual std::vector<PortXstat> xstats() const = 0;
};

} /* namespace vub::net */
