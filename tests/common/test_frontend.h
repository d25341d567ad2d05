/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vub/base/event_fd.h"
#include "vub/base/result.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/connection.h"
#include "vub/vhost/message.h"
#include "vub/virtio/features.h"

#include "guest_memory_fd.h"
#include "packed_driver.h"
#include "split_driver.h"

namespace vub::test {

/** \brief Timeout of every wait of the test front-end unless a test sets another. */
constexpr int kDefaultTimeoutMs = 2000;

/**
 * \brief Protocol features NegotiateOptions asks for by default: those that make the back-end
 * answer more, never those that make it start requests of its own (BACKEND_REQ), change the
 * wire format (XEN_MMAP) or need migration machinery (LOG_SHMFD, PAGEFAULT).
 */
constexpr uint64_t kDefaultProtocolFeatures = vhost::protocol::mask(vhost::protocol::kMq) |
					      vhost::protocol::mask(vhost::protocol::kReplyAck) |
					      vhost::protocol::mask(vhost::protocol::kConfig) |
					      vhost::protocol::mask(vhost::protocol::kResetDevice) |
					      vhost::protocol::mask(vhost::protocol::kStatus);

/** \brief What negotiateQemu() / negotiateDpdk() set up. */
struct NegotiateOptions {
	/** \brief Virtqueues (not pairs): 2 = one RX/TX pair. */
	unsigned queues = 2;
	uint16_t queueSize = 256;
	/**
	 * \brief Packed rings (PackedDriver, reached with packedQueue()) instead of split ones;
	 * add VIRTIO_F_RING_PACKED to \a features too.
	 */
	bool packed = false;
	/**
	 * \brief Virtio features wanted; SET_FEATURES sends (features & offered), plus bit 30
	 * (VHOST_USER_F_PROTOCOL_FEATURES) when offered.
	 */
	uint64_t features = virtio::bit(virtio::kFVersion1);
	/** \brief Protocol features wanted; SET_PROTOCOL_FEATURES sends (these & offered). */
	uint64_t protocolFeatures = kDefaultProtocolFeatures;
	/** \brief The guest memory regions (borrowed; at most 8 without CONFIGURE_MEM_SLOTS). */
	std::vector<GuestMemoryFd *> memory;
	/** \brief Where the rings go; nullptr = memory[0]. */
	GuestMemoryFd *ringMemory = nullptr;
	/**
	 * \brief QEMU only: send SET_VRING_ENABLE 1 for a pair's rings before its SET_FEATURES
	 * too (vhost_net_start restoring the enable state), not just after the rings are set up.
	 */
	bool enableBeforeStart = false;
	/**
	 * \brief QEMU only: the rings of the last negotiation stay (a front-end back on a
	 * restarted back-end, after reconnect()): no prepareQueues(), and each ring's base is
	 * its used index, as QEMU resets its avail index when the back-end died (a packed
	 * ring's: its used position and wrap counter in both halves).
	 */
	bool keepQueues = false;
	/**
	 * \brief QEMU only, with INFLIGHT_SHMFD in protocolFeatures: the inflight area the
	 * front-end keeps across back-end restarts. Before SET_MEM_TABLE, negotiateQemu() asks
	 * GET_INFLIGHT_FD into these when *inflightFd is not valid yet, then sends
	 * SET_INFLIGHT_FD with them, as QEMU's vhost-user-blk does at every start.
	 */
	vhost::InflightMsg *inflightMsg = nullptr;
	UniqueFd *inflightFd = nullptr;
};

/**
 * \brief A vhost-user front-end for tests: drives a back-end over a Unix socket the way QEMU or
 * DPDK virtio-user would, with memfd guest memory and SplitDriver rings, instead of a VM.
 *
 * Three levels: sendRaw()/receiveReply() put any bytes on the wire (hostile tests); one method
 * per request checks the reply (request id, flags == REPLY|VERSION, size) and, once REPLY_ACK is
 * negotiated, sets NEED_REPLY on requests without a reply of their own and turns a nonzero ack
 * into an error; negotiateQemu()/negotiateDpdk() replay a whole start sequence and leave one
 * SplitDriver, kick, call and err eventfd per queue.
 *
 * Every wait is bounded (timeoutMs(), 2000 ms by default): no test hangs on a silent back-end.
 * Errors are vub::Error: ETIMEDOUT (no reply), ECONNRESET (the back-end closed), EPROTO (a
 * malformed reply), EREMOTEIO (a nonzero ack), or the errno of a failed system call.
 * Not thread-safe: one test thread uses a front-end.
 */
class TestFrontend
{
public:
	TestFrontend(const TestFrontend &) = delete;
	TestFrontend &operator=(const TestFrontend &) = delete;
	~TestFrontend();

