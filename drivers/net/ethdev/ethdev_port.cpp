/* SPDX-License-Identifier: Apache-2.0 */
#include "ethdev_port.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <utility>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_devargs.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>

#include "vub/base/log.h"

namespace vub::net {

namespace {

/** What one create() call says about its failure: to the caller's string, or to the log. */
class Failure
{
public:
	Failure(const std::string &devargs, std::string *why) : devargs_(devargs), why_(why) {}

	/**
	 * \brief Report that DPDK failed \a what with \a code (a positive errno, named in the
	 * reason), with \a fmt's details. \return the Error to hand back.
	 */
	[[gnu::format(printf, 4, 5)]] Error dpdk(int code, const char *what, const char *fmt,
						 ...) const
	{
		va_list ap;
		va_start(ap, fmt);
		report(what, rte_strerror(code), fmt, ap);
		va_end(ap);
		return Error{ code, what };
	}

	/** \brief Report that create() refused \a what (\a code), with \a fmt's details. */
	[[gnu::format(printf, 4, 5)]] Error refuse(int code, const char *what, const char *fmt,
						   ...) const
	{
		va_list ap;
		va_start(ap, fmt);
		report(what, nullptr, fmt, ap);
		va_end(ap);
		return Error{ code, what };
	}

private:
	void report(const char *what, const char *cause, const char *fmt, va_list ap) const
	{
		char detail[256];
		vsnprintf(detail, sizeof(detail), fmt, ap);
		char line[512];
		snprintf(line, sizeof(line), "%s, devargs '%s'%s%s%s%s%s", what, devargs_.c_str(),
			 detail[0] != '\0' ? " (" : "", detail, detail[0] != '\0' ? ")" : "",
			 cause != nullptr ? ": " : "", cause != nullptr ? cause : "");
		if (why_ != nullptr) {
			*why_ = line;
		} else {
			VUB_LOG(Net, Error, "%s", line);
		}
	}

	const std::string &devargs_;
	std::string *why_;
};

/** A positive errno from a DPDK return value (a negative errno). */
int dpdkErrno(int ret)
{
	return ret < 0 ? -ret : EIO;
}

/**
 * rte_devargs_reset(): frees what rte_devargs_parse() allocated. Exported but still
 * experimental in DPDK 22.11; one call does not warrant ALLOW_EXPERIMENTAL_API everywhere.
 */
void resetDevargs(rte_devargs *da)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	rte_devargs_reset(da);
#pragma GCC diagnostic pop
}

/** The ethdev port of device \a name or of \a devargs, RTE_MAX_ETHPORTS when there is none. */
uint16_t findPort(const char *name, const char *devargs)
{
	uint16_t id;
	if (rte_eth_dev_get_port_by_name(name, &id) == 0)
		return id;
	/* A device whose ports are named apart from it (several ports on one PCI function). */
	RTE_ETH_FOREACH_DEV (id) {
		rte_eth_dev_info info;
		if (rte_eth_dev_info_get(id, &info) != 0 || info.device == nullptr)
			continue;
		const char *devName = rte_dev_name(info.device);
		if (devName != nullptr && strcmp(devName, name) == 0)
			return id;
	}
	/* The devargs as the bus reads them: a PCI address written another way ("03:00.0"). */
	rte_dev_iterator it{};
	if (rte_eth_iterator_init(&it, devargs) != 0)
		return RTE_MAX_ETHPORTS;
	id = rte_eth_iterator_next(&it);
	rte_eth_iterator_cleanup(&it);
	return id;
}

} /* namespace */

EthdevPort::EthdevPort(uint16_t portId, std::string devargs)
	: devargs_(std::move(devargs)), portId_(portId)
{
}

EthdevPort::~EthdevPort()
{
	if (started_) {
		int ret = rte_eth_dev_stop(portId_);
		if (ret != 0) {
			VUB_LOG(Net, Warning, "ethdev '%s': port %u does not stop: %s",
				devargs_.c_str(), portId_, rte_strerror(-ret));
		}
	}
	if (!hotPlugged_) {
		/* Stopped and left for whoever probed it: closing would free the port id but
		 * leave the device probed, so that nobody could open it again. */
		if (ownerId_ != 0)
			(void)rte_eth_dev_owner_unset(portId_, ownerId_);
		return;
	}
	/* Close then remove, as testpmd detaches a port: close releases the port id (and with
	 * it the ownership), remove unplugs the device. */
	int ret = rte_eth_dev_close(portId_);
	if (ret != 0) {
		VUB_LOG(Net, Warning, "ethdev '%s': port %u does not close: %s", devargs_.c_str(),
			portId_, rte_strerror(-ret));
	}
	if (device_ != nullptr) {
		ret = rte_dev_remove(device_);
		if (ret != 0) {
			VUB_LOG(Net, Warning, "ethdev '%s': device not removed: %s",
				devargs_.c_str(), rte_strerror(-ret));
		}
	}
}

