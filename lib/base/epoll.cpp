/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/epoll.h"

#include <sys/epoll.h>

namespace vub {

Result<Epoll> Epoll::create()
{
	int fd = ::epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0)
		return errnoError("epoll_create1");
	Epoll epoll;
	epoll.fd_.reset(fd);
	return epoll;
}

Result<void> Epoll::add(int fd, uint32_t events, uint64_t data)
{
	epoll_event ev{};
	ev.events = events;
	ev.data.u64 = data;
	if (::epoll_ctl(fd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
		return errnoError("epoll_ctl add");
	return {};
}

Result<void> Epoll::modify(int fd, uint32_t events, uint64_t data)
{
	epoll_event ev{};
	ev.events = events;
	ev.data.u64 = data;
	if (::epoll_ctl(fd_.get(), EPOLL_CTL_MOD, fd, &ev) < 0)
		return errnoError("epoll_ctl mod");
	return {};
}

void Epoll::remove(int fd)
{
	::epoll_ctl(fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

Result<int> Epoll::wait(std::span<epoll_event> events, int timeoutMs)
{
	for (;;) {
		int n = ::epoll_wait(fd_.get(), events.data(), static_cast<int>(events.size()),
				     timeoutMs);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return errnoError("epoll_wait");
	}
}

} /* namespace vub */
