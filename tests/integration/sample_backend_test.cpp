/* SPDX-License-Identifier: Apache-2.0 */
/*
 * End to end through the sample back-end: a VhostUserDaemon serving SampleBackend on a Unix
 * socket, driven by the in-tree test front-end with memfd guest memory, as QEMU and DPDK
 * virtio-user would drive it.
 */
#include "sample_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/memory_mapping.h"
#include "vub/vhost/daemon.h"
#include "vub/vhost/inflight.h"

#include "test_frontend.h"

using namespace vub;
using namespace vub::vhost;
using namespace vub::test;
using vub::sample::SampleBackend;

namespace {

constexpr uint64_t kGpaBase = 0x100000;
constexpr size_t kMemSize = 16 << 20;

size_t openFdCount()
{
	size_t n = 0;
	DIR *dir = opendir("/proc/self/fd");
	while (dirent *e = readdir(dir))
		n += e->d_name[0] != '.';
	closedir(dir);
	return n;
}

template <typename Pred>
bool waitFor(Pred pred, int timeoutMs = 2000)
{
	auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
	while (!pred()) {
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		std::this_thread::sleep_for(std::chrono::microseconds(200));
	}
	return true;
}

uint64_t fnv(uint64_t hash, const uint8_t *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		hash = (hash ^ data[i]) * SampleBackend::kFnvPrime;
	return hash;
}

class SampleBackendTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
		std::replace(name.begin(), name.end(), '/', '-'); /* parameterized tests */
		path_ = "/tmp/vub-e2e-" + std::to_string(getpid()) + "-" + name + ".sock";
		backend_ = std::make_shared<SampleBackend>(4, 1024, 2, packedRings_);
		auto daemon = makeDaemon();
		ASSERT_TRUE(daemon) << daemon.error().what;
		daemon_ = std::move(*daemon);
		auto listener = Listener::create(path_);
		ASSERT_TRUE(listener) << listener.error().what;
		listener_ = std::move(*listener);
		ASSERT_TRUE(daemon_->start(listener_));
		mem_ = GuestMemoryFd::create(kMemSize, kGpaBase);
		ASSERT_TRUE(mem_);
	}

	void TearDown() override
	{
		frontend_.reset();
		daemon_.reset();
	}

	virtual Result<std::unique_ptr<VhostUserDaemon>> makeDaemon()
	{
		return VhostUserDaemon::create<VringMutex>("e2e", backend_);
	}

	NegotiateOptions options(uint64_t extraFeatures = 0)
	{
		NegotiateOptions o;
		o.queues = 4;
		o.queueSize = 256;
		o.features = virtio::bit(virtio::kFVersion1) | extraFeatures;
		o.memory = { mem_.get() };
		return o;
	}

	void connect()
	{
		frontend_ = TestFrontend::connect(path_);
		ASSERT_TRUE(frontend_);
	}

	/** Post \a n readable chains of \a len bytes each on queue \a q; returns their hash. */
	uint64_t postReadable(unsigned q, unsigned n, uint32_t len, uint64_t hash)
	{
		SplitDriver &d = frontend_->queue(q);
		for (unsigned i = 0; i < n; i++) {
			uint64_t gpa = mem_->alloc(len, 16);
			uint8_t *p = mem_->hostPtr(gpa);
			for (uint32_t k = 0; k < len; k++)
				p[k] = static_cast<uint8_t>(i * 7 + k);
			hash = fnv(hash, p, len);
			BufferSpec spec{ gpa, len, false };
			EXPECT_GE(d.addChain(std::span(&spec, 1)), 0);
		}
		d.publish();
		return hash;
	}

	/** Wait until queue \a q's used index reaches \a idx. */
	bool waitUsed(unsigned q, uint16_t idx)
	{
		return waitFor([&] { return frontend_->queue(q).usedIdx() == idx; });
	}

	/* The same on split or packed rings (packedRings_). */
	/** options() with packed rings when packedRings_. */
	NegotiateOptions ringOptions()
	{
		NegotiateOptions o = options(packedRings_ ? virtio::bit(virtio::kFRingPacked) : 0);
		o.packed = packedRings_;
		return o;
	}
	InflightLayout inflightLayout() const
	{
		return packedRings_ ? InflightLayout::Packed : InflightLayout::Split;
	}
	/** Post \a n readable chains of \a len bytes on queue \a q; their ids. */
	std::vector<uint16_t> postChains(unsigned q, unsigned n, uint32_t len)
	{
		std::vector<uint16_t> ids;
		for (unsigned i = 0; i < n; i++) {
			BufferSpec spec{ mem_->alloc(len, 16), len, false };
			int id = packedRings_
					 ? frontend_->packedQueue(q).addChain(std::span(&spec, 1))
					 : frontend_->queue(q).addChain(std::span(&spec, 1));
			EXPECT_GE(id, 0);
			ids.push_back(static_cast<uint16_t>(id));
		}
		if (!packedRings_)
			frontend_->queue(q).publish();
		return ids;
	}
	/** The ids of the chains queue \a q returns, until \a n came back or 2 s passed. */
	std::vector<uint16_t> collectIds(unsigned q, size_t n)
	{
		std::vector<uint16_t> ids;
		waitFor([&] {
			if (packedRings_) {
				for (const PackedUsedElem &u :
				     frontend_->packedQueue(q).collectUsed())
					ids.push_back(u.id);
			} else {
				for (const virtio::SplitUsedElem &u :
				     frontend_->queue(q).collectUsed())
					ids.push_back(static_cast<uint16_t>(u.id));
			}
			return ids.size() >= n;
		});
		return ids;
	}
	/** ringOptions() with INFLIGHT_SHMFD, the area kept in \a msg and \a fd. */
	NegotiateOptions inflightOptions(InflightMsg *msg, UniqueFd *fd)
	{
		NegotiateOptions o = ringOptions();
		o.protocolFeatures |= protocol::mask(protocol::kInflightShmfd);
		o.inflightMsg = msg;
		o.inflightFd = fd;
		return o;
	}
	uint64_t badUsedIds(unsigned q)
	{
		return packedRings_ ? frontend_->packedQueue(q).badUsedIds()
				    : frontend_->queue(q).badUsedIds();
	}

	/**
	 * Negotiate, then keep 64 chains in flight on queue 1 from a second thread (kicking each
	 * round when \a kick) while this one re-sends SET_MEM_TABLE \a rounds times; nothing may
	 * be lost, refused or returned twice.
	 */
	void replaceMemoryUnderTraffic(int rounds, bool kick)
	{
		connect();
		ASSERT_TRUE(frontend_->negotiateQemu(options()));
		std::atomic<bool> stop{ false };
		std::atomic<unsigned> returned{ 0 };
		/* Buffers come from a fixed pool so the bump allocator is not shared by the threads. */
		uint64_t pool = mem_->alloc(64 * 128, 64);
		std::thread traffic([&] {
			SplitDriver &d = frontend_->queue(1);
			unsigned posted = 0;
			while (!stop.load() || d.inFlight() > 0) {
				while (!stop.load() && d.numFree() > 0 && d.inFlight() < 64) {
					BufferSpec spec{ pool + (posted % 64) * 128, 128, false };
					d.addChain(std::span(&spec, 1));
					posted++;
				}
				d.publish();
				if (kick)
					frontend_->kick(1);
				returned += static_cast<unsigned>(d.collectUsed().size());
				std::this_thread::yield();
			}
		});
		for (int i = 0; i < rounds; i++) {
			const GuestMemoryFd *regions[] = { mem_.get() };
			EXPECT_TRUE(frontend_->setMemTable(regions)) << "SET_MEM_TABLE " << i;
			std::this_thread::sleep_for(std::chrono::milliseconds(5));
		}
		stop = true;
		traffic.join();
		EXPECT_GT(returned.load(), 0u);
		EXPECT_EQ(backend_->counters(1).badChains.load(), 0u);
		EXPECT_EQ(frontend_->queue(1).badUsedIds(), 0u);
	}

	std::string path_;
	std::shared_ptr<SampleBackend> backend_;
	std::unique_ptr<VhostUserDaemon> daemon_;
	Listener listener_;
	std::unique_ptr<GuestMemoryFd> mem_;
	std::unique_ptr<TestFrontend> frontend_;
	/** Offer and use packed rings (set before SetUp()). */
	bool packedRings_ = false;
};

