#!/usr/bin/env bash
# Builds isoshard and runs the perf/ workloads side by side under glibc,
# tcmalloc, jemalloc, mimalloc and isoshard (each via LD_PRELOAD on the same
# system-malloc binary), then prints one comparison table per workload.
#
# Usage (from anywhere; paths are relative to the repo root):
#   scripts/bench.sh
# Environment:
#   BUILD_DIR=build        build tree; raw results go to $BUILD_DIR/bench
#   BENCH_RUNS=5           runs per measurement (hyperfine, peak RSS, perf); the
#                          producer/consumer rows run 3 times as many (see below)
#   BENCH_QUICK=1          only the malloc_cmp comparison
#   BENCH_TIMEOUT=120      seconds one benchmark run may take before it is killed
#   BENCH_SKIP_INSTALL=1   do not check/install Debian packages
#   BENCH_SKIP_BUILD=1     use the binaries already in $BUILD_DIR
#
# Per workload: one smoke run per allocator (catches crashes, hangs and a
# library that cannot be preloaded: that allocator is reported FAILED and the
# run goes on), then BENCH_RUNS rounds. A round runs every allocator in turn,
# each once under hyperfine (wall time, and the program's own figure from the same
# run: on a host that changes speed within seconds, figures from two runs could
# disagree), once under /usr/bin/time (peak RSS) and once under perf stat
# (task-clock, page faults),
# starting one allocator later each round; every column is the median over the
# rounds. Interleaving matters on a shared host: a slow spell then hits every
# allocator alike, where consecutive runs of one allocator put it on one of
# them. RSS and perf are separate runs because perf's own ~14 MiB would
# otherwise mask small peak RSS.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

