// The forward pass's batch layout: token trees, ragged batches of several sequences, KV compaction and
// rollback must give the same logits as plain causal decoding of the same token paths.
#include <gtest/gtest.h>

#include <random>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "engine/session.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

class forward_layout : public ::testing::TestWithParam<std::string> {
   protected:
    void SetUp() override { m_ = model::load(test::model_path("stories260K.gguf"), make_backend(GetParam())); }

    // Logits after feeding `tokens` causally into a fresh cache.
    std::vector<float> causal_last(const std::vector<int32_t>& tokens) {
        kv_cache cache(*m_, 512);
        forward_pass f(*m_, cache);
        std::vector<float> logits;
        f.run(causal_rows(tokens, 0, 0, false), logits);
        return logits;
    }

    static void expect_close(std::span<const float> a, std::span<const float> b, const std::string& what) {
        ASSERT_EQ(a.size(), b.size()) << what;
        float worst = 0;
        for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
        // Same math in a different order (batch vs single rows); logits are O(10).
        EXPECT_LT(worst, 2e-3f) << what;
    }

    std::unique_ptr<model> m_;
};

TEST_P(forward_layout, token_tree_matches_causal_paths) {
    std::mt19937 rng(uint32_t(test::test_seed()));
    const int32_t V = m_->hparams().n_vocab;
    std::uniform_int_distribution<int32_t> tok(3, V - 1);
    std::vector<int32_t> prefix = {1};
    for (int i = 0; i < 20; ++i) prefix.push_back(tok(rng));
    const int32_t P = int32_t(prefix.size());

    // A random tree of 24 nodes; node j's parent is an earlier node or -1 (a child of the prefix).
    const int N = 24;
    std::vector<int32_t> parent(N), depth(N), node_tok(N);
    for (int j = 0; j < N; ++j) {
        parent[j] = j == 0 ? -1 : std::uniform_int_distribution<int32_t>(-1, j - 1)(rng);
        depth[j] = parent[j] < 0 ? 0 : depth[size_t(parent[j])] + 1;
        node_tok[j] = tok(rng);
    }
    kv_cache cache(*m_, 512);
    forward_pass f(*m_, cache);
    std::vector<float> logits;
    f.run(causal_rows(prefix, 0, 0, false), logits);
    std::vector<batch_row> rows(N);
    for (int j = 0; j < N; ++j) {
        rows[j] = batch_row{node_tok[j], P + depth[j], P + j, 0, P, j, parent[j], true};
    }
    f.run(rows, logits);
    const size_t Vs = size_t(V);
    for (int j = 0; j < N; ++j) {
        std::vector<int32_t> path;
        for (int32_t k = j; k >= 0; k = parent[size_t(k)]) path.insert(path.begin(), node_tok[size_t(k)]);
        std::vector<int32_t> seq = prefix;
        seq.insert(seq.end(), path.begin(), path.end());
        const auto want = causal_last(seq);
        expect_close(std::span(logits).subspan(size_t(j) * Vs, Vs), want, "tree node " + std::to_string(j));
    }

    // Commit the path to the deepest node: compact its slots behind the prefix, then decode one more token.
    int deepest = 0;
    for (int j = 0; j < N; ++j)
        if (depth[j] > depth[deepest]) deepest = j;
    std::vector<int32_t> path_nodes;
    for (int32_t k = deepest; k >= 0; k = parent[size_t(k)]) path_nodes.insert(path_nodes.begin(), k);
    std::vector<int32_t> src, dst, seq = prefix;
    for (size_t i = 0; i < path_nodes.size(); ++i) {
        src.push_back(P + path_nodes[i]);
        dst.push_back(P + int32_t(i));
        seq.push_back(node_tok[size_t(path_nodes[i])]);
    }
    cache.copy_slots(src, dst);
    const int32_t next = tok(rng);
    const auto cont = causal_rows(std::vector<int32_t>{next}, int32_t(seq.size()), 0, false);
    f.run(cont, logits);
    seq.push_back(next);
    expect_close(logits, causal_last(seq), "decode after compaction");
}

TEST_P(forward_layout, ragged_batch_of_two_sequences_matches_separate_runs) {
    std::mt19937 rng(uint32_t(test::test_seed()) + 1);
    std::uniform_int_distribution<int32_t> tok(3, m_->hparams().n_vocab - 1);
    std::vector<int32_t> a = {1}, b = {1};
    for (int i = 0; i < 13; ++i) a.push_back(tok(rng));
    for (int i = 0; i < 7; ++i) b.push_back(tok(rng));
    kv_cache cache(*m_, 512);
    forward_pass f(*m_, cache);
    auto rows = causal_rows(a, 0, 0, false);
    const auto rows_b = causal_rows(b, 0, 256, false);  // sequence b owns slots [256, 512)
    rows.insert(rows.end(), rows_b.begin(), rows_b.end());
    std::vector<float> logits;
    f.run(rows, logits);
    const size_t V = size_t(m_->hparams().n_vocab);
    ASSERT_EQ(logits.size(), 2 * V);
    expect_close(std::span(logits).first(V), causal_last(a), "sequence a");
    expect_close(std::span(logits).subspan(V), causal_last(b), "sequence b");
}

TEST_P(forward_layout, rollback_then_continue_matches_fresh_run) {
    sampling_params sp;
    sp.temperature = 0;
    session s(*m_, sp, 64);
    const std::vector<int32_t> abc = {1, 403, 407, 261, 378};
    s.feed(abc);
    s.truncate(3);
    const int32_t d[1] = {300};
    s.feed(d);
    EXPECT_EQ(s.length(), 4u);
    expect_close(s.last_logits(), causal_last({1, 403, 407, 300}), "after rollback");
}

TEST_P(forward_layout, invalid_batches_are_refused) {
    kv_cache cache(*m_, 16);
    forward_pass f(*m_, cache);
    std::vector<float> logits;
    auto expect_refused = [&](batch_row r, const char* what) {
        std::vector<batch_row> rows = {r};
        EXPECT_THROW(f.run(rows, logits), error) << what;
    };
    expect_refused({9999, 0, 0, 0, 1, -1, -1, true}, "token out of vocabulary");
    expect_refused({5, 0, 16, 0, 1, -1, -1, true}, "slot past the cache");
    expect_refused({5, 0, 0, 10, 10, -1, -1, true}, "kv range past the cache");
    expect_refused({5, 0, 0, 0, 1, -1, 0, true}, "parent not earlier");
    expect_refused({5, 0, 0, 0, 0, -1, -1, true}, "attends to nothing");
    sampling_params sp;
    session s(*m_, sp, 4);
    const std::vector<int32_t> five = {1, 2, 3, 4, 5};
    try {
        s.feed(five);
        FAIL() << "context overflow accepted";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_CONTEXT_FULL);
    }
    EXPECT_EQ(s.length(), 0u);
}

INSTANTIATE_TEST_SUITE_P(cpu_backends, forward_layout, ::testing::Values("cpu_ref", "cpu"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
