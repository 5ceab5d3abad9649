#!/usr/bin/env python3
"""Thread scaling: the threaded perf/ workloads at growing thread counts, side by side
under glibc, tcmalloc, jemalloc, mimalloc and isoshard (each through LD_PRELOAD).

Meant for a machine with many cores (bench.sh covers the 2-core default). Every round
runs each (workload, threads) point under every allocator in turn, starting one
allocator later each round, so a slow spell of a shared host hits all of them alike;
each cell is the median over the rounds of the program's own throughput (Mops/s) and
peak RSS (VmHWM, which the programs print: a forked python's pages would inflate wait4's).

usage: scripts/scaling.py [--bin-dir build/perf] [--isoshard build/libisoshard.so]
                          [--peer-dir /usr/lib/x86_64-linux-gnu] [--rounds 3]
                          [--threads 1,2,4,8,16] [--timeout 60] [--raw FILE]
                          [--variant NAME=LIB ...]
--variant adds another preloaded library as a column (an older isoshard build, say).
Needs only python3 and the built binaries: no perf, hyperfine or /usr/bin/time.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

PEERS = {
    "tcmalloc": "libtcmalloc_minimal.so.4",
    "jemalloc": "libjemalloc.so.2",
    "mimalloc": "libmimalloc.so.2",
}
ALLOCATORS = ["glibc", "tcmalloc", "jemalloc", "mimalloc", "isoshard"]
OPS_RE = re.compile(r" ([0-9.]+) ops/s$", re.M)
CHURN_RE = re.compile(r" in ([0-9.]+) s ")
RSS_RE = re.compile(r"(?:peak RSS:? )(-?[0-9]+) KiB")


def workloads(threads):
    """(name, thread count, argv tail, metric) for every point of the sweep."""
    points = []
    for t in threads:
        points.append(("local_batches", t, ["local_batches", str(t), "20000"], "ops"))
    for t in threads:
        if t >= 2:  # P producers + P consumers = t threads
            p = str(t // 2)
            points.append(("producer_consumer", t, ["producer_consumer", p, p, "4000000"], "ops"))
    for t in threads:
        points.append(("larson", t, ["larson", str(t), "1000000"], "ops"))
    top = max(threads)
    points.append(("thread_churn", top, ["thread_churn", "4000", str(top)], "churn"))
    return points


def measure(argv, preload, timeout):
    """One run: its stdout. A run that hangs is killed after `timeout` seconds."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    try:
        done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"killed after {timeout} s")
    if done.returncode != 0:
        raise RuntimeError(f"exit status {done.returncode}")
    if b"cannot be preloaded" in done.stderr:
        raise RuntimeError("cannot be preloaded")
    return done.stdout.decode(errors="replace")


def allocator_arguments(doc):
    """A parser with the options every comparison script takes: where the binaries and the
    libraries are, the timeout of one run, and --variant."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--bin-dir", default="build/perf")
    ap.add_argument("--isoshard", default="build/libisoshard.so")
    ap.add_argument("--peer-dir", default="/usr/lib/x86_64-linux-gnu")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=LIB",
                    help="one more library to preload, as its own column (or row)")
    return ap


def resolve_allocators(ap, args, allocators):
    """The library each allocator preloads ("" for glibc), from --peer-dir, --isoshard and
    --variant NAME=LIB (appended to `allocators`), and the allocators whose library exists."""
    preload = {"glibc": ""}
    for name, lib in PEERS.items():
        preload[name] = os.path.abspath(os.path.join(args.peer_dir, lib))
    preload["isoshard"] = os.path.abspath(args.isoshard)
    for a in allocators:
        if a not in preload:
            ap.error(f"unknown allocator {a}")
    for v in args.variant:
        name, _, lib = v.partition("=")
        if not name or not lib or name in preload:
            ap.error(f"--variant {v}: want a new NAME=LIB")
        preload[name] = os.path.abspath(lib)
        allocators.append(name)
    usable = [a for a in allocators if not preload[a] or os.path.exists(preload[a])]
    for a in allocators:
        if a not in usable:
            print(f"{a}: {preload[a]} not found, left out", file=sys.stderr)
    return preload, usable


def metric_of(kind, text):
    if kind == "churn":
        m = CHURN_RE.search(text)
        return float(m.group(1)) if m else None
    m = OPS_RE.search(text)
    return float(m.group(1)) / 1e6 if m else None


def main():
    ap = allocator_arguments(__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--raw", help="also write every run as TSV here")
    args = ap.parse_args()

    threads = [int(t) for t in args.threads.split(",")]
    preload, usable = resolve_allocators(ap, args, list(ALLOCATORS))

    points = workloads(threads)
    results = {}  # (name, threads, allocator) -> list of (metric, rss)
    failures = {}
    raw = open(args.raw, "w") if args.raw else None
    for r in range(args.rounds):
        order = usable[r % len(usable):] + usable[:r % len(usable)]
        for name, t, tail, kind in points:
            argv = [os.path.join(args.bin_dir, tail[0])] + tail[1:]
            for a in order:
                key = (name, t, a)
                if key in failures:
                    continue
                try:
                    text = measure(argv, preload[a], args.timeout)
                    value = metric_of(kind, text)
                    m = RSS_RE.search(text)
                    rss = int(m.group(1)) if m else -1
                    if value is None:
                        raise RuntimeError("no figure in its output")
                except RuntimeError as e:
                    failures[key] = str(e)
                    print(f"FAILED {name} {t} threads under {a}: {e}", file=sys.stderr)
                    continue
                results.setdefault(key, []).append((value, rss))
                if raw:
                    raw.write(f"{r}\t{name}\t{t}\t{a}\t{value}\t{rss}\n")
                    raw.flush()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"# Thread scaling, median of {args.rounds} interleaved rounds on {os.cpu_count()} CPUs")
    seen = []
    for name, t, _, kind in points:
        if name not in seen:
            seen.append(name)
    for name in seen:
        kind = next(k for n, _, _, k in points if n == name)
        unit = "elapsed s (lower is better)" if kind == "churn" else "Mops/s"
        print(f"\n## {name}: {unit}; peak RSS MiB in brackets\n")
        print("| threads | " + " | ".join(usable) + " | isoshard / tcmalloc |")
        print("|---|" + "---|" * (len(usable) + 1))
        for pname, t, _, _ in points:
            if pname != name:
                continue
            cells, med = [], {}
            for a in usable:
                runs = results.get((name, t, a))
                if not runs:
                    cells.append("FAILED")
                    continue
                med[a] = statistics.median(v for v, _ in runs)
                rss = statistics.median(m for _, m in runs) / 1024
                cells.append(f"{med[a]:.3f} ({rss:.1f})" if kind == "churn" else f"{med[a]:.1f} ({rss:.1f})")
            ratio = "n/a"
            if "isoshard" in med and med.get("tcmalloc"):
                ratio = f"{med['isoshard'] / med['tcmalloc']:.2f}"
            print(f"| {t} | " + " | ".join(cells) + f" | {ratio} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
