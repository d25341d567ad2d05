/* SPDX-License-Identifier: Apache-2.0 */
#include "handler.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "vub/base/log.h"
#include "vub/base/topology.h"
#include "vub/virtio/features.h"

namespace vub::vhost {

using protocol::mask;

namespace {

/** Protocol features whose messages vub implements; only these are ever offered. */
constexpr uint64_t kImplementedProtocolFeatures =
	mask(protocol::kMq) | mask(protocol::kRarp) | mask(protocol::kReplyAck) |
	mask(protocol::kMtu) | mask(protocol::kBackendReq) | mask(protocol::kConfig) |
	mask(protocol::kResetDevice) | mask(protocol::kInbandNotifications) |
	mask(protocol::kConfigureMemSlots) | mask(protocol::kStatus) |
	mask(protocol::kInflightShmfd) | mask(protocol::kLogShmfd);

/** How big a request's payload must be. */
enum class Size : uint8_t { None, U64, State, Addr, MemTable, Region, Log, Iotlb, Config, Inflight, Uuid, Any };
/** Which fds a request carries. */
enum class Fds : uint8_t { None, One, Vring, Regions, ZeroOrOne, Any };

struct Rule {
	Size size;
	Fds fds;
	bool alwaysReply; /**< the specification mandates a reply, whatever NEED_REPLY says */
	bool implemented;
	int8_t protocolBit; /**< the protocol feature that must be negotiated, -1 for none */
};

/* Indexed by request id; every request 1-43 of the specification. */
constexpr Rule kRules[] = {
	/* NONE */ { Size::Any, Fds::Any, false, false, -1 },
	/* GET_FEATURES */ { Size::None, Fds::None, true, true, -1 },
	/* SET_FEATURES */ { Size::U64, Fds::None, false, true, -1 },
	/* SET_OWNER */ { Size::None, Fds::None, false, true, -1 },
	/* RESET_OWNER */ { Size::None, Fds::None, false, true, -1 },
	/* SET_MEM_TABLE */ { Size::MemTable, Fds::Regions, false, true, -1 },
	/* SET_LOG_BASE */ { Size::Log, Fds::One, true, true, protocol::kLogShmfd },
	/* SET_LOG_FD */ { Size::None, Fds::One, false, true, protocol::kLogShmfd },
	/* SET_VRING_NUM */ { Size::State, Fds::None, false, true, -1 },
	/* SET_VRING_ADDR */ { Size::Addr, Fds::None, false, true, -1 },
	/* SET_VRING_BASE */ { Size::State, Fds::None, false, true, -1 },
	/* GET_VRING_BASE */ { Size::State, Fds::None, true, true, -1 },
	/* SET_VRING_KICK */ { Size::U64, Fds::Vring, false, true, -1 },
	/* SET_VRING_CALL */ { Size::U64, Fds::Vring, false, true, -1 },
	/* SET_VRING_ERR */ { Size::U64, Fds::Vring, false, true, -1 },
	/* GET_PROTOCOL_FEATURES */ { Size::None, Fds::None, true, true, -1 },
	/* SET_PROTOCOL_FEATURES */ { Size::U64, Fds::None, false, true, -1 },
	/* GET_QUEUE_NUM */ { Size::None, Fds::None, true, true, -1 },
	/* SET_VRING_ENABLE */ { Size::State, Fds::None, false, true, -1 },
	/* SEND_RARP */ { Size::U64, Fds::None, false, true, protocol::kRarp },
	/* NET_SET_MTU */ { Size::U64, Fds::None, false, true, protocol::kMtu },
	/* SET_BACKEND_REQ_FD */ { Size::None, Fds::One, false, true, protocol::kBackendReq },
	/* IOTLB_MSG */ { Size::Iotlb, Fds::None, true, true, -1 },
	/* SET_VRING_ENDIAN */ { Size::State, Fds::None, false, false, -1 },
	/* GET_CONFIG */ { Size::Config, Fds::None, true, true, protocol::kConfig },
	/* SET_CONFIG */ { Size::Config, Fds::None, false, true, protocol::kConfig },
	/* CREATE_CRYPTO_SESSION */ { Size::Any, Fds::None, true, false, -1 },
	/* CLOSE_CRYPTO_SESSION */ { Size::U64, Fds::None, false, false, -1 },
	/* POSTCOPY_ADVISE */ { Size::None, Fds::None, true, false, -1 },
	/* POSTCOPY_LISTEN */ { Size::None, Fds::None, false, false, -1 },
	/* POSTCOPY_END */ { Size::None, Fds::None, true, false, -1 },
	/* GET_INFLIGHT_FD */ { Size::Inflight, Fds::None, true, true, protocol::kInflightShmfd },
	/* SET_INFLIGHT_FD */ { Size::Inflight, Fds::One, false, true, protocol::kInflightShmfd },
	/* GPU_SET_SOCKET */ { Size::None, Fds::One, false, false, -1 },
	/* RESET_DEVICE */ { Size::None, Fds::None, false, true, protocol::kResetDevice },
	/* VRING_KICK */ { Size::State, Fds::None, false, true, protocol::kInbandNotifications },
	/* GET_MAX_MEM_SLOTS */ { Size::None, Fds::None, true, true, protocol::kConfigureMemSlots },
	/* ADD_MEM_REG */ { Size::Region, Fds::One, false, true, protocol::kConfigureMemSlots },
	/* REM_MEM_REG */ { Size::Region, Fds::ZeroOrOne, false, true, protocol::kConfigureMemSlots },
	/* SET_STATUS */ { Size::U64, Fds::None, false, true, protocol::kStatus },
	/* GET_STATUS */ { Size::None, Fds::None, true, true, protocol::kStatus },
	/* GET_SHARED_OBJECT */ { Size::Uuid, Fds::None, true, false, -1 },
	/* SET_DEVICE_STATE_FD */ { Size::U64, Fds::One, true, false, -1 },
	/* CHECK_DEVICE_STATE */ { Size::None, Fds::None, true, false, -1 },
};
static_assert(sizeof(kRules) / sizeof(kRules[0]) == static_cast<size_t>(FrontendRequest::Max));

constexpr Rule kUnknownRule = { Size::Any, Fds::Any, false, false, -1 };

bool sizeMatches(Size rule, const Message &msg)
{
	uint32_t size = msg.size();
	switch (rule) {
	case Size::None:
		return size == 0;
	case Size::U64:
		return size == sizeof(uint64_t);
	case Size::State:
		return size == sizeof(VringStateMsg);
	case Size::Addr:
		return size == sizeof(VringAddrMsg);
	case Size::MemTable: {
		if (size < 8)
			return false;
		uint32_t n = msg.payloadAs<uint32_t>();
		return n >= 1 && n <= kMaxMemTableRegions && size == memoryTableMsgSize(n);
	}
	case Size::Region:
		return size == sizeof(SingleRegionMsg);
	case Size::Log:
		return size == sizeof(LogMsg);
	case Size::Iotlb:
		return size == sizeof(IotlbMsg);
	case Size::Config: {
		if (size < kConfigHeaderSize)
			return false;
		auto cfg = msg.payloadAs<ConfigMsg>();
		return cfg.size <= kMaxConfigSize && size == kConfigHeaderSize + cfg.size;
	}
	case Size::Inflight:
		return size == sizeof(InflightMsg);
	case Size::Uuid:
		return size == sizeof(SharedObjectMsg);
	case Size::Any:
		return true;
	}
	return false;
}

bool fdsMatch(Fds rule, const Message &msg)
{
	switch (rule) {
	case Fds::None:
		return msg.fdCount == 0;
	case Fds::One:
		return msg.fdCount == 1;
	case Fds::Vring: {
		bool noFd = (msg.payloadAs<uint64_t>() & kVringNoFdMask) != 0;
		return msg.fdCount == (noFd ? 0u : 1u);
	}
	case Fds::Regions:
		return msg.fdCount == msg.payloadAs<uint32_t>();
	case Fds::ZeroOrOne:
		return msg.fdCount <= 1;
	case Fds::Any:
		return true;
	}
	return false;
}

/** The u64 status some mandatory replies carry; the others fail with an empty payload. */
bool failsWithU64(FrontendRequest request, uint64_t *value)
{
	switch (request) {
	case FrontendRequest::SetLogBase:
	case FrontendRequest::IotlbMsg:
	case FrontendRequest::PostcopyEnd:
	case FrontendRequest::CheckDeviceState:
	case FrontendRequest::GetSharedObject:
		*value = 1;
		return true;
	case FrontendRequest::SetDeviceStateFd:
		*value = 0x100 | 1; /* no fd, error */
		return true;
	default:
		return false;
	}
}

} /* namespace */

Result<std::unique_ptr<VhostUserHandler>>
VhostUserHandler::create(std::string name, std::shared_ptr<VhostUserBackend> backend,
			 std::shared_ptr<GuestMemoryAtomic> mem, EventLoop &loop,
			 const DaemonOptions &options, VringFactory factory)
{
	size_t numQueues = backend->numQueues();
	size_t maxQueueSize = backend->maxQueueSize();
	if (numQueues == 0 || numQueues > kVringIdxMask + 1)
		return Error{ EINVAL, "number of queues must be 1 to 256" };
	if (maxQueueSize == 0 || maxQueueSize > virtio::kMaxQueueSize)
		return Error{ EINVAL, "maximum queue size must be 1 to 32768" };
	std::vector<uint64_t> masks = backend->queuesPerThread();
	if (masks.empty())
		return Error{ EINVAL, "queuesPerThread() gives no thread" };

	std::unique_ptr<VhostUserHandler> h(new VhostUserHandler());
	h->name_ = std::move(name);
	h->backend_ = std::move(backend);
	h->mem_ = std::move(mem);
	h->loop_ = &loop;
	h->options_ = options;
	h->offeredFeatures_ = h->backend_->features();
	h->offeredProtocolFeatures_ =
		(h->backend_->protocolFeatures() | mask(protocol::kReplyAck)) & kImplementedProtocolFeatures;

	h->vrings_.resize(numQueues);
	for (auto &slot : h->vrings_)
		slot.vring = factory(*h->mem_, static_cast<uint16_t>(maxQueueSize));

	VUB_TRY(options.polling ? h->createPollers(masks) : h->createWorkers(masks));
	return h;
}

/** Which thread each vring goes to: the first mask with its bit. \return -1 for none. */
static int threadOfQueue(const std::vector<uint64_t> &masks, size_t queue)
{
	for (size_t t = 0; t < masks.size(); t++) {
		if (queue < 64 && (masks[t] & (uint64_t{ 1 } << queue)))
			return static_cast<int>(t);
	}
	return -1;
}

static std::string threadName(const char *prefix, size_t index, const std::string &name)
{
	std::string thread = prefix + std::to_string(index) + "-" + name;
	thread.resize(std::min<size_t>(thread.size(), 15));
	return thread;
}

Result<void> VhostUserHandler::createWorkers(const std::vector<uint64_t> &masks)
{
	for (size_t t = 0; t < masks.size(); t++) {
		std::unique_ptr<VringEpollHandler> worker(new VringEpollHandler());
		worker->backend_ = backend_;
		worker->numQueues_ = vrings_.size();
		worker->threadId_ = t;
		worker->rcu_ = &mem_->rcu();
		auto exit = backend_->exitEvent(t);
		if (exit)
			worker->backendExit_ = std::move(*exit);
		VUB_TRY(worker->start(threadName("vub-w", t, name_).c_str()));
		workers_.push_back(std::move(worker));
	}
	for (size_t q = 0; q < vrings_.size(); q++) {
		int t = threadOfQueue(masks, q);
		if (t < 0)
			return Error{ EINVAL, "a vring is in no thread of queuesPerThread()" };
		VringEpollHandler &worker = *workers_[t];
		vrings_[q].kickEpoll = &worker.epoll_;
		vrings_[q].localIndex = static_cast<uint16_t>(worker.vrings_.size());
		/* The worker reads vrings_ only for tokens registered later, by this thread. */
		worker.vrings_.push_back(vrings_[q].vring.get());
	}
	return {};
}

Result<void> VhostUserHandler::createPollers(const std::vector<uint64_t> &masks)
{
	std::vector<std::unique_ptr<VringPoller>> pollers;
	for (size_t t = 0; t < masks.size(); t++) {
		std::unique_ptr<VringPoller> poller(new VringPoller());
		poller->backend_ = backend_;
		poller->threadId_ = t;
		poller->idleUs_ = options_.pollIdleUs;
		poller->rcu_ = &mem_->rcu();
		pollers.push_back(std::move(poller));
	}
	for (size_t q = 0; q < vrings_.size(); q++) {
		int t = threadOfQueue(masks, q);
		if (t < 0)
			return Error{ EINVAL, "a vring is in no thread of queuesPerThread()" };
		VringPolled *polled = vrings_[q].vring->asPolled();
		if (!polled)
			return Error{ EINVAL, "polling needs VringPolled vrings" };
		if (!options_.pollThreads)
			continue; /* the application polls; kicks are not watched */
		VringPoller &poller = *pollers[t];
		vrings_[q].kickEpoll = &poller.epoll_;
		vrings_[q].localIndex = static_cast<uint16_t>(poller.rings_.size());
		poller.rings_.push_back({ PolledRing{ polled, 0 }, static_cast<uint16_t>(q) });
	}
	if (!options_.pollThreads)
		return {};
	for (size_t t = 0; t < pollers.size(); t++) {
		int cpu = t < options_.pollCpus.size() ? options_.pollCpus[t] : -1;
		VUB_TRY(pollers[t]->start(threadName("vub-p", t, name_).c_str(), cpu));
	}
	pollers_ = std::move(pollers);
	return {};
}

VhostUserHandler::~VhostUserHandler()
{
	for (auto &worker : workers_)
		worker->sendExitEvent();
	for (auto &poller : pollers_)
		poller->stop();
	workers_.clear(); /* joins */
	pollers_.clear();
}

std::vector<VringPoller *> VhostUserHandler::pollers() const
{
	std::vector<VringPoller *> out;
	for (const auto &p : pollers_)
		out.push_back(p.get());
	return out;
}

std::vector<VringEpollHandler *> VhostUserHandler::epollHandlers() const
{
	std::vector<VringEpollHandler *> out;
	for (const auto &w : workers_)
		out.push_back(w.get());
	return out;
}

std::vector<VringT *> VhostUserHandler::vrings() const
{
	std::vector<VringT *> out;
	for (const auto &slot : vrings_)
		out.push_back(slot.vring.get());
	return out;
}

/* Connection life cycle. */

Result<void> VhostUserHandler::serve(Listener &listener)
{
	if (listener_ || !clientPath_.empty())
		return Error{ EBUSY, "daemon already started" };
	listener_ = &listener;
	VUB_TRY(loop_->watch(listener.fd(), EPOLLIN, [this](uint32_t) { acceptPending(); }));
	listening_ = true;
	VUB_LOG(Daemon, Info, "%s: listening on %s", name_.c_str(), listener.path().c_str());
	return {};
}

void VhostUserHandler::acceptPending()
{
	if (isConnected() || !listener_)
		return;
	auto socket = listener_->accept();
	if (!socket) {
		if (socket.error().code != EAGAIN)
			VUB_LOG(Daemon, Warning, "%s: accept: %s", name_.c_str(), strerror(socket.error().code));
		return;
	}
	/* One front-end at a time: the next waits in the backlog until this one leaves. */
	loop_->unwatch(listener_->fd());
	listening_ = false;
	attach(std::move(*socket));
}

Result<void> VhostUserHandler::connectClient(const std::string &path)
{
	if (listener_ || !clientPath_.empty())
		return Error{ EBUSY, "daemon already started" };
	auto socket = connectUnixSocket(path);
	if (!socket && !(options_.reconnect && options_.waitForServer))
		return socket.error();
	clientPath_ = path;
	if (!socket) {
		VUB_LOG(Daemon, Info, "%s: %s: %s; retrying", name_.c_str(), path.c_str(),
			std::strerror(socket.error().code));
		scheduleReconnect();
		return {};
	}
	attach(std::move(*socket));
	return {};
}

void VhostUserHandler::scheduleReconnect()
{
	if (shutdown_ || clientPath_.empty() || !options_.reconnect)
		return;
	reconnectDelayMs_ = reconnectDelayMs_ == 0
				    ? options_.reconnectMinMs
				    : std::min(reconnectDelayMs_ * 2, options_.reconnectMaxMs);
	reconnectTimer_ = loop_->addTimer(std::chrono::milliseconds(reconnectDelayMs_), [this] {
		reconnectTimer_ = 0;
		auto socket = connectUnixSocket(clientPath_);
		if (!socket) {
			scheduleReconnect();
			return;
		}
		attach(std::move(*socket));
	});
}

void VhostUserHandler::attach(UniqueFd socket)
{
	connection_ = Connection(std::move(socket));
	connections_++;
	reconnectDelayMs_ = 0;
	auto watched = loop_->watch(connection_.fd(), EPOLLIN | EPOLLRDHUP,
				    [this](uint32_t events) { onReadable(events); });
	if (!watched) {
		VUB_LOG(Daemon, Error, "%s: cannot watch the connection: %s", name_.c_str(), watched.error().what);
		connection_.close();
		return;
	}
	VUB_LOG(Daemon, Info, "%s: front-end connected", name_.c_str());
}

void VhostUserHandler::onReadable(uint32_t events)
{
	(void)events;
	/* A bounded number of messages per wake-up, so one busy front-end cannot starve the others. */
	for (int i = 0; i < 64 && connection_.isValid(); i++) {
		auto complete = connection_.receive(rx_);
		if (!complete) {
			detach(complete.error().code == ECONNRESET ? "front-end closed the connection"
								   : complete.error().what);
			return;
		}
		if (!*complete)
			return;
		bool keep = handleMessage(rx_);
		rx_.closeFds();
		if (!keep) {
			detach("protocol violation");
			return;
		}
	}
}

void VhostUserHandler::detach(const char *why)
{
	if (!connection_.isValid())
		return;
	VUB_LOG(Daemon, Info, "%s: front-end gone (%s); device reset", name_.c_str(), why);
	loop_->unwatch(connection_.fd());
	connection_.close();
	resetDeviceState();
	if (listener_ && !shutdown_ && !listening_) {
		auto watched = loop_->watch(listener_->fd(), EPOLLIN, [this](uint32_t) { acceptPending(); });
		listening_ = static_cast<bool>(watched);
		/* A front-end already waiting in the backlog gets served now. */
		loop_->post([this] { acceptPending(); });
	}
	scheduleReconnect();
}

void VhostUserHandler::shutdown()
{
	shutdown_ = true;
	if (reconnectTimer_)
		loop_->cancelTimer(reconnectTimer_);
	reconnectTimer_ = 0;
	detach("daemon stopped");
	if (listener_ && listening_)
		loop_->unwatch(listener_->fd());
	listening_ = false;
	listener_ = nullptr;
	for (auto &worker : workers_)
		worker->sendExitEvent();
	for (auto &poller : pollers_)
		poller->stop();
}

void VhostUserHandler::resetDeviceState()
{
	for (auto &slot : vrings_) {
		/* Disabled first: the stop then leaves it not enabled since (enabledSinceStop). */
		slot.vring->getMut()->setEnabled(false);
		stopVring(slot);
		auto state = slot.vring->getMut();
		state->setCall(EventFd());
		state->setErr(EventFd());
		state->setInbandChannel(nullptr, 0);
		state->getQueue().reset();
		state->getPackedQueue().reset();
	}
	regions_.clear();
	repeatedAdds_.clear();
	iotlb_.clear();
	(void)watchIotlbMisses(false);
	log_.reset();
	logFd_.reset();
	mem_->replace(std::make_unique<GuestMemory>());
	inflight_ = InflightArea();
	ackedFeatures_ = 0;
	ackedProtocolFeatures_ = 0;
	featuresSet_ = false;
	status_ = 0;
	backendChannel_.reset();
	backend_->resetDevice();
}

/* Message dispatch. */

bool VhostUserHandler::handleMessage(Message &msg)
{
	uint32_t id = msg.request();
	const Rule &rule = id < static_cast<uint32_t>(FrontendRequest::Max) ? kRules[id] : kUnknownRule;
	auto request = static_cast<FrontendRequest>(id);
	const char *name = frontendRequestName(id);
	VUB_LOG(Protocol, Debug, "%s: %s size %u fds %u flags 0x%x", name_.c_str(), name, msg.size(),
		msg.fdCount, msg.header.flags);

	Reply reply;
	Result<void> result;
	if (!sizeMatches(rule.size, msg))
		result = Error{ EINVAL, "payload size does not match the request" };
	else if (!fdsMatch(rule.fds, msg))
		result = Error{ EBADF, "wrong number of fds for the request" };
	else if (!rule.implemented)
		result = Error{ ENOTSUP, "request not implemented" };
	else if (rule.protocolBit >= 0 && !protocolAcked(static_cast<unsigned>(rule.protocolBit)))
		result = Error{ EPERM, "protocol feature of this request not negotiated" };
	else
		result = dispatch(request, msg, reply);

	if (!result)
		VUB_LOG(Protocol, Warning, "%s: %s refused: %s", name_.c_str(), name, result.error().what);
	/* Whatever fds the request did not take are closed before the front-end hears back. */
	msg.closeFds();

	/* Inband notifications without a channel that can carry them is a broken setup. */
	if (request == FrontendRequest::SetProtocolFeatures && !result && result.error().code == EPROTO)
		return false;

	MessageHeader header{ id, kVersion | kFlagReply, 0 };
	if (rule.alwaysReply) {
		if (!result) {
			uint64_t status;
			reply = Reply();
			if (failsWithU64(request, &status))
				reply.set(status);
			else if (request == FrontendRequest::GetConfig)
				reply.size = kConfigHeaderSize; /* config size 0: failure */
		}
		header.size = reply.size;
		int fds[1] = { reply.fd };
		auto sent = connection_.send(header, reply.payload,
					     reply.fd >= 0 ? std::span<const int>(fds, 1) : std::span<const int>());
		if (reply.fd >= 0)
			::close(reply.fd);
		return static_cast<bool>(sent);
	}
	if (msg.needsReply()) {
		uint64_t ack = result ? 0 : 1;
		header.size = sizeof(ack);
		return static_cast<bool>(connection_.send(header, &ack));
	}
	return true;
}

Result<void> VhostUserHandler::dispatch(FrontendRequest request, Message &msg, Reply &reply)
{
	switch (request) {
	case FrontendRequest::GetFeatures:
		reply.set(offeredFeatures_);
		return {};
	case FrontendRequest::SetFeatures:
		return setFeatures(msg.payloadAs<uint64_t>());
	case FrontendRequest::SetOwner:
		return {};
	case FrontendRequest::ResetOwner:
		/* Deprecated: stop the rings, as libvhost-user does. */
		for (auto &slot : vrings_)
			stopVring(slot);
		return {};
	case FrontendRequest::GetProtocolFeatures:
		reply.set(offeredProtocolFeatures_);
		return {};
	case FrontendRequest::SetProtocolFeatures:
		return setProtocolFeatures(msg.payloadAs<uint64_t>());
	case FrontendRequest::GetQueueNum:
		reply.set(backend_->queueNum());
		return {};
	case FrontendRequest::SetMemTable:
		return setMemTable(msg);
	case FrontendRequest::GetMaxMemSlots:
		reply.set(static_cast<uint64_t>(GuestMemory::kMaxRegions));
		return {};
	case FrontendRequest::AddMemReg:
		return addMemReg(msg);
	case FrontendRequest::RemMemReg:
		return remMemReg(msg);
	case FrontendRequest::SetVringNum:
		return setVringNum(msg.payloadAs<VringStateMsg>());
	case FrontendRequest::SetVringAddr:
		return setVringAddr(msg.payloadAs<VringAddrMsg>());
	case FrontendRequest::SetVringBase:
		return setVringBase(msg.payloadAs<VringStateMsg>());
	case FrontendRequest::GetVringBase: {
		auto state = getVringBase(msg.payloadAs<VringStateMsg>());
		if (!state)
			return state.error();
		reply.set(*state);
		return {};
	}
	case FrontendRequest::SetVringKick:
	case FrontendRequest::SetVringCall:
	case FrontendRequest::SetVringErr:
		return setVringFd(request, msg);
	case FrontendRequest::SetVringEnable:
		return setVringEnable(msg.payloadAs<VringStateMsg>());
	case FrontendRequest::VringKick:
		return vringKick(msg.payloadAs<VringStateMsg>());
	case FrontendRequest::SetBackendReqFd:
		return setBackendReqFd(msg);
	case FrontendRequest::GetConfig:
		return getConfig(msg, reply);
	case FrontendRequest::SetConfig:
		return setConfig(msg);
	case FrontendRequest::SetStatus: {
		uint64_t status = msg.payloadAs<uint64_t>();
		if (status > 0xff)
			return Error{ EINVAL, "status above 8 bits" };
		status_ = static_cast<uint8_t>(status);
		backend_->setStatus(status_);
		return {};
	}
	case FrontendRequest::GetStatus:
		reply.set(static_cast<uint64_t>(status_));
		return {};
	case FrontendRequest::ResetDevice:
		return resetDevice();
	case FrontendRequest::SetLogBase:
		return setLogBase(msg, reply);
	case FrontendRequest::SetLogFd:
		/* Kept, not kicked: the front-end reads the log when it syncs (as DPDK). */
		logFd_ = msg.takeFd(0);
		return {};
	case FrontendRequest::GetInflightFd:
		return getInflightFd(msg.payloadAs<InflightMsg>(), reply);
	case FrontendRequest::SetInflightFd:
		return setInflightFd(msg);
	case FrontendRequest::IotlbMsg:
		VUB_TRY(iotlbMsg(msg.payloadAs<IotlbMsg>()));
		reply.set(uint64_t{ 0 });
		return {};
	case FrontendRequest::SendRarp: {
		uint8_t mac[6];
		std::memcpy(mac, msg.payload, sizeof(mac));
		return backend_->sendRarp(mac);
	}
	case FrontendRequest::NetSetMtu: {
		uint64_t mtu = msg.payloadAs<uint64_t>();
		if (mtu < 68 || mtu > 65535)
			return Error{ EINVAL, "MTU outside 68-65535" };
		return backend_->setMtu(static_cast<uint16_t>(mtu));
	}
	default:
		return Error{ ENOTSUP, "request not implemented" };
	}
}

Result<void> VhostUserHandler::setFeatures(uint64_t features)
{
	if (features & ~offeredFeatures_)
		return Error{ EINVAL, "features acked that were not offered" };
	uint64_t changed = featuresSet_ ? (features ^ ackedFeatures_) : 0;
	if ((changed & ~virtio::bit(virtio::kVhostFLogAll)) && anyVringStarted())
		return Error{ EBUSY, "features changed while rings run" };
	ackedFeatures_ = features;
	featuresSet_ = true;
	bool eventIdx = features & virtio::bit(virtio::kFEventIdx);
	bool indirect = features & virtio::bit(virtio::kFIndirectDesc);
	bool packed = features & virtio::bit(virtio::kFRingPacked);
	bool protocolFeatures = features & virtio::bit(virtio::kVhostUserFProtocolFeatures);
	for (auto &slot : vrings_) {
		{
			auto state = slot.vring->getMut();
			state->setPacked(packed);
			state->visitQueue([&](auto &queue) {
				queue.setEventIdx(eventIdx);
				queue.setIndirect(indirect);
			});
			/* Without protocol features a ring is enabled from the start. */
			if (!protocolFeatures)
				state->setEnabled(true);
		}
		updateKickWatch(slot);
	}
	backend_->ackedFeatures(features);
	backend_->setEventIdx(eventIdx);
	if (iommu() != (iotlbMisses_ != nullptr)) {
		/* Rings and buffers now use I/O virtual addresses, or no longer do. */
		iotlb_.clear();
		VUB_TRY(watchIotlbMisses(iommu()));
		if (!regions_.empty())
			VUB_TRY(installMemory(regions_));
	}
	/* A migration starts or ends logging: the workers see it in the next snapshot. */
	if (changed & virtio::bit(virtio::kVhostFLogAll)) {
		bool on = features & virtio::bit(virtio::kVhostFLogAll);
		VUB_LOG(Memory, Info, "%s: dirty logging %s%s", name_.c_str(), on ? "on" : "off",
			on && !log_ ? " (no log yet)" : "");
		if (log_)
			return installMemory(regions_);
	}
	return {};
}

Result<void> VhostUserHandler::setProtocolFeatures(uint64_t features)
{
	if (features & ~offeredProtocolFeatures_)
		return Error{ EINVAL, "protocol features acked that were not offered" };
	if ((features & mask(protocol::kInbandNotifications)) &&
	    !((features & mask(protocol::kBackendReq)) && (features & mask(protocol::kReplyAck))))
		return Error{ EPROTO, "INBAND_NOTIFICATIONS needs BACKEND_REQ and REPLY_ACK" };
	ackedProtocolFeatures_ = features;
	return {};
}

/* Memory. */

Result<void> VhostUserHandler::installMemory(std::vector<std::shared_ptr<MemoryRegion>> regions,
					     bool keepRunningRings)
{
	auto memory = iommu() ? GuestMemory::createIova(regions, iotlb_, iotlbMisses_)
			      : GuestMemory::create(regions);
	if (!memory)
		return memory.error();
	if (log_ && (ackedFeatures_ & virtio::bit(virtio::kVhostFLogAll)))
		(*memory)->setDirtyLog(log_);
	mem_->replace(std::move(*memory), [this, keepRunningRings](const GuestMemory &next) {
		/* Rings move to the new mappings before the old ones can go. */
		for (auto &slot : vrings_) {
			/* Not even parked: its worker goes on. */
			if (keepRunningRings && slot.running)
				continue;
			auto state = slot.vring->getMut();
			state->visitQueue([&](auto &queue) {
				if (!queue.hasAddresses() || queue.size() == 0)
					return;
				auto translated = queue.translate(next);
				if (translated)
					return;
				/* Under a vIOMMU it restarts once its translations come (tryStart()). */
				if (queue.isReady() && translated.error().code != EAGAIN)
					VUB_LOG(Memory, Warning,
						"%s: a ring is outside the new memory table; stopped",
						name_.c_str());
				queue.setReady(false);
				slot.running = false;
			});
		}
	});
	regions_ = std::move(regions);
	for (auto &slot : vrings_) {
		if (!keepRunningRings || !slot.running)
			updateKickWatch(slot);
	}
	return backend_->updateMemory(*mem_);
}

Result<void> VhostUserHandler::setMemTable(Message &msg)
{
	auto table = msg.payloadAs<MemoryTableMsg>();
	repeatedAdds_.clear();
	std::vector<std::shared_ptr<MemoryRegion>> regions;
	for (uint32_t i = 0; i < table.nregions; i++) {
		auto region = MemoryRegion::create(table.regions[i], msg.takeFd(i));
		if (!region)
			return region.error();
		regions.push_back(std::move(*region));
	}
	return installMemory(std::move(regions));
}

namespace {

/** Whether \a msg names \a region: the same GPA, QVA and size (REM_MEM_REG's match). */
bool namesRegion(const MemoryRegion &region, const MemoryRegionMsg &msg)
{
	return region.gpa() == msg.guestPhysAddr && region.qva() == msg.userspaceAddr &&
	       region.size() == msg.memorySize;
}

} /* namespace */

Result<void> VhostUserHandler::addMemReg(Message &msg)
{
	auto single = msg.payloadAs<SingleRegionMsg>();
	/*
	 * QEMU (7.2) has one vhost device per queue pair on the same connection, and each adds
	 * the guest's regions: a region added again is counted, not mapped twice, and the fd
	 * that came with it is closed. Each REM_MEM_REG takes one count back.
	 */
	for (const auto &region : regions_) {
		if (namesRegion(*region, single.region) &&
		    region->mmapOffset() == single.region.mmapOffset) {
			repeatedAdds_[region.get()]++;
			return {};
		}
	}
	if (regions_.size() >= GuestMemory::kMaxRegions)
		return Error{ ENOSPC, "no free memory slot" };
	auto region = MemoryRegion::create(single.region, msg.takeFd(0));
	if (!region)
		return region.error();
	auto regions = regions_;
	regions.push_back(std::move(*region));
	return installMemory(std::move(regions));
}

Result<void> VhostUserHandler::remMemReg(const Message &msg)
{
	/* A front-end may send the region's fd along: the message's owner closes it. */
	auto single = msg.payloadAs<SingleRegionMsg>();
	auto regions = regions_;
	auto it = std::find_if(regions.begin(), regions.end(),
			       [&](const auto &r) { return namesRegion(*r, single.region); });
	if (it == regions.end())
		return Error{ ENOENT, "no such memory region" };
	if (auto repeated = repeatedAdds_.find(it->get()); repeated != repeatedAdds_.end()) {
		if (--repeated->second == 0)
			repeatedAdds_.erase(repeated);
		return {};
	}
	regions.erase(it);
	return installMemory(std::move(regions));
}

/* Vrings. */

Result<VhostUserHandler::VringSlot *> VhostUserHandler::vringAt(uint64_t index)
{
	if (index >= vrings_.size())
		return Error{ ERANGE, "vring index out of range" };
	return &vrings_[index];
}

bool VhostUserHandler::anyVringStarted()
{
	for (auto &slot : vrings_) {
		if (slot.vring->getRef()->isStarted())
			return true;
	}
	return false;
}

Result<void> VhostUserHandler::setVringNum(const VringStateMsg &state)
{
	auto slot = vringAt(state.index);
	if (!slot)
		return slot.error();
	auto vring = (*slot)->vring->getMut();
	if (vring->isStarted())
		return Error{ EBUSY, "ring size changed while the ring runs" };
	return vring->visitQueue([&](auto &queue) { return queue.setSize(state.num); });
}

Result<void> VhostUserHandler::setVringAddr(const VringAddrMsg &addr)
{
	auto slot = vringAt(addr.index);
	if (!slot)
		return slot.error();
	auto vring = (*slot)->vring->getMut();
	if (vring->isStarted()) {
		/*
		 * A migration sets VHOST_VRING_F_LOG on running rings, the addresses unchanged:
		 * vub logs the used ring at the address it translated itself.
		 */
		bool same = vring->visitQueue([&](const auto &queue) {
			return queue.sameAddresses(addr.desc, addr.avail, addr.used);
		});
		if (!same)
			return Error{ EBUSY, "ring addresses changed while the ring runs" };
		return {};
	}
	return vring->visitQueue([&](auto &queue) -> Result<void> {
		VUB_TRY(queue.setAddresses(addr.desc, addr.avail, addr.used));
		auto translated = queue.translate(*mem_->memory());
		/* Under a vIOMMU the translations come later: tryStart() translates again. */
		if (!translated && translated.error().code == EAGAIN)
			return {};
		if (!translated) {
			queue.reset();
			return translated.error();
		}
		/* A split used ring says its index: resume from what the guest sees. */
		if constexpr (std::is_same_v<std::decay_t<decltype(queue)>, SplitQueue>)
			queue.setNextUsed(queue.guestUsedIdx());
		return {};
	});
}

Result<void> VhostUserHandler::setVringBase(const VringStateMsg &state)
{
	auto slot = vringAt(state.index);
	if (!slot)
		return slot.error();
	auto vring = (*slot)->vring->getMut();
	if (vring->isStarted())
		return Error{ EBUSY, "ring base changed while the ring runs" };
	/* Packed: both positions with their wrap counters (PackedQueue::setBase()). */
	if (vring->isPacked())
		return vring->getPackedQueue().setBase(state.num);
	if (state.num > 0xffff)
		return Error{ EINVAL, "split ring base above 16 bits" };
	/* A ring the guest broke is set up again: it may run again. */
	vring->getQueue().setNextAvail(static_cast<uint16_t>(state.num));
	vring->getQueue().clearBroken();
	return {};
}

Result<VringStateMsg> VhostUserHandler::getVringBase(const VringStateMsg &state)
{
	auto slot = vringAt(state.index);
	if (!slot)
		return slot.error();
	stopVring(**slot);
	auto vring = (*slot)->vring->getRef();
	uint32_t base =
		vring->isPacked() ? vring->getPackedQueue().base() : vring->getQueue().nextAvail();
	return VringStateMsg{ state.index, base };
}

void VhostUserHandler::stopVring(VringSlot &slot)
{
	{
		auto vring = slot.vring->getMut();
		vring->visitQueue([](auto &queue) { queue.setReady(false); });
		vring->markStopped();
	}
	slot.running = false;
	updateKickWatch(slot);
	/* A kick after the stop must not restart the ring: the front-end sends a new one. */
	slot.vring->getMut()->setKick(EventFd());
	slot.kickIsInternal = false;
}

void VhostUserHandler::tryStart(VringSlot &slot)
{
	{
		auto vring = slot.vring->getMut();
		bool hasKick = vring->getKick().isValid();
		bool started = vring->visitQueue([&](auto &queue) {
			if (!hasKick || queue.size() == 0 || !queue.hasAddresses())
				return false;
			if (!queue.isTranslated()) {
				auto translated = queue.translate(*mem_->memory());
				if (!translated) {
					/* EAGAIN: the vIOMMU translations are asked for. */
					if (translated.error().code != EAGAIN)
						VUB_LOG(Vring, Warning,
							"%s: ring not in guest memory; not started",
							name_.c_str());
					return false;
				}
				/* A split used ring says its index: resume from what the guest sees. */
				if constexpr (std::is_same_v<std::decay_t<decltype(queue)>, SplitQueue>)
					queue.setNextUsed(queue.guestUsedIdx());
			}
			if constexpr (std::is_same_v<std::decay_t<decltype(queue)>, SplitQueue>)
				queue.resumeFromUsedIndex();
			startInflight(slot, queue);
			queue.setReady(true);
			return true;
		});
		if (!started)
			return;
		int node = -1;
		vring->visitQueue(
			[&](auto &queue) { node = Topology::nodeOfAddress(queue.descRing()); });
		vring->setNumaNode(node);
		VUB_LOG(Vring, Info, "%s: vring %u started: %s ring, numa node %d", name_.c_str(),
			static_cast<unsigned>(&slot - vrings_.data()),
			vring->isPacked() ? "packed" : "split", node);
	}
	slot.running = true;
	updateKickWatch(slot);
}

InflightLayout VhostUserHandler::inflightLayout() const
{
	return ackedFeatures_ & virtio::bit(virtio::kFRingPacked) ? InflightLayout::Packed
								  : InflightLayout::Split;
}

template <typename Queue>
void VhostUserHandler::startInflight(VringSlot &slot, Queue &queue)
{
	constexpr bool packed = std::is_same_v<Queue, PackedQueue>;
	auto index = static_cast<uint32_t>(&slot - vrings_.data());
	std::conditional_t<packed, InflightQueuePacked, InflightQueueSplit> *region = nullptr;
	if constexpr (packed)
		region = inflight_.packedQueue(index);
	else
		region = inflight_.splitQueue(index);
	if (inflight_.isValid() && index < inflight_.numQueues() && !region) {
		/* Features changed since the area was set up. */
		VUB_LOG(Vring, Warning,
			"%s: vring %u is %s, inflight area for %s rings: not tracked",
			name_.c_str(), index, packed ? "packed" : "split",
			packed ? "split" : "packed");
	}
	if (region && queue.size() > inflight_.queueSize()) {
		VUB_LOG(Vring, Warning, "%s: vring %u of %u entries, inflight area for %u: not tracked",
			name_.c_str(), index, queue.size(), inflight_.queueSize());
		region = nullptr;
	}
	queue.setInflight(region);
	if (uint16_t resubmitted = queue.recoverInflight())
		VUB_LOG(Vring, Info, "%s: vring %u: %u chains taken before a restart come again",
			name_.c_str(), index, resubmitted);
}

void VhostUserHandler::updateKickWatch(VringSlot &slot)
{
	int fd = -1;
	{
		auto vring = slot.vring->getRef();
		if (vring->isStarted() && vring->isEnabled() && vring->getKick().isValid())
			fd = vring->getKick().fd();
	}
	if (fd == slot.watchedKickFd || !slot.kickEpoll)
		return;
	unwatchKick(slot);
	if (fd >= 0) {
		/* Level-triggered: a kick that came before the watch is seen at once. */
		if (slot.kickEpoll->add(fd, EPOLLIN, slot.localIndex))
			slot.watchedKickFd = fd;
	}
}

void VhostUserHandler::unwatchKick(VringSlot &slot)
{
	if (slot.watchedKickFd >= 0)
		slot.kickEpoll->remove(slot.watchedKickFd);
	slot.watchedKickFd = -1;
}

Result<void> VhostUserHandler::setVringFd(FrontendRequest request, Message &msg)
{
	uint64_t value = msg.payloadAs<uint64_t>();
	auto slot = vringAt(value & kVringIdxMask);
	if (!slot)
		return slot.error();
	VringSlot &s = **slot;
	bool noFd = (value & kVringNoFdMask) != 0;
	EventFd fd;
	if (!noFd) {
		auto adopted = EventFd::adopt(msg.takeFd(0));
		if (!adopted)
			return adopted.error();
		fd = std::move(*adopted);
	}

	switch (request) {
	case FrontendRequest::SetVringKick:
		unwatchKick(s);
		if (noFd) {
			/* Polling or in-band kicks: our own eventfd stands in for the front-end's. */
			auto own = EventFd::create();
			if (!own)
				return own.error();
			fd = std::move(*own);
		}
		s.kickIsInternal = noFd;
		s.vring->getMut()->setKick(std::move(fd));
		tryStart(s);
		if (noFd) /* nothing will kick a polled ring: process what is there */
			s.vring->getRef()->getKick().notify();
		return {};
	case FrontendRequest::SetVringCall: {
		auto vring = s.vring->getMut();
		vring->setCall(std::move(fd));
		vring->setInbandChannel(noFd && protocolAcked(protocol::kInbandNotifications) ? backendChannel_ : nullptr,
					static_cast<uint32_t>(value & kVringIdxMask));
		return {};
	}
	case FrontendRequest::SetVringErr:
		s.vring->getMut()->setErr(std::move(fd));
		return {};
	default:
		return Error{ EINVAL, "not a vring fd request" };
	}
}

Result<void> VhostUserHandler::setVringEnable(const VringStateMsg &state)
{
	auto slot = vringAt(state.index);
	if (!slot)
		return slot.error();
	if (state.num > 1)
		return Error{ EINVAL, "enable is neither 0 nor 1" };
	(*slot)->vring->getMut()->setEnabled(state.num == 1);
	updateKickWatch(**slot);
	return {};
}

Result<void> VhostUserHandler::vringKick(const VringStateMsg &state)
{
	auto slot = vringAt(state.index);
	if (!slot)
		return slot.error();
	if (!(*slot)->kickIsInternal)
		return Error{ EINVAL, "in-band kick on a ring with a kick fd" };
	(*slot)->vring->getRef()->getKick().notify();
	return {};
}

Result<void> VhostUserHandler::setBackendReqFd(Message &msg)
{
	backendChannel_ = std::make_shared<BackendChannel>(msg.takeFd(0), protocolAcked(protocol::kReplyAck));
	backend_->setBackendReqFd(backendChannel_);
	return {};
}

Result<void> VhostUserHandler::getConfig(const Message &msg, Reply &reply)
{
	auto request = msg.payloadAs<ConfigMsg>();
	std::vector<uint8_t> data = backend_->getConfig(request.offset, request.size);
	if (data.size() != request.size)
		return Error{ EINVAL, "config space read failed" };
	ConfigMsg out{};
	out.offset = request.offset;
	out.size = request.size;
	out.flags = request.flags;
	if (!data.empty())
		std::memcpy(out.payload, data.data(), data.size());
	std::memcpy(reply.payload, &out, kConfigHeaderSize + data.size());
	reply.size = kConfigHeaderSize + static_cast<uint32_t>(data.size());
	return {};
}

Result<void> VhostUserHandler::setConfig(const Message &msg)
{
	auto request = msg.payloadAs<ConfigMsg>();
	return backend_->setConfig(request.offset, std::span<const uint8_t>(request.payload, request.size));
}

/* vIOMMU. */

Result<void> VhostUserHandler::iotlbMsg(const IotlbMsg &msg)
{
	if (!iommu())
		return Error{ EPROTO, "IOTLB_MSG while VIRTIO_F_IOMMU_PLATFORM is not acked" };
	VUB_LOG(Memory, Debug, "%s: IOTLB %s iova 0x%llx size 0x%llx uaddr 0x%llx perm %u",
		name_.c_str(), msg.type == iotlb::kUpdate ? "update" : "invalidate",
		static_cast<unsigned long long>(msg.iova), static_cast<unsigned long long>(msg.size),
		static_cast<unsigned long long>(msg.uaddr), msg.perm);
	if (msg.type == iotlb::kUpdate)
		VUB_TRY(iotlb_.update(msg));
	else if (msg.type == iotlb::kInvalidate)
		iotlb_.invalidate(msg.iova, msg.size);
	else
		return Error{ EINVAL, "IOTLB_MSG of a type other than update or invalidate" };
	/* Before the new snapshot: the rings that still miss in it ask again. */
	iotlbMisses_->forget();
	VUB_TRY(installMemory(regions_, true));
	for (auto &slot : vrings_) {
		if (!slot.running)
			tryStart(slot);
	}
	return {};
}

Result<void> VhostUserHandler::watchIotlbMisses(bool on)
{
	if (!on) {
		if (iotlbMisses_)
			loop_->unwatch(iotlbMisses_->fd());
		iotlbMisses_.reset();
		return {};
	}
	if (iotlbMisses_)
		return {};
	auto misses = IotlbMisses::create();
	if (!misses)
		return misses.error();
	VUB_TRY(loop_->watch((*misses)->fd(), EPOLLIN, [this](uint32_t) { sendIotlbMisses(); }));
	iotlbMisses_ = std::move(*misses);
	return {};
}

void VhostUserHandler::sendIotlbMisses()
{
	if (!iotlbMisses_)
		return;
	for (const auto &miss : iotlbMisses_->take()) {
		if (!backendChannel_) {
			VUB_LOG(Memory, Warning,
				"%s: IOTLB miss at 0x%llx, and no back-end channel to ask on",
				name_.c_str(), static_cast<unsigned long long>(miss.iova));
			continue;
		}
		IotlbMsg msg{};
		msg.iova = miss.iova;
		msg.perm = miss.perm;
		msg.type = iotlb::kMiss;
		VUB_LOG(Memory, Debug, "%s: IOTLB miss at 0x%llx (%s)", name_.c_str(),
			static_cast<unsigned long long>(miss.iova),
			miss.perm == kAccessRead ? "read" : miss.perm == kAccessWrite ? "write" : "rw");
		auto sent = backendChannel_->request(static_cast<uint32_t>(BackendRequest::IotlbMsg),
						     &msg, sizeof(msg), false);
		if (!sent)
			VUB_LOG(Memory, Warning, "%s: IOTLB miss not sent: %s", name_.c_str(),
				sent.error().what);
	}
}

Result<void> VhostUserHandler::setLogBase(Message &msg, Reply &reply)
{
	const auto &request = msg.payloadAs<LogMsg>();
	auto log = DirtyLog::map(msg.takeFd(0), request.mmapSize, request.mmapOffset);
	if (!log)
		return log.error();
	log_ = std::move(*log);
	VUB_LOG(Memory, Info, "%s: dirty log of %llu bytes%s", name_.c_str(),
		static_cast<unsigned long long>(log_->bytes()),
		ackedFeatures_ & virtio::bit(virtio::kVhostFLogAll) ? ", logging" : "");
	VUB_TRY(installMemory(regions_));
	reply.set(uint64_t{ 0 });
	return {};
}

Result<void> VhostUserHandler::checkInflightRequest(const InflightMsg &request)
{
	if (anyVringStarted())
		return Error{ EBUSY, "inflight area changed while a ring runs" };
	if (request.numQueues == 0 || request.numQueues > vrings_.size())
		return Error{ EINVAL, "inflight area for no queue or more queues than the device has" };
	if (request.queueSize == 0 || request.queueSize > backend_->maxQueueSize())
		return Error{ EINVAL, "inflight area for queues of size 0 or above the maximum" };
	return {};
}

Result<void> VhostUserHandler::getInflightFd(const InflightMsg &request, Reply &reply)
{
	VUB_TRY(checkInflightRequest(request));
	/*
	 * A new area each time, the last one unmapped and closed (CVE-2020-10726). Its layout
	 * follows the features: QEMU sends SET_FEATURES first (vhost_dev_prepare_inflight).
	 */
	auto area = InflightArea::create(request.numQueues, request.queueSize, inflightLayout());
	if (!area)
		return area.error();
	int fd = ::fcntl(area->fd(), F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return errnoError("dup of the inflight fd");
	inflight_ = std::move(*area);
	reply.set(inflight_.describe());
	reply.fd = fd;
	return {};
}

Result<void> VhostUserHandler::setInflightFd(Message &msg)
{
	const auto &request = msg.payloadAs<InflightMsg>();
	VUB_TRY(checkInflightRequest(request));
	auto area = InflightArea::adopt(msg.takeFd(0), request, inflightLayout());
	if (!area)
		return area.error();
	inflight_ = std::move(*area);
	return {};
}

Result<void> VhostUserHandler::resetDevice()
{
	for (auto &slot : vrings_) {
		slot.vring->getMut()->setEnabled(false);
		stopVring(slot);
		auto vring = slot.vring->getMut();
		vring->getQueue().reset();
		vring->getPackedQueue().reset();
	}
	ackedFeatures_ = 0;
	featuresSet_ = false;
	status_ = 0;
	backend_->resetDevice();
	/* No more logging: LOG_ALL is gone with the features. */
	log_.reset();
	if (mem_->memory()->dirtyLog())
		return installMemory(regions_);
	return {};
}

} /* namespace vub::vhost */
