#!/usr/bin/env python3
"""Checks `tandem-bench limits` against an independent STREAM-style measurement: likwid-bench (Debian package
`likwid`), whose hand-written assembly kernels load, copy and stream (triad) count bytes as STREAM does and as
`tandem-bench limits` does: every element read or written once, the write-allocate read of a cached store NOT
counted (likwid-bench -l copy: 16 bytes per element; stream: 24), so both tools credit a cached copy with 2/3 and a
cached triad with 3/4 of the traffic it really causes.

  python3 bench/stream_check.py [--bench build/bench/tandem-bench] [--threads N] [--rounds 8] [--mib 1024]
                                [--tolerance 0.10] [--out stream_check.json]

The two tools use arrays of the same size, the same thread counts, the same (4 KiB) pages, the same pinning
(thread i on CPU i) and the same first touch (each thread its own part: likwid -W). Each takes its best
implementation of each kernel, compared like for like: copy and triad with cached stores against likwid's cached
variants, with non-temporal stores against its `_mem` variants.

A selection round first times every tandem-bench variant (one `limits` run) and every likwid-bench variant (one
run each) and fixes, per row, the fastest of each tool. Then each timed round measures, row by row, tandem-bench's
variant, likwid-bench's test and tandem-bench's variant again, back to back (a few seconds apart), and takes the
round's ratio as the mean of the two tandem figures over the likwid figure. On a shared VM the 2-thread bandwidth
jumps between modes from one second to the next; pairing the tools this closely, each with one candidate per
round, keeps a mode change from favouring either, and the verdict compares the median of the rounds' ratios with
1. Exits 1 when a row differs by more than --tolerance (2 when a tool is missing). Install likwid with
`apt-get install likwid`.
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

# Rows of the check: (tandem-bench kernel, store kind) -> likwid-bench test stem. tandem-bench's `read` sums what
# it loads, likwid's `load` only loads; its `load_mem` (non-temporal loads) is ordinary loads on cached memory and
# takes part as one more read variant.
ROWS = {("read", "cached"): ["load", "load_mem"],
        ("copy", "cached"): ["copy"], ("copy", "nt"): ["copy_mem"],
        ("triad", "cached"): ["stream"], ("triad", "nt"): ["stream_mem"]}


def likwid_tests():
    out = subprocess.run(["likwid-bench", "-a"], capture_output=True, text=True, check=True).stdout
    return {line.split(" - ")[0].strip() for line in out.splitlines() if " - " in line}


def variants(stems, available):
    """likwid-bench's variants of a kernel that this CPU runs: scalar, SSE, AVX, AVX-512, with and without FMA.
    Which is fastest depends on the CPU (on Zen 5 the scalar / SSE loads beat the AVX-512 ones), so the selection
    round picks the best of them, as STREAM reports its best rate and tandem-bench its fastest variant."""
    flags = open("/proc/cpuinfo").read()
    out = []
    for stem in stems:
        for suffix, flag in (("", ""), ("_sse", "sse2"), ("_sse_fma", "fma"), ("_avx", "avx"), ("_avx_fma", "fma"),
                             ("_avx512", "avx512f"), ("_avx512_fma", "avx512f")):
            name = stem + suffix
            if name in available and (not flag or re.search(r"\b" + flag + r"\b", flags)):
                out.append(name)
    if not out:
        raise SystemExit(f"stream_check: likwid-bench has no {stems} test")
    return out


def run_likwid(test, nbytes, threads, seconds):
    """GB/s of one likwid-bench run, or None when it crashes (likwid 5.2's scalar `stream_mem` segfaults)."""
    # -W N:<size>:<threads>: one workgroup on the whole node, threads pinned to its first CPUs, the size split over
    # its threads and each thread first-touching its own chunk, as tandem-bench does.
    size_kb = nbytes // 1000
    p = subprocess.run(["likwid-bench", "-t", test, "-W", f"N:{size_kb}kB:{threads}", "-s", str(seconds)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"stream_check: likwid-bench -t {test} failed (exit {p.returncode}); left out", file=sys.stderr)
        return None
    m = re.search(r"^MByte/s:\s+([0-9.]+)", p.stdout, re.M)
    if not m:
        raise SystemExit(f"stream_check: no MByte/s in likwid-bench output:\n{p.stdout}")
    return float(m.group(1)) / 1000.0  # likwid's MByte is 1e6 bytes -> GB/s


def run_tandem(bench, mib, threads, min_time, variant=None):
    """{(kernel, store kind, threads): (best median GB/s, variant)} from one `tandem-bench limits` run: every
    variant at 1..threads threads, or only `variant` at `threads` threads."""
    # --small-pages: likwid-bench's arrays are ordinary 4 KiB pages (this machine's transparent huge pages are
    # madvise-only), and page size alone moves the read figure by a third here.
    cmd = [bench, "limits", "--parts", "bandwidth", "--small-pages", "-t", str(threads), "--mib", str(mib),
           "--min-time", str(min_time)]
    if variant:
        cmd += ["--variants", variant, "--only-max-threads"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "limits.json")
        subprocess.run(cmd + ["-o", path], capture_output=True, text=True, check=True)
        doc = json.load(open(path))
    best = {}
    for v in doc["meta"]["bandwidth_variants"]:
        key = (v["kernel"], "nt" if v["nontemporal"] else "cached", v["threads"])
        if key not in best or v["gbps_median"] > best[key][0]:
            best[key] = (v["gbps_median"], v["variant"])
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "bench", "tandem-bench"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="largest thread count")
    ap.add_argument("--rounds", type=int, default=8, help="timed rounds after the selection round")
    ap.add_argument("--mib", type=int, default=1024, help="array size, as tandem-bench limits --mib")
    ap.add_argument("--min-time", type=float, default=1.0, help="tandem-bench --min-time per measurement")
    ap.add_argument("--likwid-seconds", type=int, default=1, help="likwid-bench -s per test (whole seconds)")
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
    tests = {row: variants(stems, available) for row, stems in ROWS.items()}
    nbytes = a.mib * 1024 * 1024
    load_start = list(os.getloadavg())
    keys = [(k, st, n) for n in range(1, a.threads + 1) for (k, st) in ROWS]

    # Selection round: each tool's fastest implementation of each row, fixed for the timed rounds.
    t = run_tandem(a.bench, a.mib, a.threads, a.min_time / 4)
    tandem_variant = {key: t[key][1] for key in keys}
    likwid_test = {}
    for key in keys:
        results = []
        for test in tests[key[:2]]:
            gbps = run_likwid(test, nbytes, key[2], a.likwid_seconds)
            if gbps is not None:
                results.append((gbps, test))
        if not results:
            raise SystemExit(f"stream_check: every likwid-bench variant of {key[:2]} failed")
        likwid_test[key] = max(results)[1]
    print("selection round done", file=sys.stderr)

    tandem = {key: [] for key in keys}
    likwid = {key: [] for key in keys}
    ratios = {key: [] for key in keys}
    for r in range(a.rounds):
        for key in keys:
            def tandem_now():
                return run_tandem(a.bench, a.mib, key[2], a.min_time, tandem_variant[key])[key][0]
            before = tandem_now()
            lw = run_likwid(likwid_test[key], nbytes, key[2], a.likwid_seconds)
            after = tandem_now()
            if lw is None:
                raise SystemExit(f"stream_check: likwid-bench -t {likwid_test[key]} failed in round {r + 1}")
            tm = (before + after) / 2
            tandem[key].append(tm)
            likwid[key].append(lw)
            ratios[key].append(tm / lw)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    print(f"tandem-bench limits vs likwid-bench, {a.mib} MiB, {a.rounds} rounds of back-to-back pairs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'kernel':7} {'stores':6} {'threads':>7} {'tandem GB/s':>12} {'tandem variant':>16} {'likwid GB/s':>12} "
          f"{'likwid test':>18} {'ratio':>7}  verdict")
    rows, rounds, ok = [], [], True
    for key in keys:
        tm, lm = statistics.median(tandem[key]), statistics.median(likwid[key])
        ratio = statistics.median(ratios[key])
        within = abs(ratio - 1.0) <= a.tolerance
        ok = ok and within
        tv, lt = tandem_variant[key], likwid_test[key]
        print(f"{key[0]:7} {key[1]:6} {key[2]:>7} {tm:12.2f} {tv:>16} {lm:12.2f} {lt:>18} {ratio:7.3f}  "
              f"{'within' if within else 'OUTSIDE'} {a.tolerance:.0%}")
        rows.append({"kernel": key[0], "stores": key[1], "threads": key[2], "tandem_gbps": tm, "tandem_variant": tv,
                     "likwid_gbps": lm, "likwid_test": lt, "ratio": ratio, "within": within})
        rounds.append({"kernel": key[0], "stores": key[1], "threads": key[2], "tandem_gbps": tandem[key],
                       "likwid_gbps": likwid[key], "ratios": ratios[key]})
    if a.out:
        # The shape of a tandem-bench JSON (meta + tables), so bench/perf_report.py renders it like the others.
        columns = [("kernel", "kernel"), ("stores", "stores"), ("threads", "threads"),
                   ("tandem_gbps", "tandem-bench GB/s"), ("tandem_variant", "fastest tandem variant"),
                   ("likwid_gbps", "likwid-bench GB/s"), ("likwid_test", "fastest likwid test"),
                   ("ratio", "median ratio"),
                   ("within", f"within {a.tolerance:.0%}")]
        doc = {"meta": {"command": "stream check", "machine": {"load_average_start": load_start},
                        "load_average_end": list(os.getloadavg()), "mib": a.mib, "rounds": a.rounds,
                        "tolerance": a.tolerance, "per_round": rounds},
               "tables": {"stream": {"title": f"tandem-bench limits vs likwid-bench (medians of {a.rounds} "
                                              f"rounds of back-to-back pairs, {a.mib} MiB)",
                                     "columns": [{"key": k, "label": l} for k, l in columns], "rows": rows,
                                     "notes": []}}}
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
    print("agree" if ok else "DISAGREE", f"within {a.tolerance:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
