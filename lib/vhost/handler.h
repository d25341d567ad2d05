/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vub/base/event_loop.h"
#include "vub/base/result.h"
#include "vub/vhost/backend.h"
#include "vub/vhost/backend_channel.h"
#include "vub/vhost/connection.h"
#include "vub/vhost/daemon.h"
#include "vub/vhost/guest_memory.h"
#include "vub/vhost/inflight.h"
#include "vub/vhost/iotlb.h"
#include "vub/vhost/message.h"
#include "vub/vhost/vring.h"

namespace vub::vhost {

/**
 * \brief The protocol state machine of one daemon: decodes and validates every front-end
 * request, keeps the negotiated features, the memory table and the vrings, and runs the
 * connection (server or client mode) on the control loop.
 *
 * Thread-bound to the control loop, except that the vrings and workers it owns run on their
 * own threads.
 */
class VhostUserHandler
{
public:
	using VringFactory = std::unique_ptr<VringT> (*)(const GuestMemoryAtomic &, uint16_t);

	static Result<std::unique_ptr<VhostUserHandler>>
	create(std::string name, std::shared_ptr<VhostUserBackend> backend,
	       std::shared_ptr<GuestMemoryAtomic> mem, EventLoop &loop, const DaemonOptions &options,
	       VringFactory factory);
	~VhostUserHandler();

	Result<void> serve(Listener &listener);
	Result<void> connectClient(const std::string &path);
	/** \brief Close the connection, stop listening or reconnecting, and stop the workers. */
	void shutdown();

	bool isConnected() const { return connection_.isValid(); }
	uint64_t connectionCount() const { return connections_; }
	std::vector<VringEpollHandler *> epollHandlers() const;
	std::vector<VringPoller *> pollers() const;
	std::vector<VringT *> vrings() const;

	/**
	 * \brief Handle one complete message and send what it calls for.
	 * \return false when the connection must be closed (the stream or the state is beyond
	 * repair); every other bad request is refused and the connection kept.
	 */
	bool handleMessage(Message &msg);

private:
	struct VringSlot {
		std::unique_ptr<VringT> vring;
		Epoll *kickEpoll = nullptr; /**< the epoll of the worker or poller that owns the ring */
		uint16_t localIndex = 0;    /**< the ring's token in that epoll */
		int watchedKickFd = -1;
		bool kickIsInternal = false; /**< NOFD kick: in-band VRING_KICK writes our own eventfd */
		/** Started: the control thread's copy, read without parking a polled ring. */
		bool running = false;
	};

	/** \brief What a request handler answers. */
	struct Reply {
		uint32_t size = 0;
		alignas(8) uint8_t payload[sizeof(ConfigMsg)]{};
		int fd = -1;
		template <typename T>
		void set(const T &value)
		{
			static_assert(sizeof(T) <= sizeof(payload));
			std::memcpy(payload, &value, sizeof(T));
			size = sizeof(T);
		}
	};

	VhostUserHandler() = default;

	/* Connection life cycle. */
	void attach(UniqueFd socket);
	void detach(const char *why);
	void onReadable(uint32_t events);
	void acceptPending();
	void scheduleReconnect();
	Result<void> createWorkers(const std::vector<uint64_t> &masks);
	Result<void> createPollers(const std::vector<uint64_t> &masks);
	void unwatchKick(VringSlot &slot);
	void resetDeviceState();

