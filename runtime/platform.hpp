// Thin wrappers over the kernel: mappings, advice, locking pages, randomness.
// Nothing here allocates through malloc.
#pragma once
#include <cstddef>
#include <cstdint>

namespace iso::os {

// Reserves address space that holds no memory (PROT_NONE, MAP_NORESERVE).
void* reserve(std::size_t bytes);
// Gives a reservation back (munmap).
void unreserve(void* p, std::size_t bytes);
// The soft RLIMIT_AS in bytes; SIZE_MAX when unlimited.
std::size_t address_space_limit();
// Reserves [p, p+bytes) again in place (a fresh PROT_NONE mapping, with the user pages'
// MADV_RANDOM), over whatever was there.
void reserve_at(void* p, std::size_t bytes);
// Makes [p, p+bytes) of a reservation readable and writable, keeping the mapping's advice;
// prefaults when asked.
bool commit(void* p, std::size_t bytes, bool populate);
// Returns the pages to the OS and makes the range inaccessible again (advice kept).
void decommit(void* p, std::size_t bytes);
// Returns the pages to the OS; the range stays accessible and reads as zero.
void discard(void* p, std::size_t bytes);
// Moves the pages of [src, src+bytes) (inside one mapping) to dst, replacing what is there,
// without copying or zeroing them, and leaves src reserved and inaccessible. Where the kernel
// can (MREMAP_DONTUNMAP) src stays mapped throughout, so no hole opens for another thread's
// mmap to land in. On failure dst is reserved again at once and src is left as it was.
bool move_pages(std::uintptr_t src, std::uintptr_t dst, std::size_t bytes);
// The seed's advice, given once to a whole range (commits keep it): the bitmap arena gets
// WILLNEED and SEQUENTIAL, the reservation of user pages WILLNEED and RANDOM.
void advise_bitmap(void* p, std::size_t bytes);
void advise_user(void* p, std::size_t bytes);
// mlock; failure (e.g. RLIMIT_MEMLOCK in a container) is tolerated by design.
void try_lock(void* p, std::size_t bytes);
std::uint64_t random_u64();
// Probes once whether mremap can move a range that spans two mappings.
bool moves_span_mappings();
// A coarse monotonic clock (vDSO, no syscall) for slow-path decisions.
std::uint64_t now_ms();
// CPUs this process may run on (at least 1).
unsigned usable_cpus();
// The CPU the calling thread runs on (rseq or vDSO, no syscall); 0 when unknown.
unsigned current_cpu();

}  // namespace iso::os