/* Parameter: packed rings (true) or split ones. */
std::string ringName(const ::testing::TestParamInfo<bool> &info)
{
	return info.param ? "Packed" : "Split";
}

TEST_F(SampleBackendTest, ConsumesDriverBuffersAfterQemuNegotiation)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	uint64_t hash = postReadable(1, 100, 60, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 100));
	EXPECT_TRUE(frontend_->waitCall(1));
	auto used = frontend_->queue(1).collectUsed();
	EXPECT_EQ(used.size(), 100u);
	EXPECT_EQ(frontend_->queue(1).badUsedIds(), 0u);
	EXPECT_EQ(backend_->counters(1).chains.load(), 100u);
	EXPECT_EQ(backend_->counters(1).readBytes.load(), 6000u);
	EXPECT_EQ(backend_->counters(1).readHash.load(), hash) << "bytes read differ from bytes written";
}

TEST_F(SampleBackendTest, FillsDriverWritableBuffersAfterDpdkNegotiation)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateDpdk(options()));
	SplitDriver &d = frontend_->queue(0);
	std::vector<uint64_t> gpas;
	for (int i = 0; i < 10; i++) {
		/* A header-sized piece and a payload piece, both device-writable. */
		uint64_t a = mem_->alloc(12, 16), b = mem_->alloc(500, 16);
		BufferSpec specs[] = { { a, 12, true }, { b, 500, true } };
		ASSERT_GE(d.addChain(specs), 0);
		gpas.push_back(a);
		gpas.push_back(b);
	}
	d.publish();
	frontend_->kick(0);
	ASSERT_TRUE(waitUsed(0, 10));
	auto used = d.collectUsed();
	ASSERT_EQ(used.size(), 10u);
	for (auto &u : used)
		EXPECT_EQ(u.len, 512u);
	for (size_t i = 0; i < gpas.size(); i += 2) {
		const uint8_t *hdr = mem_->hostPtr(gpas[i]);
		const uint8_t *payload = mem_->hostPtr(gpas[i + 1]);
		EXPECT_EQ(hdr[0], 0u);
		EXPECT_EQ(hdr[11], 11u);
		EXPECT_EQ(payload[0], 12u);
		EXPECT_EQ(payload[499], static_cast<uint8_t>(511));
	}
	EXPECT_EQ(backend_->counters(0).writtenBytes.load(), 5120u);
}

TEST_F(SampleBackendTest, IndirectChainsAreWalked)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options(virtio::bit(virtio::kFIndirectDesc))));
	SplitDriver &d = frontend_->queue(1);
	uint64_t a = mem_->alloc(100, 16), b = mem_->alloc(28, 16);
	BufferSpec specs[] = { { a, 100, false }, { b, 28, false } };
	ASSERT_GE(d.addIndirectChain(specs), 0);
	d.publish();
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 1));
	EXPECT_EQ(backend_->counters(1).readBytes.load(), 128u);
	EXPECT_EQ(backend_->counters(1).badChains.load(), 0u);
}

TEST_F(SampleBackendTest, NoInterruptSuppressesCallsWithoutEventIdx)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	SplitDriver &d = frontend_->queue(1);
	d.setAvailFlags(virtio::kAvailFNoInterrupt);
	postReadable(1, 20, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 20));
	EXPECT_FALSE(frontend_->waitCall(1, 100)) << "called despite VRING_AVAIL_F_NO_INTERRUPT";
	d.setAvailFlags(0);
	postReadable(1, 1, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 21));
	EXPECT_TRUE(frontend_->waitCall(1));
	EXPECT_EQ(backend_->counters(1).notifications.load(), 1u);
}

TEST_F(SampleBackendTest, EventIdxCallsOnlyWhenUsedEventIsCrossed)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options(virtio::bit(virtio::kFEventIdx))));
	ASSERT_TRUE(frontend_->features() & virtio::bit(virtio::kFEventIdx));
	SplitDriver &d = frontend_->queue(1);
	/* The first notification after start is always sent. */
	postReadable(1, 1, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 1));
	ASSERT_TRUE(frontend_->waitCall(1));
	/* Ask for a call when the used index passes 4; then return chains one at a time. */
	d.setUsedEvent(4);
	unsigned calledAt = 0;
	for (uint16_t i = 2; i <= 8; i++) {
		postReadable(1, 1, 16, SampleBackend::kFnvOffset);
		frontend_->kick(1);
		ASSERT_TRUE(waitUsed(1, i));
		if (frontend_->waitCall(1, 50)) {
			EXPECT_EQ(calledAt, 0u) << "called twice";
			calledAt = i;
		}
	}
	EXPECT_EQ(calledAt, 5u) << "need_event(4, new, old) is true when used idx becomes 5";
	/* Kicks are asked for again at the next avail index. */
	EXPECT_EQ(d.availEvent(), 8u);
}

TEST_F(SampleBackendTest, NoNotifyIsClearedWhenTheQueueIsIdle)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	postReadable(1, 5, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 5));
	EXPECT_TRUE(waitFor([&] { return (frontend_->queue(1).usedFlags() & virtio::kUsedFNoNotify) == 0; }));
}

TEST_F(SampleBackendTest, RingStopsAtGetVringBaseAndResumesFromSetVringBase)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	postReadable(1, 10, 32, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 10));
	auto base = frontend_->stopQueue(1);
	ASSERT_TRUE(base);
	EXPECT_EQ(*base, 10u);
	/* A stopped ring is not touched, whatever the guest does. */
	postReadable(1, 5, 32, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(frontend_->queue(1).usedIdx(), 10u);
	ASSERT_TRUE(frontend_->restartQueue(1, *base));
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 15));
	EXPECT_EQ(backend_->counters(1).chains.load(), 15u);
}

TEST_F(SampleBackendTest, KickWhileDisabledIsNotLost)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	ASSERT_TRUE(frontend_->setVringEnable(1, false));
	postReadable(1, 3, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(frontend_->queue(1).usedIdx(), 0u);
	ASSERT_TRUE(frontend_->setVringEnable(1, true));
	EXPECT_TRUE(waitUsed(1, 3)) << "the kick sent while disabled was lost";
}

TEST_F(SampleBackendTest, MemoryTableReplacedWhileTrafficRuns)
{
	replaceMemoryUnderTraffic(20, true);
}

TEST_F(SampleBackendTest, RegionAddedAndRemovedWithMemSlots)
{
	connect();
	auto o = options();
	o.protocolFeatures |= protocol::mask(protocol::kConfigureMemSlots);
	ASSERT_TRUE(frontend_->negotiateQemu(o));
	ASSERT_EQ(frontend_->maxMemSlots(), 509u);
	auto extra = GuestMemoryFd::create(1 << 20, 0x40000000);
	ASSERT_TRUE(extra);
	ASSERT_TRUE(frontend_->addMemReg(*extra));
	uint64_t gpa = extra->alloc(64, 16);
	BufferSpec spec{ gpa, 64, false };
	ASSERT_GE(frontend_->queue(1).addChain(std::span(&spec, 1)), 0);
	frontend_->queue(1).publish();
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 1));
	EXPECT_EQ(backend_->counters(1).badChains.load(), 0u);
	ASSERT_TRUE(frontend_->remMemReg(*extra));
	/* The region is gone: a buffer there is refused, not read. */
	ASSERT_GE(frontend_->queue(1).addChain(std::span(&spec, 1)), 0);
	frontend_->queue(1).publish();
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 2));
	EXPECT_EQ(backend_->counters(1).badChains.load(), 1u);
	EXPECT_FALSE(frontend_->remMemReg(*extra)) << "removing a region twice must fail";
}

