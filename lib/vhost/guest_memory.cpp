/* SPDX-License-Identifier: Apache-2.0 */
#include "vub/vhost/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>

#include "vub/base/log.h"
#include "vub/base/topology.h"

namespace vub::vhost {

namespace {

bool addOverflows(uint64_t a, uint64_t b)
{
	return a + b < a;
}

} /* namespace */

Result<std::shared_ptr<MemoryRegion>> MemoryRegion::create(const MemoryRegionMsg &desc, UniqueFd fd)
{
	if (!fd.isValid())
		return Error{ EBADF, "memory region without an fd" };
	if (desc.memorySize == 0)
		return Error{ EINVAL, "empty memory region" };
	if (addOverflows(desc.guestPhysAddr, desc.memorySize - 1) ||
	    addOverflows(desc.userspaceAddr, desc.memorySize - 1) ||
	    addOverflows(desc.mmapOffset, desc.memorySize))
		return Error{ EINVAL, "memory region range overflows" };

	struct stat st {};
	if (::fstat(fd.get(), &st) < 0)
		return errnoError("fstat on memory region fd");
	size_t pageSize = st.st_blksize > 0 ? static_cast<size_t>(st.st_blksize) : 4096;
	if ((pageSize & (pageSize - 1)) != 0)
		pageSize = 4096;
	/* The region must lie inside the file: a mapping past its end faults later (SIGBUS). */
	if (S_ISREG(st.st_mode) && desc.mmapOffset + desc.memorySize > static_cast<uint64_t>(st.st_size))
		return Error{ EINVAL, "memory region extends past the end of its file" };

	uint64_t alignedOffset = desc.mmapOffset & ~(uint64_t{ pageSize } - 1);
	uint64_t residual = desc.mmapOffset - alignedOffset;
	uint64_t mapSize = residual + desc.memorySize;
	if (addOverflows(mapSize, pageSize - 1))
		return Error{ EINVAL, "memory region size overflows when aligned" };
	mapSize = (mapSize + pageSize - 1) & ~(uint64_t{ pageSize } - 1);
	if (mapSize > SIZE_MAX || alignedOffset > static_cast<uint64_t>(INT64_MAX))
		return Error{ EINVAL, "memory region too large" };

	auto mapping = MemoryMapping::mapShared(fd.get(), static_cast<size_t>(mapSize),
						static_cast<off_t>(alignedOffset), MAP_NORESERVE);
	if (!mapping)
		return mapping.error();
	/* Guest memory has no place in a core dump of the back-end. */
	::madvise(mapping->data(), mapping->size(), MADV_DONTDUMP);

	std::shared_ptr<MemoryRegion> region(new MemoryRegion());
	region->gpa_ = desc.guestPhysAddr;
	region->qva_ = desc.userspaceAddr;
	region->size_ = desc.memorySize;
	region->mmapOffset_ = desc.mmapOffset;
	region->pageSize_ = pageSize;
	region->hva_ = mapping->data() + residual;
	region->mapping_ = std::move(*mapping);
	region->fd_ = std::move(fd);
	/* The front-end placed the memory; its first page says where (a read maps it). */
	region->numaNode_ = Topology::nodeOfAddress(region->hva_);
	VUB_LOG(Memory, Info,
		"mapped region gpa 0x%llx size 0x%llx qva 0x%llx page %zu KiB numa node %d",
		static_cast<unsigned long long>(region->gpa_),
		static_cast<unsigned long long>(region->size_),
		static_cast<unsigned long long>(region->qva_), pageSize / 1024, region->numaNode_);
	return region;
}

Result<std::unique_ptr<GuestMemory>>
GuestMemory::withRegions(std::vector<std::shared_ptr<MemoryRegion>> regions)
{
	if (regions.size() > kMaxRegions)
		return Error{ E2BIG, "too many memory regions" };
	for (size_t i = 0; i < regions.size(); i++) {
		for (size_t j = i + 1; j < regions.size(); j++) {
			const MemoryRegion &a = *regions[i];
			const MemoryRegion &b = *regions[j];
			/* Ranges are inclusive of their last byte, which cannot overflow (checked in create). */
			bool gpaOverlap = a.gpa() <= b.gpa() + (b.size() - 1) &&
					  b.gpa() <= a.gpa() + (a.size() - 1);
			bool qvaOverlap = a.qva() <= b.qva() + (b.size() - 1) &&
					  b.qva() <= a.qva() + (a.size() - 1);
			if (gpaOverlap)
				return Error{ EINVAL, "memory regions overlap in guest-physical space" };
			if (qvaOverlap)
				return Error{ EINVAL, "memory regions overlap in front-end address space" };
		}
	}
	auto memory = std::make_unique<GuestMemory>();
	memory->regions_ = std::move(regions);
	for (const auto &r : memory->regions_)
		memory->regionList_.push_back(r.get());
	return memory;
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::create(std::vector<std::shared_ptr<MemoryRegion>> regions)
{
	auto memory = withRegions(std::move(regions));
	if (!memory)
		return memory.error();
	auto &windows = (*memory)->windows_;
	for (const MemoryRegion *r : (*memory)->regionList_)
		windows.push_back(Window{ r->gpa(), r->size(), r->hva(), kAccessReadWrite });
	std::sort(windows.begin(), windows.end(),
		  [](const Window &a, const Window &b) { return a.gpa < b.gpa; });
	return memory;
}

Result<std::unique_ptr<GuestMemory>>
GuestMemory::createIova(std::vector<std::shared_ptr<MemoryRegion>> regions, const Iotlb &iotlb,
			std::shared_ptr<IotlbMisses> misses)
{
	auto memory = withRegions(std::move(regions));
	if (!memory)
		return memory.error();
	GuestMemory &m = **memory;
	m.misses_ = std::move(misses);
	/* Entries come by IOVA; each is cut where its front-end range leaves a region. */
	for (const auto &[iova, entry] : iotlb.entries()) {
		uint64_t done = 0;
		while (done < entry.size) {
			uint64_t uaddr = entry.uaddr + done;
			uint64_t left = entry.size - done;
			const MemoryRegion *region = m.findQva(uaddr);
			if (!region) {
				/* Skip to the next region that starts inside the entry, if any. */
				uint64_t next = UINT64_MAX;
				for (const MemoryRegion *r : m.regionList_) {
					if (r->qva() > uaddr && r->qva() - uaddr < left)
						next = std::min(next, r->qva() - uaddr);
				}
				if (next == UINT64_MAX)
					break;
				done += next;
				continue;
			}
			uint64_t piece = std::min(left, region->size() - (uaddr - region->qva()));
			Window w{ iova + done, piece, region->hva() + (uaddr - region->qva()), entry.perm };
			Window *last = m.windows_.empty() ? nullptr : &m.windows_.back();
			if (last && last->gpa + last->size == w.gpa && last->hva + last->size == w.hva &&
			    last->perm == w.perm)
				last->size += w.size;
			else
				m.windows_.push_back(w);
			done += piece;
		}
	}
	return memory;
}

const GuestMemory::Window *GuestMemory::findGpaSlow(uint64_t gpa, uint32_t *hint) const
{
	/* The last window that starts at or below gpa. */
	auto it = std::upper_bound(windows_.begin(), windows_.end(), gpa,
				   [](uint64_t addr, const Window &w) { return addr < w.gpa; });
	if (it == windows_.begin())
		return nullptr;
	--it;
	if (gpa - it->gpa >= it->size)
		return nullptr;
	if (hint)
		*hint = static_cast<uint32_t>(it - windows_.begin());
	return &*it;
}

uint64_t GuestMemory::firstUnmapped(uint64_t addr, uint64_t len, uint8_t access) const
{
	uint64_t done = 0;
	do {
		uint64_t piece = 0;
		if (!translateGpaPrefix(addr + done, len - done, &piece, nullptr, access))
			return addr + done;
		done += piece;
	} while (done < len);
	return UINT64_MAX;
}

void GuestMemory::requestTranslation(uint64_t addr, uint8_t access) const
{
	if (misses_)
		misses_->post(addr, access);
}

const MemoryRegion *GuestMemory::findQva(uint64_t qva) const
{
	for (const MemoryRegion *r : regionList_) {
		if (r->containsQva(qva))
			return r;
	}
	return nullptr;
}

uint8_t *GuestMemory::translateQva(uint64_t qva, uint64_t len) const
{
	const MemoryRegion *r = findQva(qva);
	if (!r || len > r->size() - (qva - r->qva()))
		return nullptr;
	return r->hva() + (qva - r->qva());
}

bool GuestMemory::qvaToGpa(uint64_t qva, uint64_t *gpa) const
{
	const MemoryRegion *r = findQva(qva);
	if (!r)
		return false;
	*gpa = r->gpa() + (qva - r->qva());
	return true;
}

bool GuestMemory::hvaToGpa(const void *hva, uint64_t *gpa) const
{
	auto *p = static_cast<const uint8_t *>(hva);
	for (const MemoryRegion *r : regionList_) {
		if (p >= r->hva() && static_cast<uint64_t>(p - r->hva()) < r->size()) {
			*gpa = r->gpa() + static_cast<uint64_t>(p - r->hva());
			return true;
		}
	}
	return false;
}

void GuestMemory::logWrite(const uint8_t *hva, uint64_t len) const
{
	uint64_t gpa = 0;
	if (log_ && hvaToGpa(hva, &gpa))
		log_->mark(gpa, len);
}

GuestMemoryAtomic::GuestMemoryAtomic(Rcu &rcu) : rcu_(rcu), current_(new GuestMemory())
{
}

GuestMemoryAtomic::~GuestMemoryAtomic()
{
	delete current_.load();
}

void GuestMemoryAtomic::replace(std::unique_ptr<GuestMemory> next,
				const std::function<void(const GuestMemory &)> &beforeReclaim)
{
	const GuestMemory *published = next.get();
	const GuestMemory *old = current_.exchange(next.release(), std::memory_order_acq_rel);
	if (beforeReclaim)
		beforeReclaim(*published);
	rcu_.synchronize();
	delete old;
}

} /* namespace vub::vhost */
