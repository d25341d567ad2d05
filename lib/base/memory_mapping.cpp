/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/base/memory_mapping.h"

#include <sys/mman.h>

namespace vub {

Result<MemoryMapping> MemoryMapping::mapShared(int fd, size_t sizeBytes, off_t offset, int extraFlags)
{
	if (sizeBytes == 0 || offset < 0)
		return Error{ EINVAL, "empty mapping or negative offset" };
	void *addr = ::mmap(nullptr, sizeBytes, PROT_READ | PROT_WRITE, MAP_SHARED | extraFlags, fd,
			    offset);
	if (addr == MAP_FAILED)
		return errnoError("mmap");
	MemoryMapping mapping;
	mapping.addr_ = addr;
	mapping.sizeBytes_ = sizeBytes;
	return mapping;
}

void MemoryMapping::reset()
{
	if (addr_)
		::munmap(addr_, sizeBytes_);
	addr_ = nullptr;
	sizeBytes_ = 0;
}

} /* namespace vub */
