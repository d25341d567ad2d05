/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <span>

#include "vub/base/result.h"
#include "vub/base/unique_fd.h"

namespace vub {

/**
 * \brief An epoll instance. add/modify/remove may be called from any thread while another
 * thread waits (epoll_ctl is thread-safe); wait() is called by one thread.
 */
class Epoll
{
public:
	static Result<Epoll> create();

	int fd() const { return fd_.get(); }

	Result<void> add(int fd, uint32_t events, uint64_t data);
	Result<void> modify(int fd, uint32_t events, uint64_t data);
	/** \brief Stop watching \a fd; an fd that was not watched is not an error. */
	void remove(int fd);
	/**
	 * \brief Wait for events, retrying on EINTR.
	 * \return the number of events stored in \a events, 0 on timeout.
	 */
	Result<int> wait(std::span<epoll_event> events, int timeoutMs);

private:
	UniqueFd fd_;
};

} /* namespace vub */
