#!/usr/bin/env python3
"""Makes the llama.cpp-quantized K-quant test asset and its dequantization reference (models/README.md).

  1. quantizes an F32 GGUF (made by `tandem synth`, rows multiples of 256) with llama.cpp's own quantizer
     (llama_model_quantize, Q4_K_M) into OUT.gguf, and checks the file holds Q4_K and Q6_K tensors;
  2. dequantizes every Q4_K / Q6_K tensor with llama.cpp's own C dequantizer (dequantize_row_q4_K /
     dequantize_row_q6_K from the ggml library llama-cpp-python ships), cross-checked against gguf-py's numpy
     dequantizer, and writes REF.bin: per tensor the sum and sum of squares of all its values (float64, in
     storage order) and its first and last rows in full;
  3. prints llama.cpp's greedy tokens from BOS (for the record; the tests use cpu_ref as the oracle).

Usage: python3 kquant_asset.py IN_F32.gguf OUT.gguf REF.bin   (with llama-cpp-python, numpy and gguf installed,
e.g. ~/.cache/tandem/peers/venv/bin/python after bench/peers/run.sh has installed them)

REF.bin layout (little-endian): "TKQR", u32 version = 1, u32 record count; per record: u32 name length, name
bytes, u32 ggml type (12 = Q4_K, 14 = Q6_K), u32 row length, u32 row count, f64 sum, f64 sum of squares,
u32 saved rows, then per saved row: u32 row index, f32[row length].
"""
import ctypes
import glob
import os
import struct
import sys

import numpy as np
import gguf
import llama_cpp

Q4_K, Q6_K = 12, 14
BLOCK_BYTES = {Q4_K: 144, Q6_K: 210}  # per 256 weights


def ggml_base():
    """The ggml library inside the llama_cpp package, for its exported dequantize_row_* functions."""
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in sorted(glob.glob(os.path.join(libdir, "libggml-base.so*"))):
        lib = ctypes.CDLL(name)
        for f in ("dequantize_row_q4_K", "dequantize_row_q6_K"):
            getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64]
            getattr(lib, f).restype = None
        return lib
    sys.exit(f"no libggml-base.so in {libdir}")


def quantize(src, dst):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize({src} -> {dst}) failed: {rc}")


def dequantize(lib, t):
    """All rows of tensor t as float32 [rows, row length], by llama.cpp's C code."""
    raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
    n = int(np.prod([int(x) for x in t.shape]))
    out = np.empty(n, dtype=np.float32)
    fn = lib.dequantize_row_q4_K if int(t.tensor_type) == Q4_K else lib.dequantize_row_q6_K
    fn(raw.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
    return out.reshape(-1, int(t.shape[0]))


def greedy_tokens(path, n):
    mp = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_threads, cp.n_threads_batch = 64, 1, 1
    ctx = llama_cpp.llama_init_from_model(model, cp)
    tok, out = llama_cpp.llama_vocab_bos(vocab), []
    one = (llama_cpp.llama_token * 1)()
    for _ in range(n):
        one[0] = tok
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        out.append(tok)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return out


@llama_cpp.llama_log_callback
def quiet(level, text, user_data):
    """llama.cpp logs every tensor it quantizes and every graph it plans: keep only errors (GGML_LOG_LEVEL_ERROR)."""
    if level == 3:
        sys.stderr.write(text.decode("utf-8", "replace"))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    src, dst, ref = sys.argv[1:]
    quantize(src, dst)
    lib = ggml_base()
    reader = gguf.GGUFReader(dst)
    counts, records = {}, []
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        ty = int(t.tensor_type)
        if ty not in (Q4_K, Q6_K):
            continue
        rows = dequantize(lib, t)
        # gguf-py's numpy dequantizer is a second, independent reading of the same bytes.
        other = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rows.shape)
        if not np.array_equal(rows, other):
            diff = float(np.max(np.abs(rows - other)))
            print(f"note: {t.name}: gguf-py and ggml differ by up to {diff:.3g}", file=sys.stderr)
        flat = rows.astype(np.float64).reshape(-1)
        records.append((t.name, ty, rows.shape[1], rows.shape[0], float(np.sum(flat)), float(np.sum(flat * flat)),
                        [(0, rows[0]), (rows.shape[0] - 1, rows[-1])]))
    print(f"{dst}: {os.path.getsize(dst)} bytes, tensor types {counts}")
    if "Q4_K" not in counts or "Q6_K" not in counts:
        sys.exit("expected both Q4_K and Q6_K tensors")
    with open(ref, "wb") as f:
        f.write(b"TKQR" + struct.pack("<II", 1, len(records)))
        for name, ty, row_len, n_rows, s, s2, saved in records:
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<IIIddI", ty, row_len, n_rows, s, s2, len(saved)))
            for i, row in saved:
                f.write(struct.pack("<I", i) + row.astype("<f4").tobytes())
    print(f"{ref}: {os.path.getsize(ref)} bytes, {len(records)} tensors")
    for name, ty, row_len, n_rows, *_ in records:
        print(f"  {name:<28} {'Q4_K' if ty == Q4_K else 'Q6_K'} [{row_len} x {n_rows}]")
    print("llama.cpp greedy from BOS (32 tokens):", greedy_tokens(dst, 32))


if __name__ == "__main__":
    main()
