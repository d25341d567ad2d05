/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstdint>
#include <span>

#include "vub/vhost/guest_memory.h"
#include "vub/vhost/split_queue.h"

namespace vub::vhost {

/**
 * \brief Why [\a addr, \a addr + \a len) did not translate for \a access: under a vIOMMU,
 * a translation still to come (ChainError::IotlbMiss; the first missing address is asked
 * for), else a bad address. Off the hot path.
 */
inline ChainError translationFailed(const GuestMemory &mem, uint64_t addr, uint64_t len,
				    uint8_t access)
{
	if (!mem.isIova())
		return ChainError::BadAddress;
	uint64_t missing = mem.firstUnmapped(addr, len, access);
	/*
	 * All mapped but not contiguous on the host, or mapped without the access (the guest's
	 * IOMMU forbids it): asking again would bring the same answer.
	 */
	if (missing == UINT64_MAX || mem.translateGpa(missing, 1, nullptr, 0))
		return ChainError::BadAddress;
	mem.requestTranslation(missing, access);
	return ChainError::IotlbMiss;
}

/**
 * \brief GuestMemory::translateRing() of one part of a ring; under a vIOMMU, what is missing
 * is asked for, and the front-end's answer brings the ring up. Control thread.
 */
inline uint8_t *translateRingPart(const GuestMemory &mem, uint64_t addr, uint64_t len,
				  uint8_t access)
{
	uint8_t *hva = mem.translateRing(addr, len, access);
	if (!hva && mem.isIova())
		translationFailed(mem, addr, len, access);
	return hva;
}

/** \brief Why a ring did not translate: EAGAIN while vIOMMU translations are awaited. */
inline Error ringNotTranslated(const GuestMemory &mem)
{
	if (mem.isIova())
		return Error{ EAGAIN, "ring not (wholly) in the IOTLB" };
	return Error{ EFAULT, "ring not wholly inside one guest memory region" };
}

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
	uint8_t access = writable ? kAccessWrite : kAccessRead;
	while (left > 0) {
		uint64_t piece = 0;
		uint8_t *hva = mem.translateGpaPrefix(gpa, left, &piece, regionHint, access);
		if (!hva) [[unlikely]]
			return translationFailed(mem, gpa, left, access);
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
