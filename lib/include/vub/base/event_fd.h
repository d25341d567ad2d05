/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>

#include "vub/base/result.h"
#include "vub/base/unique_fd.h"

namespace vub {

/**
 * \brief An eventfd (the kick, call and err notifiers of vhost-user), move-only.
 *
 * notify() and drain() are async-signal-safe system calls and may be called from any thread.
 */
class EventFd
{
public:
	EventFd() = default;
	/** \brief Adopt an eventfd received from a peer. */
	explicit EventFd(UniqueFd fd) : fd_(std::move(fd)) {}

	/** \brief Create a non-blocking, close-on-exec eventfd. */
	static Result<EventFd> create();
	/**
	 * \brief Adopt \a fd from a peer once it is known to be an eventfd (its fdinfo says so;
	 * taken on trust where /proc is not mounted). A pipe or a socket would raise SIGPIPE in
	 * notify() once its reader is gone. \return EINVAL for anything else.
	 */
	static Result<EventFd> adopt(UniqueFd fd);

	int fd() const { return fd_.get(); }
	bool isValid() const { return fd_.isValid(); }

	/** \brief Add 1 to the counter. \return false if the write failed (full or closed). */
	bool notify() const;
	/** \brief Read and reset the counter. \return the value read, 0 if nothing was pending. */
	uint64_t drain() const;

private:
	UniqueFd fd_;
};

} /* namespace vub */
