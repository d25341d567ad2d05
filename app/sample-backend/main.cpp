/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vub-sample-backend: the seed's example device in C++. Each queue handler walks every
 * available descriptor chain, returns it on the used ring, and notifies the guest only when
 * EVENT_IDX (or NO_INTERRUPT) says so. It moves no data: it is the smallest complete device
 * built on VhostUserDaemon, and the peer that the framework's tests drive.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "vub/base/log.h"
#include "vub/vhost/daemon.h"
#include "vub/vhost/message.h"
#include "vub/virtio/features.h"

using namespace vub;
using namespace vub::vhost;

namespace {

/** Counters of one queue, written by its worker and read by the main thread at exit. */
struct alignas(64) QueueCounters {
	std::atomic<uint64_t> chains{ 0 };
	std::atomic<uint64_t> bytes{ 0 };
	std::atomic<uint64_t> notifications{ 0 };
	std::atomic<uint64_t> badChains{ 0 };
};

class SampleBackend final : public VhostUserBackend
{
public:
	SampleBackend(size_t queues, size_t queueSize, size_t threads)
		: queues_(queues), queueSize_(queueSize), threads_(threads), counters_(queues)
	{
	}

	size_t numQueues() const override { return queues_; }
	size_t maxQueueSize() const override { return queueSize_; }
	uint64_t features() const override
	{
		return virtio::bit(virtio::kFVersion1) | virtio::bit(virtio::kFEventIdx) |
		       virtio::bit(virtio::kFIndirectDesc) |
		       virtio::bit(virtio::kVhostUserFProtocolFeatures);
	}
	uint64_t protocolFeatures() const override
	{
		return protocol::mask(protocol::kMq) | protocol::mask(protocol::kReplyAck) |
		       protocol::mask(protocol::kConfig) | protocol::mask(protocol::kBackendReq) |
		       protocol::mask(protocol::kResetDevice) | protocol::mask(protocol::kStatus) |
		       protocol::mask(protocol::kConfigureMemSlots) |
		       protocol::mask(protocol::kInbandNotifications);
	}
	void setEventIdx(bool) override {}
	Result<void> updateMemory(const GuestMemoryAtomic &) override { return {}; }
	std::vector<uint8_t> getConfig(uint32_t offset, uint32_t size) const override
	{
		/* A small read-only config space: bytes 0..15 hold their own offsets. */
		if (offset > 16 || size > 16 - offset)
			return {};
		std::vector<uint8_t> out(size);
		for (uint32_t i = 0; i < size; i++)
			out[i] = static_cast<uint8_t>(offset + i);
		return out;
	}
	std::vector<uint64_t> queuesPerThread() const override
	{
		/* Queues spread round-robin over the threads. */
		std::vector<uint64_t> masks(threads_, 0);
		for (size_t q = 0; q < queues_; q++)
			masks[q % threads_] |= uint64_t{ 1 } << q;
		return masks;
	}

	Result<void> handleEvent(uint16_t deviceEvent, uint32_t, std::span<VringT *const> vrings,
				 size_t threadId) override
	{
		if (deviceEvent >= vrings.size())
			return {};
		size_t queue = threadId + deviceEvent * threads_; /* inverse of queuesPerThread() */
		QueueCounters &c = counters_[queue];
		auto vring = vrings[deviceEvent]->getMut();
		const GuestMemory *mem = vring->memory().memory();
		SplitQueue &q = vring->getQueue();
		for (;;) {
			q.disableNotification();
			unsigned returned = 0;
			for (;;) {
				DescriptorChain chain;
				auto status = q.pop(*mem, buffers_[queue % kStorageSlots], chain);
				if (status == SplitQueue::PopStatus::Empty)
					break;
				if (status == SplitQueue::PopStatus::Broken) {
					vring->signalError();
					return {};
				}
				if (status == SplitQueue::PopStatus::BadChain) {
					c.badChains.fetch_add(1, std::memory_order_relaxed);
					q.addUsed(chain.head, 0);
				} else {
					c.chains.fetch_add(1, std::memory_order_relaxed);
					c.bytes.fetch_add(chain.readableBytes, std::memory_order_relaxed);
					q.addUsed(chain.head, 0);
				}
				/* Publish in batches of 32, as a burst would. */
				if (++returned % 32 == 0)
					publish(*vring, c);
			}
			publish(*vring, c);
			if (!q.enableNotification())
				break;
		}
		return {};
	}

	void printStats() const
	{
		for (size_t q = 0; q < queues_; q++) {
			const QueueCounters &c = counters_[q];
			std::printf("queue %zu: chains %" PRIu64 " bytes %" PRIu64
				    " notifications %" PRIu64 " bad %" PRIu64 "\n",
				    q, c.chains.load(), c.bytes.load(), c.notifications.load(),
				    c.badChains.load());
		}
		std::fflush(stdout);
	}

private:
	static constexpr size_t kStorageSlots = 64;
	static constexpr size_t kMaxPieces = 1024;

