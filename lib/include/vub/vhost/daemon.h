/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vub/base/epoll.h"
#include "vub/base/event_fd.h"
#include "vub/base/event_loop.h"
#include "vub/base/result.h"
#include "vub/vhost/backend.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/listener.h"
#include "vub/vhost/vring.h"

namespace vub::vhost {

class VhostUserHandler;

/**
 * \brief A worker thread that sleeps in epoll on the kick eventfds of its vrings and on the
 * back-end's own listeners, and calls VhostUserBackend::handleEvent (the seed's
 * `VringEpollHandler`).
 *
 * A kick fd is watched only while its vring is started and enabled. The thread is an RCU
 * reader: it goes offline while it sleeps and reports a quiescent state after each event, so
 * guest memory can be replaced under it. register/unregister are thread-safe.
 */
class VringEpollHandler
{
public:
	~VringEpollHandler();

	/**
	 * \brief Watch \a fd for \a events; they reach handleEvent as device event \a data.
	 * \return EINVAL when \a data is a vring index or the exit token (data <= numQueues).
	 */
	Result<void> registerListener(int fd, uint32_t events, uint64_t data);
	Result<void> unregisterListener(int fd, uint32_t events, uint64_t data);
	/** \brief Make the thread leave its loop. */
	void sendExitEvent();
	/** \brief The epoll fd, to nest this handler in another loop. */
	int fd() const { return epoll_.fd(); }
	size_t threadId() const { return threadId_; }

private:
	friend class VhostUserHandler;
	VringEpollHandler() = default;
	Result<void> start(const char *name);
	void run();

	std::shared_ptr<VhostUserBackend> backend_;
	std::vector<VringT *> vrings_;
	size_t numQueues_ = 0;
	size_t threadId_ = 0;
	Epoll epoll_;
	EventFd exit_;
	std::optional<EventFd> backendExit_;
	Rcu *rcu_ = nullptr;
	std::thread thread_;
};

/**
 * \brief A polling worker: processes its vrings in bursts, in a loop, with no syscall, lock or
 * allocation per packet (VhostUserBackend::pollQueue once per ring per round).
 *
 * While it polls, the guest is told not to kick (VRING_USED_F_NO_NOTIFY, or avail_event left
 * behind with EVENT_IDX). In adaptive mode (idleUs > 0), after idleUs without work it asks for
 * kicks again and sleeps on the kick eventfds until one comes, then polls again. It is an RCU
 * reader that reports a quiescent state once per round, which is how the control thread parks
 * a ring (VringPolled). The daemon runs each poller on a thread of its own. Thread-bound to
 * the thread that polls, except stop() and the counters.
 */
class VringPoller
{
public:
	~VringPoller();

	/** \brief One round: one burst on each ring that may be processed. \return chains handled. */
	unsigned pollOnce();
	/** \brief Poll until stop(); sleeps on kicks after idleUs idle (0: never sleeps). */
	void run();
	/** \brief Make run() return. Thread-safe. */
	void stop();
	size_t threadId() const { return threadId_; }
	/** \brief Rounds that found work, rounds in all, and sleeps on kicks so far. */
	uint64_t busyRounds() const { return busyRounds_.load(std::memory_order_relaxed); }
	uint64_t rounds() const { return rounds_.load(std::memory_order_relaxed); }
	uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

private:
	friend class VhostUserHandler;
	struct Ring {
		PolledRing polled;
		uint16_t queueIndex;
	};

	VringPoller() = default;
	Result<void> start(const char *name, int cpu);
	/** \brief Ask for kicks on every idle ring. \return false if one had work meanwhile. */
	bool armKicks();
	void sleepOnKicks();

