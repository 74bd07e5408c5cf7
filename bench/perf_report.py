#!/usr/bin/env python3
"""The README's "Performance" section from one command: runs every tandem-bench subcommand (and the llama.cpp peer
comparison when it is installed), keeps each one's JSON, log and plots in one directory, and writes PERFORMANCE.md
there with the machine, the date, the exact commands and every table, each figure read from the JSON files.

  python3 bench/perf_report.py [--quick] [--build build] [--out bench/results/<date>] [--only model,verify]

Steps (in this order): limits, stream (bench/stream_check.py, when likwid-bench is installed), ops, model (synthetic 110m and tinyllama-1.1b, Q4_0 and Q8_0), verify, spec,
collab delay, collab load (stories260K and a synthetic 110m target, F32 and Q8_0), train (stories260K, 110m), peers (bench/peers/run.sh). A step that
fails is reported as failed in PERFORMANCE.md with its log, and the script exits 1 after the others have run.
--quick shrinks every step (fewer repeats, sizes and prompts) for a check of the pipeline, not for figures.
PERFORMANCE.md links plots relative to the repository root, so its text can be pasted into README.md as it is.
run.json in the same directory records each step's command, time and outcome: --only reruns some steps and keeps
the others' results, --render-only redraws the plots and PERFORMANCE.md from what is there.
Needs python3 and, for the plots, matplotlib (without it the tables are still written).
"""
import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS_VENV = os.environ.get("TANDEM_PEERS_VENV", os.path.expanduser("~/.cache/tandem/peers/venv"))


