/* SPDX-License-Identifier: Apache-2.0 */
#include "chain.h"

namespace vub::vhost {

ChainError appendDescBuffer(const GuestMemory &mem, uint64_t gpa, uint32_t len, bool writable,
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