/*
 * QEMU 7.2 with two queue pairs: each pair's vhost device adds the same regions on the one
 * connection, and each removes them. The region stays mapped until the last removal, and the
 * fds of the repeated additions are closed.
 */
TEST_F(SampleBackendTest, RegionAddedByEachQueuePairStaysUntilTheLastRemoval)
{
	connect();
	auto o = options();
	o.protocolFeatures |= protocol::mask(protocol::kConfigureMemSlots);
	ASSERT_TRUE(frontend_->negotiateQemu(o));
	auto extra = GuestMemoryFd::create(1 << 20, 0x40000000);
	ASSERT_TRUE(extra);
	ASSERT_TRUE(frontend_->addMemReg(*extra));
	ASSERT_TRUE(frontend_->getFeatures());
	size_t fds = openFdCount();
	ASSERT_TRUE(frontend_->addMemReg(*extra)) << "the same region again is not an overlap";
	ASSERT_TRUE(frontend_->getFeatures());
	EXPECT_EQ(openFdCount(), fds) << "the repeated region's fd was kept";
	uint64_t gpa = extra->alloc(64, 16);
	BufferSpec spec{ gpa, 64, false };
	auto post = [&](uint16_t used) {
		ASSERT_GE(frontend_->queue(1).addChain(std::span(&spec, 1)), 0);
		frontend_->queue(1).publish();
		frontend_->kick(1);
		ASSERT_TRUE(waitUsed(1, used));
	};
	ASSERT_TRUE(frontend_->remMemReg(*extra));
	ASSERT_NO_FATAL_FAILURE(post(1));
	EXPECT_EQ(backend_->counters(1).badChains.load(), 0u) << "unmapped at the first removal";
	ASSERT_TRUE(frontend_->remMemReg(*extra));
	ASSERT_NO_FATAL_FAILURE(post(2));
	EXPECT_EQ(backend_->counters(1).badChains.load(), 1u) << "still mapped after the last";
	EXPECT_FALSE(frontend_->remMemReg(*extra));
}

TEST_F(SampleBackendTest, ServesTheNextFrontendAfterDisconnect)
{
	size_t fdsBefore = 0;
	for (int round = 0; round < 5; round++) {
		connect();
		ASSERT_TRUE(frontend_->negotiateQemu(options()));
		postReadable(1, 4, 16, SampleBackend::kFnvOffset);
		frontend_->kick(1);
		ASSERT_TRUE(waitUsed(1, 4)) << "round " << round;
		frontend_.reset();
		mem_ = GuestMemoryFd::create(kMemSize, kGpaBase);
		ASSERT_TRUE(waitFor([&] { return !daemon_->isConnected(); }));
		if (round == 0)
			fdsBefore = openFdCount();
	}
	EXPECT_EQ(daemon_->connectionCount(), 5u);
	EXPECT_EQ(openFdCount(), fdsBefore) << "fds leaked across connections";
}

TEST_F(SampleBackendTest, ClientModeReconnectsAfterTheFrontendLeaves)
{
	std::string serverPath = path_ + ".srv";
	UniqueFd listenFd = TestFrontend::listenUnix(serverPath);
	ASSERT_TRUE(listenFd.isValid());
	auto client = VhostUserDaemon::create<VringRwLock>("e2e-client", backend_);
	ASSERT_TRUE(client);
	ASSERT_TRUE((*client)->startClient(serverPath));
	for (int round = 0; round < 2; round++) {
		frontend_ = TestFrontend::accept(listenFd.get(), 5000);
		ASSERT_TRUE(frontend_) << "back-end did not (re)connect, round " << round;
		ASSERT_TRUE(frontend_->negotiateDpdk(options()));
		postReadable(1, 2, 16, SampleBackend::kFnvOffset);
		frontend_->kick(1);
		ASSERT_TRUE(waitUsed(1, 2));
		frontend_.reset();
		mem_ = GuestMemoryFd::create(kMemSize, kGpaBase);
	}
	unlink(serverPath.c_str());
}

TEST_F(SampleBackendTest, ClientModeWaitsForAFrontendThatIsNotListeningYet)
{
	std::string serverPath = path_ + ".later";
	unlink(serverPath.c_str());
	DaemonOptions waiting;
	waiting.waitForServer = true;
	waiting.reconnectMaxMs = 200;
	auto client = VhostUserDaemon::create<VringRwLock>("e2e-wait", backend_, nullptr, waiting);
	ASSERT_TRUE(client);
	ASSERT_TRUE((*client)->startClient(serverPath)) << "no socket yet must not be an error";
	std::this_thread::sleep_for(std::chrono::milliseconds(300));
	UniqueFd listenFd = TestFrontend::listenUnix(serverPath);
	ASSERT_TRUE(listenFd.isValid());
	frontend_ = TestFrontend::accept(listenFd.get(), 5000);
	ASSERT_TRUE(frontend_) << "the back-end did not connect once the socket appeared";
	ASSERT_TRUE(frontend_->negotiateDpdk(options()));
	postReadable(1, 2, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 2));
	unlink(serverPath.c_str());
}

TEST_F(SampleBackendTest, ClientModeWithoutWaitingFailsWhenNobodyListens)
{
	std::string serverPath = path_ + ".none";
	unlink(serverPath.c_str());
	auto client = VhostUserDaemon::create<VringRwLock>("e2e-nowait", backend_);
	ASSERT_TRUE(client);
	EXPECT_FALSE((*client)->startClient(serverPath));
}

TEST_F(SampleBackendTest, InbandNotificationsUseTheBackendChannel)
{
	connect();
	auto o = options();
	o.protocolFeatures |= protocol::mask(protocol::kBackendReq) |
			      protocol::mask(protocol::kInbandNotifications);
	ASSERT_TRUE(frontend_->negotiateQemu(o));
	ASSERT_TRUE(frontend_->protocolFeatures() & protocol::mask(protocol::kInbandNotifications));
	ASSERT_TRUE(frontend_->setVringKick(1, -1));
	ASSERT_TRUE(frontend_->setVringCall(1, -1));
	postReadable(1, 3, 16, SampleBackend::kFnvOffset);
	ASSERT_TRUE(frontend_->vringKick(1));
	ASSERT_TRUE(waitUsed(1, 3));
	auto call = frontend_->receiveBackendRequest();
	ASSERT_TRUE(call);
	EXPECT_EQ((*call)->request(), static_cast<uint32_t>(BackendRequest::VringCall));
	EXPECT_EQ((*call)->payloadAs<VringStateMsg>().index, 1u);
}

TEST_F(SampleBackendTest, InbandWithoutBackendChannelClosesTheConnection)
{
	connect();
	ASSERT_TRUE(frontend_->getFeatures());
	ASSERT_TRUE(frontend_->getProtocolFeatures());
	uint64_t bad = protocol::mask(protocol::kInbandNotifications);
	ASSERT_TRUE(frontend_->sendRaw(static_cast<uint32_t>(FrontendRequest::SetProtocolFeatures), &bad, 8));
	EXPECT_TRUE(frontend_->peerClosed());
	connect(); /* the daemon serves the next one */
	EXPECT_TRUE(frontend_->getFeatures());
}

TEST_F(SampleBackendTest, ConfigSpaceReadsAndRefusesOutOfRange)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	auto cfg = frontend_->getConfig(4, 8);
	ASSERT_TRUE(cfg);
	ASSERT_EQ(cfg->size(), 8u);
	EXPECT_EQ((*cfg)[0], 4u);
	EXPECT_FALSE(frontend_->getConfig(12, 8)) << "read past the config space must fail";
	EXPECT_TRUE(frontend_->getFeatures()) << "connection kept";
}

