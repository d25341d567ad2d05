/* SPDX-License-Identifier: Apache-2.0 */
#include "guest_memory_fd.h"

#include <sys/mman.h>
#include <unistd.h>

#include <new>
#include <stdexcept>

namespace vub::test {

std::unique_ptr<GuestMemoryFd> GuestMemoryFd::create(size_t sizeBytes, uint64_t gpaBase,
						     uint64_t qvaBase)
{
	if (sizeBytes == 0)
		return nullptr;
	UniqueFd fd(::memfd_create("vub-test-guest", MFD_CLOEXEC));
	if (!fd)
		return nullptr;
	if (::ftruncate(fd.get(), static_cast<off_t>(sizeBytes)) != 0)
		return nullptr;
	auto mapping = MemoryMapping::mapShared(fd.get(), sizeBytes, 0);
	if (!mapping)
		return nullptr;

	std::unique_ptr<GuestMemoryFd> mem(new GuestMemoryFd());
	mem->fd_ = std::move(fd);
	mem->mapping_ = std::move(*mapping);
	mem->gpa_ = gpaBase;
	mem->qva_ = qvaBase != 0 ? qvaBase : reinterpret_cast<uintptr_t>(mem->mapping_.data());
	return mem;
}

bool GuestMemoryFd::containsGpa(uint64_t gpa, size_t len) const
{
	if (gpa < gpa_)
		return false;
	uint64_t off = gpa - gpa_;
	return off <= size() && len <= size() - off && (len > 0 || off < size());
}

uint8_t *GuestMemoryFd::hostPtr(uint64_t gpa) const
{
	if (!containsGpa(gpa))
		return nullptr;
	return mapping_.data() + (gpa - gpa_);
}

uint64_t GuestMemoryFd::alloc(size_t bytes, size_t align)
{
	if (align == 0 || (align & (align - 1)) != 0)
		throw std::invalid_argument(
			"GuestMemoryFd::alloc: alignment is not a power of two");
	/* Align the guest physical address, not just the offset: gpa_ may be unaligned. */
	uint64_t start = (gpa_ + next_ + align - 1) & ~static_cast<uint64_t>(align - 1);
	uint64_t off = start - gpa_;
	if (off > size() || bytes > size() - off)
		throw std::bad_alloc();
	next_ = off + bytes;
	return start;
}

void GuestMemoryFd::write(uint64_t gpa, const void *src, size_t len)
{
	if (!containsGpa(gpa, len))
		throw std::out_of_range("GuestMemoryFd::write outside the region");
	if (len > 0)
		std::memcpy(hostPtr(gpa), src, len);
}

void GuestMemoryFd::read(uint64_t gpa, void *dst, size_t len) const
{
	if (!containsGpa(gpa, len))
		throw std::out_of_range("GuestMemoryFd::read outside the region");
	if (len > 0)
		std::memcpy(dst, hostPtr(gpa), len);
}

void GuestMemoryFd::fill(uint64_t gpa, uint8_t byte, size_t len)
{
	if (!containsGpa(gpa, len))
		throw std::out_of_range("GuestMemoryFd::fill outside the region");
	if (len > 0)
		std::memset(hostPtr(gpa), byte, len);
}

vhost::MemoryRegionMsg GuestMemoryFd::regionMsg(uint64_t mmapOffset) const
{
	vhost::MemoryRegionMsg r{};
	r.guestPhysAddr = gpa_ + mmapOffset;
	r.memorySize = mmapOffset < size() ? size() - mmapOffset : 0;
	r.userspaceAddr = qva_ + mmapOffset;
	r.mmapOffset = mmapOffset;
	return r;
}

} /* namespace vub::test */
