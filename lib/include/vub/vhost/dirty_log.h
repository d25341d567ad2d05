/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "vub/base/memory_mapping.h"
#include "vub/base/result.h"
#include "vub/base/unique_fd.h"

namespace vub::vhost {

/**
 * \brief The front-end's dirty page log during a live migration (SET_LOG_BASE with
 * LOG_SHMFD): one bit per 4 KiB page of guest-physical memory, set by the back-end for every
 * page it writes while VHOST_F_LOG_ALL is acked, read and cleared by the front-end, which
 * sends those pages again.
 *
 * Bits are set with an atomic release OR after the data they cover is written, so the
 * front-end never clears a bit and copies the page before the write it stands for. Pages
 * past the end of the log are not marked (the front-end sized it for its memory). Immutable
 * once mapped: workers share it through the GuestMemory snapshot.
 */
class DirtyLog
{
public:
	static constexpr uint64_t kPageSize = 4096;

	/**
	 * \brief Map \a size bytes of \a fd from \a offset, shared and writable.
	 * \return EINVAL for size 0, an offset + size that overflows (CVE-2020-10722) or lies
	 * past the end of the file, or the mmap error.
	 */
	static Result<std::shared_ptr<const DirtyLog>> map(UniqueFd fd, uint64_t size,
							    uint64_t offset);

	/** \brief Mark the pages of guest-physical [\a gpa, \a gpa + \a len) written. */
	void mark(uint64_t gpa, uint64_t len) const
	{
		if (len == 0)
			return;
		uint64_t first = gpa / kPageSize;
		uint64_t end = gpa + (len - 1) < gpa ? UINT64_MAX : gpa + (len - 1);
		uint64_t last = end / kPageSize;
		for (uint64_t page = first; page <= last && page / 8 < bytes_; page++)
			std::atomic_ref<uint8_t>(bits_[page / 8])
				.fetch_or(static_cast<uint8_t>(1u << (page % 8)),
					  std::memory_order_release);
	}

	/** \brief The bytes of bitmap: pages up to 8 times that are logged. */
	uint64_t bytes() const { return bytes_; }

private:
	DirtyLog() = default;

	MemoryMapping mapping_;
	uint8_t *bits_ = nullptr;
	uint64_t bytes_ = 0;
};

} /* namespace vub::vhost */
