/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/message.h"

namespace vub::vhost {

const char *frontendRequestName(uint32_t request)
{
	static constexpr const char *kNames[] = {
		"NONE", "GET_FEATURES", "SET_FEATURES", "SET_OWNER", "RESET_OWNER",
		"SET_MEM_TABLE", "SET_LOG_BASE", "SET_LOG_FD", "SET_VRING_NUM", "SET_VRING_ADDR",
		"SET_VRING_BASE", "GET_VRING_BASE", "SET_VRING_KICK", "SET_VRING_CALL",
		"SET_VRING_ERR", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM",
		"SET_VRING_ENABLE", "SEND_RARP", "NET_SET_MTU", "SET_BACKEND_REQ_FD", "IOTLB_MSG",
		"SET_VRING_ENDIAN", "GET_CONFIG", "SET_CONFIG", "CREATE_CRYPTO_SESSION",
		"CLOSE_CRYPTO_SESSION", "POSTCOPY_ADVISE", "POSTCOPY_LISTEN", "POSTCOPY_END",
		"GET_INFLIGHT_FD", "SET_INFLIGHT_FD", "GPU_SET_SOCKET", "RESET_DEVICE",
		"VRING_KICK", "GET_MAX_MEM_SLOTS", "ADD_MEM_REG", "REM_MEM_REG", "SET_STATUS",
		"GET_STATUS", "GET_SHARED_OBJECT", "SET_DEVICE_STATE_FD", "CHECK_DEVICE_STATE",
	};
	static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(FrontendRequest::Max));
	if (request < static_cast<uint32_t>(FrontendRequest::Max))
		return kNames[request];
	return "UNKNOWN";
}

} /* namespace vub::vhost */