BUILD_DIR=$(realpath -m "${BUILD_DIR:-build}")
BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_QUICK=${BENCH_QUICK:-0}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
PERF_DIR=$BUILD_DIR/perf
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_RUNS must be a positive integer" >&2; exit 1; }
[[ $BENCH_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "error: BENCH_TIMEOUT must be a positive integer" >&2; exit 1; }
RAW_DIR=$BUILD_DIR/bench

PACKAGES=(cmake ninja-build g++ libboost-dev libfmt-dev libgtest-dev libbenchmark-dev
  libgoogle-perftools-dev libjemalloc-dev libmimalloc-dev hyperfine linux-perf time)
PERF_TARGETS=(malloc_cmp producer_consumer larson thread_churn)
ALLOCATORS=(glibc tcmalloc jemalloc mimalloc isoshard)
declare -A PRELOAD=()   # allocator -> library to LD_PRELOAD ("" for glibc)

# Workloads: name|binary|arguments[|rounds as a multiple of BENCH_RUNS]. Defaults keep each
# run around a second on 2 cores so the whole script stays well under 10 minutes.
MAIN_WORKLOAD="malloc_cmp|malloc_cmp|"
# producer_consumer runs as the scheduler places it, and then pinned in each placement
# (see perf/producer_consumer.cpp). With 4 threads on 2 CPUs the scheduler's runs fall into
# two modes about 2x apart, set by where the threads start: replaying one run's chunk
# addresses with no allocator at all took 0.029-0.038 s or 0.058-0.076 s (15 runs). A median
# of 5 such runs says which mode came up more often; the pinned rows compare the allocators.
# The host itself also switches, within seconds, between two states in which the same
# pinned run differs by up to 2x (docs/DESIGN.md, known limits). A run takes 0.07-1.1 s, so
# these rows run 3 times as many rounds: a median of 15 moves less when a state comes up
# in a few rounds more than in the others.
THREADED_WORKLOADS=(
  "producer_consumer|producer_consumer|2 2 4000000|3"
  "producer_consumer_paired|producer_consumer|2 2 4000000 paired|3"
  "producer_consumer_crossed|producer_consumer|2 2 4000000 crossed|3"
  "producer_consumer_split|producer_consumer|2 2 4000000 split|3"
  "larson|larson|2 5000000"
  "thread_churn_1000|thread_churn|1000 8"
  "thread_churn_4000|thread_churn|4000 8"
)

PERF_CMD=""          # set by detect_perf when counters can be read
ISOSHARD_BROKEN=""   # set by build_project when libisoshard.so did not build

log() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- setup -----------------------------------------------------------------

# scripts/install_deps.sh installs whichever of these dpkg says are missing.
install_missing_packages() {
  if [[ ${BENCH_SKIP_INSTALL:-0} == 1 ]]; then log "BENCH_SKIP_INSTALL=1: not checking packages"; return; fi
  if ! command -v dpkg >/dev/null; then warn "no dpkg (not Debian?): install ${PACKAGES[*]} yourself"; return; fi
  "$REPO_ROOT/scripts/install_deps.sh" "${PACKAGES[@]}" || die "could not install ${PACKAGES[*]}"
}

require_tools() {
  local tool
  for tool in cmake ninja hyperfine timeout /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
}

build_project() {
  if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then log "BENCH_SKIP_BUILD=1: using binaries in $BUILD_DIR"; return; fi
  log "configuring and building in $BUILD_DIR"
  cmake -S "$REPO_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    || die "cmake configure failed"
  if ! cmake --build "$BUILD_DIR"; then
    # A broken library or test must not stop the peers from being measured;
    # isoshard then shows up as FAILED (not as a stale libisoshard.so).
    warn "full build failed; building only the benchmarks"
    cmake --build "$BUILD_DIR" --target "${PERF_TARGETS[@]}" || die "benchmark build failed"
    cmake --build "$BUILD_DIR" --target isoshard || ISOSHARD_BROKEN="libisoshard.so failed to build"
  fi
}

locate_allocators() {
  local libdir
  libdir=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  PRELOAD=(
    [glibc]=""
    [tcmalloc]=$libdir/libtcmalloc_minimal.so.4
    [jemalloc]=$libdir/libjemalloc.so.2
    [mimalloc]=$libdir/libmimalloc.so.2
    [isoshard]=$BUILD_DIR/libisoshard.so
  )
}

# Debian's perf may not match the running kernel, and containers often forbid
# perf_event_open: then the perf columns read n/a instead of failing the run.
detect_perf() {
  local candidate out
  for candidate in perf $(ls -r /usr/bin/perf_* 2>/dev/null || true); do
    command -v "$candidate" >/dev/null || continue
    out=$("$candidate" stat -x, -e task-clock,page-faults -- true 2>&1 >/dev/null) || continue
    if grep -qE '^[0-9.]+,msec,task-clock' <<<"$out"; then PERF_CMD=$candidate; break; fi
  done
  if [[ -n $PERF_CMD ]]; then log "perf: using $PERF_CMD"
  else warn "perf cannot read task-clock/page-faults here; skipping perf (columns show n/a)"; fi
}

# --- measuring one allocator on one workload -----------------------------------

# Fails (with a reason in $dir/failure) when the allocator cannot be used.
smoke_run() { # dir allocator cmd...
  local dir=$1 alloc=$2; shift 2
  local lib=${PRELOAD[$alloc]}
  if [[ $alloc == isoshard && -n $ISOSHARD_BROKEN ]]; then echo "$ISOSHARD_BROKEN" >"$dir/failure"; return 1; fi
  if [[ -n $lib && ! -f $lib ]]; then echo "$lib not found" >"$dir/failure"; return 1; fi
  # ld.so silently ignores an unloadable preload, and a library without malloc
  # would silently measure glibc: both must count as failures.
  if [[ -n $lib ]] && ! nm -D --defined-only "$lib" 2>/dev/null | grep -w malloc >/dev/null; then
    echo "$lib does not export malloc" >"$dir/failure"; return 1
  fi
  local rc=0
  # Exiting the subshell normally keeps bash's "Segmentation fault" notice
  # (printed by whichever shell waits for the crashed process) off the terminal.
  (timeout --kill-after=5 "$BENCH_TIMEOUT" "$@" >"$dir/smoke.out" 2>"$dir/smoke.err"; exit $?) 2>/dev/null || rc=$?
  if ((rc == 124 || rc == 137)); then echo "hung (killed after ${BENCH_TIMEOUT}s)" >"$dir/failure"; return 1; fi
  if ((rc > 128)); then echo "killed by SIG$(kill -l $((rc - 128))), see $dir/smoke.err" >"$dir/failure"; return 1; fi
  if ((rc != 0)); then echo "exit status $rc, see $dir/smoke.err" >"$dir/failure"; return 1; fi
  if grep -q 'cannot be preloaded' "$dir/smoke.err"; then echo "cannot be preloaded" >"$dir/failure"; return 1; fi
}

median() { sort -g | awk '{ v[NR] = $1 } END {
  if (NR == 0) { print "n/a"; exit }
  print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The number a benchmark prints about itself, in the unit of metric_label.
reported_metric() { # binary output-file
  case $1 in
    malloc_cmp*) awk '/tests completed in/ { s += $(NF - 1) } END { if (NR) printf "%.3f\n", s }' "$2" ;;
    thread_churn) sed -nE 's/.* in ([0-9.]+) s .*/\1/p' "$2" ;;
    *) sed -nE 's/.* ([0-9.]+) ops\/s$/\1/p' "$2" | awk '{ printf "%.2f\n", $1 / 1e6 }' ;;
  esac
}
metric_label() {
  case $1 in malloc_cmp*) echo "phases s" ;; thread_churn) echo "elapsed s" ;; *) echo "Mops/s" ;; esac
}

