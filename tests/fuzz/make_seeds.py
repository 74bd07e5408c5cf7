# Writes the seed corpora of fuzz_tokenizer and fuzz_llama2c (tests/fuzz/corpus/{tokenizer,llama2c}): small
# hand-made inputs in each target's input layout. Deterministic (seeded); run from anywhere: python3 make_seeds.py
import os, random, struct
R = random.Random(1234)
HERE = os.path.dirname(os.path.abspath(__file__))
T = os.path.join(HERE, 'corpus', 'tokenizer') + '/'
L = os.path.join(HERE, 'corpus', 'llama2c') + '/'
M = os.path.join(HERE, '..', '..', 'models') + '/'

def tokseed(name, vocab, text):
    if isinstance(text, str): text = text.encode()
    open(T + name, 'wb').write(struct.pack('<H', len(vocab)) + vocab + text)

def compact(flags, bos, eos, unk, entries):
    b = bytes([flags, bos & 255, eos & 255, unk & 255])
    for text, typ, score in entries:
        t = text.encode()
        b += bytes([len(t) | typ << 3, score & 255]) + t
    return b

tokseed('tok512_story', b'', 'Once upon a time, there was a little girl named Lily. She loved to play outside.')
tokseed('tok512_utf8', b'', 'h\u00e9llo w\u00f6rld \u65e5\u672c \U0001F642 \x00\x7f')
tokseed('tok512_invalid_utf8', b'', b'\xff\xfe\xc3\x28\xe2\x82 \xf0\x9f\x92')
tokseed('compact_bytes_merges', compact(7, 0, 1, 2, [('a', 1, 5), ('b', 1, 4), ('ab', 1, 9), (' a', 1, 3), ('ab ', 1, 1)]),
        'ab ab ba \u00e9!')
tokseed('compact_no_fallback', compact(1, 1, 2, 0, [('x', 1, 0), ('y', 1, 0), ('xy', 1, 2)]), 'xyxyz')
tokseed('compact_bad_bos', compact(0, 9, 1, 0, [('x', 1, 0), ('y', 1, 0)]), 'xy')
# Normal pieces that merge up to the text "<0x41>" (the round-trip bug fuzz_tokenizer found).
tokseed('compact_byte_lookalike', compact(7, 1, 2, 0, [(c, 1, 0) for c in '<0x41>'] +
        [('<0', 1, 1), ('<0x', 1, 2), ('<0x4', 1, 3), ('<0x41', 1, 4), ('<0x41>', 1, 5)]), '<0x41>A')

def gguf(kvs):
    def s(x): x = x.encode(); return struct.pack('<Q', len(x)) + x
    out = b'GGUF' + struct.pack('<IQQ', 3, 0, len(kvs))
    for k, typ, v in kvs:
        out += s(k) + struct.pack('<I', typ)
        if typ == 8: out += s(v)
        elif typ == 4: out += struct.pack('<I', v)
        elif typ == 9:
            et, items = v
            out += struct.pack('<IQ', et, len(items))
            for it in items:
                out += s(it) if et == 8 else struct.pack({5: '<i', 6: '<f'}[et], it)
    return out

toks = ['<unk>', '<s>', '</s>'] + ['<0x%02X>' % b for b in range(256)] + ['\u2581', 'a', 'b', '\u2581a', 'ab']
types = [2, 3, 3] + [6] * 256 + [1] * 5
scores = [0.0] * 259 + [-1.0, -2.0, -2.0, -0.5, -0.7]
tokseed('gguf_vocab', gguf([('tokenizer.ggml.model', 8, 'llama'), ('tokenizer.ggml.tokens', 9, (8, toks)),
                           ('tokenizer.ggml.scores', 9, (6, scores)), ('tokenizer.ggml.token_type', 9, (5, types)),
                           ('tokenizer.ggml.bos_token_id', 4, 1)]), 'a ab ba')

# llama2.c: tiny valid checkpoints + tokenizers, and a truncated stories260K header with the real tok512.bin.
def tokbin(tokens):
    b = struct.pack('<i', max(len(t.encode()) for t in tokens))
    for i, t in enumerate(tokens):
        t = t.encode(); b += struct.pack('<fi', -float(i), len(t)) + t
    return b

def ckpt(dim, hidden, layers, heads, kv, vocab, seq):
    hs = dim // heads
    kvd = hs * kv
    V = abs(vocab)
    n = V * dim + layers * (dim + dim * dim + 2 * kvd * dim + dim * dim + dim + 3 * hidden * dim) + dim + seq * hs
    if vocab < 0: n += V * dim
    return struct.pack('<7i', dim, hidden, layers, heads, kv, vocab, seq) + struct.pack('<%df' % n, *[R.uniform(-1, 1) for _ in range(n)])

def l2seed(name, ck, tok):
    assert len(ck) < 65536
    open(L + name, 'wb').write(struct.pack('<H', len(ck)) + ck + tok)

small = ['<unk>', '\n<s>\n', '\n</s>\n', '<0x41>', ' a', 'b', 'ab']
l2seed('tiny_shared', ckpt(8, 16, 1, 2, 1, 7, 4), tokbin(small))
l2seed('tiny_wcls_gqa', ckpt(8, 12, 2, 4, 2, -7, 3), tokbin(small))
l2seed('stories260K_truncated', open(M + 'stories260K.bin', 'rb').read(4096), open(M + 'tok512.bin', 'rb').read())
l2seed('magic_v1', b'ak42' + b'\0' * 252, tokbin(small))
