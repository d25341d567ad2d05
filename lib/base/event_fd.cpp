/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/event_fd.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace vub {

Result<EventFd> EventFd::create()
{
	int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd < 0)
		return errnoError("eventfd");
	return EventFd(UniqueFd(fd));
}

Result<EventFd> EventFd::adopt(UniqueFd fd)
{
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd.get());
	UniqueFd info(::open(path, O_RDONLY | O_CLOEXEC));
	if (!info.isValid())
		return EventFd(std::move(fd));
	char text[512];
	ssize_t n = ::read(info.get(), text, sizeof(text) - 1);
	if (n <= 0)
		return EventFd(std::move(fd));
	text[n] = '\0';
	if (!std::strstr(text, "eventfd-count:"))
		return Error{ EINVAL, "not an eventfd" };
	return EventFd(std::move(fd));
}

bool EventFd::notify() const
{
	uint64_t one = 1;
	return ::write(fd_.get(), &one, sizeof(one)) == sizeof(one);
}

uint64_t EventFd::drain() const
{
	uint64_t value = 0;
	if (::read(fd_.get(), &value, sizeof(value)) != sizeof(value))
		return 0;
	return value;
}

} /* namespace vub */
