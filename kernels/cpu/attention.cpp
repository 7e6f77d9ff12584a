// Fused attention on the CPU (contract: kernels/attention.h). The work is cut
// into tiles of kQueryTile queries by kKeyTile keys: each tile's products run
// on the worker thread (oneDNN's bfloat16 kernels, or BLAS), its row math
// (online softmax, dropout mask, dS) through vectorised loops, and tiles of
// different heads and rows run in parallel with OpenMP. Each thread works in
// its own slice of one workspace tensor, so the scratch is counted by the
// allocator and is O(threads x tile) in the forward; the backward adds
// O(Lq x E) per thread for dQ. float32 and the 16-bit floats accumulate in
// float (never whole matrices converted), float64 in double.
#include "kernels/attention.h"

#include <omp.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12 warns that the AVX-512 intrinsics' own `_mm512_undefined_ps()` is
// used uninitialized where they inline (GCC bug 105593, fixed in 13); the
// warnings point into the header, so the header's lines are exempted.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
#define REMAT_X86_ROW_KERNELS 1
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <exception>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "kernels/contiguous.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/clones.h"
#include "kernels/cpu/contiguous_copy.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/onednn.h"
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

// The row's largest score (-inf for an empty or fully hidden row).
REMAT_CPU_CLONES float row_max(const float* row, int64_t n) {
  float largest = kMinusInf<float>;
#pragma omp simd reduction(max : largest)
  for (int64_t c = 0; c < n; ++c) largest = row[c] > largest ? row[c] : largest;
  return largest;
}
double row_max(const double* row, int64_t n) {
  double largest = kMinusInf<double>;
  for (int64_t c = 0; c < n; ++c) largest = std::max(largest, row[c]);
  return largest;
}

// row[c] = exp(row[c] - shift), 0 where row[c] is -inf (a hidden key) so
// that the clamped vec_exp leaves no residue; returns the row's sum. The exp
// is computed for every lane and the zero selected after: GCC 12 does not
// if-convert an exp under a condition, and the branch kept the loop scalar.
REMAT_CPU_CLONES float exp_shifted_row_any_cpu(float* row, int64_t n, float shift) {
  float total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t c = 0; c < n; ++c) {
    const float exp = vec_exp(row[c] - shift);
    const float e = row[c] == kMinusInf<float> ? 0.0f : exp;
    row[c] = e;
    total += e;
  }
  return total;
}
#ifdef REMAT_X86_ROW_KERNELS
// The lanes of a 16-wide step with `remaining` elements left.
inline __mmask16 lanes_left(int64_t remaining) {
  return remaining >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << remaining) - 1);
}

