/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "vub/base/memory_mapping.h"
#include "vub/base/unique_fd.h"
#include "vub/vhost/message.h"

namespace vub::test {

/**
 * \brief Guest RAM for tests: one memfd, mapped shared in the test process, that a test
 * front-end hands to the back-end with SET_MEM_TABLE or ADD_MEM_REG.
 *
 * Three address spaces describe the same bytes: the guest physical range [gpa(), gpa() + size())
 * that descriptors carry, the front-end virtual range [qva(), qva() + size()) that vring
 * addresses carry (by default the local mapping address, as DPDK virtio-user does; a test may pick
 * any other value, as QEMU's addresses differ from the back-end's), and the local mapping
 * (hostPtr()). Several objects make several regions, each with its own GPA and QVA range.
 *
 * A bump allocator hands out GPAs for rings and buffers. Not thread-safe; the bytes themselves
 * are shared with the back-end, so ring fields are accessed with atomics by SplitDriver.
 */
class GuestMemoryFd
{
public:
	GuestMemoryFd(const GuestMemoryFd &) = delete;
	GuestMemoryFd &operator=(const GuestMemoryFd &) = delete;

	/**
	 * \brief Create \a sizeBytes of zeroed guest memory at guest physical \a gpaBase.
	 * \param qvaBase the front-end virtual address of the first byte; 0 uses the address of
	 * the local mapping
	 * \return the memory, or nullptr when memfd_create, ftruncate or mmap fail or the size is 0
	 */
	static std::unique_ptr<GuestMemoryFd> create(size_t sizeBytes, uint64_t gpaBase,
						     uint64_t qvaBase = 0);

	int fd() const { return fd_.get(); }
	uint64_t gpa() const { return gpa_; }
	uint64_t qva() const { return qva_; }
	size_t size() const { return mapping_.size(); }
	/** \brief The local mapping of the first byte. */
	uint8_t *base() const { return mapping_.data(); }

	/** \brief Whether [\a gpa, \a gpa + \a len) lies inside this region. */
	bool containsGpa(uint64_t gpa, size_t len = 1) const;
	/** \brief Local pointer to guest physical \a gpa, nullptr when outside this region. */
	uint8_t *hostPtr(uint64_t gpa) const;
	/** \brief Front-end virtual address of guest physical \a gpa (no range check). */
	uint64_t gpaToQva(uint64_t gpa) const { return gpa - gpa_ + qva_; }
	/** \brief Guest physical address of front-end virtual \a qva (no range check). */
	uint64_t qvaToGpa(uint64_t qva) const { return qva - qva_ + gpa_; }

	/**
	 * \brief Take \a bytes from the bump allocator, aligned to \a align (a power of two).
	 * \return the guest physical address; throws std::bad_alloc when the region is full
	 */
	uint64_t alloc(size_t bytes, size_t align = 8);
	/** \brief Bytes handed out so far (including alignment padding). */
	size_t allocated() const { return next_; }
	/** \brief Forget every allocation (the bytes are left as they are). */
	void resetAlloc() { next_ = 0; }

	/** \brief Copy \a len bytes from \a src to guest physical \a gpa (must be inside). */
	void write(uint64_t gpa, const void *src, size_t len);
	/** \brief Copy \a len bytes from guest physical \a gpa to \a dst (must be inside). */
	void read(uint64_t gpa, void *dst, size_t len) const;
	/** \brief Fill \a len bytes at \a gpa with \a byte. */
	void fill(uint64_t gpa, uint8_t byte, size_t len);

	/**
	 * \brief The memory region as SET_MEM_TABLE / ADD_MEM_REG describe it.
	 *
	 * With a nonzero \a mmapOffset the region is the part of the memfd from that offset on:
	 * guest physical gpa() + mmapOffset and front-end virtual qva() + mmapOffset, size() -
	 * mmapOffset bytes, so hostPtr() stays right for every address in it.
	 */
	vhost::MemoryRegionMsg regionMsg(uint64_t mmapOffset = 0) const;

private:
	GuestMemoryFd() = default;

	UniqueFd fd_;
	MemoryMapping mapping_;
	uint64_t gpa_ = 0;
	uint64_t qva_ = 0;
	size_t next_ = 0;
};

} /* namespace vub::test */
