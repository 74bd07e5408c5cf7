#!/usr/bin/env python3
"""Tandem next to llama.cpp on the same GGUF files, at the same thread count, in one run.

For every (file, thread count): llama.cpp (through llama-cpp-python's C API, CPU build) and Tandem (through
`tandem-bench model`, or `tandem generate` while that is missing) are measured the same way:
  prompt processing: a fixed prompt of --prompt tokens (BOS then fixed ids) evaluated in one batch on an empty
                     KV cache; tokens/s = prompt tokens / median time over --reps runs, after one warm-up run;
  decode:            after the prompt, --decode greedy tokens one at a time; tokens/s = 1 / median time per token.
Writes one JSON (and a CSV next to it) with both engines side by side and prints a table with the ratio
Tandem / llama.cpp. Tandem's figures come from its own timers, llama.cpp's from perf_counter around
llama_decode + argmax; both exclude model loading.

Usage (normally through bench/peers/run.sh, which installs llama-cpp-python into a venv):
  peers.py --tandem build/tools/tandem --tandem-bench build/bench/tandem-bench \
           --models a.gguf b.gguf --threads 1,2 [--backends cpu] [--prompt 64] [--decode 32] [--reps 3] \
           [--out peers.json]
"""
import argparse
import csv
import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import llama_cpp
except ImportError as e:
    sys.exit(f"peers.py needs numpy and llama-cpp-python ({e}); run it through bench/peers/run.sh")

try:
    import gguf
except ImportError:
    gguf = None


class llama_log:
    """Collects llama.cpp's log lines (they name the key or tensor a load failed on); prints none of them."""

    def __init__(self):
        self.lines = []

        @llama_cpp.llama_log_callback
        def callback(level, text, user_data):
            self.lines.append(text.decode("utf-8", "replace"))

        self._callback = callback  # keep it alive as long as llama.cpp may call it
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def tail(self, n=15):
        return "".join(self.lines[-n:]).rstrip()


def prompt_tokens(n_prompt, n_vocab, bos):
    """BOS then fixed, spread-out ids above the byte tokens; the same list for every engine and run."""
    return [bos] + [259 + (i * 97) % (n_vocab - 259) for i in range(n_prompt - 1)]


def file_summary(path):
    """Tensor type counts and total size of a GGUF, from gguf-py (None if it is not installed)."""
    if gguf is None:
        return None
    r = gguf.GGUFReader(path)
    types = {}
    for t in r.tensors:
        name = t.tensor_type.name
        types[name] = types.get(name, 0) + 1
    return {"bytes": os.path.getsize(path), "tensor_types": types}


def bench_llama(path, threads, n_prompt, n_decode, reps, log):
    """llama.cpp: prompt tokens/s and decode tokens/s (median per token), CPU only, `threads` for both."""
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path}:\n{log.tail()}")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        bos = llama_cpp.llama_vocab_bos(vocab)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_prompt + n_decode + 16
        cp.n_batch = cp.n_ubatch = max(n_prompt, 32)
        cp.n_threads = cp.n_threads_batch = threads
        cp.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cp)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {path}:\n{log.tail()}")
        try:
            mem = llama_cpp.llama_get_memory(ctx)
            toks = prompt_tokens(n_prompt, n_vocab, bos)
            arr = (llama_cpp.llama_token * len(toks))(*toks)

            def run_prompt():
                llama_cpp.llama_memory_clear(mem, True)
                t0 = time.perf_counter()
                if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(toks))) != 0:
                    raise RuntimeError(f"llama_decode failed on the prompt:\n{log.tail()}")
                llama_cpp.llama_synchronize(ctx)
                return time.perf_counter() - t0

            def argmax_last():
                p = llama_cpp.llama_get_logits_ith(ctx, -1)
                return int(np.argmax(np.ctypeslib.as_array(p, shape=(n_vocab,))))

            run_prompt()  # warm-up: first-touch of the weights, thread start-up
            prompt_times = [run_prompt() for _ in range(reps)]
            tok = argmax_last()
            one = (llama_cpp.llama_token * 1)()
            step_times, generated = [], [tok]
            for i in range(n_decode):
                one[0] = tok
                t0 = time.perf_counter()
                if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) != 0:
                    raise RuntimeError(f"llama_decode failed at generated token {i}:\n{log.tail()}")
                tok = argmax_last()
                step_times.append(time.perf_counter() - t0)
                generated.append(tok)
            tpp = statistics.median(prompt_times)
            ttg = statistics.median(step_times)
            return {
                "prompt_tokens": len(toks),
                "prompt_tps": len(toks) / tpp,
                "decode_tokens": n_decode,
                "decode_ms_median": ttg * 1e3,
                "decode_tps": 1.0 / ttg,
                "greedy_tokens": generated,
            }
        finally:
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)


