/* SPDX-License-Identifier: Apache-2.0 */
#include "switch.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ip.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>

#include "vub/base/log.h"

#include "ethdev_port.h"
#include "vhost_user_port.h"

namespace vub::sw {

namespace {

constexpr auto kLearnPeriod = std::chrono::milliseconds(10);
constexpr auto kTickPeriod = std::chrono::milliseconds(100);
constexpr unsigned kTicksPerLoadSample = 100; /**< 10 s between load samples */
constexpr uint32_t kMaxFrameBytes = 9728;

/** testpmd's default peer address of port \a id: 02:00:00:00:00:id. */
void peerMac(unsigned id, uint8_t *mac)
{
	const uint8_t peer[6] = { 0x02, 0, 0, 0, 0, static_cast<uint8_t>(id) };
	std::memcpy(mac, peer, 6);
}

/**
 * The txonly frame, as testpmd's: Ethernet to the peer address, IPv4 198.18.0.1 to
 * 198.18.0.2, UDP port 9 to 9, zeros after.
 */
uint32_t buildTxFrame(const uint8_t *srcMac, unsigned dstPort, uint32_t totalBytes, uint8_t *frame)
{
	std::memset(frame, 0, totalBytes);
	peerMac(dstPort, frame);
	std::memcpy(frame + 6, srcMac, 6);
	frame[12] = 0x08;
	uint8_t *ip = frame + 14;
	uint16_t ipBytes = static_cast<uint16_t>(totalBytes - 14);
	ip[0] = 0x45;
	ip[2] = static_cast<uint8_t>(ipBytes >> 8);
	ip[3] = static_cast<uint8_t>(ipBytes);
	ip[8] = 64;
	ip[9] = 17;
	const uint8_t addresses[8] = { 198, 18, 0, 1, 198, 18, 0, 2 };
	std::memcpy(ip + 12, addresses, 8);
	/* Stored as it comes: rte_ipv4_cksum() sums in network order. */
	uint16_t sum = rte_ipv4_cksum(reinterpret_cast<const rte_ipv4_hdr *>(ip));
	std::memcpy(ip + 10, &sum, sizeof(sum));
	uint8_t *udp = ip + 20;
	uint16_t udpBytes = static_cast<uint16_t>(ipBytes - 20);
	udp[1] = 9;
	udp[3] = 9;
	udp[4] = static_cast<uint8_t>(udpBytes >> 8);
	udp[5] = static_cast<uint8_t>(udpBytes);
	return totalBytes;
}

/** Fill \a pkts with copies of \a frame cut into \a segments. \return how many were built. */
uint16_t buildPackets(rte_mempool *pool, const uint8_t *frame,
		      const std::vector<uint16_t> &segments, rte_mbuf **pkts, uint16_t n)
{
	if (rte_pktmbuf_alloc_bulk(pool, pkts, n) != 0)
		return 0;
	uint16_t built = 0;
	for (uint16_t i = 0; i < n; i++) {
		rte_mbuf *head = pkts[i];
		rte_mbuf *last = nullptr;
		uint32_t offset = 0;
		bool ok = true;
		for (size_t s = 0; s < segments.size() && ok; s++) {
			rte_mbuf *seg = s == 0 ? head : rte_pktmbuf_alloc(pool);
			if (!seg || rte_pktmbuf_tailroom(seg) < segments[s]) {
				if (seg && seg != head)
					rte_pktmbuf_free(seg);
				ok = false;
				break;
			}
			std::memcpy(rte_pktmbuf_mtod(seg, uint8_t *), frame + offset, segments[s]);
			seg->data_len = segments[s];
			offset += segments[s];
			if (last) {
				last->next = seg;
				head->nb_segs++;
			}
			last = seg;
		}
		if (!ok) {
			rte_pktmbuf_free(head);
			continue;
		}
		head->pkt_len = offset;
		pkts[built++] = head;
	}
	return built;
}

} /* namespace */

Result<std::unique_ptr<Switch>> Switch::create(const SwitchConfig &config, EventLoop &control,
					       std::string *why)
{
	std::unique_ptr<Switch> sw(new Switch(config, control));
	unsigned lcore;
	RTE_LCORE_FOREACH_WORKER (lcore) {
		auto w = std::make_unique<Worker>();
		w->owner = sw.get();
		w->index = static_cast<unsigned>(sw->workers_.size());
		w->lcore = lcore;
		w->node = static_cast<int>(rte_lcore_to_socket_id(lcore));
		sw->workers_.push_back(std::move(w));
	}
	if (sw->workers_.empty()) {
		*why = "no worker lcore: give at least two lcores (e.g. --lcores 0@0,1@1); the main "
		       "lcore serves the sockets and the CLI, the others forward";
		return Error{ EINVAL, "no worker lcore" };
	}
	/* A worker allocates the mbufs it receives into: one pool per node that runs workers. */
	for (auto &w : sw->workers_) {
		for (rte_mempool *pool : sw->pools_) {
			if (pool->socket_id == w->node)
				w->pool = pool;
		}
		if (w->pool)
			continue;
		std::string name = "vub_mbufs_" + std::to_string(w->node);
		w->pool = rte_pktmbuf_pool_create(name.c_str(), config.mbufsPerNode, 256, 0,
						  RTE_MBUF_DEFAULT_BUF_SIZE, w->node);
		if (!w->pool) {
			*why = "mbuf pool of " + std::to_string(config.mbufsPerNode) +
			       " on numa node " + std::to_string(w->node) + ": " +
			       rte_strerror(rte_errno);
			return Error{ ENOMEM, "no mbuf pool" };
		}
		sw->pools_.push_back(w->pool);
	}
	sw->mode_ = config.mode;
	for (unsigned bytes : config.txSegmentBytes)
		sw->txSegmentBytes_.push_back(static_cast<uint16_t>(bytes));
	sw->macTable_.store(sw->mac_.current());
	sw->pausedPlan_.rxqs.resize(sw->workers_.size());
	sw->pausedPlan_.tx.resize(sw->workers_.size());
	sw->pausedPlan_.places.resize(kMaxPorts);
	sw->startTsc_ = rte_rdtsc();
	for (size_t i = 0; i < config.ports.size(); i++) {
		if (i >= kMaxPorts) {
			*why = "at most " + std::to_string(kMaxPorts) + " ports";
			return Error{ E2BIG, "too many ports" };
		}
		auto port = sw->openPort(config.ports[i], static_cast<unsigned>(i), why);
		if (!port)
			return port.error();
		sw->ports_[i] = std::move(*port);
	}
	sw->replan();
	sw->learnTimer_ = control.addTimer(kLearnPeriod, [s = sw.get()] { s->scheduleLearn(); });
	sw->tickTimer_ = control.addTimer(kTickPeriod, [s = sw.get()] { s->tick(); });
	return sw;
}

Switch::~Switch()
{
	shutdown();
	control_.cancelTimer(learnTimer_);
	control_.cancelTimer(tickTimer_);
	for (auto &port : ports_)
		port.reset();
	for (rte_mempool *pool : pools_)
		rte_mempool_free(pool);
}

Result<std::unique_ptr<SwitchPort>> Switch::openPort(const PortConfig &config, unsigned id,
						     std::string *why)
{
	auto p = std::make_unique<SwitchPort>();
	p->id = id;
	p->config = config;
	std::string reason;
	if (config.type == PortType::VhostUser) {
		net::VhostUserPortOptions options;
		options.name = config.name;
		options.path = config.path;
		options.queuePairs = config.queues;
		options.client = config.client;
		options.iommu = config.iommuSupport;
		options.socket = workers_[0]->node;
		/* Locally administered, "vub" and the port id. */
		const uint8_t mac[6] = { 0x02, 'v', 'u', 'b', 0, static_cast<uint8_t>(id) };
		std::memcpy(options.mac, mac, 6);
		auto port = net::VhostUserPort::create(options, control_, &reason);
		if (!port) {
			*why = "port " + config.name + ": " + reason;
			return port.error();
		}
		p->port = std::move(*port);
	} else {
		net::EthdevPortOptions options;
		options.devargs = config.devargs;
		options.queues = config.queues;
		options.rxDescriptors = config.rxDescriptors;
		options.txDescriptors = config.txDescriptors;
		options.promiscuous = config.promiscuous;
		/* Every worker may send to it: a tx queue each, where the device has them. */
		options.txQueues =
			std::max<unsigned>(config.queues, static_cast<unsigned>(workers_.size()));
		auto port = net::EthdevPort::create(options, workers_[0]->pool, &reason);
		if (!port && port.error().code == E2BIG) {
			options.txQueues = 0;
			port = net::EthdevPort::create(options, workers_[0]->pool, &reason);
		}
		if (!port) {
			*why = "port " + config.name + ": " + reason;
			return port.error();
		}
		p->port = std::move(*port);
	}
	p->port->macAddress(p->mac);
	for (unsigned q = 0; q < p->port->rxQueues(); q++)
		p->rxqs.push_back(std::make_unique<RxqCounters>());
	p->txLocks = std::make_unique<SwitchPort::TxLock[]>(p->port->txQueues());
	for (unsigned q = 0; q < p->port->txQueues(); q++)
		rte_spinlock_init(&p->txLocks[q].lock);
	p->loadBase.assign(p->rxqs.size(), 0);
	p->load.assign(p->rxqs.size(), 0);
	clearPortStats(*p);
	return p;
}

Result<void> Switch::launch(std::string *why)
{
	running_ = !config_.interactive || config_.autoStart;
	replan();
	for (size_t w = 0; w < workers_.size(); w++) {
		if (rte_eal_remote_launch(workerMain, workers_[w].get(), workers_[w]->lcore) != 0) {
			*why = "cannot launch lcore " + std::to_string(workers_[w]->lcore);
			stop_.store(true);
			rte_eal_mp_wait_lcore();
			return Error{ EBUSY, "lcore launch failed" };
		}
	}
	launched_ = true;
	return {};
}

void Switch::shutdown()
{
	if (!launched_)
		return;
	stop_.store(true);
	rte_eal_mp_wait_lcore();
	launched_ = false;
}

int Switch::workerMain(void *arg)
{
	auto *w = static_cast<Worker *>(arg);
	w->owner->forward(*w);
	return 0;
}

Result<unsigned> Switch::findPort(const std::string &word) const
{
	for (const auto &p : ports_) {
		if (p && (p->config.name == word || std::to_string(p->id) == word))
			return p->id;
	}
	return Error{ ENOENT, "no such port" };
}

Result<unsigned> Switch::addPort(const PortConfig &requested, std::string *why)
{
	PortConfig config = requested;
	unsigned id = 0;
	while (id < kMaxPorts && ports_[id])
		id++;
	if (id == kMaxPorts) {
		*why = "at most " + std::to_string(kMaxPorts) + " ports";
		return Error{ E2BIG, "too many ports" };
	}
	if (config.name.empty())
		config.name = "port" + std::to_string(id);
	for (const auto &p : ports_) {
		if (!p)
			continue;
		if (p->config.name == config.name) {
			*why = "a port is already named " + config.name;
			return Error{ EEXIST, "port name taken" };
		}
		if (config.type == PortType::VhostUser && p->config.type == PortType::VhostUser &&
		    p->config.path == config.path) {
			*why = "port " + p->config.name + " already uses " + config.path;
			return Error{ EEXIST, "socket taken" };
		}
	}
	auto port = openPort(config, id, why);
	if (!port)
		return port.error();
	ports_[id] = std::move(*port);
	config_.ports.push_back(config);
	replan();
	return id;
}

Result<void> Switch::removePort(unsigned id, std::string *why)
{
	if (id >= kMaxPorts || !ports_[id]) {
		*why = "no port " + std::to_string(id);
		return Error{ ENOENT, "no such port" };
	}
	std::unique_ptr<SwitchPort> gone = std::move(ports_[id]);
	std::erase_if(config_.ports,
		      [&](const PortConfig &c) { return c.name == gone->config.name; });
	/* After this no worker holds the port: the paused plan names none. */
	replan();
	flushPorts_ |= uint64_t{ 1 } << id;
	learnTick();
	gone.reset();
	return {};
}

void Switch::start(unsigned txFirstBursts)
{
	running_ = true;
	if (txFirstBursts) {
		txFirstGeneration_++;
		txFirstBursts_ = static_cast<uint16_t>(txFirstBursts);
	}
	replan();
}

void Switch::stop()
{
	running_ = false;
	replan();
}

void Switch::setMode(ForwardMode mode)
{
	mode_ = mode;
	replan();
}

void Switch::setTxSegments(const std::vector<unsigned> &bytes)
{
	txSegmentBytes_.clear();
	for (unsigned b : bytes)
		txSegmentBytes_.push_back(static_cast<uint16_t>(b));
	replan();
}

void Switch::setBurst(unsigned burst)
{
	config_.burst = burst;
	replan();
}

void Switch::rebalance()
{
	sampleLoad();
	replan();
}

std::unique_ptr<Plan> Switch::buildPlan() const
{
	auto plan = std::make_unique<Plan>();
	plan->mode = mode_;
	plan->burst = static_cast<uint16_t>(config_.burst);
	plan->running = running_;
	plan->txFirstGeneration = txFirstGeneration_;
	plan->txFirstBursts = txFirstBursts_;
	plan->txSegmentBytes = txSegmentBytes_;
	plan->rxqs.resize(workers_.size());
	plan->tx.resize(workers_.size());
	plan->places.resize(kMaxPorts);

	/* testpmd's paired topology: 0 <-> 1, 2 <-> 3...; an odd last port loops to itself. */
	std::vector<unsigned> ids;
	for (const auto &p : ports_) {
		if (!p)
			continue;
		ids.push_back(p->id);
		plan->ports[p->id] = p.get();
		plan->portCount = p->id + 1;
	}
	for (size_t i = 0; i < ids.size(); i++) {
		size_t peer = i % 2 == 0 ? (i + 1 < ids.size() ? i + 1 : i) : i - 1;
		plan->peer[ids[i]] = static_cast<uint8_t>(ids[peer]);
	}

	std::vector<RxqLoad> loads = rxqLoads();
	std::vector<RxqPlace> places = assignRxqs(loads, workerSlots());
	for (size_t i = 0; i < loads.size(); i++) {
		SwitchPort *p = ports_[loads[i].port].get();
		auto &byQueue = plan->places[p->id];
		byQueue.resize(p->rxqs.size());
		byQueue[loads[i].queue] = places[i];
		plan->rxqs[static_cast<size_t>(places[i].worker)].push_back(
			{ p, static_cast<uint16_t>(loads[i].queue), p->rxqs[loads[i].queue].get(),
			  PlanTx{} });
	}

	/*
	 * l2switch sends on one queue of each port per worker, among those that deliver now; the
	 * other modes on the rx queue's number at the peer, as testpmd's streams (a guest that
	 * has not enabled that queue yet drops, and counts). A queue more than one worker sends
	 * on is shared (locked).
	 */
	std::map<std::pair<unsigned, uint16_t>, std::set<unsigned>> senders;
	std::array<std::vector<uint16_t>, kMaxPorts> ready;
	for (unsigned id : ids) {
		const net::Port &port = *ports_[id]->port;
		for (unsigned q = 0; q < port.txQueues(); q++) {
			if (port.txQueueReady(q))
				ready[id].push_back(static_cast<uint16_t>(q));
		}
		if (ready[id].empty())
			ready[id].push_back(0);
	}
	bool perWorker = mode_ == ForwardMode::L2Switch;
	for (unsigned w = 0; w < workers_.size(); w++) {
		if (perWorker) {
			for (unsigned id : ids) {
				plan->tx[w][id].queue = ready[id][w % ready[id].size()];
				senders[{ id, plan->tx[w][id].queue }].insert(w);
			}
			continue;
		}
		for (PlanRxq &r : plan->rxqs[w]) {
			unsigned dst = plan->peer[r.port->id];
			r.tx.queue = static_cast<uint16_t>(r.queue % ports_[dst]->port->txQueues());
			senders[{ dst, r.tx.queue }].insert(w);
		}
	}
	for (unsigned w = 0; w < workers_.size(); w++) {
		for (unsigned id : ids)
			plan->tx[w][id].shared = senders[{ id, plan->tx[w][id].queue }].size() > 1;
		for (PlanRxq &r : plan->rxqs[w])
			r.tx.shared = senders[{ plan->peer[r.port->id], r.tx.queue }].size() > 1;
	}
	return plan;
}

std::vector<RxqLoad> Switch::rxqLoads() const
{
	std::vector<RxqLoad> loads;
	for (const auto &p : ports_) {
		if (!p)
			continue;
		for (unsigned q = 0; q < p->rxqs.size(); q++) {
			RxqLoad load{ p->id, q, p->port->numaNode(q), p->load[q] };
			for (const RxqAffinity &a : p->config.rxqAffinity) {
				if (a.queue == q)
					load.pinnedLcore = static_cast<int>(a.lcore);
			}
			loads.push_back(load);
		}
	}
	return loads;
}

std::vector<WorkerSlot> Switch::workerSlots() const
{
	std::vector<WorkerSlot> slots;
	for (const auto &w : workers_)
		slots.push_back({ w->lcore, w->node });
	return slots;
}

std::vector<int> Switch::placementInputs() const
{
	std::vector<int> inputs;
	for (const auto &p : ports_) {
		if (!p)
			continue;
		for (unsigned q = 0; q < p->rxqs.size(); q++)
			inputs.push_back(p->port->numaNode(q));
		for (unsigned q = 0; q < p->port->txQueues(); q++)
			inputs.push_back(p->port->txQueueReady(q));
	}
	return inputs;
}

void Switch::replan()
{
	auto plan = buildPlan();
	placementInputs_ = placementInputs();
	for (const auto &p : ports_) {
		if (!p)
			continue;
		for (unsigned q = 0; q < p->rxqs.size(); q++) {
			const RxqPlace &place = plan->places[p->id][q];
			const Plan *old = plan_.load();
			bool moved = !old || old->places[p->id].size() <= q ||
				     old->places[p->id][q].worker != place.worker;
			if (!moved || p->port->numaNode(q) < 0)
				continue;
			const Worker &w = *workers_[static_cast<size_t>(place.worker)];
			VUB_LOG(App, Info,
				"port %s queue %u: memory on numa node %d, polled by lcore %u on numa "
				"node %d%s",
				p->config.name.c_str(), q, p->port->numaNode(q), w.lcore, w.node,
				place.remote ? " (remote: no worker lcore on the port's node)"
					     : "");
		}
	}
	publish(std::move(plan));
}

void Switch::publish(std::unique_ptr<Plan> next)
{
	if (launched_ && plan_.load() != &pausedPlan_) {
		plan_.store(&pausedPlan_, std::memory_order_release);
		Rcu::global().synchronize();
	}
	plan_.store(next.get(), std::memory_order_release);
	ownedPlan_ = std::move(next);
}

void Switch::sampleLoad()
{
	for (auto &p : ports_) {
		if (!p)
			continue;
		for (size_t q = 0; q < p->rxqs.size(); q++) {
			uint64_t now = p->rxqs[q]->busyCycles.get();
			p->load[q] = now - p->loadBase[q];
			p->loadBase[q] = now;
		}
	}
}

void Switch::tick()
{
	nowS_.store(static_cast<uint32_t>((rte_rdtsc() - startTsc_) / rte_get_tsc_hz()),
		    std::memory_order_relaxed);
	if (placementInputs() != placementInputs_) {
		replan();
	} else if (++ticks_ % kTicksPerLoadSample == 0 && workers_.size() > 1) {
		/* Rebalance when moving queues would cut the busiest worker's load by a quarter. */
		sampleLoad();
		const Plan &current = *plan_.load();
		std::vector<RxqLoad> loads = rxqLoads();
		std::vector<RxqPlace> now;
		for (const RxqLoad &l : loads)
			now.push_back(current.places[l.port].size() > l.queue
					      ? current.places[l.port][l.queue]
					      : RxqPlace{});
		uint64_t before = maxWorkerCycles(loads, now, workers_.size());
		uint64_t after =
			maxWorkerCycles(loads, assignRxqs(loads, workerSlots()), workers_.size());
		if (after * 4 < before * 3) {
			VUB_LOG(App, Info,
				"rebalancing rx queues: busiest lcore %llu -> %llu cycles",
				static_cast<unsigned long long>(before),
				static_cast<unsigned long long>(after));
			replan();
		}
	}
	tickTimer_ = control_.addTimer(kTickPeriod, [this] { tick(); });
}

void Switch::learnTick()
{
	std::vector<MacLearnEvent> events;
	for (auto &w : workers_)
		w->learn.drain([&](const MacLearnEvent &e) { events.push_back(e); });
	if (mac_.update(events, nowS(), flushPorts_)) {
		macTable_.store(mac_.current(), std::memory_order_release);
		if (launched_)
			Rcu::global().synchronize();
		mac_.retire();
	}
	flushPorts_ = 0;
}

void Switch::scheduleLearn()
{
	learnTick();
	learnTimer_ = control_.addTimer(kLearnPeriod, [this] { scheduleLearn(); });
}

void Switch::clearMacTable()
{
	uint64_t all = 0;
	for (const auto &p : ports_) {
		if (p)
			all |= uint64_t{ 1 } << p->id;
	}
	flushPorts_ |= all;
	learnTick();
}

net::PortStats Switch::portStats(const SwitchPort &port) const
{
	net::PortStats s = port.port->stats();
	for (const auto &w : workers_)
		s.txErrors += w->txDropped[port.id].get();
	const net::PortStats &c = port.cleared;
	s.rxPackets -= c.rxPackets;
	s.rxBytes -= c.rxBytes;
	s.rxMissed -= c.rxMissed;
	s.rxErrors -= c.rxErrors;
	s.rxNoMbuf -= c.rxNoMbuf;
	s.txPackets -= c.txPackets;
	s.txBytes -= c.txBytes;
	s.txErrors -= c.txErrors;
	return s;
}

void Switch::clearPortStats(SwitchPort &port)
{
	port.cleared = net::PortStats{};
	port.cleared = portStats(port);
	port.lastShown = net::PortStats{};
	port.lastShownTsc = 0;
}

/*
 * The worker lcores' loop. Everything per burst: one plan load, one rx burst per rx queue, a
 * tx burst per destination, two TSC reads. Nothing here blocks, allocates (but mbufs) or logs.
 */

namespace {

/** Keep \a n packets for port \a dst after those held already; what does not fit is dropped. */
inline void hold(Worker &w, unsigned dst, const PlanTx &tx, rte_mbuf **pkts, uint16_t n,
		 rte_mbuf **held)
{
	uint16_t keep = std::min<uint16_t>(static_cast<uint16_t>(kMaxBurst - w.pending[dst]), n);
	std::memmove(held + w.pending[dst], pkts, keep * sizeof(*pkts));
	w.pending[dst] = static_cast<uint16_t>(w.pending[dst] + keep);
	w.pendingTx[dst] = tx;
	if (keep < n) {
		w.txDropped[dst] += n - keep;
		rte_pktmbuf_free_bulk(pkts + keep, n - keep);
	}
}

/**
 * Hand port \a dst the packets held for it, then \a n more. What it does not take is
 * counted and freed, or held for the next loop when the port waits (Port::txWaits()).
 */
inline void sendTo(Worker &w, const Plan &plan, unsigned dst, const PlanTx &tx, rte_mbuf **pkts,
		   uint16_t n, rte_mbuf **held)
{
	SwitchPort *port = plan.ports[dst];
	if (!port) [[unlikely]] {
		w.txDropped[dst] += n;
		rte_pktmbuf_free_bulk(pkts, n);
		return;
	}
	/* Another worker writes this queue too: try once, else hold the packets for later. */
	rte_spinlock_t *lock = tx.shared ? &port->txLocks[tx.queue].lock : nullptr;
	if (lock && !rte_spinlock_trylock(lock)) {
		hold(w, dst, tx, pkts, n, held);
		return;
	}
	if (uint16_t count = w.pending[dst]) [[unlikely]] {
		uint16_t sent = port->port->txBurst(tx.queue, held, count);
		uint16_t left = static_cast<uint16_t>(count - sent);
		if (left && port->port->txWaits()) {
			std::memmove(held, held + sent, left * sizeof(*held));
		} else if (left) {
			w.txDropped[dst] += left;
			rte_pktmbuf_free_bulk(held + sent, left);
			left = 0;
		}
		w.pending[dst] = left;
	}
	if (n != 0 && w.pending[dst] != 0) {
		/* Behind the ones still waiting, in order. */
		hold(w, dst, tx, pkts, n, held);
	} else if (n != 0) {
		uint16_t sent = port->port->txBurst(tx.queue, pkts, n);
		if (sent < n && port->port->txWaits()) {
			hold(w, dst, tx, pkts + sent, static_cast<uint16_t>(n - sent), held);
		} else if (sent < n) {
			w.txDropped[dst] += n - sent;
			rte_pktmbuf_free_bulk(pkts + sent, n - sent);
		}
	}
	if (lock)
		rte_spinlock_unlock(lock);
}

} /* namespace */

void Switch::forward(Worker &w)
{
	const unsigned me = w.index;
	auto reader = Rcu::global().registerReader();
	if (!reader) {
		VUB_LOG(App, Error, "lcore %u: %s", w.lcore, reader.error().what);
		return;
	}
	/* Packets held for shared tx queues, by port. */
	auto held = std::make_unique<rte_mbuf *[]>(size_t{ kMaxPorts } * kMaxBurst);
	auto heldFor = [&](unsigned port) { return held.get() + size_t{ port } * kMaxBurst; };
	rte_mbuf *pkts[kMaxBurst];
	uint8_t frame[kMaxFrameBytes];
	const Plan *last = nullptr;
	uint32_t lastSecond = 0;

	while (!stop_.load(std::memory_order_relaxed)) {
		const Plan *plan = plan_.load(std::memory_order_acquire);
		if (plan != last) {
			/* The ports of held packets may be gone with the old plan. */
			for (unsigned p = 0; p < kMaxPorts; p++) {
				if (w.pending[p]) {
					w.txDropped[p] += w.pending[p];
					rte_pktmbuf_free_bulk(heldFor(p), w.pending[p]);
					w.pending[p] = 0;
				}
			}
			last = plan;
		}
		if (!plan->running) {
			reader->quiescent();
			rte_pause();
			continue;
		}
		const uint16_t burst = plan->burst;
		const ForwardMode mode = plan->mode;
		const std::vector<PlanRxq> &mine = plan->rxqs[me];

		auto generate = [&](const PlanRxq &r) {
			unsigned dst = plan->peer[r.port->id];
			uint32_t total = 0;
			for (uint16_t s : plan->txSegmentBytes)
				total += s;
			buildTxFrame(plan->ports[dst]->mac, dst, total, frame);
			uint16_t n = buildPackets(w.pool, frame, plan->txSegmentBytes, pkts, burst);
			if (n)
				sendTo(w, *plan, dst, r.tx, pkts, n, heldFor(dst));
		};
		if (plan->txFirstGeneration != w.txFirstSeen) {
			w.txFirstSeen = plan->txFirstGeneration;
			for (const PlanRxq &r : mine) {
				for (unsigned b = 0; b < plan->txFirstBursts; b++)
					generate(r);
			}
		}

		const MacTable *table = macTable_.load(std::memory_order_acquire);
		const uint32_t now = nowS_.load(std::memory_order_relaxed);
		if (now != lastSecond) {
			/* Report again what may have been lost: once a second at most. */
			w.reportedFor = nullptr;
			lastSecond = now;
		}

		for (const PlanRxq &r : mine) {
			uint64_t start = rte_rdtsc();
			const unsigned in = r.port->id;
			if (mode == ForwardMode::TxOnly)
				generate(r);
			uint16_t n = r.port->port->rxBurst(r.queue, w.pool, pkts, burst);
			if (n == 0) {
				w.idleCycles += rte_rdtsc() - start;
				continue;
			}
			switch (mode) {
			case ForwardMode::RxOnly:
			case ForwardMode::TxOnly:
				rte_pktmbuf_free_bulk(pkts, n);
				break;
			case ForwardMode::Io:
				sendTo(w, *plan, plan->peer[in], r.tx, pkts, n,
				       heldFor(plan->peer[in]));
				break;
			case ForwardMode::Mac:
			case ForwardMode::MacSwap: {
				unsigned dst = plan->peer[in];
				for (uint16_t i = 0; i < n; i++) {
					if (rte_pktmbuf_data_len(pkts[i]) < 12)
						continue;
					uint8_t *eth = rte_pktmbuf_mtod(pkts[i], uint8_t *);
					if (mode == ForwardMode::Mac) {
						peerMac(dst, eth);
						std::memcpy(eth + 6, plan->ports[dst]->mac, 6);
					} else {
						uint8_t tmp[6];
						std::memcpy(tmp, eth, 6);
						std::memcpy(eth, eth + 6, 6);
						std::memcpy(eth + 6, tmp, 6);
					}
				}
				sendTo(w, *plan, dst, r.tx, pkts, n, heldFor(dst));
				break;
			}
			case ForwardMode::L2Switch: {
				uint32_t touched = 0;
				for (uint16_t i = 0; i < n; i++) {
					rte_mbuf *m = pkts[i];
					if (rte_pktmbuf_data_len(m) < 14) [[unlikely]] {
						w.runts++;
						rte_pktmbuf_free(m);
						continue;
					}
					const uint8_t *eth = rte_pktmbuf_mtod(m, const uint8_t *);
					uint64_t src = macKey(eth + 6);
					uint64_t dstKey = macKey(eth);
					if (!isGroupMac(src)) {
						MacTable::Entry *e = table->find(src);
						if (e && e->port == in) {
							if (e->lastSeen.load(
								    std::memory_order_relaxed) !=
							    now)
								e->lastSeen.store(
									now,
									std::memory_order_relaxed);
						} else {
							if (w.reportedFor != table) {
								std::fill(
									std::begin(w.reportedKeys),
									std::end(w.reportedKeys),
									~uint64_t{ 0 });
								w.reportedFor = table;
							}
							uint64_t event = src | uint64_t{ in } << 48;
							uint64_t &slot =
								w.reportedKeys
									[(src *
									  0x9e3779b97f4a7c15ull) >>
									 58];
							if (slot != event) {
								slot = event;
								if (!w.learn.push({ src, in }))
									w.learnOverflows++;
							}
						}
					}
					const MacTable::Entry *to =
						isGroupMac(dstKey) ? nullptr : table->find(dstKey);
					if (to && to->port == in) {
						w.hairpinDrops++;
						rte_pktmbuf_free(m);
						continue;
					}
					if (to && to->port < plan->portCount &&
					    plan->ports[to->port]) {
						w.out[to->port][w.outCount[to->port]++] = m;
						touched |= 1u << to->port;
						continue;
					}
					/* Unknown, broadcast or multicast: every other port gets
					 * it. */
					uint16_t copies = 0;
					for (unsigned p = 0; p < plan->portCount; p++)
						copies += plan->ports[p] && p != in;
					if (copies == 0) {
						rte_pktmbuf_free(m);
						continue;
					}
					w.floods++;
					if (copies > 1)
						rte_pktmbuf_refcnt_update(
							m, static_cast<int16_t>(copies - 1));
					for (unsigned p = 0; p < plan->portCount; p++) {
						if (!plan->ports[p] || p == in)
							continue;
						w.out[p][w.outCount[p]++] = m;
						touched |= 1u << p;
					}
				}
				while (touched) {
					unsigned p = static_cast<unsigned>(__builtin_ctz(touched));
					touched &= touched - 1;
					sendTo(w, *plan, p, plan->tx[me][p], w.out[p],
					       w.outCount[p], heldFor(p));
					w.outCount[p] = 0;
				}
				break;
			}
			}
			uint64_t cycles = rte_rdtsc() - start;
			r.counters->packets += n;
			r.counters->busyCycles += cycles;
			r.counters->bursts++;
			w.busyCycles += cycles;
		}
		/* Held packets go out as soon as their queue is free. */
		for (unsigned p = 0; p < plan->portCount; p++) {
			if (w.pending[p]) [[unlikely]]
				sendTo(w, *plan, p, w.pendingTx[p], pkts, 0, heldFor(p));
		}
		reader->quiescent();
	}
	for (unsigned p = 0; p < kMaxPorts; p++) {
		if (w.pending[p])
			rte_pktmbuf_free_bulk(heldFor(p), w.pending[p]);
		w.pending[p] = 0;
	}
}

} /* namespace vub::sw */