	/* Connections. */
	/**
	 * \brief Connect to a back-end listening on \a path (server mode), retrying while the
	 * socket does not exist or refuses, for up to \a timeoutMs.
	 * \return the front-end, nullptr on timeout
	 */
	static std::unique_ptr<TestFrontend> connect(const std::string &path,
						     int timeoutMs = kDefaultTimeoutMs);
	/**
	 * \brief Accept a back-end in client mode on \a listenFd (see listenUnix()).
	 * \return the front-end, nullptr when none connected within \a timeoutMs
	 */
	static std::unique_ptr<TestFrontend> accept(int listenFd,
						    int timeoutMs = kDefaultTimeoutMs);
	/** \brief Use an already connected stream socket (e.g. one end of a socketpair). */
	static std::unique_ptr<TestFrontend> adopt(UniqueFd socket);
	/**
	 * \brief Bind and listen on \a path (an existing file there is unlinked first), for
	 * back-ends in client mode. \return the socket, invalid on failure (errno set)
	 */
	static UniqueFd listenUnix(const std::string &path);

	int fd() const { return conn_.fd(); }
	/** \brief Close the socket (the back-end sees a disconnect). */
	void close() { conn_.close(); }
	/**
	 * \brief Connect again to \a path (a restarted back-end), keeping the queues; what was
	 * negotiated is forgotten.
	 */
	Result<void> reconnect(const std::string &path);
	int timeoutMs() const { return timeoutMs_; }
	void setTimeoutMs(int timeoutMs) { timeoutMs_ = timeoutMs; }
	/**
	 * \brief Whether to set NEED_REPLY once REPLY_ACK is negotiated (default true). With
	 * false the front-end behaves like one that never asks for acks.
	 */
	void setUseReplyAck(bool use) { useReplyAck_ = use; }
	/** \brief Whether requests now carry NEED_REPLY and wait for the ack. */
	bool replyAckActive() const;

	/* Low level. */
	/** \brief Send one message as given: header {request, flags, size}, payload, fds. */
	Result<void> sendRaw(uint32_t request, const void *payload, uint32_t size,
			     std::span<const int> fds = {}, uint32_t flags = vhost::kVersion);
	/**
	 * \brief Read one whole message (header, payload, fds) from the back-end, framed by
	 * Connection::receiveBlocking: version 1, at most kMaxPayloadSize, at most 8 fds.
	 * \return the message, owned by the front-end and valid until the next receive
	 */
	Result<vhost::Message *> receiveReply(int timeoutMs = kDefaultTimeoutMs);
	/**
	 * \brief Whether the back-end closed the socket within \a timeoutMs. Bytes that arrive
	 * meanwhile are read and discarded.
	 */
	bool peerClosed(int timeoutMs = kDefaultTimeoutMs);
	/** \brief The u64 of the last ack received. */
	uint64_t lastAck() const { return lastAck_; }

	/* One request each. */
	Result<uint64_t> getFeatures();
	Result<void> setFeatures(uint64_t features);
	Result<uint64_t> getProtocolFeatures();
	Result<void> setProtocolFeatures(uint64_t features);
	Result<void> setOwner();
	Result<void> resetOwner();
	Result<uint64_t> getQueueNum();
	Result<uint64_t> getMaxMemSlots();
	/** \brief SET_MEM_TABLE with one region (and its fd) per GuestMemoryFd (at most 8). */
	Result<void> setMemTable(std::span<const GuestMemoryFd *const> memory);
	/** \brief SET_MEM_TABLE with \a regions as given and \a fds (at most 8 each). */
	Result<void> setMemTable(std::span<const vhost::MemoryRegionMsg> regions,
				 std::span<const int> fds);
	Result<void> addMemReg(const GuestMemoryFd &memory, uint64_t mmapOffset = 0);
	Result<void> addMemReg(const vhost::MemoryRegionMsg &region, int fd);
	Result<void> remMemReg(const GuestMemoryFd &memory, uint64_t mmapOffset = 0);
	Result<void> remMemReg(const vhost::MemoryRegionMsg &region);
	Result<void> setVringNum(uint32_t index, uint32_t num);
	/** \brief SET_VRING_ADDR with the QVAs of \a driver (desc, used, avail), log = used GPA. */
	Result<void> setVringAddr(uint32_t index, const SplitDriver &driver, uint32_t flags = 0);
	Result<void> setVringAddr(uint32_t index, const PackedDriver &driver);
	Result<void> setVringAddr(const vhost::VringAddrMsg &addr);
	Result<void> setVringBase(uint32_t index, uint32_t num);
	/** \brief GET_VRING_BASE (stops the ring). \return the reply's num */
	Result<uint32_t> getVringBase(uint32_t index);
	/** \brief SET_VRING_KICK; \a fd < 0 sends the NOFD bit (0x100) and no fd. */
	Result<void> setVringKick(uint32_t index, int fd);
	Result<void> setVringCall(uint32_t index, int fd);
	Result<void> setVringErr(uint32_t index, int fd);
	Result<void> setVringEnable(uint32_t index, bool enable);
	/** \brief GET_CONFIG of \a size bytes at \a offset. \return the config bytes */
	Result<std::vector<uint8_t>> getConfig(uint32_t offset, uint32_t size, uint32_t flags = 0);
	Result<void> setConfig(uint32_t offset, std::span<const uint8_t> data, uint32_t flags = 0);
	Result<void> setStatus(uint64_t status);
	Result<uint64_t> getStatus();
	/** \brief GET_STATUS, then SET_STATUS(old | \a bits) unless all are set (QEMU). */
	Result<void> addStatus(uint8_t bits);
	Result<void> resetDevice();
	Result<void> sendRarp(const std::array<uint8_t, 6> &mac);
	Result<void> netSetMtu(uint64_t mtu);
	/** \brief VRING_KICK (in-band notification): VringStateMsg{index, 0}. */
	Result<void> vringKick(uint32_t index);

