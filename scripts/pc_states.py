#!/usr/bin/env python3
"""Producer/consumer by host state: perf/producer_consumer in each placement under glibc,
tcmalloc, jemalloc, mimalloc and isoshard (each through LD_PRELOAD), every run sorted by
how far apart the host had put the two CPUs while it ran.

Why: on the 2-CPU KVM guest this project is measured on, the host switches within seconds
between two states. A cross-core round trip (perf/cpu_pingpong) then takes about 55 ns
("near") or about 330 ns ("far"), and the same pinned producer/consumer run differs by up
to 4x. bench.sh's medians then say which state came up more often while an allocator ran.
Here a probe runs before every run and after the last: a run counts for a state when the
probes on both sides of it agree, and each cell is the median over the runs of one state.

usage: scripts/pc_states.py [--bin-dir build/perf] [--isoshard build/libisoshard.so]
                            [--peer-dir /usr/lib/x86_64-linux-gnu] [--seconds 300]
                            [--placements any,paired,crossed,split] [--items 4000000]
                            [--allocators glibc,tcmalloc,jemalloc,mimalloc,isoshard]
                            [--near-ns 100] [--far-ns 200] [--variant NAME=LIB ...]
A probe under --near-ns is near, over --far-ns far, between them neither (its runs are left
out). Rounds go on until --seconds have passed; each runs every (placement, allocator) pair
once, starting one allocator later each round. Needs python3 and the built binaries only.

Unpinned (`any`), a run mostly keeps the placement the scheduler gave it at the start, and
the medians then depend on how often each allocator drew which. So `any` runs are also
sorted by the placement producer_consumer reports: crowded (a CPU ran more than its even
share of the threads for half the run or more), together (spread evenly and each producer
on its consumer's CPU, 80% of the run or more), apart (spread evenly 80% or more, producers
beside their consumers 20% or less), or mixed (the rest).
"""
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling import ALLOCATORS, allocator_arguments, measure, resolve_allocators  # noqa: E402  (same folder)

ELAPSED_RE = re.compile(r" in ([0-9.]+) s")
PROBE_RE = re.compile(r", ([0-9.]+) ns each")
PLACEMENT_RE = re.compile(r"beside its consumer ([0-9]+)% .* evenly over the [0-9]+ CPUs ([0-9]+)%")
SCHEDULED = ("together", "apart", "crowded", "mixed")


def scheduled_placement(text):
    """One of SCHEDULED from producer_consumer's placement line; None if it did not say."""
    m = PLACEMENT_RE.search(text)
    if not m:
        return None
    beside, even = int(m.group(1)), int(m.group(2))
    if even <= 50:
        return "crowded"
    if even >= 80 and beside >= 80:
        return "together"
    if even >= 80 and beside <= 20:
        return "apart"
    return "mixed"


def main():
    ap = allocator_arguments(__doc__)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--placements", default="any,paired,crossed,split")
    ap.add_argument("--items", default="4000000")
    ap.add_argument("--allocators", default=",".join(ALLOCATORS))
    ap.add_argument("--near-ns", type=float, default=100)
    ap.add_argument("--far-ns", type=float, default=200)
    args = ap.parse_args()

    preload, usable = resolve_allocators(ap, args, [a for a in args.allocators.split(",") if a])
    placements = args.placements.split(",")
    probe_argv = [os.path.join(args.bin_dir, "cpu_pingpong"), "100000"]
    pc = os.path.join(args.bin_dir, "producer_consumer")

    def probe():
        m = PROBE_RE.search(measure(probe_argv, "", args.timeout))
        if not m:
            raise RuntimeError("cpu_pingpong printed no round trip")
        ns = float(m.group(1))
        return "near" if ns < args.near_ns else "far" if ns > args.far_ns else None

    runs = {}  # (placement, allocator, state) -> elapsed seconds
    scheduled = {}  # (allocator, state, one of SCHEDULED) -> elapsed seconds of `any` runs
    failures = {}
    counted = dropped = rounds = 0
    end = time.monotonic() + args.seconds
    before = probe()
    while time.monotonic() < end:
        order = usable[rounds % len(usable):] + usable[:rounds % len(usable)]
        for placement in placements:
            for a in order:
                if (placement, a) in failures:
                    continue
                try:
                    text = measure([pc, "2", "2", args.items, placement], preload[a], args.timeout)
                    m = ELAPSED_RE.search(text)
                    if not m:
                        raise RuntimeError("no elapsed time in its output")
                except RuntimeError as e:
                    failures[(placement, a)] = str(e)
                    print(f"FAILED {placement} under {a}: {e}", file=sys.stderr)
                    continue
                after = probe()
                if before is not None and before == after:
                    runs.setdefault((placement, a, before), []).append(float(m.group(1)))
                    got = scheduled_placement(text) if placement == "any" else None
                    if got:
                        scheduled.setdefault((a, before, got), []).append(float(m.group(1)))
                    counted += 1
                else:
                    dropped += 1
                before = after
        rounds += 1
        print(f"round {rounds} done, {counted} runs sorted, {dropped} left out", file=sys.stderr)

    print(f"# producer_consumer 2 2 {args.items}: median seconds by host state, {rounds} rounds,")
    print(f"# {counted} runs sorted, {dropped} left out (the state changed around them, or the")
    print(f"# probe read between {args.near_ns:g} and {args.far_ns:g} ns); (n) = runs in the cell")
    for placement in placements:
        print(f"\n## {placement}\n")
        print("| allocator | near s (n) | far s (n) | near / isoshard | far / isoshard |")
        print("|---|---|---|---|---|")
        iso = {s: runs.get((placement, "isoshard", s)) for s in ("near", "far")}
        for a in usable:
            if (placement, a) in failures:
                print(f"| {a} | FAILED: {failures[(placement, a)]} | | | |")
                continue
            cells, ratios = [], []
            for s in ("near", "far"):
                v = runs.get((placement, a, s))
                cells.append(f"{statistics.median(v):.4f} ({len(v)})" if v else "-")
                ratios.append(f"{statistics.median(v) / statistics.median(iso[s]):.2f}"
                              if v and iso[s] else "-")
            print(f"| {a} | " + " | ".join(cells + ratios) + " |")
        if placement == "any" and scheduled:
            print_scheduled(scheduled, usable)
    return 1 if failures else 0


def print_scheduled(scheduled, usable):
    print("\n`any` runs by the placement the scheduler gave them (see the top of pc_states.py)\n")
    cols = [(s, p) for s in ("near", "far") for p in SCHEDULED]
    print("| allocator | " + " | ".join(f"{s} {p} s (n)" for s, p in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for a in usable:
        cells = []
        for s, p in cols:
            v = scheduled.get((a, s, p))
            cells.append(f"{statistics.median(v):.4f} ({len(v)})" if v else "-")
        print(f"| {a} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
