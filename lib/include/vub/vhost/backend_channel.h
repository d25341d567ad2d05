/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <mutex>

#include "vub/base/result.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/connection.h"

namespace vub::vhost {

/**
 * \brief The back-end to front-end request channel, the socket that SET_BACKEND_REQ_FD passes
 * (the seed's `Backend`).
 *
 * Thread-safe: one message at a time under a mutex, as the specification requires. A request
 * that expects an ack waits for it at most ackTimeoutMs, so a front-end that never answers
 * cannot stall the caller for long.
 */
class BackendChannel
{
public:
	static constexpr int kAckTimeoutMs = 1000;

	BackendChannel(UniqueFd socket, bool replyAck) : connection_(std::move(socket)), replyAck_(replyAck) {}

	/** \brief BACKEND_CONFIG_CHANGE_MSG: the device's configuration space changed. */
	Result<void> configChange();
	/** \brief BACKEND_VRING_CALL: notify the guest of used buffers in-band (no ack waited). */
	Result<void> vringCall(uint32_t index);
	/** \brief BACKEND_VRING_ERR: report an error on vring \a index in-band. */
	Result<void> vringErr(uint32_t index);

	/**
	 * \brief Send any back-end request; with \a needReply (and REPLY_ACK negotiated) wait for
	 * the front-end's u64 ack. \return EIO when the ack is non-zero; when no good ack comes
	 * in time the channel is closed (it can no longer tell replies apart) and every later
	 * request fails with EBADF.
	 */
	Result<void> request(uint32_t request, const void *payload, uint32_t size, bool needReply);

	int fd() const { return connection_.fd(); }

private:
	std::mutex lock_;
	Connection connection_;
	bool replyAck_;
};

} /* namespace vub::vhost */
