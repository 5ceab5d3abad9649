#include "runtime/options.hpp"

#include <cstdlib>

namespace iso {

constinit Options g_options{};

namespace {

// strtoul does not allocate; a malformed value keeps the default.
bool read_number(const char* name, unsigned long& out) {
  const char* v = getenv(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  unsigned long n = strtoul(v, &end, 10);
  if (*end != '\0') return false;
  out = n;
  return true;
}

}  // namespace

void options_load() {
  unsigned long n;
  if (read_number("ISOSHARD_RETAIN_MS", n)) g_options.retain_ms = static_cast<std::uint32_t>(n);
  if (read_number("ISOSHARD_RETAIN_MB", n)) g_options.retain_bytes = std::size_t{n} << 20;
}

}  // namespace iso