Result<std::unique_ptr<EthdevPort>> EthdevPort::create(const EthdevPortOptions &options,
						       rte_mempool *rxPool, std::string *why)
{
	const Failure fail(options.devargs, why);
	const unsigned rxQueues = options.queues;
	const unsigned txQueues = options.txQueues != 0 ? options.txQueues : options.queues;
	if (options.devargs.empty())
		return fail.refuse(EINVAL, "ethdev: no devargs", "%s", "");
	if (rxPool == nullptr)
		return fail.refuse(EINVAL, "ethdev: no rx mempool", "%s", "");
	if (rxQueues == 0 || rxQueues > RTE_MAX_QUEUES_PER_PORT ||
	    txQueues > RTE_MAX_QUEUES_PER_PORT) {
		return fail.refuse(EINVAL, "ethdev: bad queue count",
				   "%u rx, %u tx queues (1 to %u)", rxQueues, txQueues,
				   RTE_MAX_QUEUES_PER_PORT);
	}

	/* The device's name, as its bus knows it. */
	rte_devargs da{};
	int ret = rte_devargs_parse(&da, options.devargs.c_str());
	if (ret != 0) {
		resetDevargs(&da);
		/* DPDK says EFAULT ("Bad address") here, which would mislead. */
		return fail.refuse(ENODEV, "ethdev: no bus or driver knows the device",
				   "not a PCI address nor the name of a loaded vdev driver");
	}
	std::string name = da.name;
	std::string busName = da.bus != nullptr ? rte_bus_name(da.bus) : "";
	resetDevargs(&da);

	bool hotPlugged = false;
	uint16_t portId = findPort(name.c_str(), options.devargs.c_str());
	if (portId == RTE_MAX_ETHPORTS) {
		ret = rte_dev_probe(options.devargs.c_str());
		if (ret == -EEXIST) {
			return fail.refuse(EEXIST,
					   "ethdev: device probed but it has no ethdev port",
					   "device %s (its port was closed?)", name.c_str());
		}
		/* -1 (not EPERM) when the driver refuses the device or its arguments. */
		if (ret != 0) {
			return fail.dpdk(ret == -1 ? EINVAL : dpdkErrno(ret),
					 "ethdev: cannot hot-plug the device",
					 "rte_dev_probe returned %d%s", ret,
					 ret == -1 ? ", bad driver arguments?" : "");
		}
		hotPlugged = true;
		portId = findPort(name.c_str(), options.devargs.c_str());
		if (portId == RTE_MAX_ETHPORTS) {
			/* Some other class of device (a crypto vdev...): unplug it again. */
			(void)rte_eal_hotplug_remove(busName.c_str(), name.c_str());
			return fail.refuse(ENODEV, "ethdev: the device has no ethdev port",
					   "device %s on bus %s", name.c_str(), busName.c_str());
		}
	}

	/* From here on, the port's destructor undoes what was done. */
	std::unique_ptr<EthdevPort> port(new EthdevPort(portId, options.devargs));
	port->hotPlugged_ = hotPlugged;

	rte_eth_dev_info info;
	ret = rte_eth_dev_info_get(portId, &info);
	if (ret != 0 || info.device == nullptr) {
		if (hotPlugged) {
			/* Without its rte_device, the destructor could not remove it. */
			port->hotPlugged_ = false;
			(void)rte_eth_dev_close(portId);
			(void)rte_eal_hotplug_remove(busName.c_str(), name.c_str());
		}
		return fail.dpdk(ret != 0 ? dpdkErrno(ret) : ENODEV,
				 "ethdev: cannot read the device info", "port %u", portId);
	}
	port->device_ = info.device;

	rte_eth_dev_owner owner{};
	ret = rte_eth_dev_owner_new(&owner.id);
	if (ret != 0)
		return fail.dpdk(dpdkErrno(ret), "ethdev: no owner id", "port %u", portId);
	snprintf(owner.name, sizeof(owner.name), "vub");
	ret = rte_eth_dev_owner_set(portId, &owner);
	if (ret == -EPERM) {
		/* Owned by someone else (another EthdevPort?). */
		rte_eth_dev_owner current{};
		(void)rte_eth_dev_owner_get(portId, &current);
		return fail.refuse(EBUSY, "ethdev: the port is in use", "port %u owned by '%s'",
				   portId, current.name);
	}
	if (ret != 0)
		return fail.dpdk(dpdkErrno(ret), "ethdev: cannot own the port", "port %u", portId);
	port->ownerId_ = owner.id;

	if (rxQueues > info.max_rx_queues || txQueues > info.max_tx_queues) {
		return fail.refuse(E2BIG, "ethdev: more queues than the device has",
				   "%u rx, %u tx asked, %s has %u rx, %u tx", rxQueues, txQueues,
				   info.driver_name, info.max_rx_queues, info.max_tx_queues);
	}

	rte_eth_conf conf{};
	if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS)
		conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
	ret = rte_eth_dev_configure(portId, static_cast<uint16_t>(rxQueues),
				    static_cast<uint16_t>(txQueues), &conf);
	if (ret != 0) {
		return fail.dpdk(dpdkErrno(ret), "ethdev: cannot configure the port",
				 "port %u, %u rx, %u tx queues", portId, rxQueues, txQueues);
	}

	uint16_t rxd = static_cast<uint16_t>(std::min(options.rxDescriptors, 65535u));
	uint16_t txd = static_cast<uint16_t>(std::min(options.txDescriptors, 65535u));
	ret = rte_eth_dev_adjust_nb_rx_tx_desc(portId, &rxd, &txd);
	if (ret != 0) {
		return fail.dpdk(dpdkErrno(ret), "ethdev: cannot adjust the descriptor counts",
				 "port %u, %u rx, %u tx descriptors", portId, options.rxDescriptors,
				 options.txDescriptors);
	}

	int socket = rte_eth_dev_socket_id(portId);
	if (socket < 0)
		socket = SOCKET_ID_ANY;
	for (unsigned q = 0; q < rxQueues; q++) {
		ret = rte_eth_rx_queue_setup(portId, static_cast<uint16_t>(q), rxd, socket, nullptr,
					     rxPool);
		if (ret != 0) {
			return fail.dpdk(dpdkErrno(ret), "ethdev: cannot set up an rx queue",
					 "port %u, queue %u, %u descriptors, socket %d", portId, q,
					 rxd, socket);
		}
	}
	for (unsigned q = 0; q < txQueues; q++) {
		ret = rte_eth_tx_queue_setup(portId, static_cast<uint16_t>(q), txd, socket,
					     nullptr);
		if (ret != 0) {
			return fail.dpdk(dpdkErrno(ret), "ethdev: cannot set up a tx queue",
					 "port %u, queue %u, %u descriptors, socket %d", portId, q,
					 txd, socket);
		}
	}

	ret = rte_eth_dev_start(portId);
	if (ret != 0) {
		return fail.dpdk(dpdkErrno(ret), "ethdev: cannot start the port", "port %u",
				 portId);
	}
	port->started_ = true;

	if (options.promiscuous) {
		ret = rte_eth_promiscuous_enable(portId);
		if (ret != 0 && ret != -ENOTSUP) {
			return fail.dpdk(dpdkErrno(ret), "ethdev: cannot enable promiscuous mode",
					 "port %u", portId);
		}
	}

	rte_ether_addr mac{};
	ret = rte_eth_macaddr_get(portId, &mac);
	if (ret != 0) {
		return fail.dpdk(dpdkErrno(ret), "ethdev: cannot read the MAC address", "port %u",
				 portId);
	}
	memcpy(port->mac_, mac.addr_bytes, sizeof(port->mac_));

	port->rxQueues_ = rxQueues;
	port->txQueues_ = txQueues;
	port->rxDescriptors_ = rxd;
	port->txDescriptors_ = txd;
	port->socket_ = socket;
	VUB_LOG(Net, Info, "ethdev '%s': port %u (%s), %u rx, %u tx queues%s",
		options.devargs.c_str(), portId, info.driver_name, rxQueues, txQueues,
		hotPlugged ? ", hot-plugged" : "");
	return port;
}

