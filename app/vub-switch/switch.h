/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <rte_spinlock.h>

#include "vub/base/counter.h"
#include "vub/base/event_loop.h"
#include "vub/base/rcu.h"
#include "vub/base/result.h"

#include "config.h"
#include "mac_table.h"
#include "placement.h"
#include "port.h"

struct rte_mbuf;
struct rte_mempool;

namespace vub::sw {

constexpr unsigned kMaxPorts = 32;
constexpr unsigned kMaxBurst = 512;

/** \brief One rx queue's counters: written by the worker that polls it, read anywhere. */
struct alignas(64) RxqCounters {
	Counter packets;
	Counter busyCycles; /**< TSC cycles of the bursts that received something, forwarding
			       included */
	Counter bursts;	    /**< bursts that received something */
};

/** \brief A port of the switch: owned by the control thread, read by workers through a Plan. */
struct SwitchPort {
	struct alignas(64) TxLock {
		rte_spinlock_t lock;
	};

	unsigned id = 0;
	PortConfig config;
	std::unique_ptr<net::Port> port;
	uint8_t mac[6] = {};
	std::vector<std::unique_ptr<RxqCounters>> rxqs;
	std::unique_ptr<TxLock[]> txLocks; /**< for tx queues more than one worker writes */

	/* Control thread only. */
	net::PortStats cleared;	  /**< the counters at `clear port stats` */
	net::PortStats lastShown; /**< for the rates "since last show" */
	uint64_t lastShownTsc = 0;
	std::vector<uint64_t> loadBase; /**< each rxq's busy cycles at the last load sample */
	std::vector<uint64_t> load;	/**< each rxq's busy cycles over the last interval */
};

/** \brief A tx queue to send on, and whether another worker sends on it too. */
struct PlanTx {
	uint16_t queue = 0;
	bool shared = false;
};

/** \brief An rx queue in a worker's list. */
struct PlanRxq {
	SwitchPort *port;
	uint16_t queue;
	RxqCounters *counters;
	PlanTx tx; /**< io, mac, macswap, txonly: on the peer port, as testpmd's streams */
};

/**
 * \brief What the workers do, as one immutable snapshot published with RCU: a change builds a
 * new one, and a worker reads the current one once per round.
 */
struct Plan {
	ForwardMode mode = ForwardMode::L2Switch;
	uint16_t burst = 32;
	bool running = false;
	uint32_t txFirstGeneration = 0; /**< a new value: send txFirstBursts bursts, then forward */
	uint16_t txFirstBursts = 0;
	unsigned portCount = 0; /**< highest port id + 1 */
	std::array<SwitchPort *, kMaxPorts> ports{};
	std::array<uint8_t, kMaxPorts>
		peer{}; /**< io, mac, macswap, txonly: where a port's rx goes */
	std::vector<std::vector<PlanRxq>> rxqs;	       /**< by worker */
	std::vector<std::array<PlanTx, kMaxPorts>> tx; /**< l2switch: by worker, by port */
	std::vector<uint16_t> txSegmentBytes;
	/** \brief Each rx queue's worker (by port, queue) and whether remote: for show and replan.
	 */
	std::vector<std::vector<RxqPlace>> places;
};

/** \brief A worker lcore's own state, on its NUMA node. */
struct alignas(64) Worker {
	class Switch *owner = nullptr;
	unsigned index = 0; /**< in Switch::workers() and Plan::rxqs */
	unsigned lcore = 0;
	int node = 0;
	rte_mempool *pool = nullptr;
	Counter busyCycles;
	Counter idleCycles;
	Counter txDropped[kMaxPorts]; /**< packets a port's tx queue did not take */
	Counter hairpinDrops;	      /**< l2switch: the destination is the port it came from */
	Counter floods;		      /**< l2switch: packets sent to every other port */
	Counter learnOverflows;	      /**< learn events lost to a full queue */
	Counter runts;		      /**< l2switch: frames shorter than an Ethernet header */
	LearnQueue learn;
	/* Worker-private below. */
	uint32_t txFirstSeen = 0;
	const MacTable *reportedFor = nullptr; /**< the snapshot reportedKeys belong to */
	uint64_t reportedKeys[64];	       /**< learn events sent for that snapshot */
	/** Packets held for a port: its tx queue was shared and busy, or the port waits. */
	uint16_t pending[kMaxPorts] = {};
	PlanTx pendingTx[kMaxPorts]; /**< the queue they wait for */
	rte_mbuf *out[kMaxPorts][kMaxBurst];   /**< by destination port */
	uint16_t outCount[kMaxPorts] = {};
};

/**
 * \brief The switch: ports, worker lcores, the forwarding plan and the MAC table.
 *
 * Thread-bound to the control loop's thread, except the worker lcores' loop.
 */
class Switch
{
public:
	/**
	 * \brief Create the mbuf pools on the workers' nodes and every port of \a config.
	 * \return an error and \a why, naming the port, when anything fails: nothing runs then.
	 */
	static Result<std::unique_ptr<Switch>> create(const SwitchConfig &config,
						      EventLoop &control, std::string *why);
	~Switch();

