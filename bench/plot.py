#!/usr/bin/env python3
"""Plots the JSON that `tandem-bench limits|verify --out FILE.json` writes, as PNG and SVG next to it (or in --dir).

  limits -> <stem>.png/.svg: memory bandwidth (read, copy, triad) vs threads, median with min..max bars,
            and the FMA peak vs threads beside it.
  verify -> <stem>.png/.svg: time of one verification pass vs tree nodes (chain and bushy, median with
            min..max bars), the roofline bound max(weights / bandwidth, 2 * params * rows / peak GEMM) and
            the one-token decode step.
  model  -> <stem>.png/.svg: tokens/s of prompt, decode and tree verification per backend and thread count, and
            the weight bytes streamed per second against the read bandwidth measured in the same run.
  ops    -> <stem>.png/.svg: GB/s of every memory-bound case and GFLOP/s of every GEMM per backend, with
            the read limit / BLAS baseline measured in the same run.

Usage: python3 bench/plot.py limits.json verify.json [--dir OUT]
Needs matplotlib: python3 -m pip install matplotlib  (or: apt-get install python3-matplotlib)
"""
import argparse
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: python3 -m pip install matplotlib  (or: apt-get install python3-matplotlib)")


def error_bars(rows, lo, mid, hi):
    """Matplotlib's asymmetric yerr from min / median / max columns."""
    return [[r[mid] - r[lo] for r in rows], [r[hi] - r[mid] for r in rows]]


def subtitle(meta):
    m = meta.get("machine", {})
    load = m.get("load_average_start") or []
    load_text = f", load {load[0]:.1f}" if load else ""
    return f"{m.get('cpu', '?')}, {m.get('hardware_threads', '?')} hardware threads{load_text}, {meta.get('time_utc', '')}"


