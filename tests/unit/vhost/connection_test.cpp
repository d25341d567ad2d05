/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/unique_fd.h"
#include "vub/vhost/connection.h"
#include "vub/vhost/message.h"

namespace vub::vhost {
namespace {

using namespace std::chrono_literals;

/* The number of open fds of this process. */
int openFdCount()
{
	DIR *dir = ::opendir("/proc/self/fd");
	if (!dir)
		return -1;
	int count = 0;
	while (const dirent *entry = ::readdir(dir)) {
		if (entry->d_name[0] != '.')
			count++;
	}
	::closedir(dir);
	return count;
}

/* Send \a bytes with \a fds attached, with a raw sendmsg(), as a peer that is not vub would. */
ssize_t rawSend(int socket, const void *bytes, size_t size, const std::vector<int> &fds)
{
	iovec iov{ const_cast<void *>(bytes), size };
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
	if (!fds.empty()) {
		mh.msg_control = control.data();
		mh.msg_controllen = control.size();
		cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
		std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
	}
	return ::sendmsg(socket, &mh, MSG_NOSIGNAL);
}

/* A pipe whose read end reports EOF only once every copy of the write end is closed. */
struct Pipe {
	Pipe()
	{
		int fds[2];
		if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
			readEnd.reset(fds[0]);
			writeEnd.reset(fds[1]);
		}
	}
	/* \return true when no copy of the write end is open any more. */
	bool writersGone() const
	{
		char c;
		return ::read(readEnd.get(), &c, 1) == 0;
	}

	UniqueFd readEnd;
	UniqueFd writeEnd;
};

/* The back-end's Connection and the raw socket of a test front-end. */
class ConnectionTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		int sv[2];
		ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0)
			<< std::strerror(errno);
		backend = Connection(UniqueFd(sv[0]));
		frontendFd.reset(sv[1]);
		frontend = Connection(UniqueFd(::dup(sv[1])));
	}

	static MessageHeader header(FrontendRequest request, uint32_t size,
				    uint32_t flags = kVersion)
	{
		return MessageHeader{ static_cast<uint32_t>(request), flags, size };
	}

	/* Receive with the expectation of an error; \return its code, 0 for none. */
	int receiveError(Message &msg)
	{
		auto r = backend.receive(msg);
		if (r)
			return 0;
		return r.error().code;
	}

	/* A bad header with a pipe's write end: EPROTO, and the fd is closed. */
	void expectRejected(const MessageHeader &h)
	{
		Pipe pipe;
		ASSERT_TRUE(pipe.readEnd);
		ASSERT_EQ(rawSend(frontendFd.get(), &h, sizeof(h), { pipe.writeEnd.get() }),
			  static_cast<ssize_t>(sizeof(h)));
		pipe.writeEnd.reset();
		EXPECT_EQ(receiveError(msg), EPROTO);
		EXPECT_EQ(msg.fdCount, 0u);
		EXPECT_TRUE(pipe.writersGone()) << "the fd that came with the bad header leaked";
	}

	Connection backend;
	UniqueFd frontendFd; /**< for raw writes */
	Connection frontend; /**< a dup of frontendFd, for whole messages */
	Message msg;
};

TEST_F(ConnectionTest, ReceiveOfNothingReturnsFalse)
{
	auto r = backend.receive(msg);
	ASSERT_TRUE(r) << r.error().what;
	EXPECT_FALSE(*r);
}

