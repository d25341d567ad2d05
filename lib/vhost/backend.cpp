/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/backend.h"

#include <utility>

namespace vub::vhost {

namespace {

/** A VhostUserBackendMut behind one mutex. */
class BackendMutex final : public VhostUserBackend
{
public:
	explicit BackendMutex(std::unique_ptr<VhostUserBackendMut> inner) : inner_(std::move(inner)) {}

	size_t numQueues() const override { return locked([](auto &b) { return b.numQueues(); }); }
	size_t maxQueueSize() const override { return locked([](auto &b) { return b.maxQueueSize(); }); }
	uint64_t features() const override { return locked([](auto &b) { return b.features(); }); }
	uint64_t protocolFeatures() const override
	{
		return locked([](auto &b) { return b.protocolFeatures(); });
	}
	void ackedFeatures(uint64_t f) override { locked([&](auto &b) { b.ackedFeatures(f); }); }
	void setEventIdx(bool e) override { locked([&](auto &b) { b.setEventIdx(e); }); }
	Result<void> updateMemory(const GuestMemoryAtomic &mem) override
	{
		return locked([&](auto &b) { return b.updateMemory(mem); });
	}
	std::vector<uint8_t> getConfig(uint32_t offset, uint32_t size) const override
	{
		return locked([&](auto &b) { return b.getConfig(offset, size); });
	}
	Result<void> setConfig(uint32_t offset, std::span<const uint8_t> data) override
	{
		return locked([&](auto &b) { return b.setConfig(offset, data); });
	}
	void setBackendReqFd(std::shared_ptr<BackendChannel> channel) override
	{
		locked([&](auto &b) { b.setBackendReqFd(std::move(channel)); });
	}
	std::vector<uint64_t> queuesPerThread() const override
	{
		return locked([](auto &b) { return b.queuesPerThread(); });
	}
	std::optional<EventFd> exitEvent(size_t threadIndex) const override
	{
		return locked([&](auto &b) { return b.exitEvent(threadIndex); });
	}
	Result<void> handleEvent(uint16_t deviceEvent, uint32_t evset, std::span<VringT *const> vrings,
				 size_t threadId) override
	{
		return locked([&](auto &b) { return b.handleEvent(deviceEvent, evset, vrings, threadId); });
	}
	void resetDevice() override { locked([](auto &b) { b.resetDevice(); }); }
	Result<void> sendRarp(const uint8_t (&mac)[6]) override
	{
		return locked([&](auto &b) { return b.sendRarp(mac); });
	}
	Result<void> setMtu(uint16_t mtu) override { return locked([&](auto &b) { return b.setMtu(mtu); }); }
	void setStatus(uint8_t status) override { locked([&](auto &b) { b.setStatus(status); }); }

private:
	template <typename F>
	auto locked(F &&f) const -> decltype(f(std::declval<VhostUserBackendMut &>()))
	{
		std::lock_guard<std::mutex> guard(lock_);
		return f(*inner_);
	}

	mutable std::mutex lock_;
	std::unique_ptr<VhostUserBackendMut> inner_;
};

} /* namespace */

std::shared_ptr<VhostUserBackend> makeBackend(std::unique_ptr<VhostUserBackendMut> backend)
{
	return std::make_shared<BackendMutex>(std::move(backend));
}

} /* namespace vub::vhost */
