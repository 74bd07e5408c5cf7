// attention cases: causal prefill chains, decode rows, token trees (random parent arrays, also split over
// two passes with walk-only entries), ragged batches of several sessions in one call, and verification batches
// (per session a pending chain and a draft tree stored just past it, as batch_verifier lays them out), over head
// sizes 4/8/24/64/128, GQA ratios 1/2/4, f32 and f16 caches and contexts up to 2000 slots. The cpu backend takes its
// tiled kernels for trees of 4 rows and more at every head size, and for every tree row when the head size is not a
// multiple of its vector width (4, 8 and 24 under AVX-512); decode rows and smaller trees keep its per-row path.
#include <algorithm>
#include <cmath>

#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

struct head_config {
    int64_t d, hq, hkv;
};
// Head sizes 4 / 8 / 24 / 64 / 128 against GQA ratios 1, 2 and 4 (8 x 8 over 4 is stories260K's).
const head_config heads[] = {{8, 2, 2}, {64, 4, 2}, {128, 4, 1}, {64, 8, 8},
                             {8, 8, 2}, {8, 8, 4},  {4, 4, 2},   {24, 6, 3}};

std::string variant(const char* kind, dtype cache) {
    return "attention_" + std::string(kind) + "_" + std::string(dtype_name(cache));
}

void prefill(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int64_t committed : {0, 17, 300}) {
            for (int64_t n_new : {1, 7, 64}) {
                attention_rows rows;
                rows.add_chain(0, committed, n_new);
                attention_shape s{h.d, h.hq, h.hkv, committed + n_new + 3, cache, 1.f};
                t.check(attention_case(t.random(), variant("prefill", cache), s, rows));
            }
        }
    }
    // A long prefill into a 2000-slot context, and a sharp softmax (large scores) that moves the running max.
    attention_rows rows;
    rows.add_chain(0, 1936, 64);
    t.check(attention_case(t.random(), variant("prefill", cache), {64, 4, 2, 2000, cache, 1.f}, rows));
    attention_rows sharp;
    sharp.add_chain(0, 150, 16);
    t.check(attention_case(t.random(), variant("prefill", cache), {64, 4, 4, 200, cache, 12.f}, sharp));
}

void decode(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int64_t ctx : {1, 2, 63, 64, 65, 129, 1000, 2000}) {
            attention_rows rows;
            rows.add_chain(0, ctx - 1, 1);
            t.check(attention_case(t.random(), variant("decode", cache), {h.d, h.hq, h.hkv, 2000, cache, 1.f}, rows));
        }
    }
    attention_rows sharp;
    sharp.add_chain(0, 1499, 1);
    t.check(attention_case(t.random(), variant("decode", cache), {128, 8, 2, 1500, cache, 16.f}, sharp));
}

void tree(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int64_t committed : {0, 5, 200}) {
            for (int64_t nodes : {1, 8, 33, 64}) {
                attention_rows rows;
                rows.add_tree(t.random(), 0, committed, nodes, 8, nodes % 2 == 1);
                attention_shape s{h.d, h.hq, h.hkv, committed + nodes + 1, cache, 1.f};
                t.check(attention_case(t.random(), variant("tree", cache), s, rows));
            }
        }
    }
    // Trees verified in two passes: the earlier nodes are walk-only entries after the query rows.
    for (const auto& h : heads) {
        for (auto [n_old, n_new] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {20, 44}}) {
            attention_rows rows;
            rows.add_tree_second_pass(t.random(), 0, 30, n_old, n_new, 8);
            attention_shape s{h.d, h.hq, h.hkv, 30 + n_old + n_new, cache, 1.f};
            t.check(attention_case(t.random(), variant("tree", cache), s, rows));
        }
    }
    // A chain-shaped tree as deep as the batch (depth limit = node count).
    attention_rows deep;
    deep.add_tree(t.random(), 0, 40, 64, 64, false);
    t.check(attention_case(t.random(), variant("tree", cache), {64, 4, 2, 200, cache, 4.f}, deep));
    // Trees after a long prefix, with sharp scores: the cpu backend's tiled kernel takes windows of more than two
    // chunks (~256 KiB of keys and values) chunk by chunk, with the tree rows' masks and the running max and sum
    // carried across the chunks' boundaries.
    for (const auto& h : {head_config{64, 4, 2}, head_config{8, 8, 4}}) {
        const int64_t committed = h.d == 8 ? 6000 : 1500;
        attention_rows rows;
        rows.add_tree(t.random(), 0, committed, 33, 8, true);
        attention_shape s{h.d, h.hq, h.hkv, committed + 34, cache, 8.f};
        t.check(attention_case(t.random(), variant("tree", cache), s, rows));
    }
}

