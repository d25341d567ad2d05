/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/dirty_log.h"

#include <sys/stat.h>
#include <unistd.h>

namespace vub::vhost {

Result<std::shared_ptr<const DirtyLog>> DirtyLog::map(UniqueFd fd, uint64_t size, uint64_t offset)
{
	if (!fd.isValid())
		return Error{ EBADF, "dirty log without an fd" };
	if (size == 0)
		return Error{ EINVAL, "dirty log of size 0" };
	if (offset + size < offset)
		return Error{ EINVAL, "dirty log offset + size overflows" };
	struct stat st {};
	if (::fstat(fd.get(), &st) < 0)
		return errnoError("fstat on the dirty log fd");
	/* Past the end of the file a write would fault (SIGBUS). */
	if (!S_ISREG(st.st_mode) || offset + size > static_cast<uint64_t>(st.st_size))
		return Error{ EINVAL, "dirty log extends past the end of its file" };
	uint64_t pageSize = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
	uint64_t alignedOffset = offset & ~(pageSize - 1);
	uint64_t mapSize = size + (offset - alignedOffset);
	if (mapSize > SIZE_MAX || alignedOffset > static_cast<uint64_t>(INT64_MAX))
		return Error{ EINVAL, "dirty log too large" };
	auto mapping = MemoryMapping::mapShared(fd.get(), static_cast<size_t>(mapSize),
						static_cast<off_t>(alignedOffset));
	if (!mapping)
		return mapping.error();
	std::shared_ptr<DirtyLog> log(new DirtyLog());
	log->bits_ = mapping->data() + (offset - alignedOffset);
	log->bytes_ = size;
	log->mapping_ = std::move(*mapping);
	return std::shared_ptr<const DirtyLog>(std::move(log));
}

} /* namespace vub::vhost */