def bench_tandem_model(tandem_bench, path, backend, threads, n_prompt, n_decode, reps):
    """Tandem through `tandem-bench model` (its summary table); None when that command is not built yet."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "model.json")
        # One small tree and a small bandwidth array: peers.py reads only the prompt and decode figures.
        cmd = [tandem_bench, "model", "--model", path, "--backend", backend, "--threads", str(threads),
               "--prompt", str(n_prompt), "--decode", str(n_decode), "--repeats", str(reps), "--warmup", "1",
               "--tree", "4", "--mib", "64", "--out", out]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            if "not written yet" in p.stderr + p.stdout or "not yet written" in p.stderr + p.stdout:
                return None
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
        with open(out) as f:
            return parse_tandem_bench(json.load(f), backend, threads)


def parse_tandem_bench(doc, backend, threads):
    """The summary row of `tandem-bench model --out X.json` for one backend and thread count."""
    rows = doc.get("tables", {}).get("summary", {}).get("rows", [])
    for r in rows:
        if r.get("backend") == backend and int(r.get("threads", -1)) == threads:
            return {
                "prompt_tokens": r["prompt_tokens"],
                "prompt_tps": r["prompt_tps"],
                "decode_tokens": r["decode_tokens"],
                "decode_ms_median": r["decode_ms_median"],
                "decode_tps": r["decode_tps"],
                "source": "tandem-bench model",
            }
    raise RuntimeError(f"tandem-bench model wrote no summary row for backend {backend}, {threads} threads")


GENERATE_TIMINGS = re.compile(r"prompt (\d+) tokens in ([\d.]+) ms .*generation (\d+) tokens in ([\d.]+) ms")


def bench_tandem_generate(tandem, path, backend, threads, n_prompt, n_decode, reps):
    """Tandem through `tandem generate` timings (fallback): decode is the MEAN time per token of each run (the
    CLI prints no per-token times), the median of that over runs; the prompt is text of about n_prompt tokens."""
    text = " ".join(["the"] * (n_prompt - 1))
    pp, tg, n_pp = [], [], 0
    for _ in range(reps + 1):
        cmd = [tandem, "generate", "-m", path, "-b", backend, "-t", str(threads), "-p", text, "-n", str(n_decode),
               "--temp", "0", "--ignore-eos", "-c", str(n_prompt + n_decode + 16)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        m = GENERATE_TIMINGS.search(p.stderr)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"{' '.join(cmd[:8])} ... failed ({p.returncode}):\n{p.stderr[-2000:]}")
        n_pp = int(m.group(1))
        pp.append(float(m.group(2)) / 1e3)
        tg.append(float(m.group(4)) / 1e3 / int(m.group(3)))
    pp, tg = pp[1:], tg[1:]  # the first run warms the page cache
    return {
        "prompt_tokens": n_pp,
        "prompt_tps": n_pp / statistics.median(pp),
        "decode_tokens": n_decode,
        "decode_ms_median": statistics.median(tg) * 1e3,
        "decode_tps": 1.0 / statistics.median(tg),
        "source": "tandem generate (decode: mean per run)",
    }


def machine_note():
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "llama_cpp_python": getattr(llama_cpp, "__version__", "?"),
        # llama.cpp's OpenMP workers spin between ops by default; on a loaded machine that decides its speed.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True, help="GGUF files (each run through both engines)")
    ap.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2")
    ap.add_argument("--backends", default="cpu", help="comma-separated Tandem backends, e.g. cpu,vulkan")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens, BOS included")
    ap.add_argument("--decode", type=int, default=32, help="generated tokens timed one by one")
    ap.add_argument("--reps", type=int, default=3, help="timed prompt runs (after one warm-up)")
    ap.add_argument("--tandem", default="build/tools/tandem")
    ap.add_argument("--tandem-bench", default="build/bench/tandem-bench")
    ap.add_argument("--out", default="peers.json", help="JSON output; a CSV is written next to it")
    a = ap.parse_args()
    if a.prompt < 2 or a.decode < 1 or a.reps < 1:
        sys.exit("peers.py: --prompt must be >= 2, --decode and --reps >= 1")
    threads = [int(t) for t in a.threads.split(",")]
    backends = a.backends.split(",")
    for m in a.models:
        if not os.path.isfile(m):
            sys.exit(f"peers.py: no such model file: {m}")
    for exe in (a.tandem, a.tandem_bench):
        if not os.access(exe, os.X_OK):
            print(f"peers.py: note: {exe} is not an executable", file=sys.stderr)

    log = llama_log()
    llama_cpp.llama_backend_init()
    doc = {"machine": machine_note(), "settings": vars(a), "files": {}, "rows": []}
    for path in a.models:
        doc["files"][path] = file_summary(path)
        for t in threads:
            print(f"peers.py: {os.path.basename(path)}, {t} threads: llama.cpp ...", file=sys.stderr, flush=True)
            try:
                ref = bench_llama(path, t, a.prompt, a.decode, a.reps, log)
            except RuntimeError as e:
                print(f"peers.py: {e}", file=sys.stderr)
                doc["rows"].append({"model": path, "threads": t, "engine": "llama.cpp", "error": str(e)})
                continue
            doc["rows"].append({"model": path, "threads": t, "engine": "llama.cpp", "backend": "cpu", **ref})
            for be in backends:
                print(f"peers.py: {os.path.basename(path)}, {t} threads: tandem {be} ...", file=sys.stderr, flush=True)
                got = None
                if os.access(a.tandem_bench, os.X_OK):
                    got = bench_tandem_model(a.tandem_bench, path, be, t, a.prompt, a.decode, a.reps)
                if got is None:
                    got = bench_tandem_generate(a.tandem, path, be, t, a.prompt, a.decode, a.reps)
                got["prompt_ratio"] = got["prompt_tps"] / ref["prompt_tps"]
                got["decode_ratio"] = got["decode_tps"] / ref["decode_tps"]
                doc["rows"].append({"model": path, "threads": t, "engine": "tandem", "backend": be, **got})
    doc["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    keys = ["model", "threads", "engine", "backend", "prompt_tokens", "prompt_tps", "decode_tokens",
            "decode_ms_median", "decode_tps", "prompt_ratio", "decode_ratio", "source", "error"]
    with open(os.path.splitext(a.out)[0] + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(doc["rows"])
    print_table(doc)


def print_table(doc):
    print(f"machine: {doc['machine']['cores']} cores, load {doc['machine']['loadavg_1_5_15']} before, "
          f"{doc['machine']['loadavg_after']} after; llama-cpp-python {doc['machine']['llama_cpp_python']}, "
          f"OMP_WAIT_POLICY {doc['machine']['OMP_WAIT_POLICY']}")
    head = (f"{'model':<34} {'thr':>3} {'backend':<7} | {'prompt tok/s':>25} {'ratio':>6} | "
            f"{'decode tok/s':>25} {'ratio':>6}")
    print(head)
    print(f"{'':<34} {'':>3} {'':<7} | {'Tandem':>12} {'llama.cpp':>12} {'':>6} | {'Tandem':>12} {'llama.cpp':>12}")
    print("-" * len(head))
    refs = {(r["model"], r["threads"]): r for r in doc["rows"] if r["engine"] == "llama.cpp"}
    for r in doc["rows"]:
        ref = refs[(r["model"], r["threads"])]
        name = os.path.basename(r["model"])[:34]
        if "error" in ref:
            if r is ref:
                print(f"{name:<34} {r['threads']:>3} {'-':<7} | llama.cpp failed: {ref['error'].splitlines()[0]}")
            continue
        if r["engine"] != "tandem":
            continue
        print(f"{name:<34} {r['threads']:>3} {r['backend']:<7} | {r['prompt_tps']:>12.1f} {ref['prompt_tps']:>12.1f} "
              f"{r['prompt_ratio']:>5.2f}x | {r['decode_tps']:>12.2f} {ref['decode_tps']:>12.2f} "
              f"{r['decode_ratio']:>5.2f}x")


if __name__ == "__main__":
    main()
