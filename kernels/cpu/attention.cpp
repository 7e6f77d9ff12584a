// Fused attention on the CPU (contract: kernels/attention.h). The work is cut
// into tiles of kQueryTile queries by kKeyTile keys: each tile's products go
// through BLAS on the calling thread, its row math (online softmax, dropout
// mask, dS) through vectorised loops, and tiles of different heads and rows
// run in parallel with OpenMP. Each thread works in its own slice of one
// workspace tensor, so the scratch is counted by the allocator and is
// O(threads x tile) in the forward; the backward adds O(Lq x E) per thread for
// dQ. float32 and the 16-bit floats compute in float (16-bit tiles are
// converted as they are loaded, never whole matrices), float64 in double.
#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "kernels/contiguous.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/vec_math.h"

namespace remat::kernels::cpu {
namespace {

// A [128, 256] float score tile is 128 KiB: the backward's four of them and
// the tiles of a 128-wide head stay in a 2 MiB L2. Measured on the causal
// long-seq shape (bench_ops, 2 threads): 463 ms at 64 x 128, 400 ms here,
// 385 ms at 256 x 256, which would leave short sequences one tile per head.
constexpr int64_t kQueryTile = 128;
constexpr int64_t kKeyTile = 256;

template <typename T>
using accum_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename A>
constexpr A kMinusInf = -std::numeric_limits<A>::infinity();

// ---- row math ---------------------------------------------------------------------

// row[c] = exp(row[c] - shift), 0 where row[c] is -inf (a hidden key) so
// that the clamped vec_exp leaves no residue; returns the row's sum.
REMAT_CPU_CLONES float exp_shifted_row(float* row, int64_t n, float shift) {
  float total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t c = 0; c < n; ++c) {
    const float e = row[c] == kMinusInf<float> ? 0.0f : vec_exp(row[c] - shift);
    row[c] = e;
    total += e;
  }
  return total;
}
double exp_shifted_row(double* row, int64_t n, double shift) {
  double total = 0;
  for (int64_t c = 0; c < n; ++c) {
    row[c] = row[c] == kMinusInf<double> ? 0.0 : std::exp(row[c] - shift);
    total += row[c];
  }
  return total;
}

// The softmax backward of one row, in place on dp: dS = P * (dP - D), where
// the gradient of the dropped-out probabilities first goes through the mask
// (keep: the factors of dropout_factors, null without dropout).
template <typename A>
[[gnu::always_inline]] inline void softmax_grad_row_of(A* dp, const A* p, const A* keep, A d,
                                                       int64_t n) {
  if (keep != nullptr) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) dp[c] = p[c] * (dp[c] * keep[c] - d);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) dp[c] = p[c] * (dp[c] - d);
  }
}
REMAT_CPU_CLONES void softmax_grad_row(float* dp, const float* p, const float* keep, float d,
                                       int64_t n) {
  softmax_grad_row_of(dp, p, keep, d, n);
}
void softmax_grad_row(double* dp, const double* p, const double* keep, double d, int64_t n) {
  softmax_grad_row_of(dp, p, keep, d, n);
}

// keep[c] = keep_scale where dropout keeps stream position first + c, else
// 0. One Philox block serves four consecutive positions (kernels/dropout.h).
template <typename A>
void dropout_factors(A* keep, int64_t n, uint64_t first, const AttentionParams& params) {
  const auto p = static_cast<float>(params.dropout_p);
  const auto scale = static_cast<A>(params.keep_scale);
  for (int64_t c = 0; c < n;) {
    const uint64_t position = first + static_cast<uint64_t>(c);
    const Philox4 draws = philox(params.seed, position / 4);
    for (uint64_t lane = position % 4; lane < 4 && c < n; ++lane, ++c) {
      keep[c] = dropout_keeps_bits(draws.v[lane], p) ? scale : A(0);
    }
  }
}

// ---- operands ---------------------------------------------------------------------

// A 4-d operand [N, H, L, E] whose last dim has stride 1, addressed by head
// (n * H + h) and row.
template <typename T>
struct Rows {
  const T* data;
  int64_t heads;  // H
  int64_t s0, s1, s2;

