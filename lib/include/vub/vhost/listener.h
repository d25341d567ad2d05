/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <string>

#include "vub/base/result.h"
#include "vub/base/unique_fd.h"

namespace vub::vhost {

/**
 * \brief A listening vhost-user Unix socket (server mode), the seed's `Listener`.
 *
 * Removes the socket file when destroyed if it created it. Thread-bound.
 */
class Listener
{
public:
	/**
	 * \brief Bind and listen on \a path (non-blocking, close-on-exec).
	 * \param unlink remove a stale socket file at \a path first
	 * \return ENAMETOOLONG for a path longer than sun_path, or the socket error
	 */
	static Result<Listener> create(const std::string &path, bool unlink = true);

	Listener() = default;
	Listener(Listener &&other) noexcept;
	Listener &operator=(Listener &&other) noexcept;
	~Listener();

	int fd() const { return socket_.get(); }
	const std::string &path() const { return path_; }
	/** \brief Accept one connection. \return EAGAIN when none is pending. */
	Result<UniqueFd> accept();

private:
	UniqueFd socket_;
	std::string path_;
};

/** \brief Connect to a vhost-user socket (client mode). \return the connect error. */
Result<UniqueFd> connectUnixSocket(const std::string &path);

} /* namespace vub::vhost */