	/* Requests. */
	Result<void> dispatch(FrontendRequest request, Message &msg, Reply &reply);
	Result<void> setFeatures(uint64_t features);
	Result<void> setProtocolFeatures(uint64_t features);
	Result<void> setMemTable(Message &msg);
	Result<void> addMemReg(Message &msg);
	Result<void> remMemReg(const Message &msg);
	/**
	 * \brief Publish a memory snapshot of \a regions (by I/O virtual address under a
	 * vIOMMU). Rings move to it, but with \a keepRunningRings (the regions are the same, only
	 * the IOTLB changed) a running ring keeps its translation: a guest's IOTLB flushes would
	 * stop it at every flush otherwise, and a driver unmaps its rings only after a reset.
	 */
	Result<void> installMemory(std::vector<std::shared_ptr<MemoryRegion>> regions,
				   bool keepRunningRings = false);
	Result<VringSlot *> vringAt(uint64_t index);
	Result<void> setVringNum(const VringStateMsg &state);
	Result<void> setVringAddr(const VringAddrMsg &addr);
	Result<void> setVringBase(const VringStateMsg &state);
	Result<VringStateMsg> getVringBase(const VringStateMsg &state);
	Result<void> setVringFd(FrontendRequest request, Message &msg);
	Result<void> setVringEnable(const VringStateMsg &state);
	Result<void> vringKick(const VringStateMsg &state);
	Result<void> setBackendReqFd(Message &msg);
	Result<void> getConfig(const Message &msg, Reply &reply);
	Result<void> setConfig(const Message &msg);
	Result<void> resetDevice();
	Result<void> checkInflightRequest(const InflightMsg &request);
	Result<void> getInflightFd(const InflightMsg &request, Reply &reply);
	Result<void> setInflightFd(Message &msg);
	/** \brief SET_LOG_BASE: map the dirty log; the workers log once LOG_ALL is acked. */
	Result<void> setLogBase(Message &msg, Reply &reply);
	/**
	 * \brief IOTLB_MSG: an update or invalidation of the device IOTLB, published to the
	 * workers in a new memory snapshot; rings waiting for their translations start.
	 */
	Result<void> iotlbMsg(const IotlbMsg &msg);
	/** \brief Create and watch the IOTLB miss queue, or drop it. */
	Result<void> watchIotlbMisses(bool on);
	/** \brief Ask the front-end for the translations the workers miss (BACKEND_IOTLB_MSG). */
	void sendIotlbMisses();
	bool iommu() const { return (ackedFeatures_ & virtio::bit(virtio::kFAccessPlatform)) != 0; }
	/** \brief Give a starting ring its inflight region and recover what it holds. */
	template <typename Queue>
	void startInflight(VringSlot &slot, Queue &queue);
	/** \brief The layout of the inflight area for the features acked now. */
	InflightLayout inflightLayout() const;
	/** \brief Start the ring when it can be: configured, translated and kicked. */
	void tryStart(VringSlot &slot);
	/** \brief Watch the kick fd exactly while the ring is started and enabled. */
	void updateKickWatch(VringSlot &slot);
	void stopVring(VringSlot &slot);
	bool anyVringStarted();
	bool protocolAcked(unsigned bit) const { return (ackedProtocolFeatures_ & protocol::mask(bit)) != 0; }

	std::string name_;
	std::shared_ptr<VhostUserBackend> backend_;
	std::shared_ptr<GuestMemoryAtomic> mem_;
	EventLoop *loop_ = nullptr;
	DaemonOptions options_;
	std::vector<VringSlot> vrings_;
	std::vector<std::unique_ptr<VringEpollHandler>> workers_;
	std::vector<std::unique_ptr<VringPoller>> pollers_;
	std::vector<std::shared_ptr<MemoryRegion>> regions_;
	/** ADD_MEM_REG of a region already there, by region: REM_MEM_REG takes these first. */
	std::map<const MemoryRegion *, unsigned> repeatedAdds_;
	InflightArea inflight_;
	/** The dirty log of SET_LOG_BASE; in the memory snapshot while LOG_ALL is acked. */
	std::shared_ptr<const DirtyLog> log_;
	/** The device IOTLB while VIRTIO_F_IOMMU_PLATFORM is acked; in the memory snapshot. */
	Iotlb iotlb_;
	/** Where the workers post IOTLB misses; watched on the control loop. */
	std::shared_ptr<IotlbMisses> iotlbMisses_;
	/** SET_LOG_FD's eventfd, kept until the next one or a reset. */
	UniqueFd logFd_;

	uint64_t offeredFeatures_ = 0;
	uint64_t offeredProtocolFeatures_ = 0;
	uint64_t ackedFeatures_ = 0;
	uint64_t ackedProtocolFeatures_ = 0;
	bool featuresSet_ = false;
	uint8_t status_ = 0;
	std::shared_ptr<BackendChannel> backendChannel_;

	Connection connection_;
	Message rx_;
	Listener *listener_ = nullptr;
	bool listening_ = false;
	std::string clientPath_;
	EventLoop::TimerId reconnectTimer_ = 0;
	unsigned reconnectDelayMs_ = 0;
	bool shutdown_ = false;
	uint64_t connections_ = 0;
};

} /* namespace vub::vhost */