  Rows(const Tensor& t, const char* what) : data(static_cast<const T*>(t.data_ptr())) {
    REMAT_CHECK(t.dim() == 4 && (t.size(3) <= 1 || t.strides()[3] == 1),
                "attention: {} must be 4-d with stride 1 in its last dim, got {}", what,
                TensorMeta::of(t).str());
    heads = t.size(1);
    s0 = t.strides()[0], s1 = t.strides()[1], s2 = t.strides()[2];
  }
  const T* row(int64_t head, int64_t i) const {
    return data + (head / heads) * s0 + (head % heads) * s1 + i * s2;
  }
};

// The additive mask, strided in all four dims (0 where it broadcasts).
template <typename T>
struct Mask {
  const T* data = nullptr;
  int64_t heads = 1;
  int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;

  explicit Mask(const Tensor& t) {
    if (!t.defined()) return;
    data = static_cast<const T*>(t.data_ptr());
    heads = t.size(1);
    s0 = t.strides()[0], s1 = t.strides()[1], s2 = t.strides()[2], s3 = t.strides()[3];
  }
  const T* at(int64_t head, int64_t i, int64_t j) const {
    return data + (head / heads) * s0 + (head % heads) * s1 + i * s2 + j * s3;
  }
};

// A tile of `rows` rows of `cols` values as BLAS reads it: the operand's own
// memory where its type and row stride allow, else converted into scratch.
template <typename A>
struct Tile {
  const A* data;
  int64_t ld;
};

template <typename A, typename T>
Tile<A> load_tile(const T* rows_start, int64_t stride, int64_t rows, int64_t cols, A* scratch) {
  if constexpr (std::is_same_v<T, A>) {
    if (stride >= cols || rows == 1) return {rows_start, std::max<int64_t>({stride, cols, 1})};
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      scratch[r * cols + c] = static_cast<A>(rows_start[r * stride + c]);
  }
  return {scratch, std::max<int64_t>(cols, 1)};
}

template <typename T, typename A>
void store_rows(const A* tile, int64_t count, T* out) {
  for (int64_t x = 0; x < count; ++x) out[x] = static_cast<T>(tile[x]);
}

// Per-thread slices of one workspace tensor, handed out in order.
template <typename A>
struct Arena {
  A* next;
  A* take(int64_t count) { return std::exchange(next, next + count); }
};

struct Shapes {
  int64_t heads, lq, lk, e, ev;  // heads: N * H

  Shapes(const Tensor& q, const Tensor& k, const Tensor& v)
      : heads(q.size(0) * q.size(1)), lq(q.size(2)), lk(k.size(2)), e(q.size(3)), ev(v.size(3)) {}
  int64_t query_tiles() const { return (lq + kQueryTile - 1) / kQueryTile; }
  int64_t key_tiles() const { return (lk + kKeyTile - 1) / kKeyTile; }
  // Keys j < visible_end(i) are seen by query i (all of them without causal).
  int64_t visible_end(int64_t i, bool causal) const {
    return causal ? std::clamp<int64_t>(i + (lk - lq) + 1, 0, lk) : lk;
  }
};

// s [br, bc] = scale * q_tile k_tile^T + mask, -inf where causal hides a key:
// the scores of queries i0.. against keys j0.., as both passes regenerate them.
template <typename T, typename A>
void score_tile(const Shapes& d, const AttentionParams& params, const Mask<T>& mask, int64_t head,
                int64_t i0, int64_t br, int64_t j0, int64_t bc, const Tile<A>& q, const Tile<A>& k,
                A* s) {
  blas_gemm<A>(CblasNoTrans, CblasTrans, br, bc, d.e, static_cast<A>(params.scale), q.data, q.ld,
               k.data, k.ld, A(0), s, bc);
  for (int64_t r = 0; r < br; ++r) {
    A* row = s + r * bc;
    if (mask.data != nullptr) {
      const T* m = mask.at(head, i0 + r, j0);
      for (int64_t c = 0; c < bc; ++c) row[c] += static_cast<A>(m[c * mask.s3]);
    }
    const int64_t visible = std::clamp<int64_t>(d.visible_end(i0 + r, params.causal) - j0, 0, bc);
    std::fill(row + visible, row + bc, kMinusInf<A>);
  }
}