	/** \brief GET_INFLIGHT_FD's answer: the region description and its memfd. */
	struct InflightFd {
		vhost::InflightMsg msg{};
		UniqueFd fd;
	};
	Result<InflightFd> getInflightFd(uint16_t numQueues, uint16_t queueSize);
	Result<void> setInflightFd(const vhost::InflightMsg &msg, int fd);
	/** \brief SET_LOG_BASE with the dirty log in \a fd (LOG_SHMFD); reads the reply. */
	Result<void> setLogBase(const vhost::LogMsg &msg, int fd);

	/* The back-end channel. */
	/**
	 * \brief SET_BACKEND_REQ_FD: create a socketpair, send one end, keep the other as
	 * backendChannel().
	 */
	Result<void> setBackendReqFd();
	/** \brief Our end of the back-end channel (invalid before setBackendReqFd()). */
	vhost::Connection &backendChannel() { return backendChannel_; }
	/** \brief Read one request the back-end sent on its channel. */
	Result<vhost::Message *> receiveBackendRequest(int timeoutMs = kDefaultTimeoutMs);
	/** \brief Answer back-end request \a request with a u64 \a value (REPLY|VERSION). */
	Result<void> replyBackend(uint32_t request, uint64_t value = 0);

	/* Whole sequences (vhost-user-and-virtio.md section 3.3). */
	/**
	 * \brief Set up the queues of \a options (SplitDriver in ringMemory, kick, call and err
	 * eventfds) without sending anything, for tests that write their own sequence.
	 * Replaces queues set up before.
	 */
	Result<void> prepareQueues(const NegotiateOptions &options);
	/**
	 * \brief The start sequence of QEMU's vhost-user-net, pair by pair:
	 * GET_FEATURES, [GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (MQ, pair 0), GET_MAX_MEM_SLOTS
	 * (CONFIGURE_MEM_SLOTS), SET_BACKEND_REQ_FD (BACKEND_REQ, pair 0)], SET_OWNER (pair 0),
	 * GET_FEATURES, per vq SET_VRING_CALL (a masked notifier) and SET_VRING_ERR; then per
	 * pair [SET_VRING_ENABLE 1 if enableBeforeStart], SET_FEATURES, [GET/SET_STATUS
	 * FEATURES_OK], SET_MEM_TABLE or ADD_MEM_REG per region (pair 0), per vq SET_VRING_NUM,
	 * BASE 0, ADDR, KICK, CALL, then SET_VRING_ENABLE 1 per vq (bit 30 negotiated); last
	 * GET/SET_STATUS DRIVER_OK (STATUS).
	 * \return the first error; the queues are set up either way
	 */
	Result<void> negotiateQemu(const NegotiateOptions &options);
	/**
	 * \brief The start sequence of DPDK virtio-user: SET_OWNER, GET_FEATURES,
	 * [GET/SET_PROTOCOL_FEATURES], SET_VRING_CALL for every queue, SET_FEATURES,
	 * SET_MEM_TABLE, per queue SET_VRING_NUM, BASE 0, ADDR, KICK, then SET_VRING_ENABLE 1
	 * for queue pair 0 (bit 30 negotiated), SET_STATUS with DRIVER_OK (STATUS negotiated).
	 */
	Result<void> negotiateDpdk(const NegotiateOptions &options);

	uint64_t offeredFeatures() const { return offeredFeatures_; }
	/** \brief The last value sent with SET_FEATURES. */
	uint64_t features() const { return features_; }
	uint64_t offeredProtocolFeatures() const { return offeredProtocolFeatures_; }
	/** \brief The last value sent with SET_PROTOCOL_FEATURES. */
	uint64_t protocolFeatures() const { return protocolFeatures_; }
	/** \brief GET_QUEUE_NUM's answer during negotiation, 0 when not asked. */
	uint64_t queueNum() const { return queueNum_; }
	/** \brief GET_MAX_MEM_SLOTS's answer during negotiation, 0 when not asked. */
	uint64_t maxMemSlots() const { return maxMemSlots_; }

