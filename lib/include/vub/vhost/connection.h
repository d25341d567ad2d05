/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <span>

#include "vub/base/result.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/message.h"

namespace vub::vhost {

/**
 * \brief One end of a vhost-user socket: reads and writes whole messages with their fds.
 *
 * receive() works on a non-blocking socket and resumes a message that arrived in pieces, so a
 * slow or hostile peer never blocks the control thread. Thread-bound: one thread at a time.
 */
class Connection
{
public:
	Connection() = default;
	explicit Connection(UniqueFd socket) : socket_(std::move(socket)) {}

	int fd() const { return socket_.get(); }
	bool isValid() const { return socket_.isValid(); }
	/** \brief Close the socket and forget a partly received message. */
	void close();

	/**
	 * \brief Read what is available of the next message into \a msg, which the caller keeps
	 * between calls until the message is complete.
	 *
	 * \return true when \a msg holds a whole message, false when more bytes are needed.
	 * Errors close nothing but the fds already received: ECONNRESET when the peer closed,
	 * EPROTO for a header vub cannot frame (bad version, REPLY flag: a request never carries
	 * it, size above kMaxPayloadSize), EMSGSIZE when more than kMaxFds fds came; the
	 * connection must then be closed, since the stream cannot be resynchronised.
	 */
	Result<bool> receive(Message &msg);

	/**
	 * \brief Read one whole message, waiting up to \a timeoutMs for it (blocking mode, for
	 * replies on the back-end channel and for test front-ends).
	 *
	 * Unlike receive(), accepts a header with the REPLY flag, which the replies it waits for
	 * carry.
	 * \return ETIMEDOUT when no whole message came in time, else the errors of receive().
	 */
	Result<void> receiveBlocking(Message &msg, int timeoutMs);

	/** \brief Send \a header, then \a payload (header.size bytes), with \a fds attached. */
	Result<void> send(const MessageHeader &header, const void *payload,
			  std::span<const int> fds = {});

private:
	Result<bool> receiveMessage(Message &msg, bool replyAllowed);

	UniqueFd socket_;
	size_t received_ = 0; /**< bytes of the current message read so far */
};

} /* namespace vub::vhost */