def steps(quick, cache_dir):
    """The runs: (name, section, tandem-bench arguments or None for peers, what it shows). --out is appended."""
    q = quick
    all_threads = str(os.cpu_count() or 1)
    thread_list = "1" if all_threads == "1" else "1," + all_threads
    synth = lambda shape, t: os.path.join(cache_dir, f"synth-{shape}-{t}-seed42.gguf")
    model_common = ["--prompt", "32" if q else "64", "--decode", "8" if q else "16", "--repeats", "1" if q else "5"]
    out = [
        ("limits", "Machine limits",
         ["limits"] + (["--mib", "256", "--runs", "3", "--min-time", "0.2", "--launch-runs", "200"] if q else []),
         "Memory bandwidth and peak FMA throughput per thread count, and the launch overhead of each API and "
         "backend: the denominators of the ratios below."),
        ("stream", "Machine limits", "stream",
         "`tandem-bench limits` against an independent STREAM-style measurement (likwid-bench's load, copy and "
         "stream kernels), each tool's fastest implementation timed back to back with the other's, round after "
         "round, on the same array size."),
        ("ops", "Kernels",
         ["ops"] + (["--min-seconds", "0.1", "--runs", "3", "--read-mib", "64"] if q else []),
         "Every backend_ops kernel at 7B-model shapes on every backend, against the read bandwidth (memory-bound "
         "cases) or OpenBLAS / CLBlast (GEMMs) measured in the same run."),
    ]
    for shape in ("110m", "tinyllama-1.1b"):
        for t in ("q4_0", "q8_0"):
            if q and shape == "tinyllama-1.1b" and t == "q8_0":
                continue
            trees = "16" if q else "16,64"
            # GPU backends ignore the thread count, so they run once, at all threads: the ratio to the read
            # bandwidth then uses the bandwidth of the whole machine.
            out.append((f"model-{shape}-{t}-cpu", "Models",
                        ["model", "--shape", shape, "--type", t, "--backend", "cpu", "--threads", thread_list,
                         "--tree", trees] + model_common,
                        f"Synthetic {shape} in {t.upper()}, cpu backend."))
            if shape == "110m":
                out.append((f"model-{shape}-{t}-gpu", "Models",
                            ["model", "--shape", shape, "--type", t, "--backend", "opencl,vulkan", "--threads", all_threads,
                             "--tree", trees] + model_common,
                            f"Synthetic {shape} in {t.upper()}, opencl (PoCL) and vulkan (lavapipe) backends."))
    out += [
        ("verify", "Tree verification against its roofline bound",
         ["verify"] + (["--nodes", "1", "4", "16", "--min-time", "5", "--runs", "3"] if q else []),
         "Time of one verification pass by tree size next to max(weight bytes / read bandwidth, matmul flops / "
         "peak GEMM), synthetic tinyllama-1.1b Q4_0, cpu."),
        ("spec", "Speculative decoding", ["spec"] + (["--prompts", "8", "--tokens", "32"] if q else []),
         "Tokens per target pass of each drafting strategy on the real pair (stories260K target, "
         "llama2xs_tinystories_279K draft), greedy."),
        ("collab-delay", "Edge and cloud",
         ["collab", "delay"] + (["--tokens", "16", "--prompts", "1", "--delays", "0,25"] if q else []),
         "Tokens/s the edge sees at emulated one-way delays, per mode, server and edge on loopback."),
        ("collab-load", "Edge and cloud",
         ["collab", "load"] + (["--edges", "1,4", "--seconds", "1"] if q else []),
         "Server throughput against concurrent synthetic edges, stories260K target."),
        ("collab-load-110m", "Edge and cloud",
         ["collab", "load", "--shape", "110m", "--type", "f32"] + (["--edges", "1,4", "--seconds", "1"] if q else []),
         "Server throughput against concurrent synthetic edges, synthetic 110m F32 target, with the batched "
         "pass's roofline bound."),
        ("collab-load-110m-q8_0", "Edge and cloud",
         ["collab", "load", "--shape", "110m", "--type", "q8_0"] + (["--edges", "1,4", "--seconds", "1"] if q else []),
         "The same with the 110m target in Q8_0 (the cpu backend's int8 kernels in place of OpenBLAS SGEMM)."),
        ("train-stories260k", "LoRA training",
         ["train", "-m", "models/stories260K.gguf", "-b", "cpu,opencl,vulkan", "-t", all_threads, "--rank", "8",
          "--targets", "q,v"] + (["--ctx", "32", "--batch", "2", "--steps", "1"] if q else
                                 ["--ctx", "128", "--batch", "8", "--steps", "4"]),
         "LoRA training tokens/s (rank 8, q/v) on stories260K per backend, against the FMA peak and read bandwidth "
         "of the same run."),
        ("train-110m", "LoRA training",
         ["train", "--shape", "110m", "--type", "f32", "-b", "cpu", "-t", all_threads, "--rank", "8", "--targets",
          "q,v"] + (["--ctx", "32", "--batch", "1", "--steps", "1"] if q else
                    ["--ctx", "128", "--batch", "4", "--steps", "2"]),
         "LoRA training tokens/s (rank 8, q/v) on the synthetic 110m shape, cpu backend."),
        ("train-110m-gpu", "LoRA training",
         ["train", "--shape", "110m", "--type", "f32", "-b", "opencl,vulkan", "-t", all_threads, "--rank", "8",
          "--targets", "q,v", "--ctx", "32" if q else "64", "--batch", "1", "--steps", "1"],
         "The same on opencl (PoCL) and vulkan (lavapipe), one window of 64 tokens per step."),
        ("peers", "Tandem next to llama.cpp",
         None, "llama.cpp (llama-cpp-python, CPU build) and Tandem on the same GGUF files and thread counts."),
    ]
    peers_models = [synth("tinyllama-1.1b", "q4_0")] + ([] if q else [synth("tinyllama-1.1b", "q8_0")])
    return out, peers_models, thread_list


def peers_installed():
    py = os.path.join(PEERS_VENV, "bin", "python")
    if not os.access(py, os.X_OK):
        return False
    return subprocess.run([py, "-c", "import llama_cpp, numpy"], capture_output=True).returncode == 0


def run_step(cmd, log_path):
    """Runs cmd with stdout and stderr into log_path; returns (exit code, seconds)."""
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    return rc, time.monotonic() - t0


# ---- markdown ----------------------------------------------------------------------------------------------------

