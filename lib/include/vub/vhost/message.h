/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "vub/base/unique_fd.h"

/*
 * The vhost-user wire format (QEMU docs/interop/vhost-user.rst "Message Specification"):
 * a 12-byte header in host byte order, then `size` bytes of payload, with at most 8 fds
 * passed as SCM_RIGHTS ancillary data.
 */

namespace vub::vhost {

/** \brief Requests from the front-end to the back-end (ids 1-43 of the specification). */
enum class FrontendRequest : uint32_t {
	None = 0,
	GetFeatures = 1,
	SetFeatures = 2,
	SetOwner = 3,
	ResetOwner = 4,
	SetMemTable = 5,
	SetLogBase = 6,
	SetLogFd = 7,
	SetVringNum = 8,
	SetVringAddr = 9,
	SetVringBase = 10,
	GetVringBase = 11,
	SetVringKick = 12,
	SetVringCall = 13,
	SetVringErr = 14,
	GetProtocolFeatures = 15,
	SetProtocolFeatures = 16,
	GetQueueNum = 17,
	SetVringEnable = 18,
	SendRarp = 19,
	NetSetMtu = 20,
	SetBackendReqFd = 21,
	IotlbMsg = 22,
	SetVringEndian = 23,
	GetConfig = 24,
	SetConfig = 25,
	CreateCryptoSession = 26,
	CloseCryptoSession = 27,
	PostcopyAdvise = 28,
	PostcopyListen = 29,
	PostcopyEnd = 30,
	GetInflightFd = 31,
	SetInflightFd = 32,
	GpuSetSocket = 33,
	ResetDevice = 34,
	VringKick = 35,
	GetMaxMemSlots = 36,
	AddMemReg = 37,
	RemMemReg = 38,
	SetStatus = 39,
	GetStatus = 40,
	GetSharedObject = 41,
	SetDeviceStateFd = 42,
	CheckDeviceState = 43,
	Max = 44, /**< one past the last known request */
};

/** \brief Requests from the back-end to the front-end, on the SET_BACKEND_REQ_FD channel. */
enum class BackendRequest : uint32_t {
	None = 0,
	IotlbMsg = 1,
	ConfigChangeMsg = 2,
	VringHostNotifierMsg = 3,
	VringCall = 4,
	VringErr = 5,
	SharedObjectAdd = 6,
	SharedObjectRemove = 7,
	SharedObjectLookup = 8,
};

/** \brief Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
namespace protocol {
constexpr unsigned kMq = 0;
constexpr unsigned kLogShmfd = 1;
constexpr unsigned kRarp = 2;
constexpr unsigned kReplyAck = 3;
constexpr unsigned kMtu = 4;
constexpr unsigned kBackendReq = 5;
constexpr unsigned kCrossEndian = 6;
constexpr unsigned kCryptoSession = 7;
constexpr unsigned kPagefault = 8;
constexpr unsigned kConfig = 9;
constexpr unsigned kBackendSendFd = 10;
constexpr unsigned kHostNotifier = 11;
constexpr unsigned kInflightShmfd = 12;
constexpr unsigned kResetDevice = 13;
constexpr unsigned kInbandNotifications = 14;
constexpr unsigned kConfigureMemSlots = 15;
constexpr unsigned kStatus = 16;
constexpr unsigned kXenMmap = 17;
constexpr unsigned kSharedObject = 18;
constexpr unsigned kDeviceState = 19;

constexpr uint64_t mask(unsigned bit)
{
	return uint64_t{ 1 } << bit;
}
} /* namespace protocol */

constexpr uint32_t kVersion = 0x1;
constexpr uint32_t kVersionMask = 0x3;
constexpr uint32_t kFlagReply = 0x4;
constexpr uint32_t kFlagNeedReply = 0x8;

constexpr uint64_t kVringIdxMask = 0xff;
constexpr uint64_t kVringNoFdMask = 0x100;

/** \brief At most this many fds travel with one message. */
constexpr unsigned kMaxFds = 8;
/** \brief At most this many regions in SET_MEM_TABLE. */
constexpr unsigned kMaxMemTableRegions = 8;
/**
 * \brief Largest payload vub accepts. The specification sets none; every request vub knows
 * fits in 4 KiB, and each is also checked against its exact size.
 */
constexpr uint32_t kMaxPayloadSize = 4096;
constexpr uint32_t kMaxConfigSize = 256;

struct MessageHeader {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
};
static_assert(sizeof(MessageHeader) == 12);

struct VringStateMsg {
	uint32_t index;
	uint32_t num;
};
static_assert(sizeof(VringStateMsg) == 8);

constexpr uint32_t kVringFLog = 1;

struct VringAddrMsg {
	uint32_t index;
	uint32_t flags;
	uint64_t desc; /**< front-end virtual address (QVA) */
	uint64_t used;
	uint64_t avail;
	uint64_t log; /**< guest physical address of the used ring, for dirty logging */
};
static_assert(sizeof(VringAddrMsg) == 40);

struct MemoryRegionMsg {
	uint64_t guestPhysAddr;
	uint64_t memorySize;
	uint64_t userspaceAddr;
	uint64_t mmapOffset;
};
static_assert(sizeof(MemoryRegionMsg) == 32);

struct MemoryTableMsg {
	uint32_t nregions;
	uint32_t padding;
	MemoryRegionMsg regions[kMaxMemTableRegions];
};

/** \brief Payload size of SET_MEM_TABLE with \a n regions. */
constexpr uint32_t memoryTableMsgSize(uint32_t n)
{
	return 8 + n * static_cast<uint32_t>(sizeof(MemoryRegionMsg));
}

struct SingleRegionMsg {
	uint64_t padding;
	MemoryRegionMsg region;
};
static_assert(sizeof(SingleRegionMsg) == 40);

struct LogMsg {
	uint64_t mmapSize;
	uint64_t mmapOffset;
};
static_assert(sizeof(LogMsg) == 16);

struct IotlbMsg {
	uint64_t iova;
	uint64_t size;
	uint64_t uaddr;
	uint8_t perm;
	uint8_t type;
	uint8_t padding[6];
};
static_assert(sizeof(IotlbMsg) == 32);

/** \brief IotlbMsg::type (the kernel's VHOST_IOTLB_*). */
namespace iotlb {
constexpr uint8_t kMiss = 1;
constexpr uint8_t kUpdate = 2;
constexpr uint8_t kInvalidate = 3;
constexpr uint8_t kAccessFail = 4;
} /* namespace iotlb */

/** \brief IotlbMsg::perm, and the access a translation asks for (VHOST_ACCESS_*). */
constexpr uint8_t kAccessRead = 1;
constexpr uint8_t kAccessWrite = 2;
constexpr uint8_t kAccessReadWrite = 3;

struct ConfigMsg {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t payload[kMaxConfigSize];
};
constexpr uint32_t kConfigHeaderSize = 12;

struct InflightMsg {
	uint64_t mmapSize;
	uint64_t mmapOffset;
	uint16_t numQueues;
	uint16_t queueSize;
	uint32_t padding;
};
static_assert(sizeof(InflightMsg) == 24);

struct VringAreaMsg {
	uint64_t u64;
	uint64_t size;
	uint64_t offset;
};
static_assert(sizeof(VringAreaMsg) == 24);

struct SharedObjectMsg {
	uint8_t uuid[16];
};

struct DeviceStateMsg {
	uint32_t direction;
	uint32_t phase;
};

/**
 * \brief One message as it travels: header, payload and the fds that came with it.
 *
 * The fds are owned (UniqueFd) from the moment they are received, so a message dropped on any
 * path closes them. Move-only; not thread-safe.
 */
struct Message {
	MessageHeader header{};
	alignas(8) uint8_t payload[kMaxPayloadSize]{};
	std::array<UniqueFd, kMaxFds> fds;
	unsigned fdCount = 0;

	uint32_t request() const { return header.request; }
	uint32_t size() const { return header.size; }
	bool needsReply() const { return (header.flags & kFlagNeedReply) != 0; }

	/** \brief Copy the payload into a \a T (callers check the size first). */
	template <typename T>
	T payloadAs() const
	{
		T value{};
		std::memcpy(&value, payload, sizeof(T) < header.size ? sizeof(T) : header.size);
		return value;
	}
	/** \brief Take ownership of fd \a i (the message keeps an empty slot). */
	UniqueFd takeFd(unsigned i) { return std::move(fds[i]); }
	void closeFds()
	{
		for (unsigned i = 0; i < fdCount; i++)
			fds[i].reset();
		fdCount = 0;
	}
};

/** \brief The specification's name of a front-end request, "UNKNOWN" otherwise. */
const char *frontendRequestName(uint32_t request);

} /* namespace vub::vhost */