	/* The queues after prepareQueues() or a negotiation. */
	unsigned numQueues() const { return static_cast<unsigned>(queues_.size()); }
	/** \brief The driver of queue \a i; throws std::out_of_range when there is none. */
	SplitDriver &queue(unsigned i);
	/** \brief The packed ring of queue \a i (NegotiateOptions::packed). */
	PackedDriver &packedQueue(unsigned i);
	int kickFd(unsigned i) const;
	int callFd(unsigned i) const;
	int errFd(unsigned i) const;
	/** \brief Write the kick eventfd of queue \a i. */
	void kick(unsigned i);
	/** \brief Kick queue \a i if its driver says the device wants it (EVENT_IDX aware). */
	bool kickIfNeeded(unsigned i);
	/** \brief Wait up to \a timeoutMs for the call eventfd of \a i; drains it. */
	bool waitCall(unsigned i, int timeoutMs = kDefaultTimeoutMs);
	/** \brief Sum of the call eventfd values read so far (what is pending is read first). */
	uint64_t callCount(unsigned i);
	/** \brief Wait up to \a timeoutMs for the err eventfd of \a i; drains it. */
	bool waitErr(unsigned i, int timeoutMs = kDefaultTimeoutMs);
	uint64_t errCount(unsigned i);
	/** \brief GET_VRING_BASE of queue \a i. \return the base to restart from */
	Result<uint32_t> stopQueue(unsigned i);
	/**
	 * \brief SET_VRING_NUM, SET_VRING_BASE \a base, SET_VRING_ADDR, SET_VRING_KICK,
	 * SET_VRING_CALL, then SET_VRING_ENABLE 1 (bit 30 negotiated) for queue \a i. A packed
	 * ring's \a base is DPDK's avail half, its wrap counter set here, unless \a wholeBase
	 * (what GET_VRING_BASE answered, sent as it is).
	 */
	Result<void> restartQueue(unsigned i, uint32_t base, bool wholeBase = false);

private:
	struct QueueState {
		std::unique_ptr<SplitDriver> driver;
		std::unique_ptr<PackedDriver> packed; /**< instead of \a driver */
		EventFd kick;
		EventFd call;
		EventFd err;
		EventFd maskedCall; /**< QEMU's masked notifier, sent before the ring starts */
		uint64_t calls = 0;
		uint64_t errs = 0;
	};

	explicit TestFrontend(UniqueFd socket);

	QueueState &queueState(unsigned i);
	const QueueState &queueState(unsigned i) const;
	/** \brief Send \a request; with REPLY_ACK active set NEED_REPLY and check the ack. */
	Result<void> sendAcked(vhost::FrontendRequest request, const void *payload, uint32_t size,
			       std::span<const int> fds = {});
	/** \brief Read the reply to \a request; \a size ~0u accepts any size. */
	Result<vhost::Message *> expectReply(vhost::FrontendRequest request, uint32_t size);
	Result<uint64_t> getU64(vhost::FrontendRequest request);
	Result<void> setU64(vhost::FrontendRequest request, uint64_t value);
	Result<void> setState(vhost::FrontendRequest request, uint32_t index, uint32_t num);
	Result<void> setVringFd(vhost::FrontendRequest request, uint32_t index, int fd);
	Result<void> negotiateProtocol(const NegotiateOptions &options);
	Result<void> sendMemory(const NegotiateOptions &options);
	/**
	 * \brief SET_VRING_NUM, BASE, ADDR, KICK [, CALL] for queue \a i. A packed ring's \a base
	 * is DPDK's avail half (its wrap counter set here) unless \a wholeBase: then it is sent as
	 * given, both halves (QEMU).
	 */
	Result<void> startRing(unsigned i, uint32_t base, bool sendCall, bool wholeBase = false);
	uint64_t pickFeatures(const NegotiateOptions &options) const;
	bool hasProtocolFeature(unsigned bit) const;

	vhost::Connection conn_;
	vhost::Connection backendChannel_;
	std::unique_ptr<vhost::Message> reply_;
	std::unique_ptr<vhost::Message> backendMsg_;
	std::vector<QueueState> queues_;
	int timeoutMs_ = kDefaultTimeoutMs;
	bool useReplyAck_ = true;
	uint64_t lastAck_ = 0;
	uint64_t offeredFeatures_ = 0;
	uint64_t features_ = 0;
	uint64_t offeredProtocolFeatures_ = 0;
	uint64_t protocolFeatures_ = 0;
	uint64_t queueNum_ = 0;
	uint64_t maxMemSlots_ = 0;
};

} /* namespace vub::test */
