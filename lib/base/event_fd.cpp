/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/event_fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace vub {

Result<EventFd> EventFd::create()
{
	int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd < 0)
		return errnoError("eventfd");
	return EventFd(UniqueFd(fd));
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