TEST_F(SampleBackendTest, CorruptRingSignalsErrAndOtherQueuesGoOn)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	/* The guest moves avail idx by more than the ring size. */
	frontend_->queue(3).setAvailIdx(1000);
	frontend_->kick(3);
	EXPECT_TRUE(frontend_->waitErr(3)) << "err eventfd not signalled for a corrupt ring";
	postReadable(1, 2, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	EXPECT_TRUE(waitUsed(1, 2));
}

TEST_F(SampleBackendTest, BadChainIsReturnedEmptyAndCounted)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	SplitDriver &d = frontend_->queue(1);
	/* A loop: descriptor 0 -> 1 -> 0. */
	d.desc(0)->addr = kGpaBase + 0x1000;
	d.desc(0)->len = 16;
	d.desc(0)->flags = virtio::kDescFNext;
	d.desc(0)->next = 1;
	d.desc(1)->addr = kGpaBase + 0x2000;
	d.desc(1)->len = 16;
	d.desc(1)->flags = virtio::kDescFNext;
	d.desc(1)->next = 0;
	d.setAvailRing(0, 0);
	d.setAvailIdx(1);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 1));
	EXPECT_EQ(d.usedElem(0).id, 0u);
	EXPECT_EQ(d.usedElem(0).len, 0u);
	EXPECT_EQ(backend_->counters(1).badChains.load(), 1u);
}

/*
 * Crash recovery (vhost-user "Inflight I/O tracking"): the front-end keeps the inflight area
 * of a back-end that dies with chains taken and not returned, and hands it to the next one,
 * which takes those chains again first, in the order they were taken, then the new ones:
 * none lost, none returned twice. Split and packed rings.
 */
class InflightRecoveryTest : public SampleBackendTest, public ::testing::WithParamInterface<bool>
{
protected:
	InflightRecoveryTest() { packedRings_ = GetParam(); }
};

/* The states on a packed region's free list (one that loops counts each state once). */
unsigned freeStates(InflightQueuePacked *region, uint16_t size)
{
	std::vector<bool> seen(size);
	unsigned n = 0;
	for (uint16_t s = region->freeHead; s < size && !seen[s]; s = region->desc()[s].next) {
		seen[s] = true;
		n++;
	}
	return n;
}

TEST_P(InflightRecoveryTest, ChainsTakenByADeadBackendComeBackOnceAfterItRestarts)
{
	InflightMsg inflight{};
	UniqueFd inflightFd;
	NegotiateOptions o = inflightOptions(&inflight, &inflightFd);
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(o));
	ASSERT_TRUE(inflightFd.isValid()) << "GET_INFLIGHT_FD gave no fd";
	EXPECT_EQ(inflight.numQueues, 4u);
	EXPECT_EQ(inflight.queueSize, 256u);
	const size_t regionBytes = inflightQueueBytes(inflightLayout(), 256);
	EXPECT_EQ(inflight.mmapSize, 4 * regionBytes);
	EXPECT_TRUE(::fcntl(inflightFd.get(), F_GET_SEALS) & F_SEAL_SHRINK);
	postChains(1, 10, 32);
	frontend_->kick(1);
	ASSERT_EQ(collectIds(1, 10).size(), 10u);

	/* The back-end dies; five more chains are made available. */
	daemon_.reset();
	uint16_t firstPosition = packedRings_ ? frontend_->packedQueue(1).availIdx() : 0;
	std::vector<uint16_t> ids = postChains(1, 5, 32);
	/* It had taken the first three (in the order 3rd, 1st, 2nd) and returned none. */
	auto area = MemoryMapping::mapShared(inflightFd.get(), inflight.mmapSize,
					     static_cast<off_t>(inflight.mmapOffset));
	ASSERT_TRUE(area);
	uint8_t *regionBytesAt = area->data() + regionBytes; /* queue 1 */
	const uint64_t counters[3] = { 101, 102, 100 };
	auto *split = reinterpret_cast<InflightQueueSplit *>(regionBytesAt);
	auto *packed = reinterpret_cast<InflightQueuePacked *>(regionBytesAt);
	if (!packedRings_) {
		ASSERT_EQ(split->version, kInflightVersion) << "queue 1's region was never started";
		EXPECT_EQ(split->usedIdx, 10u) << "the region does not follow the used ring";
		for (uint16_t h = 0; h < 256; h++)
			ASSERT_EQ(split->desc()[h].inflight, 0)
				<< "head " << h << " still in flight";
		for (int i = 0; i < 3; i++) {
			split->desc()[ids[i]].counter = counters[i];
			split->desc()[ids[i]].inflight = 1;
		}
	} else {
		PackedDriver &d = frontend_->packedQueue(1);
		ASSERT_EQ(packed->version, kInflightVersion)
			<< "queue 1's region was never started";
		EXPECT_EQ(packed->descNum, 256u);
		EXPECT_EQ(packed->usedIdx, d.usedIdx()) << "the region does not follow the ring";
		EXPECT_EQ(packed->usedWrapCounter, d.usedWrap() ? 1 : 0);
		EXPECT_EQ(packed->oldUsedIdx, packed->usedIdx);
		EXPECT_EQ(packed->oldFreeHead, packed->freeHead);
		for (uint16_t s = 0; s < 256; s++)
			ASSERT_EQ(packed->desc()[s].inflight, 0) << "state " << s << " in flight";
		EXPECT_EQ(freeStates(packed, 256), 256u);
		/* States 0-2 hold the three chains (copies of their one descriptor), 3-255 are
		 * free. */
		for (uint16_t s = 0; s < 256; s++)
			packed->desc()[s].next = static_cast<uint16_t>(s + 1);
		for (uint16_t i = 0; i < 3; i++) {
			const virtio::PackedDesc &ring =
				*d.desc(static_cast<uint16_t>(firstPosition + i));
			InflightDescPacked &e = packed->desc()[i];
			ASSERT_EQ(ring.id, ids[i]);
			e.addr = ring.addr;
			e.len = ring.len;
			e.id = ring.id;
			e.flags = ring.flags;
			e.num = 1;
			e.last = i;
			e.counter = counters[i];
			e.inflight = 1;
		}
		packed->freeHead = packed->oldFreeHead = 3;
	}

	backend_ = std::make_shared<SampleBackend>(4, 1024, 2, packedRings_);
	auto daemon = makeDaemon();
	ASSERT_TRUE(daemon) << daemon.error().what;
	daemon_ = std::move(*daemon);
	ASSERT_TRUE(daemon_->start(listener_));
	ASSERT_TRUE(frontend_->reconnect(path_));
	o.keepQueues = true;
	ASSERT_TRUE(frontend_->negotiateQemu(o));
	frontend_->kick(1);
	auto used = collectIds(1, 5);
	ASSERT_EQ(used.size(), 5u);
	const uint16_t expected[5] = { ids[2], ids[0], ids[1], ids[3], ids[4] };
	for (int i = 0; i < 5; i++)
		EXPECT_EQ(used[i], expected[i]) << "used entry " << i;
	EXPECT_EQ(badUsedIds(1), 0u) << "a chain was returned twice";
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	EXPECT_TRUE(collectIds(1, 0).empty()) << "more came back than was posted";
	EXPECT_EQ(backend_->counters(1).chains.load(), 5u);
	if (!packedRings_) {
		for (uint16_t h = 0; h < 256; h++)
			EXPECT_EQ(split->desc()[h].inflight, 0)
				<< "head " << h << " still in flight";
	} else {
		for (uint16_t s = 0; s < 256; s++)
			EXPECT_EQ(packed->desc()[s].inflight, 0) << "state " << s << " in flight";
		EXPECT_EQ(freeStates(packed, 256), 256u);
		EXPECT_EQ(packed->usedIdx, frontend_->packedQueue(1).usedIdx());
	}
}

INSTANTIATE_TEST_SUITE_P(Rings, InflightRecoveryTest, ::testing::Bool(), ringName);