// Stream position of score (head, i, j): the math path's dropout numbers.
uint64_t dropout_position(const Shapes& d, const AttentionParams& params, int64_t head, int64_t i,
                          int64_t j) {
  return params.offset + static_cast<uint64_t>((head * d.lq + i) * d.lk + j);
}

// Runs body(task, thread) for every task over at most `threads` threads;
// dynamic scheduling, since causal tiles differ in work.
template <typename Body>
void parallel_tasks(int64_t tasks, int threads, Body&& body) {
#pragma omp parallel for num_threads(threads) schedule(dynamic)
  for (int64_t t = 0; t < tasks; ++t) body(t, omp_get_thread_num());
}

int threads_for(int64_t tasks) {
  return static_cast<int>(std::clamp<int64_t>(tasks, 1, omp_get_max_threads()));
}

// ---- forward --------------------------------------------------------------------------

template <typename T, typename A>
void forward_typed(const Tensor& q_t, const Tensor& k_t, const Tensor& v_t, const Tensor& mask_t,
                   const AttentionParams& params, const Tensor& out_t, const Tensor& lse_t) {
  const Shapes d(q_t, k_t, v_t);
  const Rows<T> q(q_t, "q"), k(k_t, "k"), v(v_t, "v");
  const Mask<T> mask(mask_t);
  T* out = static_cast<T*>(out_t.data_ptr());
  A* lse = static_cast<A*>(lse_t.data_ptr());
  const bool dropout = params.dropout_p > 0;
  const int64_t tasks = d.heads * d.query_tiles();
  if (tasks == 0) return;
  const int threads = threads_for(tasks);
  const int64_t per_thread = kQueryTile * (d.e + d.ev + 2) + kKeyTile * (d.e + d.ev) +
                             kQueryTile * kKeyTile * (dropout ? 2 : 1);
  const Tensor workspace = Tensor::empty({threads * per_thread}, lse_t.dtype(), out_t.device());

  parallel_tasks(tasks, threads, [&](int64_t task, int thread) {
    Arena<A> arena{static_cast<A*>(workspace.data_ptr()) + thread * per_thread};
    A* q_scratch = arena.take(kQueryTile * d.e);
    A* k_scratch = arena.take(kKeyTile * d.e);
    A* v_scratch = arena.take(kKeyTile * d.ev);
    A* s = arena.take(kQueryTile * kKeyTile);
    A* keep = dropout ? arena.take(kQueryTile * kKeyTile) : nullptr;
    A* o = arena.take(kQueryTile * d.ev);
    A* row_max = arena.take(kQueryTile);
    A* row_sum = arena.take(kQueryTile);

    const int64_t head = task / d.query_tiles();
    const int64_t i0 = (task % d.query_tiles()) * kQueryTile;
    const int64_t br = std::min(kQueryTile, d.lq - i0);
    const Tile<A> qt = load_tile<A>(q.row(head, i0), q.s2, br, d.e, q_scratch);
    std::fill(o, o + br * d.ev, A(0));
    std::fill(row_max, row_max + br, kMinusInf<A>);
    std::fill(row_sum, row_sum + br, A(0));
    // No query of the tile sees a key past its last query's.
    const int64_t key_end = d.visible_end(i0 + br - 1, params.causal);
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
      const int64_t bc = std::min(kKeyTile, key_end - j0);
      const Tile<A> kt = load_tile<A>(k.row(head, j0), k.s2, bc, d.e, k_scratch);
      const Tile<A> vt = load_tile<A>(v.row(head, j0), v.s2, bc, d.ev, v_scratch);
      score_tile(d, params, mask, head, i0, br, j0, bc, qt, kt, s);
      for (int64_t r = 0; r < br; ++r) {
        A* row = s + r * bc;
        A tile_max = kMinusInf<A>;
        for (int64_t c = 0; c < bc; ++c) tile_max = std::max(tile_max, row[c]);
        const A new_max = std::max(row_max[r], tile_max);
        if (new_max == kMinusInf<A>) {  // every key so far hidden: nothing to add
          std::fill(row, row + bc, A(0));
          continue;
        }
        // Online softmax: rescale what the earlier tiles summed to the new max.
        const A rescale = std::exp(row_max[r] - new_max);
        row_sum[r] = row_sum[r] * rescale + exp_shifted_row(row, bc, new_max);
        row_max[r] = new_max;
        if (rescale != A(1)) {
          for (int64_t c = 0; c < d.ev; ++c) o[r * d.ev + c] *= rescale;
        }
        if (dropout) {  // after the row sum: dropout acts on the probabilities
          dropout_factors(keep, bc, dropout_position(d, params, head, i0 + r, j0), params);
          for (int64_t c = 0; c < bc; ++c) row[c] *= keep[c];
        }
      }
      blas_gemm<A>(CblasNoTrans, CblasNoTrans, br, d.ev, bc, A(1), s, bc, vt.data, vt.ld, A(1), o,
                   std::max<int64_t>(d.ev, 1));
    }
    for (int64_t r = 0; r < br; ++r) {
      const int64_t i = i0 + r;
      const bool sees_a_key = row_sum[r] > A(0);
      const A inv = sees_a_key ? A(1) / row_sum[r] : std::numeric_limits<A>::quiet_NaN();
      T* out_row = out + (head * d.lq + i) * d.ev;
      for (int64_t c = 0; c < d.ev; ++c) out_row[c] = static_cast<T>(o[r * d.ev + c] * inv);
      lse[head * d.lq + i] = sees_a_key ? row_max[r] + std::log(row_sum[r]) : kMinusInf<A>;
    }
  });
}