def fmt(v):
    """A cell: integers as they are, other numbers to three significant digits (no exponent), null as a dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        if a == 0:
            return "0"
        return f"{v:.3f}" if a >= 0.01 else f"{v:.2g}"
    return str(v).replace("|", "\\|")


def md_table(table, keys=None, max_rows=None):
    """A markdown table of a tandem-bench JSON table: the given columns (default all), text left, numbers right."""
    cols = [c for c in table["columns"] if keys is None or c["key"] in keys]
    if keys is not None:
        cols.sort(key=lambda c: keys.index(c["key"]))
    rows = table["rows"]
    shown = rows if max_rows is None else rows[:max_rows]
    numeric = {c["key"]: all(isinstance(r.get(c["key"]), (int, float)) or r.get(c["key"]) is None for r in rows)
               for c in cols}
    lines = ["| " + " | ".join(c["label"] for c in cols) + " |",
             "|" + "|".join("---:" if numeric[c["key"]] else "---" for c in cols) + "|"]
    for r in shown:
        lines.append("| " + " | ".join(fmt(r.get(c["key"])) for c in cols) + " |")
    if len(shown) < len(rows):
        lines.append(f"\n({len(rows) - len(shown)} more rows in the JSON file.)")
    for n in table.get("notes", []):
        lines.append(f"\n{n}")
    return "\n".join(lines)


def load_text(meta):
    a, b = meta.get("machine", {}).get("load_average_start") or [], meta.get("load_average_end") or []
    if not a:
        return ""
    return f"load average {a[0]:.1f} at the start" + (f", {b[0]:.1f} at the end" if b else "")


def render_bench(doc, name):
    """The tables of one tandem-bench JSON, with the model and bandwidth lines it carries."""
    meta, tables = doc["meta"], doc["tables"]
    parts = []
    cmd = meta.get("command")
    if cmd == "model":
        hp = meta.get("hparams", {})
        parts.append(f"Model `{os.path.basename(meta['model'])}`: {hp.get('n_layer')} layers, width "
                     f"{hp.get('n_embd')}, vocab {hp.get('n_vocab')}; {meta.get('weight_bytes', 0) / 1e6:,.0f} MB of "
                     f"weights streamed per pass; prompt {meta['prompt_tokens']} tokens, {meta['decode_steps']} "
                     f"decode steps, trees of {', '.join(map(str, meta['tree_nodes']))} nodes ({meta['tree_shape']}); "
                     f"{meta['repeats']} timed rounds. Devices: "
                     + ", ".join(f"{k} = {v}" for k, v in meta.get("backends", {}).items()) + ".")
        parts.append(md_table(tables["summary"]))
        parts.append(md_table(tables["model"], ["backend", "threads", "phase", "tokens", "ms_min", "ms_median",
                                                "ms_max", "tokens_per_s", "vs_decode", "weights_gbps", "read_gbps",
                                                "vs_read"]))
    elif cmd == "verify":
        g = meta["gemm"]
        parts.append(f"Model `{os.path.basename(meta['model'])}`, {meta['backend']}, {meta['threads']} threads, prompt "
                     f"{meta['prompt_tokens']} tokens, {meta['weight_bytes'] / 1e6:,.0f} MB of weights per pass; read "
                     f"bandwidth {fmt(meta['read_gbps']['median'])} GB/s and peak {g['type']} GEMM "
                     f"{fmt(g['peak_gflops'])} GFLOP/s (at {g['peak_rows']} rows) measured in the same "
                     f"{meta['rounds']} rounds.")
        parts.append(md_table(tables["verify"]))
    elif cmd == "collab load":
        parts.append(f"Target `{os.path.basename(meta['target'])}`, {meta['weight_bytes'] / 1e6:,.1f} MB of weights; "
                     f"read bandwidth {fmt(meta['read_gbps'])} GB/s, FMA peak {fmt(meta['fma_gflops'])} GFLOP/s "
                     f"measured in the same run.")
        parts.append(md_table(tables["load"]))
    elif cmd == "ops":
        for t in tables.values():
            parts.append(f"**{t['title']}**\n\n" + md_table(t, max_rows=80))
    else:
        for t in tables.values():
            parts.append(f"**{t['title']}**\n\n" + md_table(t))
    return parts


def render_peers(doc):
    rows = doc.get("rows", [])
    refs = {(r["model"], r["threads"]): r for r in rows if r.get("engine") == "llama.cpp"}
    m = doc.get("machine", {})
    lines = [f"llama-cpp-python {m.get('llama_cpp_python', '?')}; load average {m.get('loadavg_1_5_15')} before, "
             f"{m.get('loadavg_after')} after.", "",
             "| model | threads | backend | prompt tok/s Tandem | llama.cpp | ratio | decode tok/s Tandem | llama.cpp "
             "| ratio |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = refs.get((r["model"], r["threads"]), {})
        name = os.path.basename(r["model"])
        if r.get("engine") == "llama.cpp" and "error" in r:
            lines.append(f"| {name} | {r['threads']} | — | llama.cpp failed: {fmt(r['error'].splitlines()[0])} "
                         "| | | | | |")
        elif r.get("engine") == "tandem":
            lines.append(f"| {name} | {r['threads']} | {r['backend']} | {fmt(r['prompt_tps'])} | "
                         f"{fmt(ref.get('prompt_tps'))} | {fmt(r.get('prompt_ratio'))} | {fmt(r['decode_tps'])} | "
                         f"{fmt(ref.get('decode_tps'))} | {fmt(r.get('decode_ratio'))} |")
    return ["\n".join(lines)]


def write_markdown(path, out_dir, run, results):
    first_meta = next((r["doc"]["meta"] for r in results if r.get("doc") and "meta" in r["doc"]), {})
    m = first_meta.get("machine", {})
    rel = lambda p: os.path.relpath(p, REPO)
    total = sum(r["seconds"] for r in results)
    md = [f"Generated by `{run['command']}` between {run['started']} and {run['finished']} UTC; the steps took "
          f"{total / 60:.0f} minutes"
          + "".join(f"; then `{x['command']}` (from {x['started']} UTC) reran those steps"
                    for x in run.get("reruns", []))
          + (" (**--quick: a pipeline check, not figures to quote**)" if run.get("quick") else "") + ". "
          f"Machine: {m.get('cpu', '?')}, {m.get('hardware_threads', '?')} hardware threads, FMA "
          f"{'/'.join(m.get('fma_isa', [])) or '—'}; tandem {first_meta.get('version', '?')}. The machine is a shared "
          "VM: every ratio below is taken against limits measured in the same run, and each step gives its load "
          f"average. Raw JSON, logs and plots: `{rel(out_dir)}/`."]
    section = None
    for r in results:
        if r["section"] != section:
            section = r["section"]
            md.append(f"### {section}")
        md.append(f"**`{r['name']}`** — {r['what']}\n\n`{r['command']}` ({r['seconds']:.0f} s"
                  + (f"; {load_text(r['doc']['meta'])}" if r.get("doc") and "meta" in r["doc"] else "") + ")")
        if r["status"] != "ok":
            md.append(f"*{r['status']}*" + (f" (log: `{r['log']}`)" if r.get("log") else ""))
        if not r.get("doc"):
            continue
        md += render_peers(r["doc"]) if r["name"] == "peers" else render_bench(r["doc"], r["name"])
        for png in r.get("plots", []):
            md.append(f"![{r['name']}]({rel(png)})")
    with open(path, "w") as f:
        f.write("\n\n".join(md) + "\n")


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def run_steps(args, out_dir, run, save):
    """Runs the selected steps, replacing each one's entry in run["steps"] and calling save() after each (a run
    stopped half-way can still be rendered). Returns the number of failed steps and the order of all steps."""
    record = run["steps"]
    bench = os.path.join(os.path.abspath(args.build), "bench", "tandem-bench")
    if not os.access(bench, os.X_OK):
        sys.exit(f"perf_report.py: no {bench}; build it first: cmake --build {args.build} --target tandem_bench")
    # Where tandem-bench keeps its synthetic models (bench/models.h), for the peer comparison's files.
    cache = os.environ.get("TANDEM_CACHE_DIR")
    cache_dir = os.path.join(cache, "bench") if cache else os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tandem", "bench")
    plan, peers_models, thread_list = steps(args.quick, cache_dir)
    only = args.only.split(",") if args.only else None
    failed = 0
    for name, section, bench_args, what in plan:
        if only and not any(name.startswith(o) for o in only):
            continue
        r = {"name": name, "section": section, "what": what, "seconds": 0.0}
        json_path = os.path.join(out_dir, f"{name}.json")
        log_path = os.path.join(out_dir, f"{name}.log")
        if os.path.exists(json_path):
            os.remove(json_path)  # never render a previous run's figures as this one's
        if bench_args == "stream":
            script = os.path.join(HERE, "stream_check.py")
            extra = (["--rounds", "2", "--mib", "256", "--min-time", "0.3"] if args.quick else
                     ["--rounds", str(args.stream_rounds)] if args.stream_rounds else [])
            cmd = [sys.executable, script, "--bench", bench, "--out", json_path] + extra
            r["command"] = shlex.join(["python3", "bench/stream_check.py"] + extra)
            if not shutil.which("likwid-bench"):
                r["status"] = "skipped: likwid-bench is not installed (apt-get install likwid)"
        elif bench_args is None:  # peers
            run_sh = os.path.join(HERE, "peers", "run.sh")
            cmd = [run_sh, "--build", os.path.abspath(args.build), "--models", *peers_models, "--threads", thread_list,
                   "--out", json_path]
            home = os.path.expanduser("~")
            shown = ["~" + p[len(home):] if p.startswith(home + "/") else p for p in peers_models]
            r["command"] = " ".join(["bench/peers/run.sh", "--build", shlex.quote(os.path.relpath(args.build, REPO)),
                                     "--models", *shown, "--threads", thread_list])
            if args.no_peers:
                r["status"] = "skipped (--no-peers)"
            elif not os.access(run_sh, os.X_OK):
                r["status"] = "skipped: bench/peers/run.sh is not there"
            elif not peers_installed():
                r["status"] = (f"skipped: llama-cpp-python is not installed in {PEERS_VENV}; run bench/peers/run.sh "
                               "once to install it (it compiles llama.cpp, 15-40 min)")
            elif not all(os.path.exists(p) for p in peers_models):
                r["status"] = "skipped: the synthetic models are not in the cache (run the model steps first)"
        else:
            cmd = [bench] + bench_args + ["--out", json_path]
            r["command"] = shlex.join(["tandem-bench"] + bench_args)
        if "status" not in r:
            print(f"perf_report: {name}: {r['command']}", file=sys.stderr, flush=True)
            rc, r["seconds"] = run_step(cmd, log_path)
            r["log"] = os.path.relpath(log_path, REPO)
            r["status"] = "ok" if rc == 0 else f"failed: exit code {rc}"
            failed += rc != 0
            if rc != 0 and os.path.exists(json_path):  # e.g. one backend of several failed
                r["status"] += "; the tables below hold what did run"
            print(f"perf_report: {name}: {r['status']} in {r['seconds']:.0f} s", file=sys.stderr, flush=True)
        record[name] = r
        run["finished"] = utc_now()
        save()
    return failed, [name for name, *_ in plan]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs: checks the pipeline, figures not to quote")
    ap.add_argument("--build", default=os.path.join(REPO, "build"), help="build directory with bench/tandem-bench")
    ap.add_argument("--out", help="output directory (default: bench/results/<UTC date>, or -quick)")
    ap.add_argument("--only", help="comma-separated step names or prefixes (e.g. model,verify): run only these and "
                                   "keep the other steps' results already in --out")
    ap.add_argument("--stream-rounds", type=int, default=0,
                    help="timed rounds of the stream step (default: stream_check.py's 8, about 100 s each here, "
                         "after a 5-minute selection round)")
    ap.add_argument("--no-peers", action="store_true", help="skip the llama.cpp comparison even if installed")
    ap.add_argument("--render-only", action="store_true", help="run nothing: redraw the plots and PERFORMANCE.md "
                                                                "from the results in --out")
    args = ap.parse_args()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out_dir = os.path.abspath(args.out or os.path.join(HERE, "results", day + ("-quick" if args.quick else "")))
    os.makedirs(out_dir, exist_ok=True)
    # run.json: what ran, how long it took and how it ended, per step; PERFORMANCE.md is drawn from it and the JSON.
    run_path = os.path.join(out_dir, "run.json")
    run = {"steps": {}}
    if os.path.exists(run_path) and (args.only or args.render_only):
        with open(run_path) as f:
            run = json.load(f)
    failed = 0
    order = [name for name, *_ in steps(args.quick, "")[0]]
    if not args.render_only:
        if not args.only or "started" not in run:
            run["started"] = utc_now()
        if not args.only or "command" not in run:
            run["quick"] = args.quick
            run["command"] = shlex.join(["python3", "bench/perf_report.py"] + sys.argv[1:])
            run.pop("reruns", None)
        else:  # the steps it reruns say so in the header
            run.setdefault("reruns", []).append(
                {"command": shlex.join(["python3", "bench/perf_report.py"] + sys.argv[1:]), "started": utc_now()})

        def save():
            with open(run_path, "w") as f:
                json.dump(run, f, indent=1)

        failed, order = run_steps(args, out_dir, run, save)
    if not run["steps"]:
        sys.exit(f"perf_report.py: nothing has run in {out_dir}")

    results = [run["steps"][n] for n in order if n in run["steps"]]
    for r in results:
        json_path = os.path.join(out_dir, f"{r['name']}.json")
        if os.path.exists(json_path):
            with open(json_path) as f:
                r["doc"] = json.load(f)
    # Plots: bench/plot.py draws what it knows next to each JSON.
    jsons = [os.path.join(out_dir, f"{r['name']}.json") for r in results if r.get("doc") and r["name"] != "peers"]
    if jsons:
        p = subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), *jsons], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"perf_report: plots skipped: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    for r in results:
        png = os.path.join(out_dir, f"{r['name']}.png")
        if r.get("doc") and os.path.exists(png):
            r["plots"] = [png]
    md_path = os.path.join(out_dir, "PERFORMANCE.md")
    write_markdown(md_path, out_dir, run, results)
    print(f"perf_report: wrote {md_path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
