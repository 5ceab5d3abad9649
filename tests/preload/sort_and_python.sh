#!/usr/bin/env bash
# Real programs under LD_PRELOAD=libisoshard.so: sort, python3 (dicts, json, threads) and
# gzip|gunzip each run once plainly and once preloaded; outputs must match byte for byte and
# every preloaded run must exit 0. Also proves the preload took effect (the library is mapped,
# iso_get_stats is resolvable and reports a shard, and python's malloc hands out isoshard
# chunks). Then the python workload and a parallel sort again under a capped address space
# (ulimit -v), where isoshard must scale its reservations down, and a cap too small for
# them, where it must say so in one line. Usage: bash sort_and_python.sh /abs/path/libisoshard.so
set -euo pipefail

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

lib=${1:-}
[[ -n "$lib" ]] || fail "usage: $0 /abs/path/libisoshard.so"
[[ -f "$lib" ]] || fail "no such library: $lib"
[[ "$lib" = /* ]] || lib="$PWD/$lib"
for tool in python3 sort gzip gunzip cmp awk; do
  command -v "$tool" > /dev/null || fail "$tool is required but not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/isoshard-preload.XXXXXX")
trap 'rm -rf "$work"' EXIT
export LC_ALL=C  # sort order and python output must not depend on the caller's locale

# Runs "$@" plainly into $work/$name.plain and preloaded into $work/$name.iso, then compares.
run_both() {
  local name=$1
  shift
  "$@" > "$work/$name.plain" || fail "$name: plain run exited with $?"
  local rc=0
  LD_PRELOAD="$lib" "$@" > "$work/$name.iso" 2> "$work/$name.iso.err" || rc=$?
  if [[ $rc -ne 0 ]]; then
    cat "$work/$name.iso.err" >&2
    fail "$name: run under LD_PRELOAD exited with $rc"
  fi
  if ! cmp -s "$work/$name.plain" "$work/$name.iso"; then
    cmp "$work/$name.plain" "$work/$name.iso" >&2 || true
    fail "$name: output under LD_PRELOAD differs from the plain run"
  fi
  [[ -s "$work/$name.plain" ]] || fail "$name: produced no output (nothing was compared)"
  echo "ok: $name ($(wc -c < "$work/$name.plain") bytes identical)"
}

# --- the preload takes effect ---------------------------------------------------------------
LD_PRELOAD="$lib" grep -q "$(basename "$lib")" /proc/self/maps \
  || fail "LD_PRELOAD=$lib: library not mapped into the process"
echo "ok: library mapped under LD_PRELOAD"

cat > "$work/probe.py" << 'EOF'
import ctypes, sys

class IsoStats(ctypes.Structure):
    _fields_ = [("shards", ctypes.c_uint32), ("shards_pooled", ctypes.c_uint32),
                ("zones", ctypes.c_uint32), ("big_live", ctypes.c_uint32),
                ("big_cached_bytes", ctypes.c_size_t), ("metadata_bytes", ctypes.c_size_t),
                ("remote_frees_sent", ctypes.c_uint64), ("remote_frees_received", ctypes.c_uint64),
                ("zones_released", ctypes.c_uint64), ("inbox_overflows", ctypes.c_uint64),
                ("remote_batches_sent", ctypes.c_uint64), ("common_zones", ctypes.c_uint32)]

proc = ctypes.CDLL(None)
try:
    get_stats = proc.iso_get_stats
except AttributeError:
    print("no-iso_get_stats")
    sys.exit(0)
get_stats.argtypes = [ctypes.POINTER(IsoStats)]
st = IsoStats()
get_stats(ctypes.byref(st))
# The process's malloc must be isoshard's: iso_chunksz aborts on a pointer it does not own.
proc.malloc.restype = ctypes.c_void_p
proc.malloc.argtypes = [ctypes.c_size_t]
proc.free.argtypes = [ctypes.c_void_p]
proc.iso_chunksz.restype = ctypes.c_size_t
proc.iso_chunksz.argtypes = [ctypes.c_void_p]
p = proc.malloc(100)
usable = proc.iso_chunksz(p)
proc.free(p)
big = bytearray(10 << 20)  # CPython takes big buffers from malloc
print(f"shards={st.shards} zones={st.zones} usable={usable}")
EOF
plain_probe=$(python3 "$work/probe.py") || fail "probe failed without LD_PRELOAD"
[[ "$plain_probe" == "no-iso_get_stats" ]] \
  || fail "iso_get_stats resolvable without LD_PRELOAD: the probe proves nothing ($plain_probe)"
iso_probe=$(LD_PRELOAD="$lib" python3 "$work/probe.py") || fail "probe crashed under LD_PRELOAD"
[[ "$iso_probe" =~ ^shards=([0-9]+)\ zones=([0-9]+)\ usable=([0-9]+)$ ]] \
  || fail "unexpected probe output under LD_PRELOAD: $iso_probe"
(( BASH_REMATCH[1] >= 1 )) || fail "iso_get_stats reports no shard: $iso_probe"
(( BASH_REMATCH[2] >= 1 )) || fail "iso_get_stats reports no zone: $iso_probe"
(( BASH_REMATCH[3] >= 100 )) || fail "iso_chunksz(malloc(100)) < 100: $iso_probe"
echo "ok: preloaded python sees isoshard ($iso_probe)"

# --- sort -------------------------------------------------------------------------------------
# 200k random lines of varied length (many short, some long): lots of small mallocs, and
# sort's line buffers and merge passes.
awk 'BEGIN {
  srand(20240611)
  for (i = 0; i < 200000; i++) {
    n = 1 + int(rand() * rand() * 120)
    s = ""
    for (j = 0; j < n; j++) s = s sprintf("%c", 33 + int(rand() * 94))
    printf "%d %s\n", int(rand() * 1000000), s
  }
}' > "$work/lines.txt"
[[ $(wc -l < "$work/lines.txt") -eq 200000 ]] || fail "could not generate the input file"

run_both sort sort "$work/lines.txt"
run_both sort_numeric_unique sort -n -u -k1,1 "$work/lines.txt"
# A small buffer forces temporary files and merges; --parallel sorts on several threads.
mkdir -p "$work/tmp"
run_both sort_parallel_external sort --parallel=4 -S 512K -T "$work/tmp" -k2 "$work/lines.txt"

# --- gzip | gunzip --------------------------------------------------------------------------
run_both gzip_compress gzip -9 -n -c "$work/lines.txt"
gzip_roundtrip() { gzip -6 -n -c "$1" | gunzip -c; }
run_both gzip_roundtrip gzip_roundtrip "$work/lines.txt"
cmp -s "$work/gzip_roundtrip.iso" "$work/lines.txt" || fail "gzip|gunzip under LD_PRELOAD altered the data"
echo "ok: gzip|gunzip round trip is lossless"

# --- python: dicts, json, threads ------------------------------------------------------------
cat > "$work/workload.py" << 'EOF'
import hashlib, json, queue, random, threading

rng = random.Random(1234)
# Dicts and strings of many sizes: CPython's small objects come from pymalloc arenas (malloc'd),
# anything bigger straight from malloc/realloc.
d = {}
for i in range(200000):
    key = "k%d-%s" % (i, "x" * rng.randrange(0, 40))
    d[key] = [i, str(i * 7), {"v": rng.random()} if i % 3 == 0 else None]
for i in range(0, 200000, 3):
    d.pop("k%d-" % i, None)
text = json.dumps(d, sort_keys=True)
back = json.loads(text)
assert back == json.loads(json.dumps(back, sort_keys=True))
print(len(d), len(text), hashlib.sha256(text.encode()).hexdigest())

# Growing and shrinking buffers: realloc across small and big sizes.
buf = bytearray()
for i in range(2000):
    buf += bytes([i % 251]) * (i % 700)
    if i % 10 == 0:
        del buf[: len(buf) // 3]
print(len(buf), hashlib.sha256(buf).hexdigest())

# Threads that allocate objects which other threads free: cross-thread frees.
q = queue.Queue(maxsize=64)
results = []
lock = threading.Lock()

def producer(seed):
    r = random.Random(seed)
    for _ in range(3000):
        q.put([bytes(r.randrange(1, 5000)), {str(r.random()): list(range(r.randrange(50)))}])
    q.put(None)

def consumer():
    total = 0
    done = 0
    while done < 1:
        item = q.get()
        if item is None:
            done += 1
            continue
        total += len(item[0]) + sum(len(v) for v in item[1].values())
        del item
    with lock:
        results.append(total)

producers = [threading.Thread(target=producer, args=(s,)) for s in range(4)]
consumers = [threading.Thread(target=consumer) for _ in range(4)]
for t in producers + consumers:
    t.start()
for t in producers + consumers:
    t.join()
print(sum(results))
EOF
run_both python_workload python3 "$work/workload.py"

# --- a capped address space ------------------------------------------------------------------
# Full-scale reservations are 1.1 TiB: under RLIMIT_AS they must shrink to fit, not fail every
# malloc. 3 GiB: each zone takes a 4 MiB slot, and the reservations get half the limit.
capped() { (ulimit -v $((3 << 20)) && exec "$@"); }
run_both python_workload_capped_3GiB capped python3 "$work/workload.py"
run_both sort_parallel_capped_3GiB capped sort --parallel=4 -S 512K -T "$work/tmp" -k2 "$work/lines.txt"
capped_probe=$(LD_PRELOAD="$lib" capped python3 "$work/probe.py") || fail "probe failed under the cap"
[[ "$capped_probe" =~ ^shards=[1-9] ]] || fail "isoshard not in use under the cap: $capped_probe"
echo "ok: isoshard serves a process capped at 3 GiB ($capped_probe)"

# 40 MiB: less than even the smallest reservations (64 MiB of range). Every allocation fails,
# and isoshard says why once.
rc=0
printf 'b\na\n' | (ulimit -v $((40 << 10)) && LD_PRELOAD="$lib" exec sort) \
  > "$work/tiny.out" 2> "$work/tiny.err" || rc=$?
(( rc != 0 )) || fail "sort under a 40 MiB cap succeeded: was isoshard loaded?"
lines=$(grep -c '^isoshard: cannot reserve [0-9]* MiB of address space (RLIMIT_AS 40 MiB): every allocation fails with ENOMEM$' "$work/tiny.err" || true)
[[ $lines == 1 ]] || { cat "$work/tiny.err" >&2; fail "want one 'cannot reserve' line, got $lines"; }
echo "ok: a 40 MiB cap fails with one line: $(head -c 120 "$work/tiny.err")"

echo "PASS: all preloaded runs matched the plain runs"