	std::shared_ptr<VhostUserBackend> backend_;
	std::vector<Ring> rings_;
	size_t threadId_ = 0;
	unsigned idleUs_ = 0;
	Epoll epoll_;
	EventFd exit_;
	Rcu *rcu_ = nullptr;
	std::optional<Rcu::Reader> reader_;
	std::atomic<bool> stopping_{ false };
	std::atomic<uint64_t> busyRounds_{ 0 };
	std::atomic<uint64_t> rounds_{ 0 };
	std::atomic<uint64_t> sleeps_{ 0 };
	std::thread thread_;
};

/** \brief How a VhostUserDaemon runs. */
struct DaemonOptions {
	/** \brief The control loop to serve the socket on; the daemon starts its own when null. */
	EventLoop *controlLoop = nullptr;
	/** \brief Client mode: reconnect after the front-end goes away, with back-off. */
	bool reconnect = true;
	unsigned reconnectMinMs = 100;
	unsigned reconnectMaxMs = 2000;
	/**
	 * \brief Client mode: when the front-end's socket is not there yet, keep trying (with
	 * the same back-off) instead of failing startClient(), as OVS's dpdkvhostuserclient does.
	 */
	bool waitForServer = false;
	/**
	 * \brief Polling mode: each queuesPerThread() entry is a VringPoller thread calling
	 * VhostUserBackend::pollQueue instead of an epoll worker; vrings must be VringPolled.
	 */
	bool polling = false;
	/** \brief Polling: sleep on kicks after this long without work; 0 polls without pause. */
	unsigned pollIdleUs = 0;
	/** \brief Polling: the CPU to pin each poll thread to (by thread index); none when short. */
	std::vector<int> pollCpus;
	/**
	 * \brief Polling: start VringPoller threads. False when the application polls the
	 * VringPolled vrings from its own threads (DPDK lcores) through PolledRing.
	 */
	bool pollThreads = true;
};

/**
 * \brief Serves one vhost-user device on a socket: the seed's `VhostUserDaemon`.
 *
 * Unlike the seed, a daemon survives its front-end: when the connection closes, the device is
 * reset and the next connection is served. Many daemons can share one control EventLoop.
 * start(), startClient(), stop() and wait() may be called from any thread.
 */
class VhostUserDaemon
{
public:
	/**
	 * \brief A daemon named \a name for \a backend, with vrings of type \a V (VringRwLock or
	 * VringMutex). Worker threads start at once, one per queuesPerThread() entry.
	 * \param mem the guest memory shared with the back-end; a new one when null
	 */
	template <typename V = VringRwLock>
	static Result<std::unique_ptr<VhostUserDaemon>>
	create(std::string name, std::shared_ptr<VhostUserBackend> backend,
	       std::shared_ptr<GuestMemoryAtomic> mem = nullptr, DaemonOptions options = {})
	{
		return createWith(std::move(name), std::move(backend), std::move(mem), options,
				  [](const GuestMemoryAtomic &m, uint16_t max) -> std::unique_ptr<VringT> {
					  return std::make_unique<V>(m, max);
				  });
	}

	~VhostUserDaemon();

	/** \brief Serve connections accepted on \a listener (server mode), one at a time. */
	Result<void> start(Listener &listener);
	/**
	 * \brief Connect to a front-end's socket (client mode). \return the first connect error,
	 * unless DaemonOptions::waitForServer, which keeps retrying in the background.
	 */
	Result<void> startClient(const std::string &socketPath);
	/** \brief Block until stop() is called. */
	Result<void> wait();
	/** \brief Close the connection, stop the workers and release wait(). */
	void stop();
	/** \brief The worker threads, so the back-end can register its own fds (none when polling). */
	std::vector<VringEpollHandler *> getEpollHandlers() const;
	/** \brief The poll workers (polling mode). */
	std::vector<VringPoller *> getPollers() const;

	const std::string &name() const { return name_; }
	GuestMemoryAtomic &memory() const { return *mem_; }
	/** \brief Whether a front-end is connected now. */
	bool isConnected() const;
	/** \brief Connections served so far. */
	uint64_t connectionCount() const;
	/** \brief The vrings, for statistics (lock them through their guards). */
	std::vector<VringT *> vrings() const;

private:
	using VringFactory = std::unique_ptr<VringT> (*)(const GuestMemoryAtomic &, uint16_t);
	VhostUserDaemon() = default;
	static Result<std::unique_ptr<VhostUserDaemon>>
	createWith(std::string name, std::shared_ptr<VhostUserBackend> backend,
		   std::shared_ptr<GuestMemoryAtomic> mem, DaemonOptions options, VringFactory factory);

	std::string name_;
	std::shared_ptr<GuestMemoryAtomic> mem_;
	std::unique_ptr<EventLoop> ownLoop_;
	EventLoop *loop_ = nullptr;
	std::unique_ptr<VhostUserHandler> handler_;
	std::mutex waitLock_;
	std::condition_variable stopped_;
	bool stopping_ = false;
};

} /* namespace vub::vhost */
