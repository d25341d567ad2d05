/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <span>

#include "vub/vhost/guest_memory.h"
#include "vub/vhost/split_queue.h"

namespace vub::vhost {

/**
 * \brief Add the buffer of one descriptor to \a chain, for the split and packed queues alike.
 *
 * Refuses a zero length, a device-readable buffer after a writable one and a chain above
 * 4 GiB, then translates the buffer into one piece per guest memory region it crosses.
 * \param regionHint the queue's last-hit region, updated
 * \return ChainError::None, or why the chain is refused
 *
 * Inline: it runs once per descriptor on the hot path.
 */
inline ChainError appendDescBuffer(const GuestMemory &mem, uint64_t gpa, uint32_t len, bool writable,
			    std::span<DescBuffer> storage, DescriptorChain &chain, uint32_t *regionHint)
{
	if (len == 0)
		return ChainError::ZeroLength;
	/* Zero lengths are refused, so writable bytes mean a writable buffer came before. */
	if (!writable && chain.writableBytes != 0)
		return ChainError::ReadAfterWrite;
	if (uint64_t{ chain.readableBytes } + chain.writableBytes + len > UINT32_MAX)
		return ChainError::LengthOverflow;
	uint64_t left = len;
	while (left > 0) {
		uint64_t piece = 0;
		uint8_t *hva = mem.translateGpaPrefix(gpa, left, &piece, regionHint);
		if (!hva)
			return ChainError::BadAddress;
		if (chain.bufferCount >= storage.size())
			return ChainError::TooManyBuffers;
		storage[chain.bufferCount++] = DescBuffer{ hva, static_cast<uint32_t>(piece), writable };
		gpa += piece;
		left -= piece;
	}
	if (writable)
		chain.writableBytes += len;
	else
		chain.readableBytes += len;
	return ChainError::None;
}

} /* namespace vub::vhost */