	void publish(VringState &vring, QueueCounters &c)
	{
		vring.getQueue().publishUsed();
		if (vring.needsNotification()) {
			vring.signalUsedQueue();
			c.notifications.fetch_add(1, std::memory_order_relaxed);
		}
	}

	size_t queues_;
	size_t queueSize_;
	size_t threads_;
	std::vector<QueueCounters> counters_;
	/* Chain storage per queue slot: each queue is processed by one thread at a time. */
	DescBuffer buffers_[kStorageSlots][kMaxPieces];
};

void usage(const char *prog)
{
	std::printf("Usage: %s --socket PATH [--client] [--queues N] [--queue-size N] [--threads N]\n"
		    "          [--log-level error|warning|info|debug]\n"
		    "Serves the sample vhost-user device on PATH (server mode, or client mode with\n"
		    "--client). Prints per-queue counters on SIGINT/SIGTERM and exits.\n",
		    prog);
}

} /* namespace */

int main(int argc, char **argv)
{
	std::string socketPath;
	bool client = false;
	size_t queues = 2;
	size_t queueSize = 1024;
	size_t threads = 1;
	static const option longOptions[] = {
		{ "socket", required_argument, nullptr, 's' },
		{ "client", no_argument, nullptr, 'c' },
		{ "queues", required_argument, nullptr, 'q' },
		{ "queue-size", required_argument, nullptr, 'n' },
		{ "threads", required_argument, nullptr, 't' },
		{ "log-level", required_argument, nullptr, 'l' },
		{ "help", no_argument, nullptr, 'h' },
		{ nullptr, 0, nullptr, 0 },
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "s:cq:n:t:l:h", longOptions, nullptr)) != -1) {
		switch (opt) {
		case 's':
			socketPath = optarg;
			break;
		case 'c':
			client = true;
			break;
		case 'q':
			queues = std::strtoul(optarg, nullptr, 0);
			break;
		case 'n':
			queueSize = std::strtoul(optarg, nullptr, 0);
			break;
		case 't':
			threads = std::strtoul(optarg, nullptr, 0);
			break;
		case 'l': {
			LogLevel level;
			if (!Log::parseLevel(optarg, &level)) {
				std::fprintf(stderr, "unknown log level '%s'\n", optarg);
				return 2;
			}
			Log::setLevelAll(level);
			break;
		}
		case 'h':
			usage(argv[0]);
			return 0;
		default:
			usage(argv[0]);
			return 2;
		}
	}
	if (socketPath.empty() || queues == 0 || queues > 64 || threads == 0 || threads > queues ||
	    queueSize == 0 || queueSize > 32768) {
		std::fprintf(stderr, "vub-sample-backend: need --socket; 1-64 queues, 1..queues threads, "
				     "queue size 1-32768\n");
		usage(argv[0]);
		return 2;
	}

	/* Signals are read from a signalfd on this thread; every other thread blocks them. */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &signals, nullptr);
	signal(SIGPIPE, SIG_IGN);

	auto backend = std::make_shared<SampleBackend>(queues, queueSize, threads);
	auto daemon = VhostUserDaemon::create<VringMutex>("sample", backend);
	if (!daemon) {
		std::fprintf(stderr, "vub-sample-backend: %s: %s\n", daemon.error().what,
			     std::strerror(daemon.error().code));
		return 1;
	}
	Listener listener;
	if (client) {
		auto started = (*daemon)->startClient(socketPath);
		if (!started) {
			std::fprintf(stderr, "vub-sample-backend: connect %s: %s\n", socketPath.c_str(),
				     std::strerror(started.error().code));
			return 1;
		}
		std::printf("vub-sample-backend: connected to %s\n", socketPath.c_str());
	} else {
		auto created = Listener::create(socketPath);
		if (!created) {
			std::fprintf(stderr, "vub-sample-backend: %s %s: %s\n", created.error().what,
				     socketPath.c_str(), std::strerror(created.error().code));
			return 1;
		}
		listener = std::move(*created);
		auto started = (*daemon)->start(listener);
		if (!started) {
			std::fprintf(stderr, "vub-sample-backend: %s\n", started.error().what);
			return 1;
		}
		std::printf("vub-sample-backend: listening on %s\n", socketPath.c_str());
	}
	std::fflush(stdout);

	int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
	signalfd_siginfo info;
	while (read(sfd, &info, sizeof(info)) < 0 && errno == EINTR) {
	}
	(*daemon)->stop();
	backend->printStats();
	return 0;
}
