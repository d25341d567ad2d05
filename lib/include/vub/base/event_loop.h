/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "vub/base/epoll.h"
#include "vub/base/event_fd.h"
#include "vub/base/result.h"

namespace vub {

/**
 * \brief The control thread's loop: fd callbacks, timers and posted tasks on one thread.
 *
 * Every vhost-user connection of a process can be served from one EventLoop (the switch runs
 * all its ports on the control lcore). Callbacks run on the loop thread only.
 * watch()/unwatch()/addTimer() must be called on the loop thread (from a callback) or before
 * the loop runs; post() and stop() are thread-safe.
 */
class EventLoop
{
public:
	using FdCallback = std::function<void(uint32_t events)>;
	using Task = std::function<void()>;
	using TimerId = uint64_t;

	static Result<std::unique_ptr<EventLoop>> create();
	~EventLoop();

	/** \brief Call \a callback with the epoll events whenever \a fd is ready. */
	Result<void> watch(int fd, uint32_t events, FdCallback callback);
	/** \brief Stop watching \a fd. Safe from inside that fd's own callback. */
	void unwatch(int fd);
	/** \brief Run \a task once, \a delay from now. */
	TimerId addTimer(std::chrono::milliseconds delay, Task task);
	void cancelTimer(TimerId id);

	/** \brief Run \a task on the loop thread soon. Thread-safe. */
	void post(Task task);
	/** \brief Run \a task on the loop thread and wait for it (runs inline on the loop thread). */
	void runSync(const Task &task);

	/** \brief Run the loop on the calling thread until stop(). */
	void run();
	/** \brief Run the loop on a new thread named \a name. */
	Result<void> startThread(const char *name);
	/** \brief Make run() return and join the loop's own thread, if any. Thread-safe. */
	void stop();
	bool onLoopThread() const { return std::this_thread::get_id() == loopThread_.load(); }

private:
	EventLoop() = default;
	void runTimers();
	void runPosted();

	Epoll epoll_;
	EventFd wakeup_;
	std::map<int, std::shared_ptr<FdCallback>> watches_;
	std::multimap<std::chrono::steady_clock::time_point, std::pair<TimerId, Task>> timers_;
	TimerId nextTimer_ = 1;
	std::mutex postedLock_;
	std::vector<Task> posted_;
	std::atomic<bool> stopping_{ false };
	std::atomic<std::thread::id> loopThread_{};
	std::thread thread_;
};

} /* namespace vub */
