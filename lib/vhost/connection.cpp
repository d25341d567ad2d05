/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

namespace vub::vhost {

void Connection::close()
{
	socket_.reset();
	received_ = 0;
}

Result<bool> Connection::receive(Message &msg)
{
	return receiveMessage(msg, false);
}

Result<bool> Connection::receiveMessage(Message &msg, bool replyAllowed)
{
	constexpr size_t kHeaderSize = sizeof(MessageHeader);
	if (received_ == 0) {
		msg.closeFds();
		msg.header = {};
	}
	for (;;) {
		size_t total = kHeaderSize + (received_ >= kHeaderSize ? msg.header.size : 0);
		if (received_ >= kHeaderSize && received_ == total) {
			received_ = 0;
			return true;
		}
		uint8_t *dst;
		size_t want;
		if (received_ < kHeaderSize) {
			dst = reinterpret_cast<uint8_t *>(&msg.header) + received_;
			want = kHeaderSize - received_;
		} else {
			dst = msg.payload + (received_ - kHeaderSize);
			want = total - received_;
		}

		iovec iov{ dst, want };
		alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
		msghdr mh{};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = control;
		mh.msg_controllen = sizeof(control);
		ssize_t n = ::recvmsg(socket_.get(), &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (n < 0)
			return errnoError("recvmsg");

		/* Own every fd that arrived before anything else can fail. */
		bool tooMany = (mh.msg_flags & MSG_CTRUNC) != 0;
		for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < count; i++) {
				int fd;
				std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (msg.fdCount < kMaxFds)
					msg.fds[msg.fdCount++].reset(fd);
				else {
					::close(fd);
					tooMany = true;
				}
			}
		}
		if (n == 0) {
			msg.closeFds();
			received_ = 0;
			return Error{ ECONNRESET, "peer closed the connection" };
		}
		if (tooMany) {
			msg.closeFds();
			received_ = 0;
			return Error{ EMSGSIZE, "more than 8 fds with one message" };
		}
		received_ += static_cast<size_t>(n);
		if (received_ == kHeaderSize) {
			const MessageHeader &h = msg.header;
			if ((h.flags & kVersionMask) != kVersion ||
			    ((h.flags & kFlagReply) != 0 && !replyAllowed) ||
			    h.size > kMaxPayloadSize) {
				msg.closeFds();
				received_ = 0;
				return Error{ EPROTO, "bad message header (version, reply flag or size)" };
			}
		}
	}
}

Result<void> Connection::receiveBlocking(Message &msg, int timeoutMs)
{
	received_ = 0;
	for (;;) {
		auto done = receiveMessage(msg, true);
		if (!done)
			return done.error();
		if (*done)
			return {};
		pollfd pfd{ socket_.get(), POLLIN, 0 };
		int n = ::poll(&pfd, 1, timeoutMs);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errnoError("poll");
		if (n == 0)
			return Error{ ETIMEDOUT, "no reply in time" };
	}
}

Result<void> Connection::send(const MessageHeader &header, const void *payload,
			      std::span<const int> fds)
{
	if (fds.size() > kMaxFds)
		return Error{ EINVAL, "more than 8 fds" };
	iovec iov[2] = { { const_cast<MessageHeader *>(&header), sizeof(header) },
			 { const_cast<void *>(payload), header.size } };
	alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)]{};
	msghdr mh{};
	mh.msg_iov = iov;
	mh.msg_iovlen = header.size ? 2 : 1;
	if (!fds.empty()) {
		mh.msg_control = control;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
		cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
		std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
	}
	size_t total = sizeof(header) + header.size;
	size_t sent = 0;
	while (sent < total) {
		ssize_t n = ::sendmsg(socket_.get(), &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* Replies are small; a peer that does not read gets a bounded wait. */
			pollfd pfd{ socket_.get(), POLLOUT, 0 };
			if (::poll(&pfd, 1, 1000) <= 0)
				return Error{ ETIMEDOUT, "peer does not read" };
			continue;
		}
		if (n < 0)
			return errnoError("sendmsg");
		sent += static_cast<size_t>(n);
		/* Advance the iovecs past what was sent; fds went with the first byte. */
		mh.msg_control = nullptr;
		mh.msg_controllen = 0;
		size_t skip = static_cast<size_t>(n);
		while (mh.msg_iovlen > 0 && skip >= mh.msg_iov[0].iov_len) {
			skip -= mh.msg_iov[0].iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov[0].iov_base = static_cast<uint8_t *>(mh.msg_iov[0].iov_base) + skip;
			mh.msg_iov[0].iov_len -= skip;
		}
	}
	return {};
}

} /* namespace vub::vhost */