# The command line that runs a workload under an allocator; glibc clears LD_PRELOAD so
# nothing inherited leaks into the baseline.
allocator_cmd() { # array-name allocator binary args
  local -n out=$1
  out=(env -u LD_PRELOAD)
  [[ -n ${PRELOAD[$2]} ]] && out=(env "LD_PRELOAD=${PRELOAD[$2]}")
  # shellcheck disable=SC2206  # args is a word list on purpose
  out+=("$PERF_DIR/$3" $4)
}

# Round r for one allocator: one run of each kind. Fails (with a reason in $dir/failure)
# when the workload fails; perf failing only leaves that round's counters out.
measure_round() { # dir round cmd...
  local dir=$1 r=$2; shift 2
  if ! timeout "$BENCH_TIMEOUT" hyperfine -N --runs 1 --export-json "$dir/hyperfine.$r.json" \
      --output "$dir/hyperfine.$r.out" "$(printf '%q ' "$@")" >"$dir/hyperfine.$r.log" 2>&1; then
    echo "failed under hyperfine, see $dir/hyperfine.$r.log" >"$dir/failure"; return 1
  fi
  if ! timeout --kill-after=5 "$BENCH_TIMEOUT" /usr/bin/time -f %M -o "$dir/rss.$r" "$@" \
      >"$dir/run.$r.out" 2>"$dir/run.$r.err"; then
    echo "failed under /usr/bin/time, see $dir/run.$r.err" >"$dir/failure"; return 1
  fi
  if [[ -n $PERF_CMD ]]; then
    timeout "$BENCH_TIMEOUT" "$PERF_CMD" stat -x, -o "$dir/perf.$r.csv" -e task-clock,page-faults \
      -- "$@" >/dev/null 2>"$dir/perf.$r.err" || rm -f "$dir/perf.$r.csv"
  fi
}

# Prints "wall_s metric rss_mib task_clock_ms page_faults", each the median over the
# rounds (n/a where no round has it).
summarize_rounds() { # dir binary rounds
  local dir=$1 binary=$2 rounds=$3 r wall metric rss task faults
  wall=$(for ((r = 1; r <= rounds; r++)); do
    sed -nE 's/.*"median": *([0-9.eE+-]+).*/\1/p' "$dir/hyperfine.$r.json" | head -n1; done | median)
  metric=$(for ((r = 1; r <= rounds; r++)); do reported_metric "$binary" "$dir/hyperfine.$r.out"; done | median)
  rss=$(for ((r = 1; r <= rounds; r++)); do tail -n1 "$dir/rss.$r"; done | median)
  task=$(for ((r = 1; r <= rounds; r++)); do
    [[ -f $dir/perf.$r.csv ]] && awk -F, '$3 ~ /^task-clock/ && $1 ~ /^[0-9.]+$/ { print $1 }' "$dir/perf.$r.csv"
  done | median)
  faults=$(for ((r = 1; r <= rounds; r++)); do
    [[ -f $dir/perf.$r.csv ]] && awk -F, '$3 ~ /^page-faults/ && $1 ~ /^[0-9]+$/ { print $1 }' "$dir/perf.$r.csv"
  done | median)
  [[ $task != n/a ]] && task=$(awk -v t="$task" 'BEGIN { printf "%.1f", t }')
  [[ $faults != n/a ]] && faults=$(awk -v f="$faults" 'BEGIN { printf "%.0f", f }')
  awk -v w="$wall" -v m="$metric" -v k="$rss" -v t="$task" -v f="$faults" \
    'BEGIN { printf "%s %s %.1f %s %s\n", w, m, k / 1024, t, f }'
}