def plot_limits(doc, stem):
    tables = doc["tables"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    bw = tables.get("bandwidth", {}).get("rows", [])
    for kernel in ("read", "copy", "triad"):
        rows = [r for r in bw if r["kernel"] == kernel]
        if rows:
            ax.errorbar([r["threads"] for r in rows], [r["gbps_median"] for r in rows],
                        yerr=error_bars(rows, "gbps_min", "gbps_median", "gbps_max"), marker="o", capsize=4,
                        label=kernel)
    ax.set_xlabel("threads")
    ax.set_ylabel("GB/s (median, bars: min..max)")
    ax.set_title(f"Memory bandwidth, {doc['meta'].get('bandwidth_bytes', 0) / 2**20:.0f} MiB array")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[1]
    fma = tables.get("fma", {}).get("rows", [])
    for isa in sorted({r["isa"] for r in fma}):
        rows = [r for r in fma if r["isa"] == isa]
        ax.errorbar([r["threads"] for r in rows], [r["gflops_median"] for r in rows],
                    yerr=error_bars(rows, "gflops_min", "gflops_median", "gflops_max"), marker="o", capsize=4,
                    label=isa)
    ax.set_xlabel("threads")
    ax.set_ylabel("GFLOP/s (median, bars: min..max)")
    ax.set_title("Peak f32 FMA")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if fma:
        ax.legend()
    for a in axes:
        a.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(subtitle(doc["meta"]), fontsize=9)
    return fig


def plot_verify(doc, stem):
    meta = doc["meta"]
    rows = doc["tables"]["verify"]["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for tree, marker in (("chain", "o"), ("bushy", "s")):
        # A one-node tree is a chain; show it on both lines so each starts at 1.
        sel = [r for r in rows if r["tree"] == tree or (tree == "bushy" and r["tree"] == "chain" and r["nodes"] == 1)]
        sel.sort(key=lambda r: r["nodes"])
        if sel:
            ax.errorbar([r["nodes"] for r in sel], [r["ms_median"] for r in sel],
                        yerr=error_bars(sel, "ms_min", "ms_median", "ms_max"), marker=marker, capsize=3,
                        label=f"{tree} (median, min..max)")
    nodes = sorted({r["nodes"] for r in rows if r["nodes"] > 0})
    if nodes:
        bw = meta["read_gbps"]["median"] * 1e9
        peak = meta["gemm"]["peak_gflops"] * 1e9
        mem = meta["weight_bytes"] / bw
        xs = [nodes[0] * (nodes[-1] / nodes[0]) ** (i / 200) for i in range(201)]
        ax.plot(xs, [1e3 * max(mem, 2 * meta["matrix_params"] * (x + 1) / peak) for x in xs], "k--",
                label=f"roofline bound ({meta['read_gbps']['median']:.0f} GB/s, "
                      f"{meta['gemm']['peak_gflops']:.0f} GFLOP/s)")
    decode = [r for r in rows if r["nodes"] == 0]
    if decode:
        ax.axhline(decode[0]["ms_median"], color="gray", linestyle=":", label="one-token decode step")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tree nodes (rows = nodes + 1)")
    ax.set_ylabel("ms per verification pass")
    name = os.path.basename(meta.get("model", "model"))
    ax.set_title(f"Tree verification, {name}, {meta.get('backend')} backend, threads: {meta.get('threads')}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(subtitle(meta), fontsize=9)
    return fig


def plot_ops(doc, stem):
    """One panel per bound: memory-bound cases as GB/s against each backend's read limit, GEMMs as GFLOP/s
    against the BLAS baseline of the same shape, all measured in the same run (bars: this case, ticks: limit)."""
    rows = [r for r in doc["tables"]["ops"]["rows"] if r.get("ms_median") is not None]
    gemm = [r for r in rows if r.get("vs") and r["vs"].endswith("sgemm")]
    mem = [r for r in rows if r not in gemm]
    backends = sorted({r["backend"] for r in rows})
    fig, axes = plt.subplots(2, 1, figsize=(12, 9))
    for ax, sel, key, unit in ((axes[0], mem, "gbps", "GB/s"), (axes[1], gemm, "gflops", "GFLOP/s")):
        cases = list(dict.fromkeys(r["case"] for r in sel))
        width = 0.8 / max(1, len(backends))
        for bi, be in enumerate(backends):
            xs, ys, lims = [], [], []
            for ci, case in enumerate(cases):
                r = next((r for r in sel if r["case"] == case and r["backend"] == be), None)
                if r is None:
                    continue
                xs.append(ci + (bi - (len(backends) - 1) / 2) * width)
                ys.append(r[key])
                lims.append(r.get("limit"))
            ax.bar(xs, ys, width, label=be, color=f"C{bi}")
            lx = [x for x, lim in zip(xs, lims) if lim]
            ax.scatter(lx, [lim for lim in lims if lim], marker="_", s=200, color="k", linewidths=2, zorder=3)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=70, ha="right", fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel(f"{unit} (median)")
        what = "read limit of the backend's device" if unit == "GB/s" else "OpenBLAS / CLBlast SGEMM, same shape"
        ax.set_title(f"{'Memory-bound cases' if unit == 'GB/s' else 'GEMM'}: bars = case, ticks = {what}", fontsize=10)
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=8)
    fig.suptitle(subtitle(doc["meta"]) + f", threads: {doc['meta'].get('threads')}", fontsize=9)
    return fig


def plot_model(doc, stem):
    """Left: tokens/s (prompt tokens, decode steps, tree nodes) per phase for each backend and thread count. Right:
    the weight bytes each pass streams per second, with the read bandwidth of that thread count measured in the
    same run as a tick (a pass at the tick runs at the memory's speed)."""
    rows = doc["tables"]["model"]["rows"]
    configs = list(dict.fromkeys((r["backend"], r["threads"]) for r in rows))
    phases = list(dict.fromkeys(f"{r['phase']} {r['tokens']}" if r["phase"] != "decode" else "decode" for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    width = 0.8 / max(1, len(configs))
    for ax, key in ((axes[0], "tokens_per_s"), (axes[1], "weights_gbps")):
        for ci, (be, th) in enumerate(configs):
            xs, ys, lo, hi, reads = [], [], [], [], []
            for pi, ph in enumerate(phases):
                r = next((r for r in rows if (r["backend"], r["threads"]) == (be, th) and
                          (f"{r['phase']} {r['tokens']}" if r["phase"] != "decode" else "decode") == ph), None)
                if r is None:
                    continue
                xs.append(pi + (ci - (len(configs) - 1) / 2) * width)
                ys.append(r[key])
                # Time min..max as a spread of the rate: the fastest pass gives the highest rate.
                lo.append(max(0.0, r[key] - r[key] * r["ms_median"] / r["ms_max"]))  # max: rounding with 1 run
                hi.append(max(0.0, r[key] * r["ms_median"] / r["ms_min"] - r[key]))
                reads.append(r["read_gbps"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"{be}, {th} thr", color=f"C{ci}")
            if key == "weights_gbps":
                ax.scatter(xs, reads, marker="_", s=250, color="k", linewidths=2, zorder=3,
                           label="read bandwidth (same threads)" if ci == 0 else None)
        ax.set_xticks(range(len(phases)))
        ax.set_xticklabels(phases)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("tokens/s (tree: nodes/s), median; bars: min..max")
    axes[0].set_title("Prompt, decode and tree verification", fontsize=10)
    axes[1].set_ylabel("weight GB/s = weight bytes / time per pass")
    axes[1].set_title("Weights streamed per second vs read bandwidth", fontsize=10)
    meta = doc["meta"]
    fig.suptitle(f"{os.path.basename(meta.get('model', 'model'))}: " + subtitle(meta), fontsize=9)
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="JSON files written by tandem-bench limits|verify --out FILE.json")
    ap.add_argument("--dir", help="output directory (default: next to each JSON file)")
    args = ap.parse_args()
    for path in args.json:
        with open(path) as f:
            doc = json.load(f)
        command = doc.get("meta", {}).get("command")
        stem = os.path.splitext(path)[0]
        if args.dir:
            os.makedirs(args.dir, exist_ok=True)
            stem = os.path.join(args.dir, os.path.basename(stem))
        if command == "limits":
            fig = plot_limits(doc, stem)
        elif command == "verify":
            fig = plot_verify(doc, stem)
        elif command == "ops":
            fig = plot_ops(doc, stem)
        elif command == "model":
            fig = plot_model(doc, stem)
        else:
            print(f"{path}: no plot for command {command!r}", file=sys.stderr)
            continue
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(f"{stem}.{ext}", dpi=120)
            print(f"wrote {stem}.{ext}")
        plt.close(fig)


if __name__ == "__main__":
    main()