/*
 * GET_VRING_BASE answers once the ring holds nothing the back-end took and did not return:
 * the control thread stops the ring under the vring's lock (VringMutex) or after a grace
 * period (VringPolled), so no burst is running, and each of the sample device's bursts
 * returns and publishes every chain it took before it ends. Checked under traffic, split
 * and packed, event-driven and polled: the base's avail position is its used one, and the
 * inflight region holds no chain.
 */
class DrainTest : public SampleBackendTest,
		  public ::testing::WithParamInterface<std::tuple<bool, bool>>
{
protected:
	DrainTest() { packedRings_ = std::get<0>(GetParam()); }
	Result<std::unique_ptr<VhostUserDaemon>> makeDaemon() override
	{
		if (!std::get<1>(GetParam()))
			return SampleBackendTest::makeDaemon();
		DaemonOptions o;
		o.polling = true;
		o.pollIdleUs = 2000;
		return VhostUserDaemon::create<VringPolled>("e2e-drain", backend_, nullptr, o);
	}
};

TEST_P(DrainTest, GetVringBaseLeavesNothingTakenUnreturned)
{
	InflightMsg inflight{};
	UniqueFd inflightFd;
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(inflightOptions(&inflight, &inflightFd)));
	ASSERT_TRUE(inflightFd.isValid());
	auto area = MemoryMapping::mapShared(inflightFd.get(), inflight.mmapSize,
					     static_cast<off_t>(inflight.mmapOffset));
	ASSERT_TRUE(area);
	uint8_t *region = area->data() + inflightQueueBytes(inflightLayout(), 256);
	auto heldInRegion = [&] {
		unsigned n = 0;
		for (uint16_t s = 0; s < 256; s++)
			n += packedRings_ ? reinterpret_cast<InflightQueuePacked *>(region)
							    ->desc()[s]
							    .inflight == 1
					  : reinterpret_cast<InflightQueueSplit *>(region)
							    ->desc()[s]
							    .inflight == 1;
		return n;
	};
	/* Buffers come from a fixed pool so the bump allocator is not shared by the threads. */
	uint64_t pool = mem_->alloc(64 * 128, 64);
	unsigned posted = 0, returned = 0;
	auto inFlight = [&] {
		return packedRings_ ? frontend_->packedQueue(1).inFlight()
				    : frontend_->queue(1).inFlight();
	};
	auto traffic = [&](std::atomic<bool> &stop) {
		while (!stop.load()) {
			while (inFlight() < 64) {
				BufferSpec spec{ pool + (posted % 64) * 128, 128, false };
				int id =
					packedRings_
						? frontend_->packedQueue(1).addChain(
							  std::span(&spec, 1))
						: frontend_->queue(1).addChain(std::span(&spec, 1));
				if (id < 0)
					break;
				posted++;
			}
			if (!packedRings_)
				frontend_->queue(1).publish();
			frontend_->kick(1);
			returned += static_cast<unsigned>(collectIds(1, 0).size());
			std::this_thread::yield();
		}
	};
	for (int round = 0; round < 20; round++) {
		std::atomic<bool> stop{ false };
		std::thread thread(traffic, std::ref(stop));
		std::this_thread::sleep_for(std::chrono::milliseconds(2 + round % 5));
		auto base = frontend_->stopQueue(1);
		/* The ring is stopped: nothing the device does changes now; read it at leisure. */
		stop = true;
		thread.join();
		ASSERT_TRUE(base);
		returned += static_cast<unsigned>(collectIds(1, 0).size());
		if (packedRings_)
			EXPECT_EQ(*base & 0xffff, *base >> 16)
				<< "round " << round << ": descriptors taken and not returned";
		else
			EXPECT_EQ(*base, frontend_->queue(1).usedIdx())
				<< "round " << round << ": chains taken and not returned";
		EXPECT_EQ(heldInRegion(), 0u) << "round " << round;
		ASSERT_TRUE(frontend_->restartQueue(1, *base, true));
	}
	frontend_->kick(1);
	EXPECT_TRUE(waitFor([&] {
		returned += static_cast<unsigned>(collectIds(1, 0).size());
		return returned == posted;
	})) << returned
	    << " of " << posted;
	EXPECT_GT(posted, 256u) << "the ring went round";
	EXPECT_EQ(badUsedIds(1), 0u);
	EXPECT_EQ(backend_->counters(1).chains.load(), posted);
	EXPECT_EQ(backend_->counters(1).badChains.load(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Rings, DrainTest, ::testing::Combine(::testing::Bool(), ::testing::Bool()),
			 [](const ::testing::TestParamInfo<std::tuple<bool, bool>> &info) {
				 return std::string(std::get<0>(info.param) ? "Packed" : "Split") +
					(std::get<1>(info.param) ? "Polled" : "Kicked");
			 });

/* Requests that break the protocol are refused; the connection and the daemon stay up. */
class HostileRequestTest : public SampleBackendTest
{
protected:
	void SetUp() override
	{
		SampleBackendTest::SetUp();
		connect();
		ASSERT_TRUE(frontend_->negotiateQemu(options()));
		fds_ = openFdCount();
	}
	/** Send raw, ask for an ack, and expect it to be a refusal. */
	void expectRefused(FrontendRequest request, const void *payload, uint32_t size,
			   std::span<const int> fds = {})
	{
		ASSERT_TRUE(frontend_->sendRaw(static_cast<uint32_t>(request), payload, size, fds,
					       kVersion | kFlagNeedReply));
		auto reply = frontend_->receiveReply();
		ASSERT_TRUE(reply) << frontendRequestName(static_cast<uint32_t>(request))
				   << ": no reply (connection dropped?)";
		ASSERT_EQ((*reply)->size(), 8u);
		EXPECT_NE((*reply)->payloadAs<uint64_t>(), 0u)
			<< frontendRequestName(static_cast<uint32_t>(request)) << " was accepted";
	}
	void expectStillServing()
	{
		EXPECT_TRUE(frontend_->getFeatures()) << "connection lost";
		postReadable(1, 1, 8, SampleBackend::kFnvOffset);
		frontend_->kick(1);
		uint16_t expect = frontend_->queue(1).availIdx();
		EXPECT_TRUE(waitUsed(1, expect)) << "queue 1 stopped working";
	}
	size_t fds_ = 0;
};

TEST_F(HostileRequestTest, ExtraFdsAreClosed)
{
	UniqueFd a(dup(0)), b(dup(0));
	int fds[] = { a.get(), b.get() };
	VringStateMsg state{ 1, 256 };
	expectRefused(FrontendRequest::SetVringEnable, &state, sizeof(state), fds);
	a.reset();
	b.reset();
	EXPECT_EQ(openFdCount(), fds_) << "the back-end kept the extra fds";
	expectStillServing();
}

/* Parameter: packed rings (true) or split ones, for the inflight area's layout. */
class HostileInflightTest : public HostileRequestTest, public ::testing::WithParamInterface<bool>
{
protected:
	HostileInflightTest() { packedRings_ = GetParam(); }
};

TEST_P(HostileInflightTest, InflightAreasAreCheckedAndNeverLeak)
{
	/* Not negotiated: refused. */
	InflightMsg msg{ 0, 0, 4, 256, 0 };
	expectRefused(FrontendRequest::SetInflightFd, &msg, sizeof(msg));

	frontend_.reset();
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(inflightOptions(nullptr, nullptr)));
	ASSERT_TRUE(frontend_->stopQueue(0));
	auto base = frontend_->stopQueue(1);
	ASSERT_TRUE(base);
	ASSERT_TRUE(frontend_->stopQueue(2));
	ASSERT_TRUE(frontend_->stopQueue(3));
	/*
	 * The back-end holds one area at a time: count with one held, once it has closed the
	 * copy it sent (it answers the next request after that).
	 */
	ASSERT_TRUE(frontend_->getInflightFd(4, 256));
	ASSERT_TRUE(frontend_->getFeatures());
	fds_ = openFdCount();
	/* Asked again and again (CVE-2020-10726): each answer replaces the last. */
	for (int i = 0; i < 200; i++) {
		auto got = frontend_->getInflightFd(4, 256);
		ASSERT_TRUE(got) << "GET_INFLIGHT_FD " << i;
		ASSERT_TRUE(got->fd.isValid());
		ASSERT_EQ(got->msg.mmapSize, 4 * inflightQueueBytes(inflightLayout(), 256));
	}
	ASSERT_TRUE(frontend_->getFeatures());
	EXPECT_EQ(openFdCount(), fds_) << "areas leaked";
	/* Bad queue counts and sizes (CVE-2021-3839): refused, the fds closed (CVE-2022-0669). */
	for (auto [queues, size] : { std::pair<uint16_t, uint16_t>{ 0, 256 }, { 5, 256 },
				    { 0xffff, 256 }, { 4, 0 }, { 4, 2048 } }) {
		EXPECT_FALSE(frontend_->getInflightFd(queues, size)) << queues << " x " << size;
	}
	auto good = frontend_->getInflightFd(4, 256);
	ASSERT_TRUE(good);
	UniqueFd unsealed(::memfd_create("unsealed", MFD_CLOEXEC));
	ASSERT_GE(::ftruncate(unsealed.get(), static_cast<off_t>(good->msg.mmapSize)), 0);
	int fds[1] = { unsealed.get() };
	expectRefused(FrontendRequest::SetInflightFd, &good->msg, sizeof(good->msg), fds);
	InflightMsg bad = good->msg;
	fds[0] = good->fd.get();
	for (auto change : { +[](InflightMsg &m) { m.mmapSize += 64; },
			     +[](InflightMsg &m) { m.mmapOffset = 100; },
			     +[](InflightMsg &m) { m.mmapOffset = UINT64_MAX - 4095; },
			     +[](InflightMsg &m) { m.numQueues = 9; },
			     +[](InflightMsg &m) { m.queueSize = 512; } }) {
		bad = good->msg;
		change(bad);
		expectRefused(FrontendRequest::SetInflightFd, &bad, sizeof(bad), fds);
	}
	/* An area for split rings on packed ones, or the reverse. */
	bad = good->msg;
	bad.mmapSize =
		4 * inflightQueueBytes(
			    packedRings_ ? InflightLayout::Split : InflightLayout::Packed, 256);
	expectRefused(FrontendRequest::SetInflightFd, &bad, sizeof(bad), fds);
	EXPECT_TRUE(frontend_->setInflightFd(good->msg, good->fd.get()));
	good->fd.reset();
	unsealed.reset();
	EXPECT_EQ(openFdCount(), fds_) << "refused areas' fds kept";
	ASSERT_TRUE(frontend_->restartQueue(1, *base, true));
	EXPECT_TRUE(frontend_->getFeatures()) << "connection lost";
	postChains(1, 1, 8);
	frontend_->kick(1);
	EXPECT_EQ(collectIds(1, 1).size(), 1u) << "queue 1 stopped working";
}