	/** \brief Launch the worker lcores (forwarding if config.autoStart or not interactive). */
	Result<void> launch(std::string *why);
	/** \brief Stop the workers and wait for them. */
	void shutdown();

	/** \brief Add a port at run time. \return its id. */
	Result<unsigned> addPort(const PortConfig &config, std::string *why);
	/** \brief Remove port \a id: no worker touches it any more when this returns. */
	Result<void> removePort(unsigned id, std::string *why);
	/** \brief The id of the port named or numbered \a word. */
	Result<unsigned> findPort(const std::string &word) const;

	void start(unsigned txFirstBursts = 0);
	void stop();
	bool running() const { return plan_.load()->running; }
	void setMode(ForwardMode mode);
	ForwardMode mode() const { return plan_.load()->mode; }
	void setTxSegments(const std::vector<unsigned> &bytes);
	void setBurst(unsigned burst);
	/** \brief Place the rx queues again by their load over the last interval. */
	void rebalance();

	/** \brief The ports by id; null where none. */
	const std::array<std::unique_ptr<SwitchPort>, kMaxPorts> &ports() const { return ports_; }
	const std::vector<std::unique_ptr<Worker>> &workers() const { return workers_; }
	/** \brief The mbuf pools, one per NUMA node that runs workers. */
	const std::vector<rte_mempool *> &pools() const { return pools_; }
	const Plan &plan() const { return *plan_.load(); }
	const MacLearning &macLearning() const { return mac_; }
	uint32_t nowS() const { return nowS_.load(std::memory_order_relaxed); }
	const SwitchConfig &config() const { return config_; }

	/** \brief The port's counters since `clear port stats`, the switch's tx drops included. */
	net::PortStats portStats(const SwitchPort &port) const;
	void clearPortStats(SwitchPort &port);
	void clearMacTable();

private:
	explicit Switch(const SwitchConfig &config, EventLoop &control)
		: config_(config), control_(control), mac_(config.macTableSize, config.macAgingS)
	{
	}

	static int workerMain(void *arg);
	void forward(Worker &w);
	Result<std::unique_ptr<SwitchPort>> openPort(const PortConfig &config, unsigned id,
						     std::string *why);
	/** \brief Build and publish the plan from the ports, their loads and the settings. */
	void replan();
	std::unique_ptr<Plan> buildPlan() const;
	/** \brief The rx queues to place, with their nodes, loads and pinning. */
	std::vector<RxqLoad> rxqLoads() const;
	std::vector<WorkerSlot> workerSlots() const;
	/** \brief What a plan depends on besides the settings: rxq nodes, ready tx queues. */
	std::vector<int> placementInputs() const;
	/** \brief Publish \a next: no worker runs the old plan, nor the new one, in between. */
	void publish(std::unique_ptr<Plan> next);
	void sampleLoad();
	void tick();
	/** \brief Apply what the workers learnt (and flushes), publishing a new MAC table. */
	void learnTick();
	void scheduleLearn();

	SwitchConfig config_;
	EventLoop &control_;
	std::array<std::unique_ptr<SwitchPort>, kMaxPorts> ports_;
	std::vector<std::unique_ptr<Worker>> workers_;
	std::vector<rte_mempool *> pools_;
	std::atomic<Plan *> plan_{ nullptr };
	std::unique_ptr<Plan> ownedPlan_;
	Plan pausedPlan_;
	ForwardMode mode_;
	bool running_ = false;
	uint32_t txFirstGeneration_ = 0;
	uint16_t txFirstBursts_ = 0;
	std::vector<uint16_t> txSegmentBytes_;
	MacLearning mac_;
	std::atomic<MacTable *> macTable_{ nullptr };
	uint64_t flushPorts_ = 0;
	std::atomic<uint32_t> nowS_{ 0 };
	uint64_t startTsc_ = 0;
	std::atomic<bool> stop_{ false };
	bool launched_ = false;
	EventLoop::TimerId learnTimer_ = 0;
	EventLoop::TimerId tickTimer_ = 0;
	/** \brief What the last plan was built from: a change replans. */
	std::vector<int> placementInputs_;
	unsigned ticks_ = 0;
};

} /* namespace vub::sw */
