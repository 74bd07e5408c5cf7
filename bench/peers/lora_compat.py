#!/usr/bin/env python3
"""LoRA adapter compatibility with llama.cpp: the same adapter GGUF, loaded by llama.cpp (llama-cpp-python) and by
`tandem generate --lora`, must give the same greedy continuation.

Two adapters are checked on one base model (default models/stories260K.gguf):
  ours:  trained by `tandem finetune` for a few steps (tandem's writer -> llama.cpp's loader), unless --no-finetune;
  gguf:  random A and B written with gguf-py, llama.cpp's own Python writer (llama.cpp's layout -> tandem's loader).
Run with the peers venv (see README.md): ~/.cache/tandem/peers/venv/bin/python bench/peers/lora_compat.py --build B
Exit status 0 when every adapter agrees, 1 otherwise.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def gguf_adapter(base_path, out_path, rank, alpha, seed):
    """A random LoRA adapter on every attention and FFN projection, in llama.cpp's layout, written by gguf-py."""
    import gguf

    reader = gguf.GGUFReader(base_path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    stems = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up")
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in stems:
            continue
        k, n = int(t.shape[0]), int(t.shape[1])  # ggml order {K, N}
        # numpy shapes are reversed ggml ne: lora_a ne {K, r} is (r, K), lora_b ne {r, N} is (N, r).
        a = (rng.uniform(-1, 1, size=(rank, k)) / np.sqrt(k)).astype(np.float32)
        b = rng.uniform(-0.05, 0.05, size=(n, rank)).astype(np.float32)
        w.add_tensor(t.name + ".lora_a", a)
        w.add_tensor(t.name + ".lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_text(model, adapter, scale, prompt, n):
    from llama_cpp import Llama

    llm = Llama(model_path=model, lora_path=adapter, lora_scale=scale, n_ctx=256, n_threads=2, verbose=False,
                seed=1)
    out = llm.create_completion(prompt, max_tokens=n, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                repeat_penalty=1.0)
    return prompt + out["choices"][0]["text"]


def tandem_text(cli, model, adapter, scale, prompt, n, backend):
    cmd = [cli, "generate", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "--no-timings", "-b", backend]
    if adapter:
        cmd += ["--lora", f"{adapter}:{scale}"]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="tandem build directory")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "stories260K.gguf"))
    ap.add_argument("--text", default=os.path.join(ROOT, "models", "tinystories_valid_head.txt"))
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("-n", type=int, default=48, help="greedy tokens to compare")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--backend", default="cpu", help="tandem backend")
    ap.add_argument("--no-finetune", action="store_true", help="skip the adapter trained by tandem finetune")
    args = ap.parse_args()
    cli = os.path.join(args.build, "tools", "tandem")

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        adapters = []
        if not args.no_finetune:
            ours = os.path.join(tmp, "ours.gguf")
            subprocess.run([cli, "finetune", "-m", args.model, "-f", args.text, "-o", ours, "--targets", "all",
                            "--rank", "4", "--lr", "0.01", "--ctx", "64", "--batch", "4", "--max-steps", "20",
                            "--seed", "3"], check=True, capture_output=True)
            adapters.append(("tandem finetune", ours))
        theirs = os.path.join(tmp, "gguf_py.gguf")
        gguf_adapter(args.model, theirs, rank=4, alpha=8, seed=5)
        adapters.append(("gguf-py random", theirs))

        base_t = tandem_text(cli, args.model, None, 1.0, args.prompt, args.n, args.backend)
        base_l = llama_cpp_text(args.model, None, 1.0, args.prompt, args.n)
        print(f"base model: {'agree' if base_t.strip() == base_l.strip() else 'DIFFER'}")
        for name, path in adapters:
            t = tandem_text(cli, args.model, path, args.scale, args.prompt, args.n, args.backend)
            lt = llama_cpp_text(args.model, path, args.scale, args.prompt, args.n)
            same = t.strip() == lt.strip()
            changed = t.strip() != base_t.strip()
            print(f"{name} adapter (scale {args.scale}): {'agree' if same else 'DIFFER'}; "
                  f"{'changes' if changed else 'does not change'} the base model's text")
            if not same:
                failures += 1
                print(f"  tandem:    {t.strip()!r}\n  llama.cpp: {lt.strip()!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