// Several sessions at different places in one cache, each a decode row, a chain or a tree.
void ragged(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int rep = 0; rep < 3; ++rep) {
            attention_rows rows;
            const int64_t n_sessions = t.random().integer(2, 5);
            int64_t base = 0;
            for (int64_t sidx = 0; sidx < n_sessions; ++sidx) {
                const int64_t committed = t.random().integer(0, 400);
                const int64_t kind = t.random().integer(0, 3);
                const int64_t n_new = kind == 0 ? 1 : t.random().integer(1, 20);
                if (kind == 3) {
                    const int64_t n_old = t.random().integer(1, 10);
                    rows.add_tree_second_pass(t.random(), base, committed, n_old, n_new, 8);
                    base += n_old;
                } else if (kind == 2) {
                    rows.add_tree(t.random(), base, committed, n_new, 8, true);
                } else {
                    rows.add_chain(base, committed, n_new);
                }
                base += committed + n_new + t.random().integer(0, 30);
            }
            // A row that sees nothing (an empty session): its output is zero.
            rows.push_meta(base, 0, -1, -1);
            rows.slots.push_back(0);
            t.check(
                attention_case(t.random(), variant("ragged", cache), {h.d, h.hq, h.hkv, base + 1, cache, 2.f}, rows));
        }
    }
}

// Verification batches: per session a pending chain (usually the one token the target produced last pass), then a
// draft tree in the slots just past it, whose nodes see the prefix and their own walk; one to six sessions per call.
// Then rows the cpu backend's tiled kernels must leave to its per-row path, in the same call: a walk slot inside the
// row's own run (cpu_ref counts such a slot twice), a walk slot far past the run, and one slot twice on a walk.
void verify_batch(backend_ops& t, dtype cache) {
    for (const auto& h : heads) {
        for (int rep = 0; rep < 4; ++rep) {
            attention_rows rows;
            const int64_t n_sessions = t.random().integer(1, 6);
            int64_t base = t.random().integer(0, 40);
            for (int64_t sidx = 0; sidx < n_sessions; ++sidx) {
                const int64_t committed = t.random().integer(0, 300);
                const int64_t pending = t.random().integer(0, 3) == 0 ? t.random().integer(2, 12) : 1;
                const int64_t nodes = t.random().integer(1, 24);
                rows.add_chain(base, committed, pending);
                rows.add_tree(t.random(), base, committed + pending, nodes, 8, sidx % 2 == 1);
                base += committed + pending + nodes + t.random().integer(0, 20);
            }
            int64_t n_slots = base + 1;
            if (rep >= 2) {
                const int64_t m = rows.size();
                rows.push_meta(0, 20, m, -1);  // its own slot 5 is inside its run [0, 20)
                rows.slots.push_back(5);
                rows.push_meta(0, 10, m + 1, -1);  // its own slot 500 is far past its run [0, 10)
                rows.slots.push_back(500);
                rows.push_meta(0, 30, m + 2, attention_rows::walk_ref(int64_t(rows.walk_slots.size())));
                rows.slots.push_back(40);  // ... and its parent, a walk-only entry, sits on the same slot 40
                for (int64_t v : {int64_t(0), int64_t(0), int64_t(-1), int64_t(-1)})
                    rows.walk_meta.push_back(int32_t(v));
                rows.walk_slots.push_back(40);
                n_slots = std::max<int64_t>(n_slots, 501);
            }
            t.check(
                attention_case(t.random(), variant("verify", cache), {h.d, h.hq, h.hkv, n_slots, cache, 2.f}, rows));
        }
    }
}

}  // namespace

TEST_P(backend_ops, attention_verify_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    verify_batch(*this, dtype::f32);
}
TEST_P(backend_ops, attention_verify_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    verify_batch(*this, dtype::f16);
}
TEST_P(backend_ops, attention_prefill_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    prefill(*this, dtype::f32);
}
TEST_P(backend_ops, attention_prefill_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    prefill(*this, dtype::f16);
}
TEST_P(backend_ops, attention_decode_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    decode(*this, dtype::f32);
}
TEST_P(backend_ops, attention_decode_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    decode(*this, dtype::f16);
}
TEST_P(backend_ops, attention_tree_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    tree(*this, dtype::f32);
}
TEST_P(backend_ops, attention_tree_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    tree(*this, dtype::f16);
}
TEST_P(backend_ops, attention_ragged_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f32);
    ragged(*this, dtype::f32);
}
TEST_P(backend_ops, attention_ragged_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::attention, dtype::f16);
    ragged(*this, dtype::f16);
}

}  // namespace tandem::test
