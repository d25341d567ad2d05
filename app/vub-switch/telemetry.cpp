/* SPDX-License-Identifier: Apache-2.0 */
#include "telemetry.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>

#include <rte_telemetry.h>

namespace vub::sw {

namespace {

/* DPDK calls plain functions: what they reach, behind a lock. */
std::mutex gLock;
Switch *gSwitch = nullptr;
EventLoop *gControl = nullptr;

/**
 * Run \a fill(sw, d) on the control loop. \return 0, or -1 when the switch is gone or the
 * loop did not answer in time.
 */
int onControl(rte_tel_data *d, const std::function<int(Switch &, rte_tel_data *)> &fill)
{
	struct Call {
		std::mutex lock;
		std::condition_variable done;
		bool finished = false;
		bool abandoned = false; /**< the caller gave up: \a d is no longer there */
		int result = -1;
	};
	auto call = std::make_shared<Call>();
	{
		std::lock_guard<std::mutex> guard(gLock);
		if (!gSwitch)
			return -1;
		gControl->post([call, d, fill] {
			/* Filled under call->lock: the caller cannot give up half-way. */
			std::lock_guard<std::mutex> g(call->lock);
			if (call->abandoned)
				return;
			{
				std::lock_guard<std::mutex> g2(gLock);
				if (gSwitch)
					call->result = fill(*gSwitch, d);
			}
			call->finished = true;
			call->done.notify_one();
		});
	}
	std::unique_lock<std::mutex> guard(call->lock);
	if (!call->done.wait_for(guard, std::chrono::seconds(1), [&] { return call->finished; })) {
		call->abandoned = true;
		return -1;
	}
	return call->result;
}

int portOf(Switch &sw, const char *params)
{
	if (!params || !*params)
		return -1;
	auto id = sw.findPort(params);
	return id ? static_cast<int>(*id) : -1;
}

int ports(const char *, const char *, rte_tel_data *d)
{
	return onControl(d, [](Switch &sw, rte_tel_data *out) {
		rte_tel_data_start_array(out, RTE_TEL_INT_VAL);
		for (const auto &p : sw.ports()) {
			if (p)
				rte_tel_data_add_array_int(out, static_cast<int>(p->id));
		}
		return 0;
	});
}

int portStats(const char *, const char *params, rte_tel_data *d)
{
	std::string p = params ? params : "";
	return onControl(d, [p](Switch &sw, rte_tel_data *out) {
		int id = portOf(sw, p.c_str());
		if (id < 0)
			return -1;
		net::PortStats s = sw.portStats(*sw.ports()[static_cast<size_t>(id)]);
		rte_tel_data_start_dict(out);
		rte_tel_data_add_dict_u64(out, "ipackets", s.rxPackets);
		rte_tel_data_add_dict_u64(out, "opackets", s.txPackets);
		rte_tel_data_add_dict_u64(out, "ibytes", s.rxBytes);
		rte_tel_data_add_dict_u64(out, "obytes", s.txBytes);
		rte_tel_data_add_dict_u64(out, "imissed", s.rxMissed);
		rte_tel_data_add_dict_u64(out, "ierrors", s.rxErrors);
		rte_tel_data_add_dict_u64(out, "oerrors", s.txErrors);
		rte_tel_data_add_dict_u64(out, "rx_nombuf", s.rxNoMbuf);
		return 0;
	});
}

int portXstats(const char *, const char *params, rte_tel_data *d)
{
	std::string p = params ? params : "";
	return onControl(d, [p](Switch &sw, rte_tel_data *out) {
		int id = portOf(sw, p.c_str());
		if (id < 0)
			return -1;
		rte_tel_data_start_dict(out);
		for (const auto &[name, value] :
		     sw.ports()[static_cast<size_t>(id)]->port->xstats())
			rte_tel_data_add_dict_u64(out, name.c_str(), value);
		return 0;
	});
}

int portInfo(const char *, const char *params, rte_tel_data *d)
{
	std::string p = params ? params : "";
	return onControl(d, [p](Switch &sw, rte_tel_data *out) {
		int id = portOf(sw, p.c_str());
		if (id < 0)
			return -1;
		const SwitchPort &port = *sw.ports()[static_cast<size_t>(id)];
		rte_tel_data_start_dict(out);
		rte_tel_data_add_dict_string(out, "name", port.config.name.c_str());
		rte_tel_data_add_dict_string(out, "kind", port.port->kind());
		rte_tel_data_add_dict_string(out, "device", port.port->describe().c_str());
		rte_tel_data_add_dict_int(out, "link_up", port.port->linkUp());
		rte_tel_data_add_dict_int(out, "rx_queues",
					  static_cast<int>(port.port->rxQueues()));
		rte_tel_data_add_dict_int(out, "tx_queues",
					  static_cast<int>(port.port->txQueues()));
		return 0;
	});
}

int lcores(const char *, const char *, rte_tel_data *d)
{
	return onControl(d, [](Switch &sw, rte_tel_data *out) {
		rte_tel_data_start_dict(out);
		const Plan &plan = sw.plan();
		for (const auto &w : sw.workers()) {
			rte_tel_data *lcore = rte_tel_data_alloc();
			if (!lcore)
				return -1;
			rte_tel_data_start_dict(lcore);
			rte_tel_data_add_dict_int(lcore, "numa_node", w->node);
			rte_tel_data_add_dict_u64(lcore, "busy_cycles", w->busyCycles.get());
			rte_tel_data_add_dict_u64(lcore, "idle_cycles", w->idleCycles.get());
			rte_tel_data_add_dict_int(lcore, "rx_queues",
						  static_cast<int>(plan.rxqs[w->index].size()));
			std::string name = "lcore" + std::to_string(w->lcore);
			rte_tel_data_add_dict_container(out, name.c_str(), lcore, 0);
		}
		return 0;
	});
}

int macTable(const char *, const char *, rte_tel_data *d)
{
	return onControl(d, [](Switch &sw, rte_tel_data *out) {
		rte_tel_data_start_dict(out);
		sw.macLearning().current()->forEach([&](const MacTable::Entry &e) {
			char mac[18];
			std::snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x",
				      static_cast<unsigned>(e.key >> 40 & 0xff),
				      static_cast<unsigned>(e.key >> 32 & 0xff),
				      static_cast<unsigned>(e.key >> 24 & 0xff),
				      static_cast<unsigned>(e.key >> 16 & 0xff),
				      static_cast<unsigned>(e.key >> 8 & 0xff),
				      static_cast<unsigned>(e.key & 0xff));
			rte_tel_data_add_dict_int(out, mac, static_cast<int>(e.port));
		});
		return 0;
	});
}

} /* namespace */

Telemetry::Telemetry(Switch &sw, EventLoop &control)
{
	{
		std::lock_guard<std::mutex> guard(gLock);
		gSwitch = &sw;
		gControl = &control;
	}
	static bool registered = false;
	if (registered)
		return;
	registered = true;
	rte_telemetry_register_cmd("/vub/ports", ports, "The switch's port ids. No parameters");
	rte_telemetry_register_cmd("/vub/port_stats", portStats,
				   "A port's counters. Parameters: port id or name");
	rte_telemetry_register_cmd("/vub/port_xstats", portXstats,
				   "Every counter of a port. Parameters: port id or name");
	rte_telemetry_register_cmd("/vub/port_info", portInfo,
				   "What a port is. Parameters: port id or name");
	rte_telemetry_register_cmd("/vub/lcores", lcores,
				   "Worker lcores: node, cycles, rx queues. No parameters");
	rte_telemetry_register_cmd("/vub/mac_table", macTable,
				   "Learnt MAC addresses and their ports. No parameters");
}

Telemetry::~Telemetry()
{
	std::lock_guard<std::mutex> guard(gLock);
	gSwitch = nullptr;
	gControl = nullptr;
}

} /* namespace vub::sw */
