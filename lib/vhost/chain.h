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
 */
ChainError appendDescBuffer(const GuestMemory &mem, uint64_t gpa, uint32_t len, bool writable,
			    std::span<DescBuffer> storage, DescriptorChain &chain, uint32_t *regionHint);

} /* namespace vub::vhost */
