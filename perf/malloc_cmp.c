/* Seed comparison workload: the shape of IsoAlloc's malloc_cmp_test, written
 * from its description. Three phases (malloc, calloc, malloc+realloc) each make
 * exactly 1,441,616 allocations: 13 array lengths (16..65536) x 11 sizes
 * (16..8192 plus one random size per length) -> 131056 * 11.
 *
 * Built twice from this file: malloc_cmp_iso (isoshard linked statically,
 * MALLOC_CMP_ISO=1, prints the iso_* labels) and malloc_cmp (system malloc;
 * scripts/bench.sh runs it under LD_PRELOAD for every allocator). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if MALLOC_CMP_ISO
#define LABEL_MALLOC "iso_alloc/iso_free"
#define LABEL_CALLOC "iso_calloc/iso_free"
#define LABEL_REALLOC "iso_realloc/iso_free"
#else
#define LABEL_MALLOC "malloc/free"
#define LABEL_CALLOC "calloc/free"
#define LABEL_REALLOC "realloc/free"
#endif

enum { MIN_LEN = 16, MAX_LEN = 65536, MIN_SIZE = 16, MAX_SIZE = 8192 };
enum { RANDOM_SEED = 0x150544u, EXPECTED_ALLOCS = 1441616 };

typedef enum { PHASE_MALLOC, PHASE_CALLOC, PHASE_REALLOC } phase_t;

/* Global so the compiler must assume the pointers escape and cannot pair up
 * and delete a malloc/free. */
void *chunks[MAX_LEN];

/* xorshift32: fixed seed, reset per phase, so every phase and every allocator
 * sees the same "random" sizes. */
static uint32_t rng_state;
static uint32_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static void die_null(const char *what, size_t size) {
  fprintf(stderr, "malloc_cmp: %s(%zu) returned NULL\n", what, size);
  abort();
}

/* Touch first and last byte: enough to fault in every page of a chunk up to
 * 8 KiB without paying for a full memset in the malloc phase. */
static void touch(void *p, size_t size) {
  volatile unsigned char *b = p;
  b[0] = 0xa5;
  b[size - 1] = 0x5a;
}

static void *allocate(phase_t phase, size_t size) {
  void *p = NULL;
  switch (phase) {
  case PHASE_MALLOC:
    if (!(p = malloc(size))) die_null("malloc", size);
    break;
  case PHASE_CALLOC:
    if (!(p = calloc(1, size))) die_null("calloc", size);
    break;
  case PHASE_REALLOC: {
    /* size/2 is 0 for a random size of 1; malloc(0) may legally return NULL,
     * so start from at least one byte. */
    size_t half = size / 2 ? size / 2 : 1;
    void *q = malloc(half);
    if (!q) die_null("malloc", half);
    memset(q, 0x41, half);
    if (!(p = realloc(q, size))) die_null("realloc", size);
    break;
  }
  }
  touch(p, size);
  return p;
}

/* Allocate `len` chunks of `size`; odd indices are freed at once, even ones
 * after the loop, so the allocator sees interleaved live and free slots. */
static void run_array(phase_t phase, size_t len, size_t size) {
  for (size_t i = 0; i < len; i++) {
    chunks[i] = allocate(phase, size);
    if (i & 1) free(chunks[i]);
  }
  for (size_t i = 0; i < len; i += 2) free(chunks[i]);
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_phase(phase_t phase, const char *label) {
  long allocs = 0;
  rng_state = RANDOM_SEED;
  double start = now_seconds();
  for (size_t len = MIN_LEN; len <= MAX_LEN; len *= 2) {
    for (size_t size = MIN_SIZE; size <= MAX_SIZE; size *= 2) {
      run_array(phase, len, size);
      allocs += (long)len;
    }
    run_array(phase, len, 1 + next_random() % MAX_SIZE);
    allocs += (long)len;
  }
  double elapsed = now_seconds() - start;
  if (allocs != EXPECTED_ALLOCS) {
    fprintf(stderr, "malloc_cmp: %ld allocations, expected %d\n", allocs, EXPECTED_ALLOCS);
    abort();
  }
  printf("%s %ld tests completed in %f seconds\n", label, allocs, elapsed);
}

int main(void) {
  run_phase(PHASE_MALLOC, LABEL_MALLOC);
  run_phase(PHASE_CALLOC, LABEL_CALLOC);
  run_phase(PHASE_REALLOC, LABEL_REALLOC);
  return 0;
}