// ---- backward -------------------------------------------------------------------------

// Parallel over (head, chunk of key tiles): each task owns its key tiles'
// dK and dV outright and sums its part of dQ into its own buffer; with
// several chunks per head (fewer heads than threads) the parts are added in
// chunk order afterwards, so the result does not depend on scheduling.
template <typename T, typename A>
void backward_typed(const Tensor& grad_out_t, const Tensor& q_t, const Tensor& k_t,
                    const Tensor& v_t, const Tensor& mask_t, const Tensor& out_t,
                    const Tensor& lse_t, const AttentionParams& params, const Tensor& grad_q_t,
                    const Tensor& grad_k_t, const Tensor& grad_v_t) {
  const Shapes d(q_t, k_t, v_t);
  const Rows<T> q(q_t, "q"), k(k_t, "k"), v(v_t, "v"), grad_out(grad_out_t, "grad_out"),
      out(out_t, "out");
  const Mask<T> mask(mask_t);
  const A* lse = static_cast<const A*>(lse_t.data_ptr());
  T* grad_q = static_cast<T*>(grad_q_t.data_ptr());
  T* grad_k = static_cast<T*>(grad_k_t.data_ptr());
  T* grad_v = static_cast<T*>(grad_v_t.data_ptr());
  const bool dropout = params.dropout_p > 0;
  const auto scale = static_cast<A>(params.scale);
  const int64_t rows = d.heads * d.lq;
  if (d.heads == 0) return;

  const int max_threads = omp_get_max_threads();
  const int64_t chunks = std::clamp<int64_t>((max_threads + d.heads - 1) / d.heads, 1,
                                             std::max<int64_t>(d.key_tiles(), 1));
  const int64_t tasks = d.heads * chunks;
  const int threads = threads_for(tasks);
  // dQ: straight into grad_q when one task covers a head and the types
  // match; else per-task parts (several chunks) or per-thread buffers.
  const bool direct_dq = chunks == 1 && std::is_same_v<T, A>;
  const int64_t dq_buffers = chunks > 1 ? tasks : (direct_dq ? 0 : threads);
  const int64_t per_thread = kQueryTile * (d.e + d.ev) + kKeyTile * 2 * (d.e + d.ev) +
                             kQueryTile * kKeyTile * (dropout ? 4 : 2);
  const Tensor workspace = Tensor::empty({rows + dq_buffers * d.lq * d.e + threads * per_thread},
                                         lse_t.dtype(), grad_q_t.device());
  A* row_dot = static_cast<A*>(workspace.data_ptr());  // D = rowsum(dO * O)
  A* dq_parts = row_dot + rows;
  A* thread_space = dq_parts + dq_buffers * d.lq * d.e;

  // D_i = rowsum(dO_i * O_i); 0 for a row that sees no key (its output is
  // NaN, and it contributes to no gradient).
  parallel_tasks(rows, threads_for(rows / kQueryTile), [&](int64_t x, int) {
    const int64_t head = x / d.lq, i = x % d.lq;
    const T* g = grad_out.row(head, i);
    const T* o = out.row(head, i);
    A dot = 0;
    for (int64_t c = 0; c < d.ev; ++c) dot += static_cast<A>(g[c]) * static_cast<A>(o[c]);
    row_dot[x] = lse[x] == kMinusInf<A> ? A(0) : dot;
  });

  parallel_tasks(tasks, threads, [&](int64_t task, int thread) {
    Arena<A> arena{thread_space + thread * per_thread};
    A* q_scratch = arena.take(kQueryTile * d.e);
    A* do_scratch = arena.take(kQueryTile * d.ev);
    A* k_scratch = arena.take(kKeyTile * d.e);
    A* v_scratch = arena.take(kKeyTile * d.ev);
    A* dk = arena.take(kKeyTile * d.e);
    A* dv = arena.take(kKeyTile * d.ev);
    A* p = arena.take(kQueryTile * kKeyTile);
    A* dp = arena.take(kQueryTile * kKeyTile);
    A* keep = dropout ? arena.take(kQueryTile * kKeyTile) : nullptr;
    A* dropped = dropout ? arena.take(kQueryTile * kKeyTile) : p;

    const int64_t head = task / chunks, chunk = task % chunks;
    A* dq = nullptr;
    if constexpr (std::is_same_v<T, A>) {
      if (direct_dq) dq = grad_q + head * d.lq * d.e;
    }
    if (dq == nullptr) dq = dq_parts + (chunks > 1 ? task : thread) * d.lq * d.e;
    std::fill(dq, dq + d.lq * d.e, A(0));

    // Chunks take every chunks-th key tile: under causal the early key
    // tiles see more queries, and interleaving spreads them.
    for (int64_t kt_index = chunk; kt_index < d.key_tiles(); kt_index += chunks) {
      const int64_t j0 = kt_index * kKeyTile, bc = std::min(kKeyTile, d.lk - j0);
      const Tile<A> kt = load_tile<A>(k.row(head, j0), k.s2, bc, d.e, k_scratch);
      const Tile<A> vt = load_tile<A>(v.row(head, j0), v.s2, bc, d.ev, v_scratch);
      std::fill(dk, dk + bc * d.e, A(0));
      std::fill(dv, dv + bc * d.ev, A(0));
      // The first query that sees key j0.
      const int64_t first_query = params.causal ? std::max<int64_t>(0, j0 - (d.lk - d.lq)) : 0;
      for (int64_t i0 = first_query / kQueryTile * kQueryTile; i0 < d.lq; i0 += kQueryTile) {
        const int64_t br = std::min(kQueryTile, d.lq - i0);
        const Tile<A> qt = load_tile<A>(q.row(head, i0), q.s2, br, d.e, q_scratch);
        const Tile<A> dot = load_tile<A>(grad_out.row(head, i0), grad_out.s2, br, d.ev, do_scratch);
        score_tile(d, params, mask, head, i0, br, j0, bc, qt, kt, p);
        for (int64_t r = 0; r < br; ++r) {  // P = exp(S - lse), the forward's probabilities
          A* row = p + r * bc;
          const A row_lse = lse[head * d.lq + i0 + r];
          if (row_lse == kMinusInf<A>) {
            std::fill(row, row + bc, A(0));
          } else {
            exp_shifted_row(row, bc, row_lse);
          }
          if (dropout) {
            A* factors = keep + r * bc;
            dropout_factors(factors, bc, dropout_position(d, params, head, i0 + r, j0), params);
            for (int64_t c = 0; c < bc; ++c) dropped[r * bc + c] = row[c] * factors[c];
          }
        }
        const int64_t ld_e = std::max<int64_t>(d.e, 1), ld_ev = std::max<int64_t>(d.ev, 1);
        // dV += dropout(P)^T dO; dP = dropout'(dO V^T); dS = P * (dP - D).
        blas_gemm<A>(CblasTrans, CblasNoTrans, bc, d.ev, br, A(1), dropped, bc, dot.data, dot.ld,
                     A(1), dv, ld_ev);
        blas_gemm<A>(CblasNoTrans, CblasTrans, br, bc, d.ev, A(1), dot.data, dot.ld, vt.data, vt.ld,
                     A(0), dp, bc);
        for (int64_t r = 0; r < br; ++r) {
          softmax_grad_row(dp + r * bc, p + r * bc, dropout ? keep + r * bc : nullptr,
                           row_dot[head * d.lq + i0 + r], bc);
        }
        // dK += scale dS^T Q; dQ += scale dS K.
        blas_gemm<A>(CblasTrans, CblasNoTrans, bc, d.e, br, scale, dp, bc, qt.data, qt.ld, A(1), dk,
                     ld_e);
        blas_gemm<A>(CblasNoTrans, CblasNoTrans, br, d.e, bc, scale, dp, bc, kt.data, kt.ld, A(1),
                     dq + i0 * d.e, ld_e);
      }
      store_rows(dk, bc * d.e, grad_k + (head * d.lk + j0) * d.e);
      store_rows(dv, bc * d.ev, grad_v + (head * d.lk + j0) * d.ev);
    }
    if (chunks == 1 && !direct_dq) store_rows(dq, d.lq * d.e, grad_q + head * d.lq * d.e);
  });

  if (chunks > 1) {  // the heads' parts, summed in chunk order
    parallel_tasks(rows, threads_for(rows / kQueryTile), [&](int64_t x, int) {
      const int64_t head = x / d.lq, i = x % d.lq;
      for (int64_t c = 0; c < d.e; ++c) {
        A total = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          total += dq_parts[((head * chunks + chunk) * d.lq + i) * d.e + c];
        }
        grad_q[x * d.e + c] = static_cast<T>(total);
      }
    });
  }
}

