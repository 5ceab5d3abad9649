#include "runtime/errors.hpp"

#include <fmt/compile.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>

namespace iso {
namespace {

const char* fault_name(Fault fault) {
  switch (fault) {
    case Fault::kDoubleFree: return "double free";
    case Fault::kInvalidFree: return "invalid free";
    case Fault::kCanaryOverwritten: return "canary overwritten (heap overflow)";
    case Fault::kCorruptMetadata: return "corrupt metadata";
    case Fault::kOutOfMetadata: return "out of metadata space";
  }
  return "fault";
}

}  // namespace

void fatal(Fault fault, const void* ptr, long zone_id, unsigned chunk_bytes) {
  // format_to_n into the stack: the heap may be what is broken. Compiled format strings: only
  // the formatters these lines use are linked in (fmt's runtime parser brings its float code).
  char line[200];
  fmt::format_to_n_result<char*> r;
  if (zone_id >= 0) {
    r = fmt::format_to_n(line, sizeof line - 1,
                         FMT_COMPILE("isoshard: {} of {} in zone {} ({}-byte chunks)\n"),
                         fault_name(fault), ptr, zone_id, chunk_bytes);
  } else {
    r = fmt::format_to_n(line, sizeof line - 1, FMT_COMPILE("isoshard: {} of {} (not in any zone)\n"),
                         fault_name(fault), ptr);
  }
  std::size_t n = r.size < sizeof line - 1 ? r.size : sizeof line - 1;
  line[sizeof line - 2] = '\n';
  (void)!write(STDERR_FILENO, line, n);
  abort();
}

void report_no_address_space(std::size_t wanted_bytes, std::size_t limit_bytes) {
  char line[200];
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  fmt::format_to_n_result<char*> r;
  if (limit_bytes == SIZE_MAX) {
    r = fmt::format_to_n(line, sizeof line - 1,
                         FMT_COMPILE("isoshard: cannot reserve {} MiB of address space: "
                                     "every allocation fails with ENOMEM\n"),
                         wanted_bytes / kMiB);
  } else {
    r = fmt::format_to_n(line, sizeof line - 1,
                         FMT_COMPILE("isoshard: cannot reserve {} MiB of address space "
                                     "(RLIMIT_AS {} MiB): every allocation fails with ENOMEM\n"),
                         wanted_bytes / kMiB, limit_bytes / kMiB);
  }
  std::size_t n = r.size < sizeof line - 1 ? r.size : sizeof line - 1;
  line[sizeof line - 2] = '\n';
  (void)!write(STDERR_FILENO, line, n);
}

}  // namespace iso