uint16_t EthdevPort::rxBurst(unsigned queue, rte_mempool *, rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(portId_, static_cast<uint16_t>(queue), pkts, n);
}

uint16_t EthdevPort::txBurst(unsigned queue, rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(portId_, static_cast<uint16_t>(queue), pkts, n);
}

int EthdevPort::numaNode(unsigned) const
{
	return socket_;
}

bool EthdevPort::linkUp() const
{
	rte_eth_link link{};
	if (rte_eth_link_get_nowait(portId_, &link) != 0)
		return false;
	return link.link_status == RTE_ETH_LINK_UP;
}

void EthdevPort::macAddress(uint8_t (&mac)[6]) const
{
	memcpy(mac, mac_, sizeof(mac));
}

std::string EthdevPort::describe() const
{
	rte_eth_dev_info info{};
	const char *driver = "?";
	const char *device = "?";
	if (rte_eth_dev_info_get(portId_, &info) == 0) {
		if (info.driver_name != nullptr)
			driver = info.driver_name;
		if (info.device != nullptr && rte_dev_name(info.device) != nullptr)
			device = rte_dev_name(info.device);
	}

	char link[64];
	rte_eth_link l{};
	if (rte_eth_link_get_nowait(portId_, &l) != 0) {
		snprintf(link, sizeof(link), "unknown");
	} else if (l.link_status != RTE_ETH_LINK_UP) {
		snprintf(link, sizeof(link), "down");
	} else if (l.link_speed == RTE_ETH_SPEED_NUM_NONE ||
		   l.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN) {
		snprintf(link, sizeof(link), "up, speed unknown, %s-duplex",
			 l.link_duplex == RTE_ETH_LINK_FULL_DUPLEX ? "full" : "half");
	} else {
		snprintf(link, sizeof(link), "up, %" PRIu32 " Mbps, %s-duplex", l.link_speed,
			 l.link_duplex == RTE_ETH_LINK_FULL_DUPLEX ? "full" : "half");
	}

	char line[512];
	snprintf(line, sizeof(line),
		 "driver %s, device %s, port %u, mac %02x:%02x:%02x:%02x:%02x:%02x, link %s, "
		 "%u rx queues x %u descriptors, %u tx queues x %u descriptors, numa %d%s",
		 driver, device, portId_, mac_[0], mac_[1], mac_[2], mac_[3], mac_[4], mac_[5],
		 link, rxQueues_, rxDescriptors_, txQueues_, txDescriptors_, socket_,
		 hotPlugged_ ? ", hot-plugged" : "");
	return line;
}