// exp_shifted_row_any_cpu in AVX-512 intrinsics, the attention's hottest
// loop (a third of the forward): vec_exp's steps, so every element gets the
// same bits (the sum adds them in another order), in 22 instructions per 16
// lanes where GCC's vectorisation of the scalar form takes 40: vrndscaleps
// is the floor and vscalefps the power of two, one instruction each, and
// with MINPS/MAXPS's NaN operand (the second) a NaN stays NaN through the
// clamps and needs no select of its own.
[[gnu::target("avx512f")]] float exp_shifted_row_avx512(float* row, int64_t n, float shift) {
  const __m512 shifts = _mm512_set1_ps(shift);
  const __m512 minus_inf = _mm512_set1_ps(kMinusInf<float>);
  __m512 total = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) {
    const __mmask16 lanes = lanes_left(n - c);
    const __m512 score = _mm512_maskz_loadu_ps(lanes, row + c);
    const __m512 input = _mm512_sub_ps(score, shifts);
    const __m512 x =
        _mm512_max_ps(_mm512_set1_ps(-87.0f), _mm512_min_ps(_mm512_set1_ps(88.0f), input));
    const __m512 v = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
    const __m512 nf = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(nf, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p =
        _mm512_fmadd_ps(r, _mm512_set1_ps(1.9875691500e-4f), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 e =
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    const __mmask16 visible = _mm512_mask_cmp_ps_mask(lanes, score, minus_inf, _CMP_NEQ_UQ);
    const __m512 result = _mm512_maskz_mov_ps(visible, _mm512_scalef_ps(e, nf));
    _mm512_mask_storeu_ps(row + c, lanes, result);
    total = _mm512_add_ps(total, result);
  }
  return _mm512_reduce_add_ps(total);
}
#endif

float exp_shifted_row(float* row, int64_t n, float shift) {
#ifdef REMAT_X86_ROW_KERNELS
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) return exp_shifted_row_avx512(row, n, shift);
#endif
  return exp_shifted_row_any_cpu(row, n, shift);
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
// (n * H + h) and row; Elem is const for what a pass reads.
template <typename Elem>
struct Rows {
  Elem* data;
  int64_t heads;  // H
  int64_t s0, s1, s2;

  Rows(const Tensor& t, const char* what) : data(static_cast<Elem*>(t.data_ptr())) {
    REMAT_CHECK(t.dim() == 4 && (t.size(3) <= 1 || t.strides()[3] == 1),
                "attention: {} must be 4-d with stride 1 in its last dim, got {}", what,
                TensorMeta::of(t).str());
    heads = t.size(1);
    s0 = t.strides()[0], s1 = t.strides()[1], s2 = t.strides()[2];
  }
  Elem* row(int64_t head, int64_t i) const {
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

template <typename T, typename A>
void store_rows(const A* tile, int64_t count, T* out) {
  for (int64_t x = 0; x < count; ++x) out[x] = static_cast<T>(tile[x]);
}

// The row strides of the operands a pass reads (grad_out's: the backward's).
struct RowStrides {
  int64_t q, k, v, grad_out;
};

// ---- tile products -------------------------------------------------------------------

// The products of one query tile (br queries: their q and, in the backward,
// dO rows) with one key tile (bc keys: their k and v rows), with one
// interface in two implementations: BlasTiles (float32 and float64, and the
// 16-bit types converted to float as each tile is loaded) and, for bfloat16
// where oneDNN serves, OnednnTiles. Each is built on one thread's arena from
// a Plan made once per call.

// A tile of rows as BLAS reads it: the operand's own memory where its type
// and row stride allow, else converted into scratch.
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
class BlasTiles {
 public:
  struct Plan {
    int64_t e, ev;
    A scale;
    RowStrides strides;
    bool backward;  // the pass reads dO tiles
    int64_t scratch_elements() const {
      return kQueryTile * (e + (backward ? ev : 0)) + kKeyTile * (e + ev);
    }
  };

  // The operand as the tiles read it: as it is (each tile is converted or
  // addressed with its row stride as loaded).
  static const Tensor& operand(const Tensor& t) { return t; }

  BlasTiles(const Plan& plan, Arena<A>& arena)
      : plan_(plan),
        q_scratch_(arena.take(kQueryTile * plan.e)),
        do_scratch_(plan.backward ? arena.take(kQueryTile * plan.ev) : nullptr),
        k_scratch_(arena.take(kKeyTile * plan.e)),
        v_scratch_(arena.take(kKeyTile * plan.ev)) {}

  void load_queries(const T* q, const T* grad_out, int64_t br) {
    br_ = br;
    q_ = load_tile<A>(q, plan_.strides.q, br, plan_.e, q_scratch_);
    if (grad_out != nullptr)
      do_ = load_tile<A>(grad_out, plan_.strides.grad_out, br, plan_.ev, do_scratch_);
  }
  void load_keys(const T* k, const T* v, int64_t bc) {
    bc_ = bc;
    k_ = load_tile<A>(k, plan_.strides.k, bc, plan_.e, k_scratch_);
    v_ = load_tile<A>(v, plan_.strides.v, bc, plan_.ev, v_scratch_);
  }
  // s [br, bc] = scale q k^T
  void scores(A* s) const {
    blas_gemm<A>(CblasNoTrans, CblasTrans, br_, bc_, plan_.e, plan_.scale, q_.data, q_.ld, k_.data,
                 k_.ld, A(0), s, bc_);
  }
  // o [br, Ev] += p v
  void add_pv(const A* p, A* o) const {
    blas_gemm<A>(CblasNoTrans, CblasNoTrans, br_, plan_.ev, bc_, A(1), p, bc_, v_.data, v_.ld, A(1),
                 o, ld_ev());
  }
  // dv [bc, Ev] += p^T dO
  void add_ptdo(const A* p, A* dv) const {
    blas_gemm<A>(CblasTrans, CblasNoTrans, bc_, plan_.ev, br_, A(1), p, bc_, do_.data, do_.ld, A(1),
                 dv, ld_ev());
  }
  // dp [br, bc] = dO v^T
  void dov(A* dp) const {
    blas_gemm<A>(CblasNoTrans, CblasTrans, br_, bc_, plan_.ev, A(1), do_.data, do_.ld, v_.data,
                 v_.ld, A(0), dp, bc_);
  }
  // dk [bc, E] += scale ds^T q; dq [br, E] += scale ds k
  void add_ds(const A* ds, A* dk, A* dq) const {
    blas_gemm<A>(CblasTrans, CblasNoTrans, bc_, plan_.e, br_, plan_.scale, ds, bc_, q_.data, q_.ld,
                 A(1), dk, ld_e());
    blas_gemm<A>(CblasNoTrans, CblasNoTrans, br_, plan_.e, bc_, plan_.scale, ds, bc_, k_.data,
                 k_.ld, A(1), dq, ld_e());
  }

 private:
  int64_t ld_e() const { return std::max<int64_t>(plan_.e, 1); }
  int64_t ld_ev() const { return std::max<int64_t>(plan_.ev, 1); }

  const Plan& plan_;
  A *q_scratch_, *do_scratch_, *k_scratch_, *v_scratch_;
  Tile<A> q_{}, do_{}, k_{}, v_{};
  int64_t br_ = 0, bc_ = 0;
};

#ifdef REMAT_WITH_ONEDNN

// A float tile's bfloat16 copy, rounded to nearest even.
REMAT_CPU_CLONES void round_to_bfloat16_any_cpu(const float* from, int64_t n, BFloat16* to) {
#pragma omp simd
  for (int64_t x = 0; x < n; ++x)
    to[x].bits = BFloat16(from[x]).bits;  // a struct copy would not vectorise
}

#ifdef REMAT_X86_ROW_KERNELS
// The same with AVX-512 BF16's conversion, one instruction per 16 lanes
// where the integer rounding takes seven. It reads float denormals as zero,
// which changes no product: the bfloat16 dot products that take the copy
// read bfloat16 denormals as zero too.
[[gnu::target("avx512f,avx512bw,avx512vl,avx512bf16")]] void round_to_bfloat16_avx512(
    const float* from, int64_t n, BFloat16* to) {
  for (int64_t x = 0; x < n; x += 16) {
    const __mmask16 lanes = lanes_left(n - x);
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes, from + x));
    _mm256_mask_storeu_epi16(to + x, lanes, reinterpret_cast<const __m256i&>(rounded));
  }
}
#endif

void round_to_bfloat16(const float* from, int64_t n, BFloat16* to) {
#ifdef REMAT_X86_ROW_KERNELS
  static const bool avx512_bf16 = __builtin_cpu_supports("avx512bf16") &&
                                  __builtin_cpu_supports("avx512bw") &&
                                  __builtin_cpu_supports("avx512vl");
  if (avx512_bf16) return round_to_bfloat16_avx512(from, n, to);
#endif
  round_to_bfloat16_any_cpu(from, n, to);
}

// bfloat16 tiles through oneDNN (AMX or AVX-512 BF16 where the CPU has
// them): the products read the operands' bfloat16 rows, accumulate in
// float32, and take P and dS rounded to bfloat16, as FlashAttention does on
// GPUs. The operands go in dense (a copy of one whose rows are strided, as q,
// k and v are when they are views of one projection): oneDNN 2.6's AMX
// kernels refuse strided rows, and its other GEMM is several times slower
// here. One primitive per product and tile shape (full, or the edge tile of
// Lq or Lk), created before the parallel region for one thread each.
class OnednnTiles {
 public:
  using memory = dnnl::memory;

  struct Product {
    onednn::Step step;
    memory::desc a, b, c;
  };
  struct Products {
    Product scores, pv, ptdo, dov, dsq, dsk;
  };

  class Plan {
   public:
    // Empty where oneDNN does not serve every product.
    static std::optional<Plan> make(const Shapes& d, float scale, bool backward) {
      if (d.lq == 0 || d.lk == 0 || d.e == 0 || d.ev == 0) return std::nullopt;
      Plan plan;
      plan.full_br_ = std::min(kQueryTile, d.lq);
      plan.full_bc_ = std::min(kKeyTile, d.lk);
      const int64_t brs[2] = {plan.full_br_, d.lq > kQueryTile ? d.lq % kQueryTile : 0};
      const int64_t bcs[2] = {plan.full_bc_, d.lk > kKeyTile ? d.lk % kKeyTile : 0};
      for (int r = 0; r < 2; ++r) {
        for (int c = 0; c < 2; ++c) {
          if (brs[r] == 0 || bcs[c] == 0) continue;
          Products& p = plan.products_[r][c];
          if (!make_products(p, d, brs[r], bcs[c], scale, backward)) return std::nullopt;
          for (const Product* x : {&p.scores, &p.pv, &p.ptdo, &p.dov, &p.dsq, &p.dsk})
            plan.scratch_bytes_ =
                std::max<int64_t>(plan.scratch_bytes_, x->step.scratch.get_size());
        }
      }
      onednn::record(plan.products_[0][0].scores.step);
      return plan;
    }
    // Floats per thread: the products' scratch in whole cache lines (first,
    // so aligned), then the rounded tile.
    int64_t scratch_elements() const { return scratch_floats() + kQueryTile * kKeyTile / 2; }
    int64_t scratch_floats() const { return (scratch_bytes_ + 63) / 64 * 16; }
    const Products& at(int64_t br, int64_t bc) const {
      return products_[br == full_br_ ? 0 : 1][bc == full_bc_ ? 0 : 1];
    }

   private:
    static memory::desc matrix(memory::data_type type, int64_t rows, int64_t cols,
                               int64_t row_stride, int64_t col_stride) {
      return {memory::dims{rows, cols}, type, memory::dims{row_stride, col_stride}};
    }
    static bool make_product(Product& x, memory::desc a, memory::desc b, memory::desc c,
                             float scale, bool accumulate) {
      x = {onednn::single_thread_matmul(a, b, c, scale, accumulate), a, b, c};
      return static_cast<bool>(x.step.primitive);
    }
    static bool make_products(Products& p, const Shapes& d, int64_t br, int64_t bc, float scale,
                              bool backward) {
      constexpr auto bf16 = memory::data_type::bf16;
      constexpr auto f32 = memory::data_type::f32;
      // The rounded P or dS tile [br, bc] and its transpose; the operand tiles.
      const memory::desc tile = matrix(bf16, br, bc, bc, 1), tile_t = matrix(bf16, bc, br, 1, bc);
      const memory::desc q = matrix(bf16, br, d.e, d.e, 1), k = matrix(bf16, bc, d.e, d.e, 1);
      const memory::desc k_t = matrix(bf16, d.e, bc, 1, d.e), v = matrix(bf16, bc, d.ev, d.ev, 1);
      if (!make_product(p.scores, q, k_t, matrix(f32, br, bc, bc, 1), scale, false)) return false;
      if (!backward) return make_product(p.pv, tile, v, matrix(f32, br, d.ev, d.ev, 1), 1, true);
      const memory::desc grad_out = matrix(bf16, br, d.ev, d.ev, 1);
      const memory::desc v_t = matrix(bf16, d.ev, bc, 1, d.ev);
      return make_product(p.ptdo, tile_t, grad_out, matrix(f32, bc, d.ev, d.ev, 1), 1, true) &&
             make_product(p.dov, grad_out, v_t, matrix(f32, br, bc, bc, 1), 1, false) &&
             make_product(p.dsq, tile_t, q, matrix(f32, bc, d.e, d.e, 1), scale, true) &&
             make_product(p.dsk, tile, k, matrix(f32, br, d.e, d.e, 1), scale, true);
    }

    Products products_[2][2];
    int64_t full_br_ = 0, full_bc_ = 0, scratch_bytes_ = 0;
  };

  // The operand with dense rows: itself, or a contiguous copy.
  static Tensor operand(const Tensor& t) {
    return t.strides()[3] == 1 && t.strides()[2] == t.size(3) ? t : contiguous_copy(t);
  }

  OnednnTiles(const Plan& plan, Arena<float>& arena) : plan_(plan) {
    float* floats = arena.take(plan.scratch_elements());
    scratch_ = floats;
    rounded_ = reinterpret_cast<BFloat16*>(floats + plan.scratch_floats());
  }

  void load_queries(const BFloat16* q, const BFloat16* grad_out, int64_t br) {
    q_ = q, do_ = grad_out, br_ = br;
  }
  void load_keys(const BFloat16* k, const BFloat16* v, int64_t bc) { k_ = k, v_ = v, bc_ = bc; }
  void scores(float* s) const { run(&Products::scores, q_, k_, s); }
  void add_pv(const float* p, float* o) const { run(&Products::pv, round(p), v_, o); }
  void add_ptdo(const float* p, float* dv) const { run(&Products::ptdo, round(p), do_, dv); }
  void dov(float* dp) const { run(&Products::dov, do_, v_, dp); }
  void add_ds(const float* ds, float* dk, float* dq) const {
    const BFloat16* rounded = round(ds);
    run(&Products::dsq, rounded, q_, dk);
    run(&Products::dsk, rounded, k_, dq);
  }

 private:
  const BFloat16* round(const float* tile) const {
    round_to_bfloat16(tile, br_ * bc_, rounded_);
    return rounded_;
  }
  void run(Product Products::*which, const void* a, const void* b, float* c) const {
    const Product* x = &(plan_.at(br_, bc_).*which);
    auto it = std::find_if(bound_.begin(), bound_.end(),
                           [x](const auto& entry) { return entry.first == x; });
    if (it == bound_.end()) {
      bound_.emplace_back(
          x, onednn::BoundStep(
                 x->step, {{DNNL_ARG_SRC, x->a}, {DNNL_ARG_WEIGHTS, x->b}, {DNNL_ARG_DST, x->c}},
                 scratch_));
      it = bound_.end() - 1;
    }
    it->second.run({a, b, c});
  }

  const Plan& plan_;
  void* scratch_;
  // The products this task ran so far, bound to this thread's scratch.
  mutable std::vector<std::pair<const Product*, onednn::BoundStep>> bound_;
  BFloat16* rounded_;
  const BFloat16 *q_ = nullptr, *do_ = nullptr, *k_ = nullptr, *v_ = nullptr;
  int64_t br_ = 0, bc_ = 0;
};

#endif

// s [br, bc] = scale * q_tile k_tile^T + mask, -inf where causal hides a key:
// the scores of queries i0.. against keys j0.., as both passes regenerate them.
template <typename T, typename A, typename Tiles>
void score_tile(const Shapes& d, const AttentionParams& params, const Mask<T>& mask, int64_t head,
                int64_t i0, int64_t br, int64_t j0, int64_t bc, const Tiles& tiles, A* s) {
  tiles.scores(s);
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
// dynamic scheduling, since causal tiles differ in work. The first exception
// a task throws is rethrown on the calling thread once all have finished.
template <typename Body>
void parallel_tasks(int64_t tasks, int threads, Body&& body) {
  std::exception_ptr failure;
#pragma omp parallel for num_threads(threads) schedule(dynamic)
  for (int64_t t = 0; t < tasks; ++t) {
    try {
      body(t, omp_get_thread_num());
    } catch (...) {
#pragma omp critical(remat_attention_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

int threads_for(int64_t tasks) {
  return static_cast<int>(std::clamp<int64_t>(tasks, 1, omp_get_max_threads()));
}

// Whole cache lines of A per thread, so each thread's products start aligned.
template <typename A>
int64_t per_thread_lines(int64_t elements) {
  constexpr int64_t line = 64 / sizeof(A);
  return (elements + line - 1) / line * line;
}

// ---- forward --------------------------------------------------------------------------

template <typename T, typename A, typename Tiles>
void forward_tiles(const Tensor& q_t, const Tensor& k_t, const Tensor& v_t, const Tensor& mask_t,
                   const AttentionParams& params, const typename Tiles::Plan& plan,
                   const Tensor& out_t, const Tensor& lse_t) {
  const Shapes d(q_t, k_t, v_t);
  const Tensor q_in = Tiles::operand(q_t), k_in = Tiles::operand(k_t), v_in = Tiles::operand(v_t);
  const Rows<const T> q(q_in, "q"), k(k_in, "k"), v(v_in, "v");
  const Mask<T> mask(mask_t);
  const Rows<T> out(out_t, "out");
  A* lse = static_cast<A*>(lse_t.data_ptr());
  const bool dropout = params.dropout_p > 0;
  const int64_t tasks = d.heads * d.query_tiles();
  const int threads = threads_for(tasks);
  const int64_t per_thread = per_thread_lines<A>(plan.scratch_elements() + kQueryTile * (d.ev + 2) +
                                                 kQueryTile * kKeyTile * (dropout ? 2 : 1));
  const Tensor workspace = Tensor::empty({threads * per_thread}, lse_t.dtype(), out_t.device());

  parallel_tasks(tasks, threads, [&](int64_t task, int thread) {
    Arena<A> arena{static_cast<A*>(workspace.data_ptr()) + thread * per_thread};
    Tiles tiles(plan, arena);
    A* s = arena.take(kQueryTile * kKeyTile);
    A* keep = dropout ? arena.take(kQueryTile * kKeyTile) : nullptr;
    A* o = arena.take(kQueryTile * d.ev);
    A* running_max = arena.take(kQueryTile);
    A* row_sum = arena.take(kQueryTile);

    const int64_t head = task / d.query_tiles();
    const int64_t i0 = (task % d.query_tiles()) * kQueryTile;
    const int64_t br = std::min(kQueryTile, d.lq - i0);
    tiles.load_queries(q.row(head, i0), nullptr, br);
    std::fill(o, o + br * d.ev, A(0));
    std::fill(running_max, running_max + br, kMinusInf<A>);
    std::fill(row_sum, row_sum + br, A(0));
    // No query of the tile sees a key past its last query's; the key tiles
    // keep their grid (the products exist for those shapes).
    const int64_t key_end = d.visible_end(i0 + br - 1, params.causal);
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
      const int64_t bc = std::min(kKeyTile, d.lk - j0);
      tiles.load_keys(k.row(head, j0), v.row(head, j0), bc);
      score_tile(d, params, mask, head, i0, br, j0, bc, tiles, s);
      for (int64_t r = 0; r < br; ++r) {
        A* row = s + r * bc;
        const A new_max = std::max(running_max[r], row_max(row, bc));
        if (new_max == kMinusInf<A>) {  // every key so far hidden: nothing to add
          std::fill(row, row + bc, A(0));
          continue;
        }
        // Online softmax: rescale what the earlier tiles summed to the new max
        // (libm's exp is a call; later tiles seldom raise the max).
        const A rescale = running_max[r] == new_max ? A(1) : std::exp(running_max[r] - new_max);
        row_sum[r] = row_sum[r] * rescale + exp_shifted_row(row, bc, new_max);
        running_max[r] = new_max;
        if (rescale != A(1)) {
          for (int64_t c = 0; c < d.ev; ++c) o[r * d.ev + c] *= rescale;
        }
        if (dropout) {  // after the row sum: dropout acts on the probabilities
          dropout_factors(keep, bc, dropout_position(d, params, head, i0 + r, j0), params);
          for (int64_t c = 0; c < bc; ++c) row[c] *= keep[c];
        }
      }
      tiles.add_pv(s, o);
    }
    for (int64_t r = 0; r < br; ++r) {
      const int64_t i = i0 + r;
      const bool sees_a_key = row_sum[r] > A(0);
      const A inv = sees_a_key ? A(1) / row_sum[r] : std::numeric_limits<A>::quiet_NaN();
      T* out_row = out.row(head, i);
      for (int64_t c = 0; c < d.ev; ++c) out_row[c] = static_cast<T>(o[r * d.ev + c] * inv);
      lse[head * d.lq + i] = sees_a_key ? running_max[r] + std::log(row_sum[r]) : kMinusInf<A>;
    }
  });
}

// ---- backward -------------------------------------------------------------------------

// Parallel over (head, chunk of key tiles): each task owns its key tiles'
// dK and dV outright and sums its part of dQ into its own buffer; with
// several chunks per head (fewer heads than threads) the parts are added in
// chunk order afterwards, so the result does not depend on scheduling.
template <typename T, typename A, typename Tiles>
void backward_tiles(const Tensor& grad_out_t, const Tensor& q_t, const Tensor& k_t,
                    const Tensor& v_t, const Tensor& mask_t, const Tensor& out_t,
                    const Tensor& lse_t, const AttentionParams& params,
                    const typename Tiles::Plan& plan, const Tensor& grad_q_t,
                    const Tensor& grad_k_t, const Tensor& grad_v_t) {
  const Shapes d(q_t, k_t, v_t);
  const Tensor q_in = Tiles::operand(q_t), k_in = Tiles::operand(k_t), v_in = Tiles::operand(v_t),
               grad_out_in = Tiles::operand(grad_out_t);
  const Rows<const T> q(q_in, "q"), k(k_in, "k"), v(v_in, "v"), grad_out(grad_out_in, "grad_out"),
      out(out_t, "out");
  const Mask<T> mask(mask_t);
  const A* lse = static_cast<const A*>(lse_t.data_ptr());
  T* grad_q = static_cast<T*>(grad_q_t.data_ptr());
  T* grad_k = static_cast<T*>(grad_k_t.data_ptr());
  T* grad_v = static_cast<T*>(grad_v_t.data_ptr());
  const bool dropout = params.dropout_p > 0;
  const int64_t rows = d.heads * d.lq;

  const int max_threads = omp_get_max_threads();
  const int64_t chunks = std::clamp<int64_t>((max_threads + d.heads - 1) / d.heads, 1,
                                             std::max<int64_t>(d.key_tiles(), 1));
  const int64_t tasks = d.heads * chunks;
  const int threads = threads_for(tasks);
  // dQ: straight into grad_q when one task covers a head and the types
  // match; else per-task parts (several chunks) or per-thread buffers.
  const bool direct_dq = chunks == 1 && std::is_same_v<T, A>;
  const int64_t dq_buffers = chunks > 1 ? tasks : (direct_dq ? 0 : threads);
  const int64_t per_thread = per_thread_lines<A>(plan.scratch_elements() + kKeyTile * (d.e + d.ev) +
                                                 kQueryTile * kKeyTile * (dropout ? 4 : 2));
  const int64_t shared = per_thread_lines<A>(rows + dq_buffers * d.lq * d.e);
  const Tensor workspace =
      Tensor::empty({shared + threads * per_thread}, lse_t.dtype(), grad_q_t.device());
  A* thread_space = static_cast<A*>(workspace.data_ptr());
  A* row_dot = thread_space + threads * per_thread;  // D = rowsum(dO * O)
  A* dq_parts = row_dot + rows;

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
    Tiles tiles(plan, arena);
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
      tiles.load_keys(k.row(head, j0), v.row(head, j0), bc);
      std::fill(dk, dk + bc * d.e, A(0));
      std::fill(dv, dv + bc * d.ev, A(0));
      // The first query that sees key j0.
      const int64_t first_query = params.causal ? std::max<int64_t>(0, j0 - (d.lk - d.lq)) : 0;
      for (int64_t i0 = first_query / kQueryTile * kQueryTile; i0 < d.lq; i0 += kQueryTile) {
        const int64_t br = std::min(kQueryTile, d.lq - i0);
        tiles.load_queries(q.row(head, i0), grad_out.row(head, i0), br);
        score_tile(d, params, mask, head, i0, br, j0, bc, tiles, p);
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
        // dV += dropout(P)^T dO; dP = dropout'(dO V^T); dS = P * (dP - D).
        tiles.add_ptdo(dropped, dv);
        tiles.dov(dp);
        for (int64_t r = 0; r < br; ++r) {
          softmax_grad_row(dp + r * bc, p + r * bc, dropout ? keep + r * bc : nullptr,
                           row_dot[head * d.lq + i0 + r], bc);
        }
        // dK += scale dS^T Q; dQ += scale dS K.
        tiles.add_ds(dp, dk, dq + i0 * d.e);
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

// The tiles one call runs on: oneDNN's for bfloat16 where it serves every
// product (its plan made here, on the calling thread, where creating a
// primitive may fail cleanly), else BLAS's.
template <typename T, typename A, typename Run>
void with_tiles(const Shapes& d, const AttentionParams& params, const RowStrides& strides,
                bool backward, Run&& run) {
#ifdef REMAT_WITH_ONEDNN
  if constexpr (std::is_same_v<T, BFloat16>) {
    onednn::start_call();
    const auto plan = onednn::guarded(
        [&] { return fmt::format("attention: bfloat16 tile products (E {}, Ev {})", d.e, d.ev); },
        [&] { return OnednnTiles::Plan::make(d, static_cast<float>(params.scale), backward); });
    if (plan) return run.template operator()<OnednnTiles>(*plan);
  }
#endif
  const typename BlasTiles<T, A>::Plan plan{d.e, d.ev, static_cast<A>(params.scale), strides,
                                            backward};
  run.template operator()<BlasTiles<T, A>>(plan);
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
  check_outputs("attention forward", {}, lse_dtype_of(q.dtype()), lse);
  visit_all_floating(q.dtype(), "attention forward", [&]<typename T>() {
    using A = accum_t<T>;
    const Shapes d(q, k, v);
    if (d.heads * d.query_tiles() == 0) return;
    const RowStrides strides{Rows<const T>(q, "q").s2, Rows<const T>(k, "k").s2,
                             Rows<const T>(v, "v").s2, 0};
    with_tiles<T, A>(d, params, strides, /*backward=*/false,
                     [&]<typename Tiles>(const typename Tiles::Plan& plan) {
                       forward_tiles<T, A, Tiles>(q, k, v, mask, params, plan, out, lse);
                     });
  });
}

void backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& mask, const Tensor& out, const Tensor& lse,
              const AttentionParams& params, const Tensor& grad_q, const Tensor& grad_k,
              const Tensor& grad_v) {
  check_outputs("attention backward", {grad_q, grad_k, grad_v}, lse_dtype_of(q.dtype()), lse);
  visit_all_floating(q.dtype(), "attention backward", [&]<typename T>() {
    using A = accum_t<T>;
    const Shapes d(q, k, v);
    if (d.heads == 0) return;
    const RowStrides strides{Rows<const T>(q, "q").s2, Rows<const T>(k, "k").s2,
                             Rows<const T>(v, "v").s2, Rows<const T>(grad_out, "grad_out").s2};
    with_tiles<T, A>(d, params, strides, /*backward=*/true,
                     [&]<typename Tiles>(const typename Tiles::Plan& plan) {
                       backward_tiles<T, A, Tiles>(grad_out, q, k, v, mask, out, lse, params, plan,
                                                   grad_q, grad_k, grad_v);
                     });
  });
}

}  // namespace

const AttentionKernels attention_kernels{forward, backward};

}  // namespace remat::kernels::cpu
