/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/daemon.h"

#include <pthread.h>

#include "handler.h"
#include "vub/base/log.h"

namespace vub::vhost {

/* VringEpollHandler */

VringEpollHandler::~VringEpollHandler()
{
	sendExitEvent();
	if (thread_.joinable())
		thread_.join();
}

Result<void> VringEpollHandler::start(const char *name)
{
	auto epoll = Epoll::create();
	if (!epoll)
		return epoll.error();
	epoll_ = std::move(*epoll);
	auto exit = EventFd::create();
	if (!exit)
		return exit.error();
	exit_ = std::move(*exit);
	VUB_TRY(epoll_.add(exit_.fd(), EPOLLIN, numQueues_));
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

Result<void> VringEpollHandler::watchKick(int fd, uint16_t localIndex)
{
	return epoll_.add(fd, EPOLLIN, localIndex);
}

void VringEpollHandler::unwatchKick(int fd)
{
	epoll_.remove(fd);
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