INSTANTIATE_TEST_SUITE_P(Rings, HostileInflightTest, ::testing::Bool(), ringName);

TEST_F(HostileRequestTest, PayloadSizeMustMatch)
{
	uint8_t junk[40] = {};
	expectRefused(FrontendRequest::SetFeatures, junk, 4);
	expectRefused(FrontendRequest::SetVringNum, junk, 12);
	expectRefused(FrontendRequest::SetVringAddr, junk, 32);
	expectStillServing();
}

TEST_F(HostileRequestTest, VringIndexOutOfRange)
{
	VringStateMsg state{ 300, 256 };
	expectRefused(FrontendRequest::SetVringNum, &state, sizeof(state));
	state = { 0x10004, 256 }; /* would truncate to 4 in 16 bits, 4 is also out of range */
	expectRefused(FrontendRequest::SetVringBase, &state, sizeof(state));
	state = { 1u << 31, 1 };
	expectRefused(FrontendRequest::SetVringEnable, &state, sizeof(state));
	expectStillServing();
}

TEST_F(HostileRequestTest, BadVringSizes)
{
	ASSERT_TRUE(frontend_->stopQueue(3));
	for (uint32_t num : { 0u, 3u, 2048u, 65536u }) {
		VringStateMsg state{ 3, num };
		expectRefused(FrontendRequest::SetVringNum, &state, sizeof(state));
	}
	expectStillServing();
}

TEST_F(HostileRequestTest, BadMemoryTables)
{
	MemoryTableMsg table{};
	table.nregions = 9;
	expectRefused(FrontendRequest::SetMemTable, &table, memoryTableMsgSize(1));
	table.nregions = 0;
	expectRefused(FrontendRequest::SetMemTable, &table, memoryTableMsgSize(0));
	/* Two overlapping regions from the same memfd. */
	table.nregions = 2;
	table.regions[0] = mem_->regionMsg();
	table.regions[1] = mem_->regionMsg();
	table.regions[1].userspaceAddr += kMemSize;
	int fds[] = { mem_->fd(), mem_->fd() };
	expectRefused(FrontendRequest::SetMemTable, &table, memoryTableMsgSize(2), fds);
	/* A size that overflows with its offset, and one past the end of the file. */
	table.nregions = 1;
	table.regions[0] = mem_->regionMsg();
	table.regions[0].mmapOffset = ~0ull - 10;
	expectRefused(FrontendRequest::SetMemTable, &table, memoryTableMsgSize(1), std::span(fds, 1));
	table.regions[0] = mem_->regionMsg();
	table.regions[0].memorySize = kMemSize * 2;
	expectRefused(FrontendRequest::SetMemTable, &table, memoryTableMsgSize(1), std::span(fds, 1));
	/* nregions says 1 but 2 fds came. */
	table.regions[0] = mem_->regionMsg();
	expectRefused(FrontendRequest::SetMemTable, &table, memoryTableMsgSize(1), fds);
	expectStillServing();
	EXPECT_EQ(openFdCount(), fds_);
}

TEST_F(HostileRequestTest, RingOutsideGuestMemory)
{
	ASSERT_TRUE(frontend_->stopQueue(3));
	VringAddrMsg addr{};
	addr.index = 3;
	addr.desc = frontend_->queue(3).descQva();
	addr.avail = frontend_->queue(3).availQva();
	addr.used = mem_->qva() + kMemSize - 8; /* the used ring would straddle the region's end */
	expectRefused(FrontendRequest::SetVringAddr, &addr, sizeof(addr));
	addr.used = 0xdead0000;
	expectRefused(FrontendRequest::SetVringAddr, &addr, sizeof(addr));
	addr.used = frontend_->queue(3).usedQva() + 1; /* misaligned */
	expectRefused(FrontendRequest::SetVringAddr, &addr, sizeof(addr));
	expectStillServing();
}

TEST_F(HostileRequestTest, RunningRingCannotBeReconfigured)
{
	VringStateMsg state{ 1, 128 };
	expectRefused(FrontendRequest::SetVringNum, &state, sizeof(state));
	state = { 1, 7 };
	expectRefused(FrontendRequest::SetVringBase, &state, sizeof(state));
	expectStillServing();
}

TEST_F(HostileRequestTest, UnknownAndUnimplementedRequests)
{
	expectRefused(FrontendRequest::None, nullptr, 0);
	expectRefused(static_cast<FrontendRequest>(999), nullptr, 0);
	LogMsg log{ 4096, 0 };
	expectRefused(FrontendRequest::SetLogBase, &log, sizeof(log));
	/* A mandatory reply comes even for what vub does not implement, and only one. */
	ASSERT_TRUE(frontend_->sendRaw(static_cast<uint32_t>(FrontendRequest::CheckDeviceState), nullptr, 0));
	auto reply = frontend_->receiveReply();
	ASSERT_TRUE(reply);
	EXPECT_EQ((*reply)->size(), 8u);
	EXPECT_NE((*reply)->payloadAs<uint64_t>(), 0u);
	expectStillServing();
}

