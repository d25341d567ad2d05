/* SPDX-License-Identifier: Apache-2.0 */
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "vub/base/rcu.h"

namespace vub {
namespace {

using namespace std::chrono_literals;

/* Wait up to \a limit for \a flag to become true. */
bool waitFor(const std::atomic<bool> &flag, std::chrono::milliseconds limit)
{
	auto deadline = std::chrono::steady_clock::now() + limit;
	while (!flag.load()) {
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		std::this_thread::sleep_for(1ms);
	}
	return true;
}

/* Report quiescent states, as a worker does once per loop, until \a flag is set or \a limit. */
bool quiesceUntil(Rcu::Reader &reader, const std::atomic<bool> &flag,
		  std::chrono::milliseconds limit)
{
	auto deadline = std::chrono::steady_clock::now() + limit;
	while (!flag.load()) {
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		reader.quiescent();
		std::this_thread::sleep_for(1ms);
	}
	return true;
}

/* synchronize() on a thread of its own, so that a test fails instead of hanging. */
class Synchronizer
{
public:
	explicit Synchronizer(Rcu &rcu) : thread_([this, &rcu] {
		rcu.synchronize();
		done.store(true);
	})
	{
	}
	~Synchronizer() { thread_.join(); }

	std::atomic<bool> done{ false };

private:
	std::thread thread_;
};

TEST(Rcu, SynchronizeReturnsWithoutReaders)
{
	auto rcu = std::make_unique<Rcu>();
	Synchronizer sync(*rcu);
	EXPECT_TRUE(waitFor(sync.done, 2000ms));
}

TEST(Rcu, SynchronizeWaitsForAnOnlineReaderUntilItIsQuiescent)
{
	auto rcu = std::make_unique<Rcu>();
	std::atomic<int> stage{ 0 };
	std::atomic<bool> registered{ false };
	std::thread reader([&] {
		auto r = rcu->registerReader();
		registered.store(static_cast<bool>(r));
		stage.store(1);
		while (stage.load() != 2)
			std::this_thread::sleep_for(1ms);
		/* A worker reports a quiescent state once per loop. */
		while (stage.load() != 3) {
			if (r)
				r->quiescent();
			std::this_thread::sleep_for(1ms);
		}
		/* Unregistering here also releases a synchronize() that is wrongly stuck. */
	});
	while (stage.load() != 1)
		std::this_thread::sleep_for(1ms);
	ASSERT_TRUE(registered.load()) << "registerReader failed";
	{
		Synchronizer sync(*rcu);
		std::this_thread::sleep_for(50ms);
		EXPECT_FALSE(sync.done.load()) << "returned while a reader had not been quiescent";
		stage.store(2);
		EXPECT_TRUE(waitFor(sync.done, 2000ms)) << "still waiting after quiescent()";
		stage.store(3);
	}
	reader.join();
}

TEST(Rcu, SynchronizeDoesNotWaitForAnOfflineReader)
{
	auto rcu = std::make_unique<Rcu>();
	auto reader = rcu->registerReader();
	ASSERT_TRUE(reader);
	reader->offline();
	Synchronizer sync(*rcu);
	EXPECT_TRUE(waitFor(sync.done, 2000ms)) << "waited for an offline reader";
	if (!sync.done.load())
		reader = Rcu::Reader(); /* unregister, so that the stuck synchronize() ends */
}

TEST(Rcu, SynchronizeWaitsForAReaderThatCameBackOnline)
{
	auto rcu = std::make_unique<Rcu>();
	auto reader = rcu->registerReader();
	ASSERT_TRUE(reader);
	reader->offline();
	reader->online();
	{
		Synchronizer sync(*rcu);
		std::this_thread::sleep_for(50ms);
		EXPECT_FALSE(sync.done.load());
		EXPECT_TRUE(quiesceUntil(*reader, sync.done, 2000ms));
		if (!sync.done.load())
			reader = Rcu::Reader();
	}
}

TEST(Rcu, SynchronizeDoesNotWaitForAnUnregisteredReader)
{
	auto rcu = std::make_unique<Rcu>();
	{
		auto reader = rcu->registerReader();
		ASSERT_TRUE(reader);
		EXPECT_TRUE(reader->isValid());
	}
	Synchronizer sync(*rcu);
	EXPECT_TRUE(waitFor(sync.done, 2000ms));
}

TEST(Rcu, MovedReaderKeepsTheRegistration)
{
	auto rcu = std::make_unique<Rcu>();
	auto registered = rcu->registerReader();
	ASSERT_TRUE(registered);
	Rcu::Reader reader = std::move(*registered);
	// NOLINTNEXTLINE(bugprone-use-after-move): the moved-from state is the point
	EXPECT_FALSE(registered->isValid());
	ASSERT_TRUE(reader.isValid());
	{
		Synchronizer sync(*rcu);
		std::this_thread::sleep_for(30ms);
		EXPECT_FALSE(sync.done.load()) << "the moved-to reader is still online";
		EXPECT_TRUE(quiesceUntil(reader, sync.done, 2000ms));
		if (!sync.done.load())
			reader = Rcu::Reader();
	}
}

TEST(Rcu, RegistrationFailsWhenAllSlotsAreTaken)
{
	auto rcu = std::make_unique<Rcu>();
	std::vector<Rcu::Reader> readers;
	for (unsigned i = 0; i < Rcu::kMaxReaders; i++) {
		auto r = rcu->registerReader();
		ASSERT_TRUE(r) << "reader " << i;
		readers.push_back(std::move(*r));
	}
	auto extra = rcu->registerReader();
	ASSERT_FALSE(extra);
	EXPECT_EQ(extra.error().code, ENOSPC);

	readers.pop_back();
	auto again = rcu->registerReader();
	EXPECT_TRUE(again) << "a released slot can be registered again";
}

/*
 * A writer replaces a snapshot and frees the old one after synchronize() while readers use it
 * in a loop. A snapshot freed too early shows as a poisoned magic or a broken checksum.
 */
struct Snapshot {
	static constexpr uint64_t kMagic = 0x5642525f43554f4bull;
	static constexpr uint64_t kPoison = 0xdeaddeaddeaddeadull;

