/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/listener.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <utility>

namespace vub::vhost {

namespace {

Result<sockaddr_un> unixAddress(const std::string &path)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof(addr.sun_path))
		return Error{ ENAMETOOLONG, "socket path empty or longer than sun_path" };
	std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
	return addr;
}

} /* namespace */

Result<Listener> Listener::create(const std::string &path, bool unlink)
{
	auto addr = unixAddress(path);
	if (!addr)
		return addr.error();
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	if (!fd)
		return errnoError("socket");
	if (unlink)
		::unlink(path.c_str());
	if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&*addr), sizeof(*addr)) < 0)
		return errnoError("bind");
	if (::listen(fd.get(), 16) < 0)
		return errnoError("listen");
	Listener listener;
	listener.socket_ = std::move(fd);
	listener.path_ = path;
	return listener;
}

Listener::Listener(Listener &&other) noexcept
	: socket_(std::move(other.socket_)), path_(std::exchange(other.path_, {}))
{
}

Listener &Listener::operator=(Listener &&other) noexcept
{
	if (socket_.isValid() && !path_.empty())
		::unlink(path_.c_str());
	socket_ = std::move(other.socket_);
	path_ = std::exchange(other.path_, {});
	return *this;
}

Listener::~Listener()
{
	if (socket_.isValid() && !path_.empty())
		::unlink(path_.c_str());
}

Result<UniqueFd> Listener::accept()
{
	int fd = ::accept4(socket_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return errnoError("accept");
	return UniqueFd(fd);
}

Result<UniqueFd> connectUnixSocket(const std::string &path)
{
	auto addr = unixAddress(path);
	if (!addr)
		return addr.error();
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return errnoError("socket");
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&*addr), sizeof(*addr)) < 0)
		return errnoError("connect");
	/* The control loop reads without blocking. */
	int flags = ::fcntl(fd.get(), F_GETFL);
	if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0)
		return errnoError("fcntl O_NONBLOCK");
	return fd;
}

} /* namespace vub::vhost */
