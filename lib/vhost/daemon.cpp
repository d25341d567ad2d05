/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/daemon.h"

#include <pthread.h>

#include <chrono>

#include "handler.h"
#include "vub/base/log.h"
#include "vub/base/topology.h"

namespace vub::vhost {

namespace {

/** A worker's epoll with its exit eventfd in it, under \a exitToken. */
Result<void> createEpollWithExit(Epoll *epoll, EventFd *exit, uint64_t exitToken)
{
	auto created = Epoll::create();
	if (!created)
		return created.error();
	*epoll = std::move(*created);
	auto eventFd = EventFd::create();
	if (!eventFd)
		return eventFd.error();
	*exit = std::move(*eventFd);
	return epoll->add(exit->fd(), EPOLLIN, exitToken);
}

} /* namespace */

/* VringEpollHandler */

VringEpollHandler::~VringEpollHandler()
{
	sendExitEvent();
	if (thread_.joinable())
		thread_.join();
}

Result<void> VringEpollHandler::start(const char *name)
{
	VUB_TRY(createEpollWithExit(&epoll_, &exit_, numQueues_));
	if (backendExit_)
		VUB_TRY(epoll_.add(backendExit_->fd(), EPOLLIN, numQueues_));
	thread_ = std::thread([this] { run(); });
	pthread_setname_np(thread_.native_handle(), name);
	return {};
}

void VringEpollHandler::run()
{
	auto reader = rcu_->registerReader();
	if (!reader) {
		VUB_LOG(Daemon, Error, "worker %zu: %s", threadId_, reader.error().what);
		return;
	}
	epoll_event events[64];
	for (;;) {
		reader->offline();
		auto n = epoll_.wait(events, -1);
		reader->online();
		if (!n) {
			VUB_LOG(Daemon, Error, "worker %zu: %s", threadId_, n.error().what);
			return;
		}
		for (int i = 0; i < *n; i++) {
			uint64_t token = events[i].data.u64;
			if (token == numQueues_)
				return; /* exit event */
			if (token < vrings_.size() && !vrings_[token]->readKick())
				continue; /* disabled: the kick is drained and dropped */
			auto handled = backend_->handleEvent(static_cast<uint16_t>(token), events[i].events,
							     vrings_, threadId_);
			if (!handled) {
				VUB_LOG(Daemon, Error, "worker %zu: back-end failed on event %llu: %s; worker ends",
					threadId_, static_cast<unsigned long long>(token), handled.error().what);
				return;
			}
		}
		reader->quiescent();
	}
}

Result<void> VringEpollHandler::registerListener(int fd, uint32_t events, uint64_t data)
{
	if (data <= numQueues_)
		return Error{ EINVAL, "listener data must be above the number of queues" };
	return epoll_.add(fd, events, data);
}

Result<void> VringEpollHandler::unregisterListener(int fd, uint32_t events, uint64_t data)
{
	(void)events;
	if (data <= numQueues_)
		return Error{ EINVAL, "listener data must be above the number of queues" };
	epoll_.remove(fd);
	return {};
}

void VringEpollHandler::sendExitEvent()
{
	if (exit_.isValid())
		exit_.notify();
}

/* VringPoller */

VringPoller::~VringPoller()
{
	stop();
	if (thread_.joinable())
		thread_.join();
}

Result<void> VringPoller::start(const char *name, int cpu)
{
	VUB_TRY(createEpollWithExit(&epoll_, &exit_, UINT64_MAX));
	thread_ = std::thread([this, cpu] {
		if (cpu >= 0) {
			auto pinned = Topology::pinThisThread(static_cast<unsigned>(cpu));
			if (!pinned)
				VUB_LOG(Daemon, Warning, "poller %zu: cannot pin to cpu %d", threadId_, cpu);
		}
		run();
	});
	pthread_setname_np(thread_.native_handle(), name);
	return {};
}

void VringPoller::stop()
{
	stopping_.store(true, std::memory_order_release);
	if (exit_.isValid())
		exit_.notify();
}

unsigned VringPoller::pollOnce()
{
	if (!reader_) {
		auto reader = rcu_->registerReader();
		if (!reader)
			return 0;
		reader_.emplace(std::move(*reader));
	}
	unsigned handled = 0;
	for (Ring &ring : rings_) {
		VringState *state = ring.polled.acquire();
		/* A generic device has no side-effect-free processing: a disabled ring waits. */
		if (state && state->isEnabled())
			handled += backend_->pollQueue(ring.queueIndex, *state, threadId_);
	}
	reader_->quiescent();
	rounds_.fetch_add(1, std::memory_order_relaxed);
	if (handled)
		busyRounds_.fetch_add(1, std::memory_order_relaxed);
	return handled;
}

bool VringPoller::armKicks()
{
	for (Ring &ring : rings_) {
		VringState *state = ring.polled.vring->pollable();
		if (state && state->enableNotification())
			return false;
	}
	return true;
}

void VringPoller::sleepOnKicks()
{
	sleeps_.fetch_add(1, std::memory_order_relaxed);
	epoll_event events[16];
	reader_->offline();
	/* A bounded sleep: a ring that became pollable without a kick is seen within 100 ms. */
	auto n = epoll_.wait(events, 100);
	reader_->online();
	if (!n)
		return;
	for (int i = 0; i < *n; i++) {
		uint64_t token = events[i].data.u64;
		if (token < rings_.size()) {
			VringState *state = rings_[token].polled.vring->pollable();
			if (state)
				state->readKick();
		}
	}
	/* Back to polling: kicks off again on every ring. */
	for (Ring &ring : rings_)
		ring.polled.armedGeneration = ring.polled.vring->generation() - 1;
}

void VringPoller::run()
{
	auto idleSince = std::chrono::steady_clock::now();
	while (!stopping_.load(std::memory_order_acquire)) {
		if (pollOnce() != 0) {
			idleSince = std::chrono::steady_clock::now();
			continue;
		}
		if (idleUs_ == 0)
			continue;
		auto idle = std::chrono::steady_clock::now() - idleSince;
		if (idle < std::chrono::microseconds(idleUs_))
			continue;
		if (armKicks())
			sleepOnKicks();
		idleSince = std::chrono::steady_clock::now();
	}
	reader_.reset();
}

/* VhostUserDaemon */

Result<std::unique_ptr<VhostUserDaemon>>
VhostUserDaemon::createWith(std::string name, std::shared_ptr<VhostUserBackend> backend,
			    std::shared_ptr<GuestMemoryAtomic> mem, DaemonOptions options,
			    VringFactory factory)
{
	if (!backend)
		return Error{ EINVAL, "no back-end" };
	std::unique_ptr<VhostUserDaemon> d(new VhostUserDaemon());
	d->name_ = std::move(name);
	d->mem_ = mem ? std::move(mem) : std::make_shared<GuestMemoryAtomic>();
	if (options.controlLoop) {
		d->loop_ = options.controlLoop;
	} else {
		auto loop = EventLoop::create();
		if (!loop)
			return loop.error();
		d->ownLoop_ = std::move(*loop);
		d->loop_ = d->ownLoop_.get();
		std::string thread = "vub-ctl-" + d->name_;
		thread.resize(std::min<size_t>(thread.size(), 15));
		VUB_TRY(d->ownLoop_->startThread(thread.c_str()));
	}
	Result<std::unique_ptr<VhostUserHandler>> handler = Error{};
	d->loop_->runSync([&] {
		handler = VhostUserHandler::create(d->name_, std::move(backend), d->mem_, *d->loop_,
						   options, factory);
	});
	if (!handler)
		return handler.error();
	d->handler_ = std::move(*handler);
	return d;
}

VhostUserDaemon::~VhostUserDaemon()
{
	stop();
	if (handler_)
		loop_->runSync([this] { handler_.reset(); });
	if (ownLoop_)
		ownLoop_->stop();
}

Result<void> VhostUserDaemon::start(Listener &listener)
{
	Result<void> result;
	loop_->runSync([&] { result = handler_->serve(listener); });
	return result;
}

Result<void> VhostUserDaemon::startClient(const std::string &socketPath)
{
	Result<void> result;
	loop_->runSync([&] { result = handler_->connectClient(socketPath); });
	return result;
}

Result<void> VhostUserDaemon::wait()
{
	std::unique_lock<std::mutex> guard(waitLock_);
	stopped_.wait(guard, [this] { return stopping_; });
	return {};
}

void VhostUserDaemon::stop()
{
	{
		std::lock_guard<std::mutex> guard(waitLock_);
		if (stopping_)
			return;
		stopping_ = true;
	}
	if (handler_)
		loop_->runSync([this] { handler_->shutdown(); });
	stopped_.notify_all();
}

std::vector<VringEpollHandler *> VhostUserDaemon::getEpollHandlers() const
{
	return handler_->epollHandlers();
}

std::vector<VringPoller *> VhostUserDaemon::getPollers() const
{
	return handler_->pollers();
}

bool VhostUserDaemon::isConnected() const
{
	bool connected = false;
	loop_->runSync([&] { connected = handler_->isConnected(); });
	return connected;
}

uint64_t VhostUserDaemon::connectionCount() const
{
	uint64_t count = 0;
	loop_->runSync([&] { count = handler_->connectionCount(); });
	return count;
}

std::vector<VringT *> VhostUserDaemon::vrings() const
{
	return handler_->vrings();
}

} /* namespace vub::vhost */