TEST_F(HostileRequestTest, FeaturesNotOfferedAreRefused)
{
	uint64_t features = frontend_->offeredFeatures() | virtio::bit(virtio::kFRingPacked);
	expectRefused(FrontendRequest::SetFeatures, &features, 8);
	uint64_t proto = protocol::mask(protocol::kLogShmfd);
	expectRefused(FrontendRequest::SetProtocolFeatures, &proto, 8);
	expectStillServing();
}

TEST_F(HostileRequestTest, OversizedHeaderClosesOnlyThisConnection)
{
	MessageHeader header{ static_cast<uint32_t>(FrontendRequest::GetFeatures), kVersion, 1u << 20 };
	ASSERT_EQ(::send(frontend_->fd(), &header, sizeof(header), MSG_NOSIGNAL), 12);
	EXPECT_TRUE(frontend_->peerClosed());
	mem_ = GuestMemoryFd::create(kMemSize, kGpaBase);
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	expectStillServing();
}

} /* namespace */

namespace {

TEST_F(SampleBackendTest, RarpMtuAndStatusReachTheDevice)
{
	connect();
	auto o = options();
	o.protocolFeatures |= protocol::mask(protocol::kRarp) | protocol::mask(protocol::kMtu);
	ASSERT_TRUE(frontend_->negotiateQemu(o));
	ASSERT_TRUE(frontend_->sendRarp({ 0x52, 0x54, 0, 0x12, 0x34, 0x56 }));
	EXPECT_EQ(backend_->lastRarpMac(), 0x563412005452ull);
	ASSERT_TRUE(frontend_->netSetMtu(9000));
	EXPECT_EQ(backend_->mtu(), 9000u);
	EXPECT_FALSE(frontend_->netSetMtu(20)) << "an MTU below 68 must be refused";
	auto status = frontend_->getStatus();
	ASSERT_TRUE(status);
	EXPECT_TRUE(*status & virtio::kStatusDriverOk);
	EXPECT_EQ(backend_->status(), *status);
}

TEST_F(SampleBackendTest, ResetDeviceStopsEveryRing)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	ASSERT_TRUE(frontend_->resetDevice());
	postReadable(1, 2, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(frontend_->queue(1).usedIdx(), 0u) << "a reset device touched its ring";
	/* The front-end can set the device up again on the same connection. */
	frontend_->queue(1).reset();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	postReadable(1, 2, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	EXPECT_TRUE(waitUsed(1, 2));
}

TEST(SharedControlLoop, ManyDaemonsServeTheirFrontendsFromOneThread)
{
	constexpr int kDaemons = 8;
	auto loop = EventLoop::create();
	ASSERT_TRUE(loop);
	ASSERT_TRUE((*loop)->startThread("vub-ctl-test"));
	DaemonOptions options;
	options.controlLoop = loop->get();
	struct Port {
		std::shared_ptr<SampleBackend> backend;
		std::unique_ptr<VhostUserDaemon> daemon;
		Listener listener;
		std::unique_ptr<GuestMemoryFd> mem;
		std::unique_ptr<TestFrontend> frontend;
	};
	std::vector<Port> ports(kDaemons);
	for (int i = 0; i < kDaemons; i++) {
		Port &p = ports[i];
		std::string path = "/tmp/vub-shared-" + std::to_string(getpid()) + "-" + std::to_string(i);
		p.backend = std::make_shared<SampleBackend>(2, 256, 1);
		auto daemon = VhostUserDaemon::create("port" + std::to_string(i), p.backend, nullptr, options);
		ASSERT_TRUE(daemon);
		p.daemon = std::move(*daemon);
		auto listener = Listener::create(path);
		ASSERT_TRUE(listener);
		p.listener = std::move(*listener);
		ASSERT_TRUE(p.daemon->start(p.listener));
		p.mem = GuestMemoryFd::create(1 << 20, kGpaBase);
		p.frontend = TestFrontend::connect(path);
		ASSERT_TRUE(p.frontend);
	}
	for (auto &p : ports) {
		NegotiateOptions o;
		o.queues = 2;
		o.memory = { p.mem.get() };
		ASSERT_TRUE(p.frontend->negotiateDpdk(o));
		BufferSpec spec{ p.mem->alloc(64, 16), 64, false };
		ASSERT_GE(p.frontend->queue(1).addChain(std::span(&spec, 1)), 0);
		p.frontend->queue(1).publish();
		p.frontend->kick(1);
	}
	for (auto &p : ports)
		EXPECT_TRUE(waitFor([&] { return p.backend->counters(1).chains.load() == 1; }));
	/* One front-end leaving does not disturb the others. */
	ports[0].frontend.reset();
	for (size_t i = 1; i < ports.size(); i++) {
		BufferSpec spec{ ports[i].mem->alloc(64, 16), 64, false };
		ASSERT_GE(ports[i].frontend->queue(1).addChain(std::span(&spec, 1)), 0);
		ports[i].frontend->queue(1).publish();
		ports[i].frontend->kick(1);
		EXPECT_TRUE(waitFor([&] { return ports[i].backend->counters(1).chains.load() == 2; }));
	}
	for (auto &p : ports) {
		p.frontend.reset();
		p.daemon.reset();
	}
	(*loop)->stop();
}

/** A device that is not thread-safe, and that watches an fd of its own on its worker. */
class CountingDevice final : public VhostUserBackendMut
{
public:
	explicit CountingDevice(std::atomic<int> *events) : events_(events) {}
	size_t numQueues() const override { return 2; }
	size_t maxQueueSize() const override { return 256; }
	uint64_t features() const override
	{
		return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kVhostUserFProtocolFeatures);
	}
	uint64_t protocolFeatures() const override { return protocol::mask(protocol::kReplyAck); }
	void setEventIdx(bool) override {}
	Result<void> updateMemory(const GuestMemoryAtomic &) override { return {}; }
	Result<void> handleEvent(uint16_t deviceEvent, uint32_t, std::span<VringT *const>, size_t) override
	{
		if (deviceEvent == kListenerData)
			events_->fetch_add(1);
		return {};
	}
	static constexpr uint64_t kListenerData = 100;

private:
	std::atomic<int> *events_;
};

TEST(BackendMut, ServedThroughMakeBackendWithItsOwnListener)
{
	std::atomic<int> events{ 0 };
	auto backend = makeBackend(std::make_unique<CountingDevice>(&events));
	auto daemon = VhostUserDaemon::create("mut", backend);
	ASSERT_TRUE(daemon);
	auto handlers = (*daemon)->getEpollHandlers();
	ASSERT_EQ(handlers.size(), 1u);
	auto fd = EventFd::create();
	ASSERT_TRUE(fd);
	EXPECT_FALSE(handlers[0]->registerListener(fd->fd(), EPOLLIN, 2)) << "data <= numQueues is reserved";
	ASSERT_TRUE(handlers[0]->registerListener(fd->fd(), EPOLLIN | EPOLLET, CountingDevice::kListenerData));
	fd->notify();
	EXPECT_TRUE(waitFor([&] { return events.load() >= 1; }));
	ASSERT_TRUE(handlers[0]->unregisterListener(fd->fd(), EPOLLIN, CountingDevice::kListenerData));
	(*daemon)->stop();
	EXPECT_TRUE((*daemon)->wait());
}

} /* namespace */

