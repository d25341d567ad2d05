/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/inflight.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vub::vhost {

namespace {

constexpr uint64_t kPageBytes = 4096;

uint64_t areaBytes(uint16_t numQueues, uint16_t queueSize, InflightLayout layout)
{
	return uint64_t{ numQueues } * inflightQueueBytes(layout, queueSize);
}

} /* namespace */

Result<InflightArea> InflightArea::create(uint16_t numQueues, uint16_t queueSize,
					  InflightLayout layout)
{
	if (numQueues == 0 || queueSize == 0)
		return Error{ EINVAL, "inflight area for no queue or queues of size 0" };
	UniqueFd fd(::memfd_create("vub-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	if (!fd)
		return errnoError("memfd_create");
	uint64_t bytes = areaBytes(numQueues, queueSize, layout);
	if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) < 0)
		return errnoError("ftruncate");
	if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		return errnoError("F_ADD_SEALS");
	auto map = MemoryMapping::mapShared(fd.get(), bytes, 0);
	if (!map)
		return map.error();
	InflightArea area;
	area.fd_ = std::move(fd);
	area.map_ = std::move(*map);
	area.numQueues_ = numQueues;
	area.queueSize_ = queueSize;
	area.layout_ = layout;
	return area;
}

Result<InflightArea> InflightArea::adopt(UniqueFd fd, const InflightMsg &msg, InflightLayout layout)
{
	if (msg.numQueues == 0 || msg.queueSize == 0)
		return Error{ EINVAL, "inflight area for no queue or queues of size 0" };
	uint64_t bytes = areaBytes(msg.numQueues, msg.queueSize, layout);
	if (msg.mmapSize != bytes)
		return Error{ EINVAL, "inflight area size does not match its queues" };
	if (msg.mmapOffset % kPageBytes || msg.mmapOffset > UINT64_MAX - bytes)
		return Error{ EINVAL, "inflight area offset not page-aligned or overflowing" };
	struct stat st {};
	if (::fstat(fd.get(), &st) < 0)
		return errnoError("fstat");
	if (static_cast<uint64_t>(st.st_size) < msg.mmapOffset + bytes)
		return Error{ EINVAL, "inflight area beyond the end of its file" };
	int seals = ::fcntl(fd.get(), F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK))
		return Error{ EINVAL, "inflight area file can shrink (no F_SEAL_SHRINK)" };
	auto map = MemoryMapping::mapShared(fd.get(), bytes, static_cast<off_t>(msg.mmapOffset));
	if (!map)
		return map.error();
	InflightArea area;
	area.fd_ = std::move(fd);
	area.map_ = std::move(*map);
	area.offset_ = msg.mmapOffset;
	area.numQueues_ = msg.numQueues;
	area.queueSize_ = msg.queueSize;
	area.layout_ = layout;
	return area;
}

InflightMsg InflightArea::describe() const
{
	return InflightMsg{ map_.size(), offset_, numQueues_, queueSize_, 0 };
}

InflightQueueSplit *InflightArea::splitQueue(uint32_t index) const
{
	if (index >= numQueues_ || layout_ != InflightLayout::Split)
		return nullptr;
	return reinterpret_cast<InflightQueueSplit *>(map_.data() +
						      index * inflightQueueBytesSplit(queueSize_));
}

InflightQueuePacked *InflightArea::packedQueue(uint32_t index) const
{
	if (index >= numQueues_ || layout_ != InflightLayout::Packed)
		return nullptr;
	return reinterpret_cast<InflightQueuePacked *>(
		map_.data() + index * inflightQueueBytesPacked(queueSize_));
}

} /* namespace vub::vhost */
