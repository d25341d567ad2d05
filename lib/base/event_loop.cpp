/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/event_loop.h"

#include <pthread.h>

#include <condition_variable>

#include "vub/base/log.h"

namespace vub {

namespace {
constexpr uint64_t kWakeupToken = UINT64_MAX;
}

Result<std::unique_ptr<EventLoop>> EventLoop::create()
{
	auto epoll = Epoll::create();
	if (!epoll)
		return epoll.error();
	auto wakeup = EventFd::create();
	if (!wakeup)
		return wakeup.error();
	std::unique_ptr<EventLoop> loop(new EventLoop());
	loop->epoll_ = std::move(*epoll);
	loop->wakeup_ = std::move(*wakeup);
	VUB_TRY(loop->epoll_.add(loop->wakeup_.fd(), EPOLLIN, kWakeupToken));
	return loop;
}

EventLoop::~EventLoop()
{
	stop();
}

Result<void> EventLoop::watch(int fd, uint32_t events, FdCallback callback)
{
	if (watches_.count(fd))
		return Error{ EEXIST, "fd already watched" };
	VUB_TRY(epoll_.add(fd, events, static_cast<uint64_t>(fd)));
	watches_[fd] = std::make_shared<FdCallback>(std::move(callback));
	return {};
}

void EventLoop::unwatch(int fd)
{
	if (watches_.erase(fd))
		epoll_.remove(fd);
}

EventLoop::TimerId EventLoop::addTimer(std::chrono::milliseconds delay, Task task)
{
	TimerId id = nextTimer_++;
	timers_.emplace(std::chrono::steady_clock::now() + delay, std::make_pair(id, std::move(task)));
	return id;
}

void EventLoop::cancelTimer(TimerId id)
{
	for (auto it = timers_.begin(); it != timers_.end(); ++it) {
		if (it->second.first == id) {
			timers_.erase(it);
			return;
		}
	}
}

void EventLoop::post(Task task)
{
	{
		std::lock_guard<std::mutex> guard(postedLock_);
		posted_.push_back(std::move(task));
	}
	wakeup_.notify();
}

void EventLoop::runSync(const Task &task)
{
	if (onLoopThread() || loopThread_.load() == std::thread::id()) {
		task();
		return;
	}
	std::mutex lock;
	std::condition_variable done;
	bool finished = false;
	post([&] {
		task();
		std::lock_guard<std::mutex> guard(lock);
		finished = true;
		done.notify_one();
	});
	std::unique_lock<std::mutex> guard(lock);
	done.wait(guard, [&] { return finished; });
}

void EventLoop::runPosted()
{
	std::vector<Task> tasks;
	{
		std::lock_guard<std::mutex> guard(postedLock_);
		tasks.swap(posted_);
	}
	for (auto &task : tasks)
		task();
}

void EventLoop::runTimers()
{
	auto now = std::chrono::steady_clock::now();
	while (!timers_.empty() && timers_.begin()->first <= now) {
		Task task = std::move(timers_.begin()->second.second);
		timers_.erase(timers_.begin());
		task();
	}
}

void EventLoop::run()
{
	loopThread_.store(std::this_thread::get_id());
	epoll_event events[64];
	while (!stopping_.load(std::memory_order_acquire)) {
		int timeoutMs = -1;
		if (!timers_.empty()) {
			auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
				timers_.begin()->first - std::chrono::steady_clock::now());
			timeoutMs = wait.count() < 0 ? 0 : static_cast<int>(wait.count()) + 1;
		}
		auto n = epoll_.wait(events, timeoutMs);
		if (!n) {
			VUB_LOG(Base, Error, "event loop: %s", n.error().what);
			break;
		}
		for (int i = 0; i < *n; i++) {
			uint64_t token = events[i].data.u64;
			if (token == kWakeupToken) {
				wakeup_.drain();
				continue;
			}
			auto it = watches_.find(static_cast<int>(token));
			if (it == watches_.end())
				continue; /* unwatched by an earlier callback of this round */
			/* Keep the callback alive even if it unwatches its own fd. */
			std::shared_ptr<FdCallback> callback = it->second;
			(*callback)(events[i].events);
		}
		runPosted();
		runTimers();
	}
	runPosted();
	loopThread_.store(std::thread::id());
}

Result<void> EventLoop::startThread(const char *name)
{
	stopping_.store(false);
	thread_ = std::thread([this] { run(); });
	pthread_setname_np(thread_.native_handle(), name);
	while (loopThread_.load() == std::thread::id())
		std::this_thread::yield();
	return {};
}

void EventLoop::stop()
{
	stopping_.store(true, std::memory_order_release);
	wakeup_.notify();
	if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id())
		thread_.join();
}

} /* namespace vub */
