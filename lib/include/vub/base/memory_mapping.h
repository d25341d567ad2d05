/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "vub/base/result.h"

namespace vub {

/**
 * \brief Sole owner of an mmap()ed range; munmap()s it on destruction. Move-only.
 */
class MemoryMapping
{
public:
	MemoryMapping() = default;
	MemoryMapping(const MemoryMapping &) = delete;
	MemoryMapping &operator=(const MemoryMapping &) = delete;
	MemoryMapping(MemoryMapping &&other) noexcept
		: addr_(std::exchange(other.addr_, nullptr)), sizeBytes_(std::exchange(other.sizeBytes_, 0))
	{
	}
	MemoryMapping &operator=(MemoryMapping &&other) noexcept
	{
		reset();
		addr_ = std::exchange(other.addr_, nullptr);
		sizeBytes_ = std::exchange(other.sizeBytes_, 0);
		return *this;
	}
	~MemoryMapping() { reset(); }

	/**
	 * \brief mmap() \a sizeBytes of \a fd from \a offset, shared and read-write.
	 * \return the mapping, or the mmap error (EINVAL for a zero size or an unaligned offset).
	 */
	static Result<MemoryMapping> mapShared(int fd, size_t sizeBytes, off_t offset, int extraFlags = 0);

	uint8_t *data() const { return static_cast<uint8_t *>(addr_); }
	size_t size() const { return sizeBytes_; }
	bool isValid() const { return addr_ != nullptr; }

	void reset();

private:
	void *addr_ = nullptr;
	size_t sizeBytes_ = 0;
};

} /* namespace vub */
