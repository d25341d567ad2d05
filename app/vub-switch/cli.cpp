/* SPDX-License-Identifier: Apache-2.0 */
#include "cli.h"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <sstream>

#include <rte_cycles.h>
#include <rte_mempool.h>

#include "vub/base/log.h"

#include "vhost_user_port.h"

namespace vub::sw {

namespace {

[[gnu::format(printf, 2, 3)]] void append(std::string &out, const char *fmt, ...)
{
	char line[512];
	va_list args;
	va_start(args, fmt);
	int n = std::vsnprintf(line, sizeof(line), fmt, args);
	va_end(args);
	if (n > 0)
		out.append(line, std::min<size_t>(static_cast<size_t>(n), sizeof(line) - 1));
}

std::vector<std::string> words(const std::string &line)
{
	std::istringstream in(line);
	std::vector<std::string> w;
	for (std::string word; in >> word;)
		w.push_back(word);
	return w;
}

std::string macText(const uint8_t *mac)
{
	char text[18];
	std::snprintf(text, sizeof(text), "%02X:%02X:%02X:%02X:%02X:%02X", mac[0], mac[1], mac[2],
		      mac[3], mac[4], mac[5]);
	return text;
}

bool parseUnsigned(const std::string &word, unsigned long max, unsigned &value)
{
	char *end = nullptr;
	if (word.empty() || word[0] == '-')
		return false;
	unsigned long v = std::strtoul(word.c_str(), &end, 10);
	if (*end || v > max)
		return false;
	value = static_cast<unsigned>(v);
	return true;
}

const char *const kNicStatsBorder = "########################";

} /* namespace */

std::vector<unsigned> Cli::selectPorts(const std::string &word, std::string &error) const
{
	std::vector<unsigned> ids;
	if (word == "all") {
		for (const auto &p : sw_.ports()) {
			if (p)
				ids.push_back(p->id);
		}
		return ids;
	}
	auto id = sw_.findPort(word);
	if (!id) {
		error = "Invalid port " + word + "\n";
		return ids;
	}
	ids.push_back(*id);
	return ids;
}

std::string Cli::portStats(const std::vector<unsigned> &ids)
{
	std::string out;
	uint64_t hz = rte_get_tsc_hz();
	for (unsigned id : ids) {
		SwitchPort &p = *sw_.ports()[id];
		net::PortStats s = sw_.portStats(p);
		uint64_t now = rte_rdtsc();
		uint64_t rxPps = 0, txPps = 0, rxBps = 0, txBps = 0;
		if (p.lastShownTsc && now > p.lastShownTsc) {
			double seconds =
				static_cast<double>(now - p.lastShownTsc) / static_cast<double>(hz);
			auto rate = [&](uint64_t a, uint64_t b) {
				return a > b ? static_cast<uint64_t>(static_cast<double>(a - b) /
								     seconds)
					     : 0;
			};
			rxPps = rate(s.rxPackets, p.lastShown.rxPackets);
			txPps = rate(s.txPackets, p.lastShown.txPackets);
			rxBps = rate(s.rxBytes, p.lastShown.rxBytes) * 8;
			txBps = rate(s.txBytes, p.lastShown.txBytes) * 8;
		}
		p.lastShown = s;
		p.lastShownTsc = now;
		append(out, "\n  %s NIC statistics for port %-2u %s\n", kNicStatsBorder, id,
		       kNicStatsBorder);
		append(out,
		       "  RX-packets: %-10" PRIu64 " RX-missed: %-10" PRIu64 " RX-bytes:  %-" PRIu64
		       "\n",
		       s.rxPackets, s.rxMissed, s.rxBytes);
		append(out, "  RX-errors: %-" PRIu64 "\n", s.rxErrors);
		append(out, "  RX-nombuf:  %-10" PRIu64 "\n", s.rxNoMbuf);
		append(out,
		       "  TX-packets: %-10" PRIu64 " TX-errors: %-10" PRIu64 " TX-bytes:  %-" PRIu64
		       "\n",
		       s.txPackets, s.txErrors, s.txBytes);
		append(out, "\n  Throughput (since last show)\n");
		append(out, "  Rx-pps: %12" PRIu64 "          Rx-bps: %12" PRIu64 "\n", rxPps,
		       rxBps);
		append(out, "  Tx-pps: %12" PRIu64 "          Tx-bps: %12" PRIu64 "\n", txPps,
		       txBps);
		append(out, "  %s############################%s\n", kNicStatsBorder,
		       kNicStatsBorder);
	}
	return out;
}

std::string Cli::portXstats(const std::vector<unsigned> &ids) const
{
	std::string out;
	for (unsigned id : ids) {
		append(out, "###### NIC extended statistics for port %-2u\n", id);
		for (const auto &[name, value] : sw_.ports()[id]->port->xstats())
			append(out, "%s: %" PRIu64 "\n", name.c_str(), value);
		uint64_t dropped = 0;
		for (const auto &w : sw_.workers())
			dropped += w->txDropped[id].get();
		append(out, "switch_tx_dropped: %" PRIu64 "\n", dropped);
	}
	return out;
}

std::string Cli::portInfo(const std::vector<unsigned> &ids) const
{
	std::string out;
	for (unsigned id : ids) {
		const SwitchPort &p = *sw_.ports()[id];
		append(out, "\n********************* Infos for port %-2u  *********************\n",
		       id);
		append(out, "Name: %s\n", p.config.name.c_str());
		append(out, "Kind: %s\n", p.port->kind());
		append(out, "MAC address: %s\n", macText(p.mac).c_str());
		append(out, "Link status: %s\n", p.port->linkUp() ? "up" : "down");
		append(out, "Device: %s\n", p.port->describe().c_str());
		append(out, "Max possible RX queues: %u\n", p.port->rxQueues());
		append(out, "Max possible TX queues: %u\n", p.port->txQueues());
		for (unsigned q = 0; q < p.port->rxQueues(); q++)
			append(out, "RX queue %u: numa node %d\n", q, p.port->numaNode(q));
	}
	return out;
}

std::string Cli::lcores() const
{
	std::string out;
	const Plan &plan = sw_.plan();
	for (const auto &w : sw_.workers()) {
		uint64_t busy = w->busyCycles.get();
		uint64_t idle = w->idleCycles.get();
		double percent = busy + idle ? 100.0 * static_cast<double>(busy) /
						       static_cast<double>(busy + idle)
					     : 0.0;
		append(out,
		       "lcore %u (numa node %d): %zu rx queue(s), busy %.1f%% of polling cycles\n",
		       w->lcore, w->node, plan.rxqs[w->index].size(), percent);
	}
	return out;
}

std::string Cli::rxqs() const
{
	std::string out;
	const Plan &plan = sw_.plan();
	for (const auto &w : sw_.workers()) {
		uint64_t total = w->busyCycles.get() + w->idleCycles.get();
		append(out, "lcore %u (numa node %d):\n", w->lcore, w->node);
		for (const PlanRxq &r : plan.rxqs[w->index]) {
			uint64_t packets = r.counters->packets.get();
			uint64_t cycles = r.counters->busyCycles.get();
			uint64_t bursts = r.counters->bursts.get();
			const RxqPlace &place = plan.places[r.port->id][r.queue];
			append(out,
			       "  port %s (%u) queue %u: numa node %d%s, packets %" PRIu64
			       ", packets/burst %.1f, cycles/packet %.1f, %.1f%% of the lcore\n",
			       r.port->config.name.c_str(), r.port->id, r.queue,
			       r.port->port->numaNode(r.queue), place.remote ? " (remote)" : "",
			       packets,
			       bursts ? static_cast<double>(packets) / static_cast<double>(bursts)
				      : 0.0,
			       packets ? static_cast<double>(cycles) / static_cast<double>(packets)
				       : 0.0,
			       total ? 100.0 * static_cast<double>(cycles) /
					       static_cast<double>(total)
				     : 0.0);
		}
	}
	return out;
}

std::string Cli::macTable() const
{
	std::string out;
	const MacLearning &mac = sw_.macLearning();
	append(out, "%-17s  %-4s  %-12s  %s\n", "MAC", "port", "name", "age (s)");
	uint32_t now = sw_.nowS();
	mac.current()->forEach([&](const MacTable::Entry &e) {
		uint8_t bytes[6];
		for (int i = 0; i < 6; i++)
			bytes[i] = static_cast<uint8_t>(e.key >> (40 - 8 * i));
		const SwitchPort *port = e.port < kMaxPorts ? sw_.ports()[e.port].get() : nullptr;
		append(out, "%-17s  %-4u  %-12s  %u\n", macText(bytes).c_str(), e.port,
		       port ? port->config.name.c_str() : "-",
		       now - e.lastSeen.load(std::memory_order_relaxed));
	});
	uint64_t floods = 0, hairpins = 0, overflows = 0, runts = 0;
	for (const auto &w : sw_.workers()) {
		floods += w->floods.get();
		hairpins += w->hairpinDrops.get();
		overflows += w->learnOverflows.get();
		runts += w->runts.get();
	}
	append(out,
	       "%zu of %zu entries, aging %u s; flooded %" PRIu64 ", hairpin drops %" PRIu64
	       ", moves %" PRIu64 ", table full %" PRIu64 ", learn overflows %" PRIu64
	       ", runts %" PRIu64 "\n",
	       mac.current()->size(), mac.current()->maxEntries(), mac.agingS(), floods, hairpins,
	       mac.moves(), mac.fullDrops(), overflows, runts);
	return out;
}

std::string Cli::mempools() const
{
	std::string out;
	for (const rte_mempool *pool : sw_.pools())
		append(out, "mempool %s (numa node %d): %u mbufs, %u in use, %u available\n",
		       pool->name, pool->socket_id, pool->size, rte_mempool_in_use_count(pool),
		       rte_mempool_avail_count(pool));
	return out;
}

std::string Cli::exitSummary() const
{
	std::string out;
	for (const auto &p : sw_.ports()) {
		if (!p)
			continue;
		net::PortStats s = sw_.portStats(*p);
		append(out,
		       "port %u: rx-packets %" PRIu64 " rx-bytes %" PRIu64 " tx-packets %" PRIu64
		       " tx-bytes %" PRIu64 " tx-dropped %" PRIu64 " rx-dropped %" PRIu64,
		       p->id, s.rxPackets, s.rxBytes, s.txPackets, s.txBytes, s.txErrors,
		       s.rxMissed + s.rxErrors + s.rxNoMbuf);
		if (p->config.type == PortType::VhostUser)
			append(out, " features %" PRIu64,
			       static_cast<net::VhostUserPort &>(*p->port)
				       .net()
				       .negotiatedFeatures());
		out += "\n";
	}
	return out;
}

std::string Cli::help() const
{
	return "Commands:\n"
	       "  start                        start forwarding\n"
	       "  start tx_first [N]           send N bursts (1) of txonly packets first, then forward\n"
	       "  stop                         stop forwarding (the rings keep their packets)\n"
	       "  set fwd MODE                 l2switch, io, mac, macswap, rxonly, txonly\n"
	       "  set txpkts L[,L...]          txonly segment lengths (total 60-9728 bytes)\n"
	       "  set burst N                  packets per burst, 1-512\n"
	       "  set log level LEVEL [CATEGORY]  error, warning, info, debug\n"
	       "  show port stats|xstats|info all|PORT\n"
	       "  clear port stats all|PORT\n"
	       "  show lcores                  worker lcores, their rx queues and busy share\n"
	       "  show rxq                     each rx queue: worker, numa node, cycles per packet\n"
	       "  show mac table               the learnt MAC addresses\n"
	       "  show mempool                 each mbuf pool: size, in use, available\n"
	       "  clear mac table\n"
	       "  port add vhost-user:path=SOCK[,queues=N][,client=1] | ethdev:DEVARGS\n"
	       "  port del PORT\n"
	       "  port rebalance               place the rx queues again by their measured load\n"
	       "  quit\n"
	       "PORT is a port number or name.\n";
}

std::string Cli::execute(const std::string &line, bool &quit)
{
	std::vector<std::string> w = words(line);
	if (w.empty() || w[0][0] == '#')
		return "";
	auto is = [&](std::initializer_list<const char *> expected) {
		if (w.size() != expected.size())
			return false;
		size_t i = 0;
		for (const char *e : expected) {
			if (*e != '*' && w[i] != e)
				return false;
			i++;
		}
		return true;
	};
	std::string error;
	if (is({ "quit" }) || is({ "exit" })) {
		quit = true;
		return "Bye...\n";
	}
	if (is({ "help" }))
		return help();
	if (is({ "start" })) {
		sw_.start();
		return std::string("Forwarding started: ") + forwardModeName(sw_.mode()) +
		       " packet forwarding\n";
	}
	if (w.size() >= 2 && w.size() <= 3 && w[0] == "start" && w[1] == "tx_first") {
		unsigned bursts = 1;
		if (w.size() == 3 && (!parseUnsigned(w[2], 10000, bursts) || bursts == 0))
			return "Bad burst count " + w[2] + ": 1 to 10000\n";
		sw_.start(bursts);
		return std::string("Forwarding started: ") + forwardModeName(sw_.mode()) +
		       " packet forwarding, " + std::to_string(bursts) + " burst(s) sent first\n";
	}
	if (is({ "stop" })) {
		sw_.stop();
		return "Forwarding stopped\n";
	}
	if (is({ "set", "fwd", "*" })) {
		auto mode = parseForwardMode(w[2]);
		if (!mode)
			return "Unknown forwarding mode " + w[2] +
			       ": l2switch, io, mac, macswap, rxonly, txonly\n";
		sw_.setMode(*mode);
		return "Set " + w[2] + " packet forwarding mode\n";
	}
	if (is({ "set", "txpkts", "*" })) {
		std::vector<unsigned> bytes;
		if (auto bad = parseTxSegments(w[2], bytes))
			return "Bad txpkts: " + *bad + "\n";
		sw_.setTxSegments(bytes);
		return "txpkts set to " + w[2] + "\n";
	}
	if (is({ "set", "burst", "*" })) {
		unsigned burst;
		if (!parseUnsigned(w[2], kMaxBurst, burst) || burst == 0)
			return "Bad burst " + w[2] + ": 1 to " + std::to_string(kMaxBurst) + "\n";
		sw_.setBurst(burst);
		return "Burst set to " + w[2] + "\n";
	}
	if (w.size() >= 4 && w.size() <= 5 && w[0] == "set" && w[1] == "log" && w[2] == "level") {
		LogLevel level;
		if (!Log::parseLevel(w[3].c_str(), &level))
			return "Unknown log level " + w[3] + ": error, warning, info, debug\n";
		if (w.size() == 5) {
			LogCategory category;
			if (!Log::parseCategory(w[4].c_str(), &category))
				return "Unknown log category " + w[4] + "\n";
			Log::setLevel(category, level);
		} else {
			Log::setLevelAll(level);
		}
		return "Log level set to " + w[3] + "\n";
	}
	if (is({ "show", "port", "*", "*" }) || is({ "clear", "port", "stats", "*" })) {
		std::vector<unsigned> ids = selectPorts(w[3], error);
		if (!error.empty())
			return error;
		if (w[0] == "clear") {
			std::string out;
			for (unsigned id : ids) {
				sw_.clearPortStats(*sw_.ports()[id]);
				append(out, "\n  NIC statistics for port %u cleared\n", id);
			}
			return out;
		}
		if (w[2] == "stats")
			return portStats(ids);
		if (w[2] == "xstats")
			return portXstats(ids);
		if (w[2] == "info")
			return portInfo(ids);
		return "Unknown: show port " + w[2] + " (stats, xstats, info)\n";
	}
	if (is({ "show", "lcores" }))
		return lcores();
	if (is({ "show", "rxq" }))
		return rxqs();
	if (is({ "show", "mac", "table" }))
		return macTable();
	if (is({ "show", "mempool" }))
		return mempools();
	if (is({ "clear", "mac", "table" })) {
		sw_.clearMacTable();
		return "MAC table cleared\n";
	}
	if (is({ "port", "add", "*" })) {
		PortConfig config;
		if (auto bad = parsePortSpec(w[2], config))
			return "Bad port " + w[2] + ": " + bad->reason + "\n";
		if (config.type == PortType::VhostUser && !config.path.empty() &&
		    config.path[0] != '/')
			config.path = sw_.config().runtimeDir + "/" + config.path;
		auto id = sw_.addPort(config, &error);
		if (!id)
			return "Port not added: " + error + "\n";
		return "Port " + std::to_string(*id) + " (" + sw_.ports()[*id]->config.name +
		       ") added\n";
	}
	if (is({ "port", "del", "*" })) {
		auto id = sw_.findPort(w[2]);
		if (!id)
			return "Invalid port " + w[2] + "\n";
		std::string name = sw_.ports()[*id]->config.name;
		if (!sw_.removePort(*id, &error))
			return "Port not removed: " + error + "\n";
		return "Port " + std::to_string(*id) + " (" + name + ") removed\n";
	}
	if (is({ "port", "rebalance" })) {
		sw_.rebalance();
		return rxqs();
	}
	return "Bad command: " + line + " (try help)\n";
}

} /* namespace vub::sw */