PortStats EthdevPort::stats() const
{
	PortStats s;
	rte_eth_stats e{};
	if (rte_eth_stats_get(portId_, &e) != 0)
		return s;
	s.rxPackets = e.ipackets;
	s.rxBytes = e.ibytes;
	s.rxMissed = e.imissed;
	s.rxErrors = e.ierrors;
	s.rxNoMbuf = e.rx_nombuf;
	s.txPackets = e.opackets;
	s.txBytes = e.obytes;
	s.txErrors = e.oerrors;
	return s;
}

std::vector<PortXstat> EthdevPort::xstats() const
{
	std::vector<PortXstat> out;
	int n = rte_eth_xstats_get_names(portId_, nullptr, 0);
	if (n <= 0)
		return out;
	std::vector<rte_eth_xstat_name> names(static_cast<size_t>(n));
	if (rte_eth_xstats_get_names(portId_, names.data(), static_cast<unsigned>(n)) != n)
		return out;
	std::vector<rte_eth_xstat> values(static_cast<size_t>(n));
	int got = rte_eth_xstats_get(portId_, values.data(), static_cast<unsigned>(n));
	if (got <= 0 || got > n)
		return out;
	out.reserve(static_cast<size_t>(got));
	for (int i = 0; i < got; i++) {
		uint64_t id = values[static_cast<size_t>(i)].id;
		if (id >= static_cast<uint64_t>(n))
			continue;
		out.emplace_back(names[id].name, values[static_cast<size_t>(i)].value);
	}
	return out;
}

} /* namespace vub::net */
