/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/backend_channel.h"

#include "vub/vhost/message.h"

namespace vub::vhost {

Result<void> BackendChannel::request(uint32_t request, const void *payload, uint32_t size, bool needReply)
{
	std::lock_guard<std::mutex> guard(lock_);
	bool waitAck = needReply && replyAck_;
	MessageHeader header{ request, kVersion | (waitAck ? kFlagNeedReply : 0), size };
	VUB_TRY(connection_.send(header, payload));
	if (!waitAck)
		return {};
	Message reply;
	auto received = connection_.receiveBlocking(reply, kAckTimeoutMs);
	if (!received || reply.request() != request || reply.size() != sizeof(uint64_t)) {
		/* A late or stray reply would be read as the next ack: the channel is out of step. */
		connection_.close();
		return received ? Error{ EPROTO, "bad ack on the back-end channel; channel closed" }
				: received.error();
	}
	if (reply.payloadAs<uint64_t>() != 0)
		return Error{ EIO, "front-end refused the back-end request" };
	return {};
}

Result<void> BackendChannel::configChange()
{
	return request(static_cast<uint32_t>(BackendRequest::ConfigChangeMsg), nullptr, 0, true);
}

Result<void> BackendChannel::vringCall(uint32_t index)
{
	VringStateMsg state{ index, 0 };
	return request(static_cast<uint32_t>(BackendRequest::VringCall), &state, sizeof(state), false);
}

Result<void> BackendChannel::vringErr(uint32_t index)
{
	VringStateMsg state{ index, 0 };
	return request(static_cast<uint32_t>(BackendRequest::VringErr), &state, sizeof(state), false);
}

} /* namespace vub::vhost */