record_failure() { # results allocator reason
  echo "FAILED: $3"
  printf '%s\tFAILED\t-\t-\t-\t-\t-\t%s\n' "$2" "$3" >>"$1"
}

# --- reporting -------------------------------------------------------------------

print_table() { # workload binary args rounds
  local workload=$1 binary=$2 args=$3 rounds=$4 results=$RAW_DIR/$1/results.tsv
  local iso_wall
  iso_wall=$(awk -F'\t' '$1 == "isoshard" && $2 == "ok" { print $3 }' "$results")
  echo
  echo "## $workload ($binary ${args:-<no args>}), $rounds runs each"
  awk -F'\t' -v iso="$iso_wall" -v mlabel="$(metric_label "$binary")" '
    BEGIN {
      fmt = "%-10s | %13s | %10s | %13s | %11s | %12s | %15s\n"
      printf fmt, "allocator", "median wall s", mlabel, "task-clock ms", "page faults", "peak RSS MiB", "wall / isoshard"
      sep = sprintf(fmt, "", "", "", "", "", "", "")
      gsub(/[^|\n]/, "-", sep)
      printf "%s", sep
    }
    /^#/ { next }
    $2 != "ok" { printf "%-10s | FAILED: %s\n", $1, $8; next }
    {
      ratio = (iso != "" && iso > 0) ? sprintf("%.2f", $3 / iso) : "n/a"
      metric = ($4 ~ /^[0-9.]+$/) ? sprintf("%.3f", $4) : $4
      printf fmt, $1, sprintf("%.3f", $3), metric, $6, $7, $5, ratio
    }' "$results"
}

# The median over the rounds of the percentage that follows `pattern` in the program's output.
median_share() { # dir rounds pattern
  local r
  for ((r = 1; r <= $2; r++)); do
    sed -nE "s/.*$3 ([0-9]+)%.*/\\1/p" "$1/hyperfine.$r.out" 2>/dev/null
  done | median
}

# Unpinned producer/consumer: where the scheduler put the threads, as the program reports it
# (medians over the rounds). Its runs differ by placement more than by allocator, and one
# allocator's rounds may draw a placement more often than another's (docs/DESIGN.md).
print_scheduler_placement() { # workload binary args rounds
  local workload=$1 binary=$2 args=$3 rounds=$4 alloc beside even
  local -a words
  read -r -a words <<<"$args"
  [[ $binary == producer_consumer && ${words[3]:-any} == any ]] || return 0
  echo "placement the scheduler gave (medians over the rounds): share of the run each producer"
  echo "spent on its consumer's CPU / with the threads spread evenly over the CPUs"
  for alloc in "${ALLOCATORS[@]}"; do
    beside=$(median_share "$RAW_DIR/$workload/$alloc" "$rounds" "beside its consumer")
    even=$(median_share "$RAW_DIR/$workload/$alloc" "$rounds" "evenly over the [0-9]+ CPUs")
    printf '  %-10s %s%% / %s%%\n' "$alloc" "$beside" "$even"
  done
}

print_phase_lines() {
  local alloc out
  for alloc in glibc isoshard; do
    out=$RAW_DIR/malloc_cmp/$alloc/smoke.out
    echo
    echo "malloc_cmp phases under $alloc:"
    if [[ -s $out ]]; then sed 's/^/  /' "$out"; else echo "  (no output: $alloc FAILED)"; fi
  done
}

run_static_iso_build() {
  local bin=$PERF_DIR/malloc_cmp_iso
  echo
  if [[ ! -x $bin || -n $ISOSHARD_BROKEN ]]; then
    echo "malloc_cmp_iso (isoshard linked statically): not built"; return
  fi
  echo "malloc_cmp_iso (isoshard linked statically), one run:"
  local rc=0
  (timeout --kill-after=5 "$BENCH_TIMEOUT" env -u LD_PRELOAD "$bin" >"$RAW_DIR/malloc_cmp_iso.out" 2>&1; exit $?) 2>/dev/null || rc=$?
  sed 's/^/  /' "$RAW_DIR/malloc_cmp_iso.out"
  ((rc == 0)) || echo "  FAILED: exit status $rc"
}