	explicit Snapshot(uint64_t gen) { set(kMagic, gen); }
	~Snapshot() { set(kPoison, 0); }

	void set(uint64_t m, uint64_t gen)
	{
		generation.store(gen, std::memory_order_relaxed);
		check.store(~gen, std::memory_order_relaxed);
		magic.store(m, std::memory_order_relaxed);
	}
	bool intact() const
	{
		return magic.load(std::memory_order_relaxed) == kMagic &&
		       check.load(std::memory_order_relaxed) ==
			       ~generation.load(std::memory_order_relaxed);
	}

	/* Atomics: the poisoning stores are not dead stores, and a reader bug is no data race. */
	std::atomic<uint64_t> magic;
	std::atomic<uint64_t> generation;
	std::atomic<uint64_t> check;
};

TEST(Rcu, WriterFreesSnapshotsOnlyAfterReadersAreDoneWithThem)
{
	constexpr int kReaders = 2;
	auto rcu = std::make_unique<Rcu>();
	std::atomic<Snapshot *> current{ new Snapshot(0) };
	std::atomic<bool> stop{ false };
	std::atomic<int> ready{ 0 };
	std::atomic<uint64_t> corrupt{ 0 };
	std::atomic<uint64_t> backwards{ 0 };
	std::atomic<uint64_t> reads{ 0 };
	std::atomic<int> registrationFailures{ 0 };

	std::vector<std::thread> readers;
	for (int i = 0; i < kReaders; i++) {
		readers.emplace_back([&] {
			auto reader = rcu->registerReader();
			if (!reader) {
				registrationFailures++;
				ready++;
				return;
			}
			ready++;
			uint64_t lastGen = 0;
			uint64_t n = 0;
			while (!stop.load(std::memory_order_relaxed)) {
				for (int j = 0; j < 64; j++) {
					const Snapshot *s = current.load(std::memory_order_acquire);
					if (!s->intact())
						corrupt++;
					uint64_t gen =
						s->generation.load(std::memory_order_relaxed);
					if (gen < lastGen)
						backwards++;
					lastGen = gen;
					n++;
				}
				reader->quiescent();
			}
			reads += n;
		});
	}
	while (ready.load() != kReaders)
		std::this_thread::yield();

	/* About 200 ms, and enough grace periods even on a slow (sanitizer) build. */
	constexpr uint64_t kMinGenerations = 5;
	uint64_t generations = 0;
	auto start = std::chrono::steady_clock::now();
	for (;;) {
		auto elapsed = std::chrono::steady_clock::now() - start;
		if (elapsed > 2s || (elapsed > 200ms && generations >= kMinGenerations))
			break;
		Snapshot *old = current.exchange(new Snapshot(generations + 1),
						 std::memory_order_acq_rel);
		rcu->synchronize();
		delete old; /* poisons it first */
		generations++;
	}
	stop.store(true);
	for (auto &t : readers)
		t.join();
	delete current.load();

	EXPECT_EQ(registrationFailures.load(), 0);
	EXPECT_EQ(corrupt.load(), 0u) << "a reader saw a freed snapshot";
	EXPECT_EQ(backwards.load(), 0u);
	EXPECT_GE(generations, kMinGenerations);
	RecordProperty("generations", static_cast<int>(generations));
	EXPECT_GT(reads.load(), 0u);
}

} /* namespace */
} /* namespace vub */