// ---- the table ------------------------------------------------------------------------

void check_outputs(const char* kernel,
                   std::initializer_list<std::reference_wrapper<const Tensor>> outs,
                   DType lse_dtype, const Tensor& lse) {
  check_contiguous(kernel, outs);
  check_contiguous(kernel, {lse});
  REMAT_CHECK(lse.dtype() == lse_dtype, "{}: lse must be {}, got {}", kernel, dtype_name(lse_dtype),
              dtype_name(lse.dtype()));
}

DType lse_dtype_of(DType operands) { return operands == kFloat64 ? kFloat64 : kFloat32; }

void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
             const AttentionParams& params, const Tensor& out, const Tensor& lse) {
  check_outputs("attention forward", {out}, lse_dtype_of(q.dtype()), lse);
  visit_all_floating(q.dtype(), "attention forward", [&]<typename T>() {
    forward_typed<T, accum_t<T>>(q, k, v, mask, params, out, lse);
  });
}

void backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& mask, const Tensor& out, const Tensor& lse,
              const AttentionParams& params, const Tensor& grad_q, const Tensor& grad_k,
              const Tensor& grad_v) {
  check_outputs("attention backward", {grad_q, grad_k, grad_v}, lse_dtype_of(q.dtype()), lse);
  visit_all_floating(q.dtype(), "attention backward", [&]<typename T>() {
    backward_typed<T, accum_t<T>>(grad_out, q, k, v, mask, out, lse, params, grad_q, grad_k,
                                  grad_v);
  });
}

}  // namespace

const AttentionKernels attention_kernels{forward, backward};

}  // namespace remat::kernels::cpu
