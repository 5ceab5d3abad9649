/* isoshard public C API. The malloc family and C++ operator new/delete are replaced too
 * when libisoshard is linked in or preloaded; these names work either way. */
#ifndef ISOSHARD_H
#define ISOSHARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ISOSHARD_API __attribute__((visibility("default")))

ISOSHARD_API void* iso_alloc(size_t size);
ISOSHARD_API void* iso_calloc(size_t nmemb, size_t size);
ISOSHARD_API void* iso_realloc(void* p, size_t size);
ISOSHARD_API void iso_free(void* p);
/* Usable bytes of the chunk p points to (0 for NULL). */
ISOSHARD_API size_t iso_chunksz(void* p);
/* alignment: a power of two. NULL with errno EINVAL or ENOMEM on failure. */
ISOSHARD_API void* iso_aligned_alloc(size_t alignment, size_t size);

/* Checks every invariant of the calling thread's zones and of the common zones (where a
 * thread's first allocations of each size class come from), and their canaries; aborts on
 * corruption. Returns the number of chunks in use in the calling thread's own zones. */
ISOSHARD_API uint64_t iso_verify(void);
/* Sends the calling thread's pending cross-thread frees and takes in the ones sent to it. */
ISOSHARD_API void iso_flush(void);
/* Gives free memory back to the OS now rather than when it has been idle for a while: the
 * calling thread's empty zones, the common shard's, and the zones of the shards that exited
 * threads left in the pool (as far as chunks still in use allow). Returns 1 if it released
 * any, 0 otherwise (malloc_trim calls it). */
ISOSHARD_API int iso_trim(void);

struct iso_stats {
  uint32_t shards;             /* shards ever created */
  uint32_t shards_pooled;      /* released by exited threads, waiting for a new one */
  uint32_t zones;              /* zones created */
  uint32_t big_live;           /* big allocations in use */
  size_t big_cached_bytes;     /* freed big mappings kept for reuse */
  size_t metadata_bytes;       /* zone tables and bitmaps handed out */
  uint64_t remote_frees_sent;  /* by the calling thread's shard */
  uint64_t remote_frees_received;
  uint64_t zones_released;     /* empty zones whose pages went back to the OS */
  uint64_t inbox_overflows;    /* batches that found the calling shard's queue full */
  uint64_t remote_batches_sent; /* the batches remote_frees_sent travelled in */
  uint32_t common_zones;       /* of zones, those of the common shard (light allocations) */
};
ISOSHARD_API void iso_get_stats(struct iso_stats* out);

#ifdef __cplusplus
}
#endif
#endif
