#include "runtime/options.hpp"

#include <cerrno>
#include <cstdlib>

#include "runtime/config.hpp"

namespace iso {

constinit Options g_options{};

namespace {

// strtoul does not allocate; a malformed or out-of-range value keeps the default, and
// errno is left as it was (this runs inside the first malloc).
bool read_number(const char* name, unsigned long max, unsigned long& out) {
  const char* v = getenv(name);
  if (!v || !*v) return false;
  int saved = errno;
  errno = 0;
  char* end = nullptr;
  unsigned long n = strtoul(v, &end, 10);
  bool ok = errno == 0 && *end == '\0' && n <= max;
  errno = saved;
  if (ok) out = n;
  return ok;
}

}  // namespace

void options_load() {
  unsigned long n;
  if (read_number("ISOSHARD_RETAIN_MS", 86400000, n)) g_options.retain_ms = static_cast<std::uint32_t>(n);
  if (read_number("ISOSHARD_RETAIN_MB", 1ul << 30, n)) g_options.retain_bytes = std::size_t{n} << 20;
  if (read_number("ISOSHARD_LIGHT_ALLOCS", 255, n)) g_options.light_allocs = static_cast<std::uint8_t>(n);
  if (read_number("ISOSHARD_COMMON_STRIPES", kMaxCommonStripes, n))
    g_options.common_stripes = static_cast<std::uint8_t>(n);
}

}  // namespace iso