TEST_F(ConnectionTest, MessageWithPayloadAndTwoFdsArrivesWhole)
{
	UniqueFd kick(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	Pipe pipe;
	ASSERT_TRUE(kick && pipe.readEnd);
	VringStateMsg state{ 3, 256 };
	int fds[] = { kick.get(), pipe.writeEnd.get() };
	ASSERT_TRUE(
		frontend.send(header(FrontendRequest::SetVringNum, sizeof(state)), &state, fds));

	auto r = backend.receive(msg);
	ASSERT_TRUE(r) << r.error().what;
	ASSERT_TRUE(*r);
	EXPECT_EQ(msg.request(), static_cast<uint32_t>(FrontendRequest::SetVringNum));
	EXPECT_EQ(msg.size(), sizeof(state));
	auto got = msg.payloadAs<VringStateMsg>();
	EXPECT_EQ(got.index, 3u);
	EXPECT_EQ(got.num, 256u);
	ASSERT_EQ(msg.fdCount, 2u);

	/* The received fds are new descriptors of the same files. */
	ASSERT_TRUE(msg.fds[0] && msg.fds[1]);
	EXPECT_NE(msg.fds[0].get(), kick.get());
	uint64_t one = 1;
	ASSERT_EQ(::write(msg.fds[0].get(), &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
	uint64_t value = 0;
	ASSERT_EQ(::read(kick.get(), &value, sizeof(value)), static_cast<ssize_t>(sizeof(value)));
	EXPECT_EQ(value, 1u);

	ASSERT_EQ(::write(msg.fds[1].get(), "x", 1), 1);
	char c = 0;
	ASSERT_EQ(::read(pipe.readEnd.get(), &c, 1), 1);
	EXPECT_EQ(c, 'x');
	EXPECT_NE(::fcntl(msg.fds[1].get(), F_GETFD) & FD_CLOEXEC, 0) << "received fds are cloexec";
}

TEST_F(ConnectionTest, MessageWithoutPayloadArrivesWhole)
{
	ASSERT_TRUE(frontend.send(header(FrontendRequest::SetOwner, 0), nullptr));
	auto r = backend.receive(msg);
	ASSERT_TRUE(r);
	ASSERT_TRUE(*r);
	EXPECT_EQ(msg.request(), static_cast<uint32_t>(FrontendRequest::SetOwner));
	EXPECT_EQ(msg.size(), 0u);
	EXPECT_EQ(msg.fdCount, 0u);
}

TEST_F(ConnectionTest, MessageArrivingInPiecesIsReassembled)
{
	Pipe pipe;
	ASSERT_TRUE(pipe.readEnd);
	uint64_t features = 0x1234'5678'9abc'def0ull;
	MessageHeader h =
		header(FrontendRequest::SetFeatures, sizeof(features), kVersion | kFlagNeedReply);
	const auto *bytes = reinterpret_cast<const uint8_t *>(&h);

	/* The header one byte at a time, the fd with its first byte, each byte followed by a
	 * receive(). */
	for (size_t i = 0; i < sizeof(h); i++) {
		std::vector<int> fds;
		if (i == 0)
			fds.push_back(pipe.writeEnd.get());
		ASSERT_EQ(rawSend(frontendFd.get(), bytes + i, 1, fds), 1);
		std::this_thread::sleep_for(1ms);
		auto r = backend.receive(msg);
		ASSERT_TRUE(r) << "byte " << i << ": " << r.error().what;
		EXPECT_FALSE(*r) << "complete after header byte " << i;
	}
	/* Then the payload in two pieces. */
	const auto *payload = reinterpret_cast<const uint8_t *>(&features);
	ASSERT_EQ(::write(frontendFd.get(), payload, 3), 3);
	auto r = backend.receive(msg);
	ASSERT_TRUE(r);
	EXPECT_FALSE(*r);
	ASSERT_EQ(::write(frontendFd.get(), payload + 3, sizeof(features) - 3),
		  static_cast<ssize_t>(sizeof(features) - 3));
	r = backend.receive(msg);
	ASSERT_TRUE(r) << r.error().what;
	ASSERT_TRUE(*r);

	EXPECT_EQ(msg.request(), static_cast<uint32_t>(FrontendRequest::SetFeatures));
	EXPECT_TRUE(msg.needsReply());
	EXPECT_EQ(msg.payloadAs<uint64_t>(), features);
	ASSERT_EQ(msg.fdCount, 1u);
	EXPECT_EQ(::write(msg.fds[0].get(), "y", 1), 1) << "the fd from the first byte is usable";
}

TEST_F(ConnectionTest, MessageFromASlowWriterThreadIsReassembled)
{
	uint64_t features = 42;
	MessageHeader h = header(FrontendRequest::SetFeatures, sizeof(features));
	uint8_t wire[sizeof(h) + sizeof(features)];
	std::memcpy(wire, &h, sizeof(h));
	std::memcpy(wire + sizeof(h), &features, sizeof(features));
	std::thread writer([&] {
		for (uint8_t byte : wire) {
			std::this_thread::sleep_for(2ms);
			if (::write(frontendFd.get(), &byte, 1) != 1)
				return;
		}
	});
	int partial = 0;
	bool complete = false;
	auto deadline = std::chrono::steady_clock::now() + 2s;
	while (!complete && std::chrono::steady_clock::now() < deadline) {
		auto r = backend.receive(msg);
		if (!r) {
			ADD_FAILURE() << r.error().what;
			break;
		}
		complete = *r;
		if (!complete) {
			partial++;
			std::this_thread::sleep_for(1ms);
		}
	}
	writer.join();
	ASSERT_TRUE(complete);
	EXPECT_GT(partial, 0);
	EXPECT_EQ(msg.payloadAs<uint64_t>(), 42u);
}

TEST_F(ConnectionTest, BackToBackMessagesAreReceivedSeparately)
{
	uint64_t first = 1, second = 2;
	ASSERT_TRUE(frontend.send(header(FrontendRequest::SetFeatures, 8), &first));
	ASSERT_TRUE(frontend.send(header(FrontendRequest::SetProtocolFeatures, 8), &second));
	auto r = backend.receive(msg);
	ASSERT_TRUE(r && *r);
	EXPECT_EQ(msg.request(), static_cast<uint32_t>(FrontendRequest::SetFeatures));
	EXPECT_EQ(msg.payloadAs<uint64_t>(), 1u);
	r = backend.receive(msg);
	ASSERT_TRUE(r && *r);
	EXPECT_EQ(msg.request(), static_cast<uint32_t>(FrontendRequest::SetProtocolFeatures));
	EXPECT_EQ(msg.payloadAs<uint64_t>(), 2u);
	r = backend.receive(msg);
	ASSERT_TRUE(r);
	EXPECT_FALSE(*r);
}

TEST_F(ConnectionTest, ReceivingTheNextMessageClosesTheFdsOfTheLast)
{
	Pipe pipe;
	ASSERT_TRUE(pipe.readEnd);
	int fds[] = { pipe.writeEnd.get() };
	uint64_t index = 0;
	ASSERT_TRUE(frontend.send(header(FrontendRequest::SetVringCall, 8), &index, fds));
	ASSERT_TRUE(frontend.send(header(FrontendRequest::GetFeatures, 0), nullptr));
	pipe.writeEnd.reset();
	auto r = backend.receive(msg);
	ASSERT_TRUE(r && *r);
	ASSERT_EQ(msg.fdCount, 1u);
	EXPECT_FALSE(pipe.writersGone());
	r = backend.receive(msg);
	ASSERT_TRUE(r && *r);
	EXPECT_EQ(msg.fdCount, 0u);
	EXPECT_TRUE(pipe.writersGone()) << "the fd nobody took was closed";
}

TEST_F(ConnectionTest, LargestPayloadIsAccepted)
{
	std::vector<uint8_t> payload(kMaxPayloadSize, 0xab);
	ASSERT_TRUE(
		frontend.send(header(FrontendRequest::SetConfig, kMaxPayloadSize), payload.data()));
	bool complete = false;
	for (int i = 0; i < 100 && !complete; i++) {
		auto r = backend.receive(msg);
		ASSERT_TRUE(r) << r.error().what;
		complete = *r;
	}
	ASSERT_TRUE(complete);
	EXPECT_EQ(msg.size(), kMaxPayloadSize);
	EXPECT_EQ(msg.payload[kMaxPayloadSize - 1], 0xab);
}

TEST_F(ConnectionTest, RejectsABadVersion)
{
	expectRejected(header(FrontendRequest::GetFeatures, 0, 0x2));
	expectRejected(header(FrontendRequest::GetFeatures, 0, 0x0));
}

TEST_F(ConnectionTest, RejectsTheReplyFlag)
{
	expectRejected(header(FrontendRequest::GetFeatures, 0, kVersion | kFlagReply));
}

TEST_F(ConnectionTest, RejectsAPayloadAboveTheLimit)
{
	expectRejected(header(FrontendRequest::SetMemTable, kMaxPayloadSize + 1));
	expectRejected(header(FrontendRequest::SetMemTable, UINT32_MAX));
}

TEST_F(ConnectionTest, NineFdsGiveAnErrorAndLeakNothing)
{
	Pipe pipe;
	ASSERT_TRUE(pipe.readEnd);
	int before = openFdCount();
	ASSERT_GT(before, 0);
	{
		std::vector<UniqueFd> copies;
		std::vector<int> fds;
		for (int i = 0; i < 9; i++) {
			copies.emplace_back(::dup(pipe.writeEnd.get()));
			ASSERT_TRUE(copies.back());
			fds.push_back(copies.back().get());
		}
		MessageHeader h = header(FrontendRequest::SetMemTable, 0);
		ASSERT_EQ(rawSend(frontendFd.get(), &h, sizeof(h), fds),
			  static_cast<ssize_t>(sizeof(h)))
			<< std::strerror(errno);
	}
	pipe.writeEnd.reset();

	EXPECT_EQ(receiveError(msg), EMSGSIZE);
	EXPECT_EQ(msg.fdCount, 0u);
	EXPECT_EQ(openFdCount(), before - 1) << "only the pipe's write end is gone";
	EXPECT_TRUE(pipe.writersGone()) << "a received copy of the write end is still open";
}

TEST_F(ConnectionTest, SendRefusesMoreThanEightFds)
{
	int fds[9];
	for (int &fd : fds)
		fd = frontendFd.get();
	auto r = frontend.send(header(FrontendRequest::SetMemTable, 0), nullptr, fds);
	ASSERT_FALSE(r);
	EXPECT_EQ(r.error().code, EINVAL);
	auto nothing = backend.receive(msg);
	ASSERT_TRUE(nothing);
	EXPECT_FALSE(*nothing) << "nothing was sent";
}

TEST_F(ConnectionTest, PeerCloseGivesConnectionReset)
{
	frontendFd.reset();
	frontend.close();
	EXPECT_EQ(receiveError(msg), ECONNRESET);
}

TEST_F(ConnectionTest, PeerCloseInTheMiddleOfAMessageGivesConnectionReset)
{
	Pipe pipe;
	ASSERT_TRUE(pipe.readEnd);
	MessageHeader h = header(FrontendRequest::SetFeatures, 8);
	ASSERT_EQ(rawSend(frontendFd.get(), &h, 5, { pipe.writeEnd.get() }), 5);
	pipe.writeEnd.reset();
	auto r = backend.receive(msg);
	ASSERT_TRUE(r);
	EXPECT_FALSE(*r);
	frontendFd.reset();
	frontend.close();
	EXPECT_EQ(receiveError(msg), ECONNRESET);
	EXPECT_TRUE(pipe.writersGone()) << "the fd of the partial message leaked";
}

TEST_F(ConnectionTest, ReceiveBlockingTimesOut)
{
	auto start = std::chrono::steady_clock::now();
	auto r = backend.receiveBlocking(msg, 50);
	auto elapsed = std::chrono::steady_clock::now() - start;
	ASSERT_FALSE(r);
	EXPECT_EQ(r.error().code, ETIMEDOUT);
	EXPECT_GE(elapsed, 40ms);
	EXPECT_LT(elapsed, 2s);
}

TEST_F(ConnectionTest, ReceiveBlockingWaitsForALateMessage)
{
	std::thread sender([&] {
		std::this_thread::sleep_for(30ms);
		uint64_t num = 7;
		EXPECT_TRUE(frontend.send(header(FrontendRequest::GetQueueNum, 8), &num));
	});
	auto r = backend.receiveBlocking(msg, 2000);
	sender.join();
	ASSERT_TRUE(r) << r.error().what;
	EXPECT_EQ(msg.request(), static_cast<uint32_t>(FrontendRequest::GetQueueNum));
	EXPECT_EQ(msg.payloadAs<uint64_t>(), 7u);
}

TEST_F(ConnectionTest, ReceiveBlockingAcceptsAReply)
{
	/* The back-end channel waits for the front-end's REPLY_ACK this way (BackendChannel). */
	uint64_t status = 0;
	MessageHeader h =
		header(FrontendRequest::SetVringCall, sizeof(status), kVersion | kFlagReply);
	ASSERT_TRUE(frontend.send(h, &status));
	auto r = backend.receiveBlocking(msg, 1000);
	ASSERT_TRUE(r) << std::strerror(r.error().code) << ": " << r.error().what;
	EXPECT_EQ(msg.header.flags, kVersion | kFlagReply);
	EXPECT_EQ(msg.payloadAs<uint64_t>(), 0u);
}

TEST_F(ConnectionTest, ReceiveBlockingRejectsABadVersion)
{
	ASSERT_TRUE(frontend.send(header(FrontendRequest::GetFeatures, 0, 0x2), nullptr));
	auto r = backend.receiveBlocking(msg, 1000);
	ASSERT_FALSE(r);
	EXPECT_EQ(r.error().code, EPROTO);
}

TEST_F(ConnectionTest, ReceiveBlockingReportsPeerClose)
{
	frontendFd.reset();
	frontend.close();
	auto r = backend.receiveBlocking(msg, 1000);
	ASSERT_FALSE(r);
	EXPECT_EQ(r.error().code, ECONNRESET);
}

TEST_F(ConnectionTest, CloseInvalidatesTheConnection)
{
	EXPECT_TRUE(backend.isValid());
	backend.close();
	EXPECT_FALSE(backend.isValid());
	EXPECT_EQ(backend.fd(), -1);
}

TEST(FrontendRequestName, NamesKnownRequests)
{
	EXPECT_STREQ(frontendRequestName(0), "NONE");
	EXPECT_STREQ(frontendRequestName(1), "GET_FEATURES");
	EXPECT_STREQ(frontendRequestName(static_cast<uint32_t>(FrontendRequest::SetMemTable)),
		     "SET_MEM_TABLE");
	EXPECT_STREQ(frontendRequestName(static_cast<uint32_t>(FrontendRequest::SetBackendReqFd)),
		     "SET_BACKEND_REQ_FD");
	EXPECT_STREQ(frontendRequestName(static_cast<uint32_t>(FrontendRequest::GetMaxMemSlots)),
		     "GET_MAX_MEM_SLOTS");
	EXPECT_STREQ(frontendRequestName(43), "CHECK_DEVICE_STATE");
}

TEST(FrontendRequestName, UnknownRequestsAreUnknown)
{
	EXPECT_STREQ(frontendRequestName(static_cast<uint32_t>(FrontendRequest::Max)), "UNKNOWN");
	EXPECT_STREQ(frontendRequestName(1000), "UNKNOWN");
	EXPECT_STREQ(frontendRequestName(UINT32_MAX), "UNKNOWN");
}

} /* namespace */
} /* namespace vub::vhost */
