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
	Result<void> watchKick(int fd, uint16_t localIndex);
	void unwatchKick(int fd);

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

/** \brief How a VhostUserDaemon runs. */
struct DaemonOptions {
	/** \brief The control loop to serve the socket on; the daemon starts its own when null. */
	EventLoop *controlLoop = nullptr;
	/** \brief Client mode: reconnect after the front-end goes away, with back-off. */
	bool reconnect = true;
	unsigned reconnectMinMs = 100;
	unsigned reconnectMaxMs = 2000;
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
	/** \brief Connect to a front-end's socket (client mode). \return the first connect error. */
	Result<void> startClient(const std::string &socketPath);
	/** \brief Block until stop() is called. */
	Result<void> wait();
	/** \brief Close the connection, stop the workers and release wait(). */
	void stop();
	/** \brief The worker threads, so the back-end can register its own fds. */
	std::vector<VringEpollHandler *> getEpollHandlers() const;

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
