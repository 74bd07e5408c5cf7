#!/usr/bin/env python3
"""Checks `tandem-bench limits` against an independent STREAM-style measurement: likwid-bench (Debian package
`likwid`), whose hand-written assembly kernels load, copy and stream (triad) count bytes as STREAM does, as
`tandem-bench limits` does (every element read or written once, no write-allocate traffic).

  python3 bench/stream_check.py [--bench build/bench/tandem-bench] [--threads N] [--rounds 5] [--mib 1024]
                                [--tolerance 0.10] [--out stream_check.json]

The two tools run alternately, round after round, on arrays of the same size, the same thread counts and the same
(4 KiB) pages, so a shared machine's drifting bandwidth hits both alike. Per round: tandem-bench's median over its
runs, and the best of likwid-bench's scalar/SSE/AVX/AVX-512 variants of the kernel (one long run each); the
verdict compares the medians over the rounds. Exits 1 when a kernel/thread-count pair differs by more than --tolerance (2 when a tool is
missing). Install likwid with `apt-get install likwid`.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# tandem-bench kernel -> likwid-bench test stem (the widest vector variant the CPU has is picked at run time).
KERNELS = {"read": "load", "copy": "copy", "triad": "stream"}


def likwid_tests():
    out = subprocess.run(["likwid-bench", "-a"], capture_output=True, text=True, check=True).stdout
    return {line.split(" - ")[0].strip() for line in out.splitlines() if " - " in line}


def variants(stem, available):
    """likwid-bench's cached (not non-temporal) variants of a kernel that this CPU runs: scalar, SSE, AVX, AVX-512.
    Which is fastest depends on the CPU (on Zen 5 the scalar load beats the AVX-512 one), so each round takes the
    best of them, as STREAM reports its best rate."""
    flags = open("/proc/cpuinfo").read()
    out = []
    for suffix, flag in (("", ""), ("_sse", "sse2"), ("_avx", "avx"), ("_avx512", "avx512f")):
        name = stem + suffix
        if name in available and (not flag or re.search(r"\b" + flag + r"\b", flags)):
            out.append(name)
    if not out:
        raise SystemExit(f"stream_check: likwid-bench has no {stem} test")
    return out


def run_likwid(test, nbytes, threads):
    # -w N:<size>:<threads>: one workgroup on the whole node, the size split over its threads as tandem-bench does.
    size_kb = nbytes // 1000
    out = subprocess.run(["likwid-bench", "-t", test, "-w", f"N:{size_kb}kB:{threads}"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"^MByte/s:\s+([0-9.]+)", out, re.M)
    if not m:
        raise SystemExit(f"stream_check: no MByte/s in likwid-bench output:\n{out}")
    return float(m.group(1)) / 1000.0  # likwid's MByte is 1e6 bytes -> GB/s


def run_tandem(bench, mib, threads, min_time):
    # --small-pages: likwid-bench's arrays are ordinary 4 KiB pages (this machine's transparent huge pages are
    # madvise-only), and page size alone moves the read figure by a third here.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "limits.json")
        subprocess.run([bench, "limits", "--parts", "bandwidth", "--small-pages", "-t", str(threads), "--mib", str(mib),
                        "--min-time", str(min_time), "-o", path], capture_output=True, text=True, check=True)
        rows = json.load(open(path))["tables"]["bandwidth"]["rows"]
    return {(r["kernel"], r["threads"]): r["gbps_median"] for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "bench", "tandem-bench"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="largest thread count")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=1024, help="array size, as tandem-bench limits --mib")
    ap.add_argument("--min-time", type=float, default=1.0, help="tandem-bench --min-time per measurement")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--out", help="write the rounds and the verdict as JSON")
    a = ap.parse_args()
    if not shutil.which("likwid-bench"):
        print("stream_check: likwid-bench not found (apt-get install likwid)", file=sys.stderr)
        return 2
    if not os.access(a.bench, os.X_OK):
        print(f"stream_check: {a.bench} is not an executable (build the project first)", file=sys.stderr)
        return 2
    available = likwid_tests()
    tests = {k: variants(stem, available) for k, stem in KERNELS.items()}
    nbytes = a.mib * 1024 * 1024
    load_start = list(os.getloadavg())
    keys = [(k, n) for n in range(1, a.threads + 1) for k in KERNELS]
    tandem = {key: [] for key in keys}
    likwid = {key: [] for key in keys}
    best_test = {key: [] for key in keys}
    for r in range(a.rounds):
        t = run_tandem(a.bench, a.mib, a.threads, a.min_time)
        for key in keys:
            tandem[key].append(t[key])
            best = max((run_likwid(t, nbytes, key[1]), t) for t in tests[key[0]])
            likwid[key].append(best[0])
            best_test[key].append(best[1])
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    print(f"tandem-bench limits vs likwid-bench, {a.mib} MiB, {a.rounds} alternating rounds, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'kernel':7} {'threads':>7} {'tandem GB/s':>12} {'likwid GB/s':>12} {'likwid test':>15} {'ratio':>7}  verdict")
    rows, rounds, ok = [], [], True
    for key in keys:
        tm, lm = statistics.median(tandem[key]), statistics.median(likwid[key])
        ratio = tm / lm if lm > 0 else float("nan")
        within = abs(ratio - 1.0) <= a.tolerance
        ok = ok and within
        print(f"{key[0]:7} {key[1]:>7} {tm:12.2f} {lm:12.2f} {statistics.mode(best_test[key]):>15} {ratio:7.3f}  "
              f"{'within' if within else 'OUTSIDE'} {a.tolerance:.0%}")
        rows.append({"kernel": key[0], "threads": key[1], "tandem_gbps": tm, "likwid_gbps": lm,
                     "likwid_test": statistics.mode(best_test[key]), "ratio": ratio, "within": within})
        rounds.append({"kernel": key[0], "threads": key[1], "tandem_gbps": tandem[key], "likwid_gbps": likwid[key],
                       "likwid_best_test": best_test[key]})
    if a.out:
        # The shape of a tandem-bench JSON (meta + tables), so bench/perf_report.py renders it like the others.
        columns = [("kernel", "kernel"), ("threads", "threads"), ("tandem_gbps", "tandem-bench GB/s"),
                   ("likwid_gbps", "likwid-bench GB/s"), ("likwid_test", "fastest likwid test"), ("ratio", "ratio"),
                   ("within", f"within {a.tolerance:.0%}")]
        doc = {"meta": {"command": "stream check", "machine": {"load_average_start": load_start},
                        "load_average_end": list(os.getloadavg()), "mib": a.mib, "rounds": a.rounds,
                        "tolerance": a.tolerance, "per_round": rounds},
               "tables": {"stream": {"title": f"tandem-bench limits vs likwid-bench (medians of {a.rounds} "
                                              f"alternating rounds, {a.mib} MiB)",
                                     "columns": [{"key": k, "label": l} for k, l in columns], "rows": rows,
                                     "notes": []}}}
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
    print("agree" if ok else "DISAGREE", f"within {a.tolerance:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
