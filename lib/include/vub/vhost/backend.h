/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "vub/base/event_fd.h"
#include "vub/base/result.h"

namespace vub::vhost {

class BackendChannel;
class GuestMemoryAtomic;
class VringState;
class VringT;

/**
 * \brief What a device implements to be served by VhostUserDaemon: the seed's
 * `VhostUserBackend` trait.
 *
 * The daemon calls the control functions on its control thread and handleEvent() on the
 * worker thread that owns the vring, so an implementation must be thread-safe (interior
 * mutability, as the seed says). One that is not can implement VhostUserBackendMut and be
 * wrapped with makeBackend().
 */
class VhostUserBackend
{
public:
	virtual ~VhostUserBackend() = default;

	/** \brief Number of virtqueues; read once when the daemon is created. */
	virtual size_t numQueues() const = 0;
	/** \brief Largest ring size SET_VRING_NUM accepts; read once. */
	virtual size_t maxQueueSize() const = 0;
	/**
	 * \brief What GET_QUEUE_NUM answers: the virtqueues by default (as libvhost-user); a
	 * net device answers its queue pairs, which is how QEMU's vhost-user net reads it.
	 */
	virtual uint64_t queueNum() const { return numQueues(); }
	/** \brief The virtio feature bits offered (GET_FEATURES); SET_FEATURES may ack only these. */
	virtual uint64_t features() const = 0;
	/**
	 * \brief The protocol features the device wants. The daemon offers those of them it
	 * implements, always with REPLY_ACK.
	 */
	virtual uint64_t protocolFeatures() const = 0;
	/** \brief SET_FEATURES acked \a features. */
	virtual void ackedFeatures(uint64_t features) { (void)features; }
	/** \brief Whether VIRTIO_RING_F_EVENT_IDX was negotiated (the daemon sets it on the vrings too). */
	virtual void setEventIdx(bool enabled) = 0;
	/** \brief The guest memory table changed (SET_MEM_TABLE, ADD/REM_MEM_REG). */
	virtual Result<void> updateMemory(const GuestMemoryAtomic &mem) = 0;
	/** \brief GET_CONFIG: \a size bytes of config space from \a offset; another size means failure. */
	virtual std::vector<uint8_t> getConfig(uint32_t offset, uint32_t size) const
	{
		(void)offset;
		(void)size;
		return {};
	}
	/** \brief SET_CONFIG. */
	virtual Result<void> setConfig(uint32_t offset, std::span<const uint8_t> data)
	{
		(void)offset;
		(void)data;
		return Error{ ENOTSUP, "config space is read-only" };
	}
	/** \brief The back-end request channel was set up (SET_BACKEND_REQ_FD). */
	virtual void setBackendReqFd(std::shared_ptr<BackendChannel> channel) { (void)channel; }
	/**
	 * \brief Which vrings each worker thread serves: one bit mask per thread, bit i for
	 * vring i. The default is one thread for every vring.
	 */
	virtual std::vector<uint64_t> queuesPerThread() const { return { ~uint64_t{ 0 } }; }
	/**
	 * \brief An eventfd that makes worker \a threadIndex leave its loop when written, or none.
	 * The daemon keeps its own exit event as well.
	 */
	virtual std::optional<EventFd> exitEvent(size_t threadIndex) const
	{
		(void)threadIndex;
		return std::nullopt;
	}
	/**
	 * \brief An event on worker \a threadId: \a deviceEvent is the index in \a vrings of a
	 * kicked vring (already drained, and enabled), or the data of a listener the back-end
	 * registered (above numQueues()). \return an error to stop that worker.
	 *
	 * Return after a bounded amount of work: a guest can keep a ring busy for ever, and the
	 * control thread waits for a vring's lock to stop it (a disconnect, GET_VRING_BASE). With
	 * work left, notify() the ring's kick eventfd to be called again. Chains taken and not
	 * returned (and published) by then are still in flight when GET_VRING_BASE answers.
	 */
	virtual Result<void> handleEvent(uint16_t deviceEvent, uint32_t evset,
					 std::span<VringT *const> vrings, size_t threadId) = 0;
	/**
	 * \brief Polling mode (DaemonOptions::polling): process at most one burst of queue
	 * \a queueIndex, which is started and enabled, on poll worker \a threadId, and notify
	 * the guest at most once. Called in a loop; no lock is held and none may be taken per
	 * packet. \return the chains handled (0 when the ring was empty).
	 */
	virtual unsigned pollQueue(uint16_t queueIndex, VringState &vring, size_t threadId)
	{
		(void)queueIndex;
		(void)vring;
		(void)threadId;
		return 0;
	}
	/** \brief RESET_DEVICE, and a front-end gone: back to the state of a new device. */
	virtual void resetDevice() {}
	/** \brief SEND_RARP: broadcast a RARP for \a mac (offered with protocol feature RARP). */
	virtual Result<void> sendRarp(const uint8_t (&mac)[6])
	{
		(void)mac;
		return Error{ ENOTSUP, "RARP not supported" };
	}
	/** \brief NET_SET_MTU (offered with protocol feature MTU). */
	virtual Result<void> setMtu(uint16_t mtu)
	{
		(void)mtu;
		return Error{ ENOTSUP, "MTU not supported" };
	}
	/** \brief SET_STATUS: the driver's device status byte. */
	virtual void setStatus(uint8_t status) { (void)status; }
};

/**
 * \brief The seed's `VhostUserBackendMut`: the same functions, for a device that is not
 * thread-safe. In C++ the two differ only in that contract, so this is the same interface;
 * serve such a device through makeBackend(), which serialises every call with a mutex.
 */
using VhostUserBackendMut = VhostUserBackend;

/** \brief Serve a VhostUserBackendMut as a VhostUserBackend: each call under one mutex. */
std::shared_ptr<VhostUserBackend> makeBackend(std::unique_ptr<VhostUserBackendMut> backend);

} /* namespace vub::vhost */