print_churn_growth() {
  local small=$RAW_DIR/thread_churn_1000/results.tsv big=$RAW_DIR/thread_churn_4000/results.tsv
  echo
  echo "## thread_churn peak RSS growth, 1000 -> 4000 threads (flat is good)"
  awk -F'\t' '/^#/ { next }
    FNR == NR { if ($2 == "ok") small[$1] = $5; next }
    { printf "%-10s | %s\n", $1, ($2 == "ok" && ($1 in small)) ? sprintf("%+.1f MiB", $5 - small[$1]) : "n/a" }' \
    "$small" "$big"
}

# --- main ------------------------------------------------------------------------

run_workload() { # "name|binary|args[|factor]"
  local workload binary args factor alloc dir r k rounds
  IFS='|' read -r workload binary args factor <<<"$1"
  rounds=$((BENCH_RUNS * ${factor:-1}))
  [[ -x $PERF_DIR/$binary ]] || die "$PERF_DIR/$binary missing; did the build succeed?"
  rm -rf "${RAW_DIR:?}/$workload"
  mkdir -p "$RAW_DIR/$workload"
  local results=$RAW_DIR/$workload/results.tsv
  printf '#allocator\tstatus\twall_s\t%s\tpeak_rss_mib\ttask_clock_ms\tpage_faults\tnote\n' \
    "$(metric_label "$binary" | tr ' ' _)" >"$results"
  log "$workload: $binary $args"

  local -a usable=() cmd
  for alloc in "${ALLOCATORS[@]}"; do
    dir=$RAW_DIR/$workload/$alloc
    mkdir -p "$dir"
    allocator_cmd cmd "$alloc" "$binary" "$args"
    smoke_run "$dir" "$alloc" "${cmd[@]}" && usable+=("$alloc")
  done
  for ((r = 1; r <= rounds; r++)); do
    printf '    round %d/%d\n' "$r" "$rounds"
    for ((k = 0; k < ${#usable[@]}; k++)); do
      alloc=${usable[(k + r - 1) % ${#usable[@]}]}
      dir=$RAW_DIR/$workload/$alloc
      [[ -f $dir/failure ]] && continue
      allocator_cmd cmd "$alloc" "$binary" "$args"
      measure_round "$dir" "$r" "${cmd[@]}" || true
    done
  done

  local wall metric rss task faults
  for alloc in "${ALLOCATORS[@]}"; do
    dir=$RAW_DIR/$workload/$alloc
    printf '    %-9s ' "$alloc"
    if [[ -f $dir/failure ]]; then record_failure "$results" "$alloc" "$(cat "$dir/failure")"; continue; fi
    read -r wall metric rss task faults <<<"$(summarize_rounds "$dir" "$binary" "$rounds")"
    printf 'ok (median wall %.3f s)\n' "$wall"
    printf '%s\tok\t%s\t%s\t%s\t%s\t%s\t\n' "$alloc" "$wall" "$metric" "$rss" "$task" "$faults" >>"$results"
  done
}

main() {
  local started=$SECONDS spec workload binary args factor
  install_missing_packages
  require_tools
  build_project
  locate_allocators
  detect_perf
  mkdir -p "$RAW_DIR"

  run_workload "$MAIN_WORKLOAD"
  if [[ $BENCH_QUICK != 1 ]]; then
    for spec in "${THREADED_WORKLOADS[@]}"; do run_workload "$spec"; done
  fi

  {
    echo
    echo "# isoshard benchmark summary ($(date -u +%FT%TZ), $(nproc) cores, BENCH_RUNS=$BENCH_RUNS)"
    echo "# every column is a median over the rounds (BENCH_RUNS, or a multiple where a table says so);"
    echo "# a round runs each allocator once, in turn"
    echo "# (wall and the program's own figure: one hyperfine run; task-clock, page faults: perf stat; peak RSS: /usr/bin/time %M)"
    echo "# wall / isoshard > 1: slower than isoshard"
    print_table malloc_cmp malloc_cmp "" "$BENCH_RUNS"
    print_phase_lines
    run_static_iso_build
    if [[ $BENCH_QUICK != 1 ]]; then
      for spec in "${THREADED_WORKLOADS[@]}"; do
        IFS='|' read -r workload binary args factor <<<"$spec"
        print_table "$workload" "$binary" "$args" $((BENCH_RUNS * ${factor:-1}))
        print_scheduler_placement "$workload" "$binary" "$args" $((BENCH_RUNS * ${factor:-1}))
      done
      print_churn_growth
    fi
  } | tee "$RAW_DIR/summary.txt"
  echo
  log "done in $((SECONDS - started)) s; raw results in $RAW_DIR"
}

main "$@"