namespace {

class RingEnableTest : public SampleBackendTest
{
protected:
	/** Set up queue 1 by hand, acking \a features, without any SET_VRING_ENABLE. */
	void startQueueOne(uint64_t features)
	{
		connect();
		ASSERT_TRUE(frontend_->prepareQueues(options()));
		ASSERT_TRUE(frontend_->getFeatures());
		ASSERT_TRUE(frontend_->setOwner());
		ASSERT_TRUE(frontend_->setFeatures(features));
		const GuestMemoryFd *regions[] = { mem_.get() };
		ASSERT_TRUE(frontend_->setMemTable(regions));
		ASSERT_TRUE(frontend_->setVringNum(1, frontend_->queue(1).size()));
		ASSERT_TRUE(frontend_->setVringBase(1, 0));
		ASSERT_TRUE(frontend_->setVringAddr(1, frontend_->queue(1)));
		ASSERT_TRUE(frontend_->setVringKick(1, frontend_->kickFd(1)));
		ASSERT_TRUE(frontend_->setVringCall(1, frontend_->callFd(1)));
		postReadable(1, 2, 16, SampleBackend::kFnvOffset);
		frontend_->kick(1);
	}
};

TEST_F(RingEnableTest, RingsStartEnabledWithoutProtocolFeatures)
{
	startQueueOne(virtio::bit(virtio::kFVersion1));
	EXPECT_TRUE(waitUsed(1, 2)) << "a ring must be enabled when bit 30 is not negotiated";
}

TEST_F(RingEnableTest, RingsWaitForEnableWithProtocolFeatures)
{
	startQueueOne(virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kVhostUserFProtocolFeatures));
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(frontend_->queue(1).usedIdx(), 0u) << "processed before SET_VRING_ENABLE";
	ASSERT_TRUE(frontend_->setVringEnable(1, true));
	EXPECT_TRUE(waitUsed(1, 2));
}

/** The sample device plus an exit event of its own for its one worker. */
class ExitingDevice final : public VhostUserBackend
{
public:
	explicit ExitingDevice(EventFd exit) : exit_(std::move(exit)), inner_(2, 256, 1) {}
	size_t numQueues() const override { return inner_.numQueues(); }
	size_t maxQueueSize() const override { return inner_.maxQueueSize(); }
	uint64_t features() const override { return inner_.features(); }
	uint64_t protocolFeatures() const override { return inner_.protocolFeatures(); }
	void setEventIdx(bool) override {}
	Result<void> updateMemory(const GuestMemoryAtomic &) override { return {}; }
	std::optional<EventFd> exitEvent(size_t) const override
	{
		return EventFd(UniqueFd(::dup(exit_.fd())));
	}
	Result<void> handleEvent(uint16_t e, uint32_t ev, std::span<VringT *const> v, size_t t) override
	{
		return inner_.handleEvent(e, ev, v, t);
	}
	const SampleBackend &inner() const { return inner_; }

private:
	EventFd exit_;
	SampleBackend inner_;
};

TEST(BackendExitEvent, WritingItStopsTheWorker)
{
	auto exit = EventFd::create();
	ASSERT_TRUE(exit);
	int exitFd = exit->fd();
	auto device = std::make_shared<ExitingDevice>(std::move(*exit));
	auto daemon = VhostUserDaemon::create("exit", device);
	ASSERT_TRUE(daemon);
	std::string path = "/tmp/vub-exit-" + std::to_string(getpid()) + ".sock";
	auto listener = Listener::create(path);
	ASSERT_TRUE(listener);
	ASSERT_TRUE((*daemon)->start(*listener));
	auto mem = GuestMemoryFd::create(1 << 20, kGpaBase);
	auto frontend = TestFrontend::connect(path);
	ASSERT_TRUE(frontend);
	NegotiateOptions o;
	o.memory = { mem.get() };
	ASSERT_TRUE(frontend->negotiateDpdk(o));
	auto post = [&] {
		BufferSpec spec{ mem->alloc(16, 16), 16, false };
		ASSERT_GE(frontend->queue(1).addChain(std::span(&spec, 1)), 0);
		frontend->queue(1).publish();
		frontend->kick(1);
	};
	post();
	ASSERT_TRUE(waitFor([&] { return frontend->queue(1).usedIdx() == 1; }));
	uint64_t one = 1;
	ASSERT_EQ(::write(exitFd, &one, sizeof(one)), 8);
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	post();
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(frontend->queue(1).usedIdx(), 1u) << "the worker went on after its exit event";
	EXPECT_TRUE(frontend->getFeatures()) << "the control thread is not affected";
	/* The daemon serves the listener until it is gone: it goes first (TSan saw the race). */
	frontend.reset();
	daemon->reset();
}

} /* namespace */

namespace {

/** The same device served by polling workers (two threads, adaptive after 2 ms idle). */
class PollingTest : public SampleBackendTest
{
protected:
	Result<std::unique_ptr<VhostUserDaemon>> makeDaemon() override
	{
		DaemonOptions o;
		o.polling = true;
		o.pollIdleUs = idleUs_;
		return VhostUserDaemon::create<VringPolled>("e2e-poll", backend_, nullptr, o);
	}
	unsigned idleUs_ = 2000;
};

/** Pollers that never sleep: NO_NOTIFY must then stay set the whole time. */
class BusyPollingTest : public PollingTest
{
protected:
	BusyPollingTest() { idleUs_ = 0; }
};

TEST_F(BusyPollingTest, ConsumesWithoutKicksAndTellsTheGuestNotToKick)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	ASSERT_EQ(daemon_->getPollers().size(), 2u);
	EXPECT_TRUE(daemon_->getEpollHandlers().empty());
	/* Never kick. */
	for (uint16_t round = 1; round <= 50; round++) {
		postReadable(1, 1, 16, SampleBackend::kFnvOffset);
		ASSERT_TRUE(waitUsed(1, round)) << "round " << round;
		EXPECT_TRUE(frontend_->queue(1).usedFlags() & virtio::kUsedFNoNotify)
			<< "a polled ring must tell the guest not to kick";
	}
	EXPECT_EQ(backend_->counters(1).chains.load(), 50u);
}

TEST_F(PollingTest, SleepsOnKicksWhenIdleAndWakesOnAKick)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	VringPoller *poller = daemon_->getPollers()[1]; /* queue 1 is on thread 1 of 2 */
	ASSERT_TRUE(waitFor([&] { return poller->sleeps() > 0; })) << "idle poller never slept";
	EXPECT_TRUE(waitFor([&] { return (frontend_->queue(1).usedFlags() & virtio::kUsedFNoNotify) == 0; }))
		<< "kicks must be asked for before sleeping";
	auto start = std::chrono::steady_clock::now();
	postReadable(1, 3, 16, SampleBackend::kFnvOffset);
	frontend_->kick(1);
	ASSERT_TRUE(waitUsed(1, 3));
	EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(90))
		<< "woken by the 100 ms timeout, not by the kick";
}

TEST_F(PollingTest, MemoryTableReplacedWhileTrafficRuns)
{
	replaceMemoryUnderTraffic(10, false);
}

TEST_F(PollingTest, NothingMovesAfterGetVringBase)
{
	connect();
	ASSERT_TRUE(frontend_->negotiateQemu(options()));
	postReadable(1, 8, 16, SampleBackend::kFnvOffset);
	ASSERT_TRUE(waitUsed(1, 8));
	auto base = frontend_->stopQueue(1);
	ASSERT_TRUE(base);
	EXPECT_EQ(*base, 8u);
	postReadable(1, 4, 16, SampleBackend::kFnvOffset);
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	EXPECT_EQ(frontend_->queue(1).usedIdx(), 8u) << "a stopped ring was polled";
	ASSERT_TRUE(frontend_->restartQueue(1, *base));
	EXPECT_TRUE(waitUsed(1, 12));
}

TEST(PollingDaemon, RefusesVringsThatAreNotPolled)
{
	DaemonOptions o;
	o.polling = true;
	auto daemon = VhostUserDaemon::create<VringMutex>("bad", std::make_shared<SampleBackend>(2, 256, 1),
							  nullptr, o);
	EXPECT_FALSE(daemon);
}

} /* namespace */
