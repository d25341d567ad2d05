/* SPDX-License-Identifier: Apache-2.0 */
#include "test_frontend.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>

namespace vub::test {

using vhost::FrontendRequest;
using vhost::Message;
using vhost::MessageHeader;
namespace protocol = vhost::protocol;

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kReplyFlags = vhost::kFlagReply | vhost::kVersion;
constexpr uint32_t kAnySize = ~0u;
constexpr uint64_t kProtocolFeaturesBit = virtio::bit(virtio::kVhostUserFProtocolFeatures);

Clock::time_point deadlineAfter(int timeoutMs)
{
	return Clock::now() + std::chrono::milliseconds(std::max(timeoutMs, 0));
}

int msLeft(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
	return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

/** \brief poll() \a fd for \a events until \a deadline. \return revents, 0 on timeout, -1 */
int pollUntil(int fd, short events, Clock::time_point deadline)
{
	for (;;) {
		pollfd pfd{ fd, events, 0 };
		int n = ::poll(&pfd, 1, msLeft(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		return n == 0 ? 0 : pfd.revents;
	}
}

bool setNonBlocking(int fd)
{
	int fl = ::fcntl(fd, F_GETFL);
	return fl >= 0 && ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

bool fillAddress(const std::string &path, sockaddr_un &addr)
{
	addr = {};
	addr.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof(addr.sun_path))
		return false;
	std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
	return true;
}

uint32_t req(FrontendRequest request)
{
	return static_cast<uint32_t>(request);
}

} /* namespace */

TestFrontend::TestFrontend(UniqueFd socket)
	: conn_(std::move(socket)), reply_(std::make_unique<Message>()),
	  backendMsg_(std::make_unique<Message>())
{
}

TestFrontend::~TestFrontend() = default;

std::unique_ptr<TestFrontend> TestFrontend::connect(const std::string &path, int timeoutMs)
{
	sockaddr_un addr;
	if (!fillAddress(path, addr))
		return nullptr;
	auto deadline = deadlineAfter(timeoutMs);
	for (;;) {
		UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		if (!s)
			return nullptr;
		if (::connect(s.get(), reinterpret_cast<const sockaddr *>(&addr), sizeof(addr)) ==
		    0)
			return adopt(std::move(s));
		if (errno != ENOENT && errno != ECONNREFUSED && errno != EAGAIN && errno != EINTR)
			return nullptr;
		if (Clock::now() >= deadline)
			return nullptr;
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
}

Result<void> TestFrontend::reconnect(const std::string &path)
{
	auto next = connect(path, timeoutMs_);
	if (!next)
		return Error{ ECONNREFUSED, "cannot connect to the back-end again" };
	conn_ = std::move(next->conn_);
	backendChannel_ = vhost::Connection();
	offeredFeatures_ = features_ = 0;
	offeredProtocolFeatures_ = protocolFeatures_ = 0;
	queueNum_ = maxMemSlots_ = 0;
	return {};
}

std::unique_ptr<TestFrontend> TestFrontend::accept(int listenFd, int timeoutMs)
{
	auto deadline = deadlineAfter(timeoutMs);
	for (;;) {
		int ev = pollUntil(listenFd, POLLIN, deadline);
		if (ev <= 0 || (ev & POLLIN) == 0)
			return nullptr;
		UniqueFd s(::accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC));
		if (s)
			return adopt(std::move(s));
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			return nullptr;
	}
}

std::unique_ptr<TestFrontend> TestFrontend::adopt(UniqueFd socket)
{
	if (!socket || !setNonBlocking(socket.get()))
		return nullptr;
	return std::unique_ptr<TestFrontend>(new TestFrontend(std::move(socket)));
}

UniqueFd TestFrontend::listenUnix(const std::string &path)
{
	sockaddr_un addr;
	if (!fillAddress(path, addr)) {
		errno = ENAMETOOLONG;
		return UniqueFd();
	}
	UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!s)
		return s;
	::unlink(path.c_str());
	if (::bind(s.get(), reinterpret_cast<const sockaddr *>(&addr), sizeof(addr)) != 0 ||
	    ::listen(s.get(), 4) != 0)
		return UniqueFd();
	return s;
}

bool TestFrontend::replyAckActive() const
{
	return useReplyAck_ && hasProtocolFeature(protocol::kReplyAck);
}

bool TestFrontend::hasProtocolFeature(unsigned bit) const
{
	return (protocolFeatures_ & protocol::mask(bit)) != 0;
}

/* ---- low level ---- */

Result<void> TestFrontend::sendRaw(uint32_t request, const void *payload, uint32_t size,
				   std::span<const int> fds, uint32_t flags)
{
	if (!conn_.isValid())
		return Error{ EBADF, "front-end socket is closed" };
	if (size > 0 && payload == nullptr)
		return Error{ EINVAL, "payload size without a payload" };
	MessageHeader h{ request, flags, size };
	return conn_.send(h, payload, fds);
}

Result<Message *> TestFrontend::receiveReply(int timeoutMs)
{
	if (!conn_.isValid())
		return Error{ EBADF, "front-end socket is closed" };
	VUB_TRY(conn_.receiveBlocking(*reply_, timeoutMs));
	return reply_.get();
}

bool TestFrontend::peerClosed(int timeoutMs)
{
	if (!conn_.isValid())
		return true;
	auto deadline = deadlineAfter(timeoutMs);
	for (;;) {
		int ev = pollUntil(conn_.fd(), POLLIN | POLLRDHUP, deadline);
		if (ev < 0)
			return false;
		if (ev == 0)
			return false;
		if (ev & (POLLHUP | POLLERR | POLLNVAL))
			return true;
		char scratch[4096];
		ssize_t n = ::recv(conn_.fd(), scratch, sizeof(scratch), MSG_DONTWAIT);
		if (n == 0)
			return true;
		if (n < 0 && errno == ECONNRESET)
			return true;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return false;
		if (Clock::now() >= deadline)
			return false;
	}
}

/* ---- request helpers ---- */

Result<Message *> TestFrontend::expectReply(FrontendRequest request, uint32_t size)
{
	auto r = receiveReply(timeoutMs_);
	if (!r)
		return r.error();
	Message *m = *r;
	if (m->header.request != req(request))
		return Error{ EPROTO, "reply carries another request id" };
	if (m->header.flags != kReplyFlags)
		return Error{ EPROTO, "reply flags are not REPLY|VERSION" };
	if (size != kAnySize && m->header.size != size)
		return Error{ EPROTO, "reply has the wrong payload size" };
	return m;
}

Result<void> TestFrontend::sendAcked(FrontendRequest request, const void *payload, uint32_t size,
				     std::span<const int> fds)
{
	bool ack = replyAckActive();
	uint32_t flags = vhost::kVersion | (ack ? vhost::kFlagNeedReply : 0);
	VUB_TRY(sendRaw(req(request), payload, size, fds, flags));
	if (!ack)
		return {};
	auto r = expectReply(request, sizeof(uint64_t));
	if (!r)
		return r.error();
	lastAck_ = (*r)->payloadAs<uint64_t>();
	if (lastAck_ != 0)
		return Error{ EREMOTEIO, "back-end answered with a nonzero ack" };
	return {};
}

Result<uint64_t> TestFrontend::getU64(FrontendRequest request)
{
	VUB_TRY(sendRaw(req(request), nullptr, 0));
	auto r = expectReply(request, sizeof(uint64_t));
	if (!r)
		return r.error();
	return (*r)->payloadAs<uint64_t>();
}

Result<void> TestFrontend::setU64(FrontendRequest request, uint64_t value)
{
	return sendAcked(request, &value, sizeof(value));
}

Result<void> TestFrontend::setState(FrontendRequest request, uint32_t index, uint32_t num)
{
	vhost::VringStateMsg s{ index, num };
	return sendAcked(request, &s, sizeof(s));
}

Result<void> TestFrontend::setVringFd(FrontendRequest request, uint32_t index, int fd)
{
	uint64_t value = (index & vhost::kVringIdxMask) | (fd < 0 ? vhost::kVringNoFdMask : 0);
	if (fd < 0)
		return sendAcked(request, &value, sizeof(value));
	int fds[1] = { fd };
	return sendAcked(request, &value, sizeof(value), fds);
}

/* ---- one request each ---- */

Result<uint64_t> TestFrontend::getFeatures()
{
	auto r = getU64(FrontendRequest::GetFeatures);
	if (r)
		offeredFeatures_ = *r;
	return r;
}

Result<void> TestFrontend::setFeatures(uint64_t features)
{
	VUB_TRY(setU64(FrontendRequest::SetFeatures, features));
	features_ = features;
	return {};
}

Result<uint64_t> TestFrontend::getProtocolFeatures()
{
	auto r = getU64(FrontendRequest::GetProtocolFeatures);
	if (r)
		offeredProtocolFeatures_ = *r;
	return r;
}

Result<void> TestFrontend::setProtocolFeatures(uint64_t features)
{
	VUB_TRY(setU64(FrontendRequest::SetProtocolFeatures, features));
	protocolFeatures_ = features;
	return {};
}

Result<void> TestFrontend::setOwner()
{
	return sendAcked(FrontendRequest::SetOwner, nullptr, 0);
}

Result<void> TestFrontend::resetOwner()
{
	return sendAcked(FrontendRequest::ResetOwner, nullptr, 0);
}

Result<uint64_t> TestFrontend::getQueueNum()
{
	return getU64(FrontendRequest::GetQueueNum);
}

Result<uint64_t> TestFrontend::getMaxMemSlots()
{
	return getU64(FrontendRequest::GetMaxMemSlots);
}

Result<void> TestFrontend::setMemTable(std::span<const GuestMemoryFd *const> memory)
{
	if (memory.size() > vhost::kMaxMemTableRegions)
		return Error{ EINVAL, "more than 8 regions in SET_MEM_TABLE" };
	vhost::MemoryRegionMsg regions[vhost::kMaxMemTableRegions];
	int fds[vhost::kMaxMemTableRegions];
	for (size_t i = 0; i < memory.size(); i++) {
		regions[i] = memory[i]->regionMsg();
		fds[i] = memory[i]->fd();
	}
	return setMemTable(std::span(regions, memory.size()), std::span(fds, memory.size()));
}

Result<void> TestFrontend::setMemTable(std::span<const vhost::MemoryRegionMsg> regions,
				       std::span<const int> fds)
{
	if (regions.size() > vhost::kMaxMemTableRegions || fds.size() > vhost::kMaxFds)
		return Error{ EINVAL, "more than 8 regions or fds in SET_MEM_TABLE" };
	vhost::MemoryTableMsg msg{};
	msg.nregions = static_cast<uint32_t>(regions.size());
	std::copy(regions.begin(), regions.end(), msg.regions);
	return sendAcked(FrontendRequest::SetMemTable, &msg,
			 vhost::memoryTableMsgSize(msg.nregions), fds);
}

Result<void> TestFrontend::addMemReg(const GuestMemoryFd &memory, uint64_t mmapOffset)
{
	return addMemReg(memory.regionMsg(mmapOffset), memory.fd());
}

Result<void> TestFrontend::addMemReg(const vhost::MemoryRegionMsg &region, int fd)
{
	vhost::SingleRegionMsg msg{ 0, region };
	if (fd < 0)
		return sendAcked(FrontendRequest::AddMemReg, &msg, sizeof(msg));
	int fds[1] = { fd };
	return sendAcked(FrontendRequest::AddMemReg, &msg, sizeof(msg), fds);
}

Result<void> TestFrontend::remMemReg(const GuestMemoryFd &memory, uint64_t mmapOffset)
{
	return remMemReg(memory.regionMsg(mmapOffset));
}

Result<void> TestFrontend::remMemReg(const vhost::MemoryRegionMsg &region)
{
	vhost::SingleRegionMsg msg{ 0, region };
	return sendAcked(FrontendRequest::RemMemReg, &msg, sizeof(msg));
}

Result<void> TestFrontend::setVringNum(uint32_t index, uint32_t num)
{
	return setState(FrontendRequest::SetVringNum, index, num);
}

Result<void> TestFrontend::setVringAddr(uint32_t index, const SplitDriver &driver, uint32_t flags)
{
	vhost::VringAddrMsg a{};
	a.index = index;
	a.flags = flags;
	a.desc = driver.descQva();
	a.used = driver.usedQva();
	a.avail = driver.availQva();
	a.log = driver.usedGpa();
	return setVringAddr(a);
}

Result<void> TestFrontend::setVringAddr(uint32_t index, const PackedDriver &driver)
{
	vhost::VringAddrMsg a{};
	a.index = index;
	a.desc = driver.descQva();
	a.avail = driver.driverEventQva();
	a.used = driver.deviceEventQva();
	return setVringAddr(a);
}

Result<void> TestFrontend::setVringAddr(const vhost::VringAddrMsg &addr)
{
	return sendAcked(FrontendRequest::SetVringAddr, &addr, sizeof(addr));
}

Result<void> TestFrontend::setVringBase(uint32_t index, uint32_t num)
{
	return setState(FrontendRequest::SetVringBase, index, num);
}

Result<uint32_t> TestFrontend::getVringBase(uint32_t index)
{
	vhost::VringStateMsg s{ index, 0 };
	VUB_TRY(sendRaw(req(FrontendRequest::GetVringBase), &s, sizeof(s)));
	auto r = expectReply(FrontendRequest::GetVringBase, sizeof(s));
	if (!r)
		return r.error();
	auto reply = (*r)->payloadAs<vhost::VringStateMsg>();
	if (reply.index != index)
		return Error{ EPROTO, "GET_VRING_BASE reply for another ring" };
	return reply.num;
}

Result<void> TestFrontend::setVringKick(uint32_t index, int fd)
{
	return setVringFd(FrontendRequest::SetVringKick, index, fd);
}

Result<void> TestFrontend::setVringCall(uint32_t index, int fd)
{
	return setVringFd(FrontendRequest::SetVringCall, index, fd);
}

Result<void> TestFrontend::setVringErr(uint32_t index, int fd)
{
	return setVringFd(FrontendRequest::SetVringErr, index, fd);
}

Result<void> TestFrontend::setVringEnable(uint32_t index, bool enable)
{
	return setState(FrontendRequest::SetVringEnable, index, enable ? 1 : 0);
}

Result<std::vector<uint8_t>> TestFrontend::getConfig(uint32_t offset, uint32_t size, uint32_t flags)
{
	if (size > vhost::kMaxConfigSize)
		return Error{ EINVAL, "config size above 256" };
	vhost::ConfigMsg msg{};
	msg.offset = offset;
	msg.size = size;
	msg.flags = flags;
	VUB_TRY(sendRaw(req(FrontendRequest::GetConfig), &msg, vhost::kConfigHeaderSize + size));
	auto r = expectReply(FrontendRequest::GetConfig, vhost::kConfigHeaderSize + size);
	if (!r)
		return r.error();
	const uint8_t *data = (*r)->payload + vhost::kConfigHeaderSize;
	return std::vector<uint8_t>(data, data + size);
}

Result<void> TestFrontend::setConfig(uint32_t offset, std::span<const uint8_t> data, uint32_t flags)
{
	if (data.size() > vhost::kMaxConfigSize)
		return Error{ EINVAL, "config size above 256" };
	vhost::ConfigMsg msg{};
	msg.offset = offset;
	msg.size = static_cast<uint32_t>(data.size());
	msg.flags = flags;
	std::copy(data.begin(), data.end(), msg.payload);
	return sendAcked(FrontendRequest::SetConfig, &msg, vhost::kConfigHeaderSize + msg.size);
}

Result<void> TestFrontend::setStatus(uint64_t status)
{
	return setU64(FrontendRequest::SetStatus, status);
}

Result<uint64_t> TestFrontend::getStatus()
{
	return getU64(FrontendRequest::GetStatus);
}

Result<void> TestFrontend::addStatus(uint8_t bits)
{
	auto s = getStatus();
	if (!s)
		return s.error();
	if ((*s & bits) == bits)
		return {};
	return setStatus(*s | bits);
}

Result<void> TestFrontend::resetDevice()
{
	return sendAcked(FrontendRequest::ResetDevice, nullptr, 0);
}

Result<void> TestFrontend::sendRarp(const std::array<uint8_t, 6> &mac)
{
	uint64_t value = 0;
	std::memcpy(&value, mac.data(), mac.size());
	return setU64(FrontendRequest::SendRarp, value);
}

Result<void> TestFrontend::netSetMtu(uint64_t mtu)
{
	return setU64(FrontendRequest::NetSetMtu, mtu);
}

Result<void> TestFrontend::vringKick(uint32_t index)
{
	return setState(FrontendRequest::VringKick, index, 0);
}

Result<TestFrontend::InflightFd> TestFrontend::getInflightFd(uint16_t numQueues, uint16_t queueSize)
{
	vhost::InflightMsg msg{};
	msg.numQueues = numQueues;
	msg.queueSize = queueSize;
	VUB_TRY(sendRaw(req(FrontendRequest::GetInflightFd), &msg, sizeof(msg)));
	auto r = expectReply(FrontendRequest::GetInflightFd, sizeof(msg));
	if (!r)
		return r.error();
	InflightFd out;
	out.msg = (*r)->payloadAs<vhost::InflightMsg>();
	if ((*r)->fdCount > 0)
		out.fd = (*r)->takeFd(0);
	return out;
}

Result<void> TestFrontend::setInflightFd(const vhost::InflightMsg &msg, int fd)
{
	if (fd < 0)
		return sendAcked(FrontendRequest::SetInflightFd, &msg, sizeof(msg));
	int fds[1] = { fd };
	return sendAcked(FrontendRequest::SetInflightFd, &msg, sizeof(msg), fds);
}

Result<void> TestFrontend::setLogBase(const vhost::LogMsg &msg, int fd)
{
	int fds[1] = { fd };
	/* Its reply is mandatory (LOG_SHMFD), NEED_REPLY or not. */
	VUB_TRY(sendRaw(req(FrontendRequest::SetLogBase), &msg, sizeof(msg), std::span(fds, 1)));
	auto r = expectReply(FrontendRequest::SetLogBase, sizeof(uint64_t));
	if (!r)
		return r.error();
	if ((*r)->payloadAs<uint64_t>() != 0)
		return Error{ EREMOTEIO, "the back-end refused SET_LOG_BASE" };
	return {};
}

/* ---- back-end channel ---- */

Result<void> TestFrontend::setBackendReqFd()
{
	int sv[2];
	if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return errnoError("socketpair");
	UniqueFd ours(sv[0]);
	UniqueFd theirs(sv[1]);
	if (!setNonBlocking(ours.get()))
		return errnoError("fcntl");
	backendChannel_ = vhost::Connection(std::move(ours));
	int fds[1] = { theirs.get() };
	return sendAcked(FrontendRequest::SetBackendReqFd, nullptr, 0, fds);
}

Result<Message *> TestFrontend::receiveBackendRequest(int timeoutMs)
{
	if (!backendChannel_.isValid())
		return Error{ EBADF, "no back-end channel (SET_BACKEND_REQ_FD not sent)" };
	VUB_TRY(backendChannel_.receiveBlocking(*backendMsg_, timeoutMs));
	return backendMsg_.get();
}

Result<void> TestFrontend::replyBackend(uint32_t request, uint64_t value)
{
	if (!backendChannel_.isValid())
		return Error{ EBADF, "no back-end channel (SET_BACKEND_REQ_FD not sent)" };
	MessageHeader h{ request, kReplyFlags, sizeof(value) };
	return backendChannel_.send(h, &value);
}

/* ---- sequences ---- */

Result<void> TestFrontend::prepareQueues(const NegotiateOptions &options)
{
	if (options.queues == 0 || options.queues > vhost::kVringIdxMask + 1)
		return Error{ EINVAL, "queue count must be 1..256" };
	GuestMemoryFd *mem = options.ringMemory;
	if (!mem && !options.memory.empty())
		mem = options.memory[0];
	if (!mem)
		return Error{ EINVAL, "no guest memory for the rings" };
	queues_.clear();
	queues_.resize(options.queues);
	for (QueueState &q : queues_) {
		try {
			if (options.packed)
				q.packed = std::make_unique<PackedDriver>(*mem, options.queueSize);
			else
				q.driver = std::make_unique<SplitDriver>(*mem, options.queueSize);
		} catch (const std::bad_alloc &) {
			queues_.clear();
			return Error{ ENOMEM, "guest memory too small for the rings" };
		} catch (const std::invalid_argument &) {
			queues_.clear();
			return Error{ EINVAL, "queue size is not a power of two <= 32768" };
		}
		for (EventFd *e : { &q.kick, &q.call, &q.err, &q.maskedCall }) {
			auto created = EventFd::create();
			if (!created) {
				queues_.clear();
				return created.error();
			}
			*e = std::move(*created);
		}
	}
	return {};
}

uint64_t TestFrontend::pickFeatures(const NegotiateOptions &options) const
{
	return (options.features & offeredFeatures_) | (offeredFeatures_ & kProtocolFeaturesBit);
}

Result<void> TestFrontend::negotiateProtocol(const NegotiateOptions &options)
{
	auto pf = getProtocolFeatures();
	if (!pf)
		return pf.error();
	return setProtocolFeatures(*pf & options.protocolFeatures);
}

Result<void> TestFrontend::sendMemory(const NegotiateOptions &options)
{
	if (!hasProtocolFeature(protocol::kConfigureMemSlots))
		return setMemTable(options.memory);
	for (const GuestMemoryFd *m : options.memory)
		VUB_TRY(addMemReg(*m));
	return {};
}

Result<void> TestFrontend::startRing(unsigned i, uint32_t base, bool sendCall, bool wholeBase)
{
	QueueState &q = queueState(i);
	if (q.packed) {
		/* DPDK's encoding: the avail half, its wrap counter set at start; or QEMU's. */
		VUB_TRY(setVringNum(i, q.packed->size()));
		VUB_TRY(setVringBase(i, wholeBase ? base : base | virtio::kPackedBaseAvailWrap));
		VUB_TRY(setVringAddr(i, *q.packed));
	} else {
		VUB_TRY(setVringNum(i, q.driver->size()));
		VUB_TRY(setVringBase(i, base));
		VUB_TRY(setVringAddr(i, *q.driver));
	}
	VUB_TRY(setVringKick(i, q.kick.fd()));
	if (sendCall)
		VUB_TRY(setVringCall(i, q.call.fd()));
	return {};
}

Result<void> TestFrontend::negotiateQemu(const NegotiateOptions &options)
{
	if (!options.keepQueues || queues_.empty())
		VUB_TRY(prepareQueues(options));
	unsigned nq = options.queues;
	unsigned pairs = (nq + 1) / 2;

	/* vhost_dev_init per queue pair; per-device requests only for the first one. */
	for (unsigned p = 0; p < pairs; p++) {
		auto f = getFeatures();
		if (!f)
			return f.error();
		if (*f & kProtocolFeaturesBit) {
			VUB_TRY(negotiateProtocol(options));
			if (p == 0 && hasProtocolFeature(protocol::kMq)) {
				auto n = getQueueNum();
				if (!n)
					return n.error();
				queueNum_ = *n;
			}
			if (hasProtocolFeature(protocol::kConfigureMemSlots)) {
				auto n = getMaxMemSlots();
				if (!n)
					return n.error();
				maxMemSlots_ = *n;
			}
			if (p == 0 && hasProtocolFeature(protocol::kBackendReq))
				VUB_TRY(setBackendReqFd());
		}
		if (p == 0)
			VUB_TRY(setOwner());
		auto f2 = getFeatures();
		if (!f2)
			return f2.error();
		for (unsigned i = 2 * p; i < std::min(2 * p + 2, nq); i++) {
			VUB_TRY(setVringCall(i, queues_[i].maskedCall.fd()));
			VUB_TRY(setVringErr(i, queues_[i].err.fd()));
		}
	}

	/* vhost_net_start: vhost_dev_start per pair, then the enable state. */
	uint64_t features = pickFeatures(options);
	bool enableMsgs = (features & kProtocolFeaturesBit) != 0;
	for (unsigned p = 0; p < pairs; p++) {
		unsigned end = std::min(2 * p + 2, nq);
		if (options.enableBeforeStart && enableMsgs)
			for (unsigned i = 2 * p; i < end; i++)
				VUB_TRY(setVringEnable(i, true));
		VUB_TRY(setFeatures(features));
		if (hasProtocolFeature(protocol::kStatus))
			VUB_TRY(addStatus(virtio::kStatusFeaturesOk));
		if (p == 0 && options.inflightFd) {
			if (!options.inflightFd->isValid()) {
				auto got =
					getInflightFd(static_cast<uint16_t>(nq), options.queueSize);
				if (!got)
					return got.error();
				*options.inflightMsg = got->msg;
				*options.inflightFd = std::move(got->fd);
			}
			VUB_TRY(setInflightFd(*options.inflightMsg, options.inflightFd->get()));
		}
		if (p == 0)
			VUB_TRY(sendMemory(options));
		for (unsigned i = 2 * p; i < end; i++) {
			const QueueState &q = queueState(i);
			if (options.keepQueues && q.packed) {
				/* QEMU: both halves, the avail one reset to the used one. */
				uint32_t half =
					q.packed->usedIdx() |
					(q.packed->usedWrap() ? virtio::kPackedBaseAvailWrap : 0);
				VUB_TRY(startRing(i, half | half << 16, true, true));
				continue;
			}
			uint32_t base = options.keepQueues ? q.driver->usedIdx() : 0;
			VUB_TRY(startRing(i, base, true));
		}
		if (enableMsgs)
			for (unsigned i = 2 * p; i < end; i++)
				VUB_TRY(setVringEnable(i, true));
	}
	if (hasProtocolFeature(protocol::kStatus))
		VUB_TRY(addStatus(virtio::kStatusAcknowledge | virtio::kStatusDriver |
				  virtio::kStatusFeaturesOk | virtio::kStatusDriverOk));
	return {};
}

Result<void> TestFrontend::negotiateDpdk(const NegotiateOptions &options)
{
	VUB_TRY(prepareQueues(options));
	unsigned nq = options.queues;

	VUB_TRY(setOwner());
	auto f = getFeatures();
	if (!f)
		return f.error();
	if (*f & kProtocolFeaturesBit)
		VUB_TRY(negotiateProtocol(options));
	/* "Step 0": the back-end allocates its queue pairs on SET_VRING_CALL. */
	for (unsigned i = 0; i < nq; i++)
		VUB_TRY(setVringCall(i, queues_[i].call.fd()));
	uint64_t features = pickFeatures(options);
	VUB_TRY(setFeatures(features));
	VUB_TRY(setMemTable(options.memory));
	/* SET_VRING_KICK comes last: the back-end takes it as "this ring is ready". */
	for (unsigned i = 0; i < nq; i++)
		VUB_TRY(startRing(i, 0, false));
	if (features & kProtocolFeaturesBit)
		for (unsigned i = 0; i < std::min(2u, nq); i++)
			VUB_TRY(setVringEnable(i, true));
	if (hasProtocolFeature(protocol::kStatus))
		VUB_TRY(setStatus(virtio::kStatusAcknowledge | virtio::kStatusDriver |
				  virtio::kStatusFeaturesOk | virtio::kStatusDriverOk));
	return {};
}

/* ---- queues ---- */

TestFrontend::QueueState &TestFrontend::queueState(unsigned i)
{
	if (i >= queues_.size() || (!queues_[i].driver && !queues_[i].packed))
		throw std::out_of_range("TestFrontend: no such queue (negotiate first)");
	return queues_[i];
}

const TestFrontend::QueueState &TestFrontend::queueState(unsigned i) const
{
	if (i >= queues_.size() || (!queues_[i].driver && !queues_[i].packed))
		throw std::out_of_range("TestFrontend: no such queue (negotiate first)");
	return queues_[i];
}

SplitDriver &TestFrontend::queue(unsigned i)
{
	QueueState &q = queueState(i);
	if (!q.driver)
		throw std::logic_error("TestFrontend: queue is packed (packedQueue())");
	return *q.driver;
}

PackedDriver &TestFrontend::packedQueue(unsigned i)
{
	QueueState &q = queueState(i);
	if (!q.packed)
		throw std::logic_error("TestFrontend: queue is split (queue())");
	return *q.packed;
}

int TestFrontend::kickFd(unsigned i) const
{
	return queueState(i).kick.fd();
}

int TestFrontend::callFd(unsigned i) const
{
	return queueState(i).call.fd();
}

int TestFrontend::errFd(unsigned i) const
{
	return queueState(i).err.fd();
}

void TestFrontend::kick(unsigned i)
{
	queueState(i).kick.notify();
}

bool TestFrontend::kickIfNeeded(unsigned i)
{
	QueueState &q = queueState(i);
	bool eventIdx = (features_ & virtio::bit(virtio::kFEventIdx)) != 0;
	if (q.packed ? !q.packed->needsKick() : !q.driver->needsKick(eventIdx))
		return false;
	q.kick.notify();
	return true;
}

namespace {

bool waitEventFd(const EventFd &e, uint64_t &counter, int timeoutMs)
{
	auto deadline = deadlineAfter(timeoutMs);
	for (;;) {
		int ev = pollUntil(e.fd(), POLLIN, deadline);
		if (ev <= 0)
			return false;
		uint64_t v = e.drain();
		counter += v;
		if (v > 0)
			return true;
		if (Clock::now() >= deadline)
			return false;
	}
}

} /* namespace */

bool TestFrontend::waitCall(unsigned i, int timeoutMs)
{
	QueueState &q = queueState(i);
	return waitEventFd(q.call, q.calls, timeoutMs);
}

uint64_t TestFrontend::callCount(unsigned i)
{
	QueueState &q = queueState(i);
	q.calls += q.call.drain();
	return q.calls;
}

bool TestFrontend::waitErr(unsigned i, int timeoutMs)
{
	QueueState &q = queueState(i);
	return waitEventFd(q.err, q.errs, timeoutMs);
}

uint64_t TestFrontend::errCount(unsigned i)
{
	QueueState &q = queueState(i);
	q.errs += q.err.drain();
	return q.errs;
}

Result<uint32_t> TestFrontend::stopQueue(unsigned i)
{
	queueState(i);
	return getVringBase(i);
}

Result<void> TestFrontend::restartQueue(unsigned i, uint32_t base, bool wholeBase)
{
	VUB_TRY(startRing(i, base, true, wholeBase));
	if (features_ & kProtocolFeaturesBit)
		VUB_TRY(setVringEnable(i, true));
	return {};
}

} /* namespace vub::test */
