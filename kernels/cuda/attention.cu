// Fused scaled dot-product attention on the GPU (contract: kernels/attention.h)
// with FlashAttention-2's schedule. The forward and the dQ kernel give a
// thread block a tile of query rows and stream the key tiles past it; the
// dK/dV kernel gives a block a tile of keys and streams the query tiles; a
// small kernel computes D = rowsum(dO * O) first. Every output element is
// summed by one thread in an order fixed by the launch geometry: no atomics,
// so a replayed backward is bitwise the original.
//
// Two paths, one set of rules (visibility, mask, dropout stream, online
// softmax; the __device__ helpers below):
// - tensor cores (mma.sync m16n8k16, float32 accumulation) for bfloat16 and
//   float16 when E and Ev are multiples of 16 up to 128 and every row that is
//   staged starts 16-byte aligned;
// - SIMT for every other case (float32, float64, head dims up to 256),
//   staging operands in shared memory in the accumulation type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"

namespace remat::kernels::cuda {
namespace {

extern __shared__ __align__(16) unsigned char attention_smem[];

template <typename A>
__host__ __device__ A neg_inf() {
  return -std::numeric_limits<A>::infinity();
}

struct MaxOp {
  template <typename A>
  __device__ A operator()(A a, A b) const {
    return a < b ? b : a;  // a NaN score never becomes the max
  }
};
struct SumOp {
  template <typename A>
  __device__ A operator()(A a, A b) const {
    return a + b;
  }
};

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- the rules both paths share --------------------------------------------------

// Which keys a query sees. Causal attention is bottom-right aligned: query i
// of lq sees key j of lk iff j <= i + (lk - lq).
struct Geometry {
  int64_t heads, lq, lk;
  bool causal;

  // Query i sees the keys [0, key_end(i)); key_end never decreases with i.
  __host__ __device__ int64_t key_end(int64_t i) const {
    if (!causal) return lk;
    return std::clamp<int64_t>(i + (lk - lq) + 1, 0, lk);
  }
  // The first query that sees key j (>= lq when none does).
  __host__ __device__ int64_t first_query(int64_t j) const {
    return causal ? std::max<int64_t>(j - (lk - lq), 0) : 0;
  }
  __device__ bool sees(int64_t i, int64_t j) const { return i < lq && j < key_end(i); }
};

// The rows of a [N, H, L, *] operand with strides sn, sh, sl in its first
// three dims (stride 1 in the last one, except the mask's).
template <typename T>
struct HeadRows {
  T* data;
  int64_t sn, sh, sl;

  // Row 0 of head nh = n * heads + h.
  __device__ T* head(int64_t nh, int64_t heads) const {
    return data + nh / heads * sn + nh % heads * sh;
  }
};

// The scores of one head: scale * q.k + mask where the query sees the key,
// -inf elsewhere (an out-of-range row or column included).
template <typename D, typename A = acc_t<D>>
struct Scorer {
  const D* mask;  // this head's [Lq, Lk] mask, or null
  int64_t mi, mj;
  A scale;
  Geometry g;

  __device__ A operator()(A dot, int64_t i, int64_t j) const {
    if (!g.sees(i, j)) return neg_inf<A>();
    const A s = dot * scale;
    return mask ? s + to_acc(mask[i * mi + j * mj]) : s;
  }
};

template <typename A>
struct DropoutArgs {
  bool on;  // p > 0: draw the mask; otherwise every element is kept
  float p;
  uint64_t seed, offset;
  A keep_scale;
};

// Dropout's value of x: x * keep_scale where kept, 0 elsewhere.
template <typename A>
__device__ A dropped(A x, bool kept, A keep_scale) {
  return kept ? x * keep_scale : A(0);
}

// Whether each of the kCount stream positions pos, pos + 1, ... keeps its
// element (bit c for pos + c). Position pos is lane pos % 4 of Philox block
// pos / 4, as in dropout_keeps; each block is drawn once for all its lanes.
template <int kCount>
__device__ uint32_t keep_bits(uint64_t seed, float p, uint64_t pos) {
  static_assert(kCount >= 1 && kCount <= 32);
  const uint64_t first = pos / 4;
  const int skip = static_cast<int>(pos % 4);
  uint32_t bits = 0;
#pragma unroll
  for (int b = 0; b < (kCount + 3) / 4 + 1; ++b) {
    if (4 * b - skip >= kCount) break;
    const Philox4 draws = philox(seed, first + b);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int c = 4 * b + lane - skip;
      if (c >= 0 && c < kCount && dropout_keeps_bits(draws.v[lane], p)) bits |= 1u << c;
    }
  }
  return bits;
}

// The dropout mask of a tile of queries [i0, i0 + rows) x keys
// [j0, j0 + kCols) of head nh, drawn once per tile into shared memory by the
// whole block (bit c % 32 of word r * kWords + c / 32 is element
// (i0 + r, j0 + c)), so each thread reads its elements in whatever layout
// its arithmetic has them.
template <int kCols>
struct KeepTile {
  static constexpr int kWords = (kCols + 31) / 32;
  static constexpr int kWidth = kCols < 32 ? kCols : 32;
  uint32_t* bits;
  bool on;

  template <typename A>
  __device__ void fill(const DropoutArgs<A>& d, const Geometry& g, int64_t nh, int64_t i0,
                       int64_t j0, int rows) const {
    if (!on) return;
    for (int job = threadIdx.x; job < rows * kWords; job += blockDim.x) {
      const int r = job / kWords, w = job % kWords;
      const int64_t index = (nh * g.lq + i0 + r) * g.lk + j0 + 32 * w;
      bits[job] = keep_bits<kWidth>(d.seed, d.p, d.offset + static_cast<uint64_t>(index));
    }
  }
  __device__ bool kept(int r, int c) const {
    return !on || ((bits[r * kWords + c / 32] >> (c % 32)) & 1u) != 0;
  }
};

// One query row's softmax over the key tiles seen so far, FlashAttention's
// online form: m is the row's running max, base the exponent's offset (m, or
// 0 while every score is -inf, so exp never sees -inf - -inf), l the sum of
// exp(score - base) over this thread's share of the row.
template <typename A>
struct OnlineSoftmax {
  A m = neg_inf<A>(), base = 0, l = 0;

  // Takes the next tile's max over the whole row; returns the factor the
  // row's earlier sum and output are rescaled by (0 before any finite score).
  __device__ A rescale(A tile_max) {
    const A previous = m;
    if (m < tile_max) m = tile_max;
    base = m == neg_inf<A>() ? A(0) : m;
    const A alpha = std::exp(previous - base);
    l *= alpha;
    return alpha;
  }
  // The unnormalised probability of score s, added to the row's sum.
  __device__ A prob(A s) {
    const A p = std::exp(s - base);
    l += p;
    return p;
  }
  // From the sum over the whole row: the log-sum-exp and the factor the
  // output is scaled by, -inf and NaN for a row that saw no key.
  __device__ void finish(A total, A& lse, A& out_factor) const {
    if (total > 0) {
      lse = m + std::log(total);
      out_factor = A(1) / total;
    } else {
      lse = neg_inf<A>();
      out_factor = std::numeric_limits<A>::quiet_NaN();
    }
  }
};

// P regenerated from the forward's log-sum-exp. A row that saw no key (lse
// -inf, out NaN) takes no part in the gradients: its P is 0.
template <typename A>
__device__ A prob_from_lse(A s, A lse) {
  return lse == neg_inf<A>() ? A(0) : std::exp(s - lse);
}

// dS = P * (dropout(dPd) - D).
template <typename A>
__device__ A score_grad(A p, A dpd, bool kept, A keep_scale, A delta) {
  return p * (dropped(dpd, kept, keep_scale) - delta);
}

template <typename D>
struct Problem {
  using A = acc_t<D>;
  HeadRows<const D> q, k, v;
  HeadRows<const D> mask;  // data null when there is none
  int64_t mask_sj;
  Geometry g;
  int e, ev;
  A scale;
  DropoutArgs<A> dropout;

  __device__ Scorer<D> scorer(int64_t nh) const {
    return {mask.data ? mask.head(nh, g.heads) : nullptr, mask.sl, mask_sj, scale, g};
  }
  template <int kCols>
  __device__ KeepTile<kCols> keep_tile(uint32_t* bits) const {
    return {bits, dropout.on};
  }
};

// Carves a block's dynamic shared memory into 16-byte aligned arrays. On the
// host (base null) it only adds up the bytes, so a launch and its kernel
// share one layout.
class SmemCarver {
 public:
  __host__ __device__ explicit SmemCarver(unsigned char* base) : base_(base) {}
  template <typename T>
  __host__ __device__ T* take(int64_t count) {
    const size_t at = bytes_;
    bytes_ += (static_cast<size_t>(count) * sizeof(T) + 15) / 16 * 16;
    return base_ ? reinterpret_cast<T*>(base_ + at) : nullptr;
  }
  __host__ __device__ size_t bytes() const { return bytes_; }

 private:
  unsigned char* base_;
  size_t bytes_ = 0;
};

// D = rowsum(dO * O) for each query row (a warp per row), 0 for a row that
// saw no key: its out is NaN and, as prob_from_lse has it, it has no P.
template <typename D, typename A = acc_t<D>>
__global__ void attention_delta_kernel(HeadRows<const D> dout, HeadRows<const D> out, const A* lse,
                                       A* delta, int64_t rows, int64_t heads, int64_t lq, int ev) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; r < rows;
       r += warps) {
    const int64_t nh = r / lq, i = r % lq;
    const D* a = dout.head(nh, heads) + i * dout.sl;
    const D* b = out.head(nh, heads) + i * out.sl;
    A sum = 0;
    for (int c = lane; c < ev; c += kWarp) sum += to_acc(a[c]) * to_acc(b[c]);
    sum = warp_reduce(sum, SumOp{});
    if (lane == 0) delta[r] = lse[r] == neg_inf<A>() ? A(0) : sum;
  }
}

// ---- SIMT path ------------------------------------------------------------------
//
// 128 threads own kSimtRows rows (queries; keys in dK/dV), 8 adjacent lanes
// per row. A streamed tile has kSimtCols columns (keys; queries in dK/dV), 4
// consecutive ones per thread for the score-like dot products; the products
// with the tile's rows (P V, dS K, Pd^T dO, dS^T Q) give each thread the
// head-dim columns lane + 8c. Shared rows have an odd stride, so lanes that
// read different rows at one column hit different banks.

constexpr int kSimtThreads = 128;
constexpr int kSimtRows = 16;
constexpr int kSimtCols = 32;
constexpr int kSimtLanes = kSimtThreads / kSimtRows;
constexpr int kSimtPerLane = kSimtCols / kSimtLanes;
constexpr int kSimtWStride = kSimtCols + 1;  // rows of the per-row weights tile
constexpr int kSimtMaxDim = 256;

__host__ __device__ inline int odd_stride(int n) { return n | 1; }

// Rows [0, rows) of an operand (row stride src_stride) into shared memory in
// the accumulation type; rows from `valid` on are zero, so a partial tile
// multiplies as zeros, never as stale values.
template <typename D, typename A>
__device__ void stage_rows(A* dst, int dst_stride, const D* src, int64_t src_stride, int rows,
                           int64_t valid, int cols) {
  for (int idx = threadIdx.x; idx < rows * cols; idx += blockDim.x) {
    const int r = idx / cols, c = idx % cols;
    dst[r * dst_stride + c] = r < valid ? A(to_acc(src[r * src_stride + c])) : A(0);
  }
}

// out[c] = a . b_c over n values, b_c the shared row b + c * stride.
template <typename A>
__device__ void row_dots(A (&out)[kSimtPerLane], const A* a, const A* b, int stride, int n) {
#pragma unroll
  for (int c = 0; c < kSimtPerLane; ++c) out[c] = 0;
  for (int x = 0; x < n; ++x) {
    const A ax = a[x];
#pragma unroll
    for (int c = 0; c < kSimtPerLane; ++c) out[c] += ax * b[c * stride + x];
  }
}

// acc[c] += sum over the tile's rows r of w[r] * rows[r][lane + 8c], for
// this thread's columns below n.
template <int kPer, typename A>
__device__ void accumulate_rows(A (&acc)[kPer], const A* w, const A* rows, int stride, int n,
                                int lane) {
  for (int r = 0; r < kSimtCols; ++r) {
    const A wr = w[r];
    const A* row = rows + r * stride;
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      const int col = lane + kSimtLanes * c;
      if (col < n) acc[c] += wr * row[col];
    }
  }
}

// Writes this thread's columns lane + 8c < n of a contiguous output row.
template <int kPer, typename D, typename A>
__device__ void store_row(D* row, const A (&acc)[kPer], A factor, int n, int lane) {
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int col = lane + kSimtLanes * c;
    if (col < n) row[col] = from_acc<D>(acc[c] * factor);
  }
}

// Forward and dQ: the block's query rows (and dO rows for dQ), the streamed
// key tile, one row of weights (P or dS) per query, the tile's dropout bits.
template <typename A>
struct SimtQuerySmem {
  A *q, *dout, *k, *v, *w;
  uint32_t* bits;
  size_t bytes;

  __host__ __device__ SimtQuerySmem(unsigned char* base, int e, int ev, bool with_dout) {
    SmemCarver c(base);
    q = c.take<A>(kSimtRows * odd_stride(e));
    dout = with_dout ? c.take<A>(kSimtRows * odd_stride(ev)) : nullptr;
    k = c.take<A>(kSimtCols * odd_stride(e));
    v = c.take<A>(kSimtCols * odd_stride(ev));
    w = c.take<A>(kSimtRows * kSimtWStride);
    bits = c.take<uint32_t>(kSimtRows * KeepTile<kSimtCols>::kWords);
    bytes = c.bytes();
  }
};

// dK/dV: the block's key rows, the streamed query tile with its dO rows, lse
// and D, one row of Pd and of dS per key, the tile's dropout bits.
template <typename A>
struct SimtKeySmem {
  A *k, *v, *q, *dout, *pd, *ds, *lse, *delta;
  uint32_t* bits;
  size_t bytes;

  __host__ __device__ SimtKeySmem(unsigned char* base, int e, int ev) {
    SmemCarver c(base);
    k = c.take<A>(kSimtRows * odd_stride(e));
    v = c.take<A>(kSimtRows * odd_stride(ev));
    q = c.take<A>(kSimtCols * odd_stride(e));
    dout = c.take<A>(kSimtCols * odd_stride(ev));
    pd = c.take<A>(kSimtRows * kSimtWStride);
    ds = c.take<A>(kSimtRows * kSimtWStride);
    lse = c.take<A>(kSimtCols);
    delta = c.take<A>(kSimtCols);
    bits = c.take<uint32_t>(kSimtCols * KeepTile<kSimtRows>::kWords);
    bytes = c.bytes();
  }
};

template <typename D, int kDim, typename A = acc_t<D>>
__global__ void __launch_bounds__(kSimtThreads)
    attention_forward_simt(Problem<D> pr, D* out, A* lse) {
  constexpr int kPer = kDim / kSimtLanes;
  const Geometry& g = pr.g;
  const int e = pr.e, ev = pr.ev, se = odd_stride(e), sev = odd_stride(ev);
  const int64_t tiles = ceil_div(g.lq, kSimtRows);
  const int64_t nh = blockIdx.x / tiles, i0 = blockIdx.x % tiles * kSimtRows;
  const int row = threadIdx.x / kSimtLanes, lane = threadIdx.x % kSimtLanes;
  const int64_t i = i0 + row;
  const SimtQuerySmem<A> sm(attention_smem, e, ev, false);
  const Scorer<D> score = pr.scorer(nh);
  const KeepTile<kSimtCols> keep = pr.template keep_tile<kSimtCols>(sm.bits);

  stage_rows(sm.q, se, pr.q.head(nh, g.heads) + i0 * pr.q.sl, pr.q.sl, kSimtRows, g.lq - i0, e);
  OnlineSoftmax<A> soft;
  A acc[kPer] = {};
  const int64_t key_end = g.key_end(std::min(i0 + kSimtRows, g.lq) - 1);
  for (int64_t j0 = 0; j0 < key_end; j0 += kSimtCols) {
    __syncthreads();  // the previous tile is consumed
    stage_rows(sm.k, se, pr.k.head(nh, g.heads) + j0 * pr.k.sl, pr.k.sl, kSimtCols, g.lk - j0, e);
    stage_rows(sm.v, sev, pr.v.head(nh, g.heads) + j0 * pr.v.sl, pr.v.sl, kSimtCols, g.lk - j0, ev);
    keep.fill(pr.dropout, g, nh, i0, j0, kSimtRows);
    __syncthreads();

    A s[kSimtPerLane];
    row_dots(s, sm.q + row * se, sm.k + lane * kSimtPerLane * se, se, e);
    A tile_max = neg_inf<A>();
#pragma unroll
    for (int c = 0; c < kSimtPerLane; ++c) {
      s[c] = score(s[c], i, j0 + lane * kSimtPerLane + c);
      tile_max = MaxOp{}(tile_max, s[c]);
    }
    const A alpha = soft.rescale(warp_reduce<kSimtLanes>(tile_max, MaxOp{}));
#pragma unroll
    for (int c = 0; c < kPer; ++c) acc[c] *= alpha;
    A* w = sm.w + row * kSimtWStride;
#pragma unroll
    for (int c = 0; c < kSimtPerLane; ++c) {
      const int col = lane * kSimtPerLane + c;
      w[col] = dropped(soft.prob(s[c]), keep.kept(row, col), pr.dropout.keep_scale);
    }
    __syncwarp();  // a row's weights are written and read by its own 8 lanes
    accumulate_rows(acc, w, sm.v, sev, ev, lane);
  }
  A row_lse, factor;
  soft.finish(warp_reduce<kSimtLanes>(soft.l, SumOp{}), row_lse, factor);
  if (i < g.lq) {
    store_row(out + (nh * g.lq + i) * ev, acc, factor, ev, lane);
    if (lane == 0) lse[nh * g.lq + i] = row_lse;
  }
}

template <typename D, int kDim, typename A = acc_t<D>>
__global__ void __launch_bounds__(kSimtThreads)
    attention_dkdv_simt(Problem<D> pr, HeadRows<const D> dout, const A* lse, const A* delta,
                        D* grad_k, D* grad_v) {
  constexpr int kPer = kDim / kSimtLanes;
  const Geometry& g = pr.g;
  const int e = pr.e, ev = pr.ev, se = odd_stride(e), sev = odd_stride(ev);
  const int64_t tiles = ceil_div(g.lk, kSimtRows);
  const int64_t nh = blockIdx.x / tiles, j0 = blockIdx.x % tiles * kSimtRows;
  const int kr = threadIdx.x / kSimtLanes, lane = threadIdx.x % kSimtLanes;
  const int64_t j = j0 + kr;
  const SimtKeySmem<A> sm(attention_smem, e, ev);
  const Scorer<D> score = pr.scorer(nh);
  const KeepTile<kSimtRows> keep = pr.template keep_tile<kSimtRows>(sm.bits);
  const A keep_scale = pr.dropout.keep_scale;

  stage_rows(sm.k, se, pr.k.head(nh, g.heads) + j0 * pr.k.sl, pr.k.sl, kSimtRows, g.lk - j0, e);
  stage_rows(sm.v, sev, pr.v.head(nh, g.heads) + j0 * pr.v.sl, pr.v.sl, kSimtRows, g.lk - j0, ev);
  A dk[kPer] = {}, dv[kPer] = {};
  for (int64_t i0 = g.first_query(j0) / kSimtCols * kSimtCols; i0 < g.lq; i0 += kSimtCols) {
    __syncthreads();  // the previous tile is consumed
    stage_rows(sm.q, se, pr.q.head(nh, g.heads) + i0 * pr.q.sl, pr.q.sl, kSimtCols, g.lq - i0, e);
    stage_rows(sm.dout, sev, dout.head(nh, g.heads) + i0 * dout.sl, dout.sl, kSimtCols, g.lq - i0,
               ev);
    for (int t = threadIdx.x; t < kSimtCols; t += blockDim.x) {
      const bool valid = i0 + t < g.lq;
      sm.lse[t] = valid ? lse[nh * g.lq + i0 + t] : neg_inf<A>();
      sm.delta[t] = valid ? delta[nh * g.lq + i0 + t] : A(0);
    }
    keep.fill(pr.dropout, g, nh, i0, j0, kSimtCols);
    __syncthreads();

    A s[kSimtPerLane], dpd[kSimtPerLane];
    row_dots(s, sm.k + kr * se, sm.q + lane * kSimtPerLane * se, se, e);
    row_dots(dpd, sm.v + kr * sev, sm.dout + lane * kSimtPerLane * sev, sev, ev);
    A* pd = sm.pd + kr * kSimtWStride;
    A* ds = sm.ds + kr * kSimtWStride;
#pragma unroll
    for (int c = 0; c < kSimtPerLane; ++c) {
      const int qc = lane * kSimtPerLane + c;
      const A p = prob_from_lse(score(s[c], i0 + qc, j), sm.lse[qc]);
      const bool kept = keep.kept(qc, kr);
      pd[qc] = dropped(p, kept, keep_scale);
      ds[qc] = score_grad(p, dpd[c], kept, keep_scale, sm.delta[qc]);
    }
    __syncwarp();  // a key's rows are written and read by its own 8 lanes
    accumulate_rows(dv, pd, sm.dout, sev, ev, lane);
    accumulate_rows(dk, ds, sm.q, se, e, lane);
  }
  if (j < g.lk) {
    store_row(grad_k + (nh * g.lk + j) * e, dk, pr.scale, e, lane);
    store_row(grad_v + (nh * g.lk + j) * ev, dv, A(1), ev, lane);
  }
}

template <typename D, int kDim, typename A = acc_t<D>>
__global__ void __launch_bounds__(kSimtThreads)
    attention_dq_simt(Problem<D> pr, HeadRows<const D> dout, const A* lse, const A* delta,
                      D* grad_q) {
  constexpr int kPer = kDim / kSimtLanes;
  const Geometry& g = pr.g;
  const int e = pr.e, ev = pr.ev, se = odd_stride(e), sev = odd_stride(ev);
  const int64_t tiles = ceil_div(g.lq, kSimtRows);
  const int64_t nh = blockIdx.x / tiles, i0 = blockIdx.x % tiles * kSimtRows;
  const int row = threadIdx.x / kSimtLanes, lane = threadIdx.x % kSimtLanes;
  const int64_t i = i0 + row;
  const SimtQuerySmem<A> sm(attention_smem, e, ev, true);
  const Scorer<D> score = pr.scorer(nh);
  const KeepTile<kSimtCols> keep = pr.template keep_tile<kSimtCols>(sm.bits);

  stage_rows(sm.q, se, pr.q.head(nh, g.heads) + i0 * pr.q.sl, pr.q.sl, kSimtRows, g.lq - i0, e);
  stage_rows(sm.dout, sev, dout.head(nh, g.heads) + i0 * dout.sl, dout.sl, kSimtRows, g.lq - i0,
             ev);
  const A row_lse = i < g.lq ? lse[nh * g.lq + i] : neg_inf<A>();
  const A row_delta = i < g.lq ? delta[nh * g.lq + i] : A(0);
  A dq[kPer] = {};
  const int64_t key_end = g.key_end(std::min(i0 + kSimtRows, g.lq) - 1);
  for (int64_t j0 = 0; j0 < key_end; j0 += kSimtCols) {
    __syncthreads();  // the previous tile is consumed
    stage_rows(sm.k, se, pr.k.head(nh, g.heads) + j0 * pr.k.sl, pr.k.sl, kSimtCols, g.lk - j0, e);
    stage_rows(sm.v, sev, pr.v.head(nh, g.heads) + j0 * pr.v.sl, pr.v.sl, kSimtCols, g.lk - j0, ev);
    keep.fill(pr.dropout, g, nh, i0, j0, kSimtRows);
    __syncthreads();

    A s[kSimtPerLane], dpd[kSimtPerLane];
    row_dots(s, sm.q + row * se, sm.k + lane * kSimtPerLane * se, se, e);
    row_dots(dpd, sm.dout + row * sev, sm.v + lane * kSimtPerLane * sev, sev, ev);
    A* ds = sm.w + row * kSimtWStride;
#pragma unroll
    for (int c = 0; c < kSimtPerLane; ++c) {
      const int col = lane * kSimtPerLane + c;
      const A p = prob_from_lse(score(s[c], i, j0 + col), row_lse);
      ds[col] = score_grad(p, dpd[c], keep.kept(row, col), pr.dropout.keep_scale, row_delta);
    }
    __syncwarp();  // a row's weights are written and read by its own 8 lanes
    accumulate_rows(dq, ds, sm.k, se, e, lane);
  }
  if (i < g.lq) store_row(grad_q + (nh * g.lq + i) * e, dq, pr.scale, e, lane);
}

// ---- tensor-core path (bfloat16, float16) -------------------------------------------
//
// FlashAttention-2's warp layout: 4 warps, each owning 16 rows of the block's
// tile (queries; keys in dK/dV), with every product an mma.sync m16n8k16 on
// 16-bit operands and float32 accumulators. Per lane (g = lane / 4,
// t = lane % 4) an accumulator block of 16 rows x 8 columns holds rows g and
// g + 8 at columns 2t and 2t + 1: elements x = 0..3 are row g + 8 * (x / 2),
// column 2t + x % 2. Scores stay in registers from the first product to the
// second (P V, dS K, ...), as FlashAttention-2 keeps them. Operand tiles are
// staged raw (16-bit) in shared memory, rows padded by 8 elements so that the
// fragment loads below hit 32 distinct banks.

constexpr int kTcThreads = 128;
constexpr int kTcRows = 64;       // a block's rows, 16 per warp
constexpr int kTcKeyCols = 64;    // keys per streamed tile (forward, dQ)
constexpr int kTcQueryCols = 32;  // queries per streamed tile (dK/dV: its registers hold dK and dV)
constexpr int kTcPad = 8;
constexpr int kTcMaxDim = 128;

template <typename D>
constexpr bool kTensorCoreType = std::is_same_v<D, BFloat16> || std::is_same_v<D, Float16>;

struct Lane {
  int g, t;
  __device__ Lane() : g(threadIdx.x % kWarp / 4), t(threadIdx.x % 4) {}
};

__device__ inline uint32_t load_pair(const uint16_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// The A operand (16 x 16, row-major) at rows r0.., columns k0.. of a
// row-major shared tile.
__device__ inline void load_a(uint32_t (&a)[4], const uint16_t* s, int stride, int r0, int k0,
                              Lane l) {
  const uint16_t* p = s + (r0 + l.g) * stride + k0 + 2 * l.t;
  a[0] = load_pair(p);
  a[1] = load_pair(p + 8 * stride);
  a[2] = load_pair(p + 8);
  a[3] = load_pair(p + 8 * stride + 8);
}

// The B operand (16 x 8) with B[k][n] = s[n0 + n][k0 + k]: the tile holds
// B's columns as its rows (K in Q K^T).
__device__ inline void load_b_rows(uint32_t (&b)[2], const uint16_t* s, int stride, int n0, int k0,
                                   Lane l) {
  const uint16_t* p = s + (n0 + l.g) * stride + k0 + 2 * l.t;
  b[0] = load_pair(p);
  b[1] = load_pair(p + 8);
}

// The B operand (16 x 8) with B[k][n] = s[k0 + k][n0 + n]: the tile holds B
// row-major (V in P V), so each register pairs two rows.
__device__ inline void load_b_cols(uint32_t (&b)[2], const uint16_t* s, int stride, int k0, int n0,
                                   Lane l) {
  const uint16_t* p = s + (k0 + 2 * l.t) * stride + n0 + l.g;
  b[0] = p[0] | static_cast<uint32_t>(p[stride]) << 16;
  b[1] = p[8 * stride] | static_cast<uint32_t>(p[9 * stride]) << 16;
}

// Two float32 values rounded to D (to nearest even), lo in the low half.
template <typename D>
__device__ uint32_t pack(float lo, float hi) {
  uint32_t bits;
  if constexpr (std::is_same_v<D, BFloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&bits, &v, sizeof bits);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&bits, &v, sizeof bits);
  }
  return bits;
}

// The A operand whose 16 columns are two accumulator blocks side by side.
template <typename D>
__device__ void a_from_acc(uint32_t (&a)[4], const float (&left)[4], const float (&right)[4]) {
  a[0] = pack<D>(left[0], left[1]);
  a[1] = pack<D>(left[2], left[3]);
  a[2] = pack<D>(right[0], right[1]);
  a[3] = pack<D>(right[2], right[3]);
}

// c += a b on one warp's 16 x 8 x 16 block.
template <typename D>
__device__ void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<D, BFloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// acc[nb] (+)= (16 rows of s_a from r0) (tile s_b's rows n0 = 8 nb as
// columns)^T over the k dims below n: Q K^T, dO V^T, K Q^T, V dO^T.
template <typename D, int kBlocks, int kDim>
__device__ void mma_rows(float (&acc)[kBlocks][4], const uint16_t* s_a, const uint16_t* s_b,
                         int stride, int r0, int n, Lane l) {
#pragma unroll
  for (int kc = 0; kc < kDim / 16; ++kc) {
    if (16 * kc >= n) break;
    uint32_t a[4];
    load_a(a, s_a, stride, r0, 16 * kc, l);
#pragma unroll
    for (int nb = 0; nb < kBlocks; ++nb) {
      uint32_t b[2];
      load_b_rows(b, s_b, stride, 8 * nb, 16 * kc, l);
      mma<D>(acc[nb], a, b);
    }
  }
}

// out[nb] += w s for the columns 8 nb < n of s, w in registers (kW
// accumulator blocks, 8 kW tile rows of s): P V, dS K, Pd^T dO, dS^T Q.
template <typename D, int kW, int kDim>
__device__ void mma_weights(float (&out)[kDim / 8][4], const float (&w)[kW][4], const uint16_t* s,
                            int stride, int n, Lane l) {
#pragma unroll
  for (int kc = 0; kc < kW / 2; ++kc) {
    uint32_t a[4];
    a_from_acc<D>(a, w[2 * kc], w[2 * kc + 1]);
#pragma unroll
    for (int nb = 0; nb < kDim / 8; ++nb) {
      if (8 * nb >= n) break;
      uint32_t b[2];
      load_b_cols(b, s, stride, 16 * kc, 8 * nb, l);
      mma<D>(out[nb], a, b);
    }
  }
}

// Rows [0, rows) of a 16-bit operand (row stride src_stride; rows 16-byte
// aligned) into shared memory, 16 bytes at a time; rows from `valid` on are
// zero, so a partial tile multiplies as zeros.
__device__ inline void copy_rows(uint16_t* dst, int dst_stride, const void* src_rows,
                                 int64_t src_stride, int rows, int64_t valid, int cols) {
  const auto* src = static_cast<const uint16_t*>(src_rows);
  const int chunks = cols / 8;
  for (int idx = threadIdx.x; idx < rows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = idx % chunks * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < valid) v = *reinterpret_cast<const uint4*>(src + r * src_stride + c);
    *reinterpret_cast<uint4*>(dst + r * dst_stride + c) = v;
  }
}

// Writes one warp's accumulator rows (16 x kDim/8 blocks) of a contiguous
// output with n columns, scaled per row: rows[x / 2] is the output row of
// element x (null past the end).
template <typename D, int kDim>
__device__ void store_acc(D* const (&rows)[2], const float (&acc)[kDim / 8][4],
                          const float (&factor)[2], int n, Lane l) {
#pragma unroll
  for (int nb = 0; nb < kDim / 8; ++nb) {
    if (8 * nb >= n) break;
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      if (rows[x / 2])
        rows[x / 2][8 * nb + 2 * l.t + x % 2] = from_acc<D>(acc[nb][x] * factor[x / 2]);
    }
  }
}

// Forward and dQ: the block's query rows (and dO rows for dQ), the streamed
// key tile, the tile's dropout bits.
struct TcQuerySmem {
  uint16_t *q, *dout, *k, *v;
  uint32_t* bits;
  size_t bytes;

  __host__ __device__ TcQuerySmem(unsigned char* base, int e, int ev, bool with_dout) {
    SmemCarver c(base);
    q = c.take<uint16_t>(kTcRows * (e + kTcPad));
    dout = with_dout ? c.take<uint16_t>(kTcRows * (ev + kTcPad)) : nullptr;
    k = c.take<uint16_t>(kTcKeyCols * (e + kTcPad));
    v = c.take<uint16_t>(kTcKeyCols * (ev + kTcPad));
    bits = c.take<uint32_t>(kTcRows * KeepTile<kTcKeyCols>::kWords);
    bytes = c.bytes();
  }
};

// dK/dV: the block's key rows, the streamed query tile with its dO rows, lse
// and D, the tile's dropout bits.
struct TcKeySmem {
  uint16_t *k, *v, *q, *dout;
  float *lse, *delta;
  uint32_t* bits;
  size_t bytes;

  __host__ __device__ TcKeySmem(unsigned char* base, int e, int ev) {
    SmemCarver c(base);
    k = c.take<uint16_t>(kTcRows * (e + kTcPad));
    v = c.take<uint16_t>(kTcRows * (ev + kTcPad));
    q = c.take<uint16_t>(kTcQueryCols * (e + kTcPad));
    dout = c.take<uint16_t>(kTcQueryCols * (ev + kTcPad));
    lse = c.take<float>(kTcQueryCols);
    delta = c.take<float>(kTcQueryCols);
    bits = c.take<uint32_t>(kTcQueryCols * KeepTile<kTcRows>::kWords);
    bytes = c.bytes();
  }
};

template <typename D, int kDim>
__global__ void __launch_bounds__(kTcThreads)
    attention_forward_tc(Problem<D> pr, D* out, float* lse) {
  constexpr int kS = kTcKeyCols / 8;  // score blocks per warp
  const Geometry& g = pr.g;
  const int e = pr.e, ev = pr.ev, se = e + kTcPad, sev = ev + kTcPad;
  const int64_t tiles = ceil_div(g.lq, kTcRows);
  const int64_t nh = blockIdx.x / tiles, i0 = blockIdx.x % tiles * kTcRows;
  const int w0 = threadIdx.x / kWarp * 16;
  const Lane l;
  const int r_local[2] = {w0 + l.g, w0 + l.g + 8};
  const int64_t i[2] = {i0 + r_local[0], i0 + r_local[1]};
  const TcQuerySmem sm(attention_smem, e, ev, false);
  const Scorer<D> score = pr.scorer(nh);
  const KeepTile<kTcKeyCols> keep = pr.template keep_tile<kTcKeyCols>(sm.bits);

  copy_rows(sm.q, se, pr.q.head(nh, g.heads) + i0 * pr.q.sl, pr.q.sl, kTcRows, g.lq - i0, e);
  OnlineSoftmax<float> soft[2];
  float o[kDim / 8][4] = {};
  const int64_t key_end = g.key_end(std::min(i0 + kTcRows, g.lq) - 1);
  for (int64_t j0 = 0; j0 < key_end; j0 += kTcKeyCols) {
    __syncthreads();  // the previous tile is consumed
    copy_rows(sm.k, se, pr.k.head(nh, g.heads) + j0 * pr.k.sl, pr.k.sl, kTcKeyCols, g.lk - j0, e);
    copy_rows(sm.v, sev, pr.v.head(nh, g.heads) + j0 * pr.v.sl, pr.v.sl, kTcKeyCols, g.lk - j0, ev);
    keep.fill(pr.dropout, g, nh, i0, j0, kTcRows);
    __syncthreads();

    float s[kS][4] = {};
    mma_rows<D, kS, kDim>(s, sm.q, sm.k, se, w0, e, l);
    float tile_max[2] = {neg_inf<float>(), neg_inf<float>()};
#pragma unroll
    for (int nb = 0; nb < kS; ++nb) {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        s[nb][x] = score(s[nb][x], i[x / 2], j0 + 8 * nb + 2 * l.t + x % 2);
        tile_max[x / 2] = MaxOp{}(tile_max[x / 2], s[nb][x]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) alpha[r] = soft[r].rescale(warp_reduce<4>(tile_max[r], MaxOp{}));
#pragma unroll
    for (int nb = 0; nb < kDim / 8; ++nb) {
#pragma unroll
      for (int x = 0; x < 4; ++x) o[nb][x] *= alpha[x / 2];
    }
#pragma unroll
    for (int nb = 0; nb < kS; ++nb) {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const bool kept = keep.kept(r_local[x / 2], 8 * nb + 2 * l.t + x % 2);
        s[nb][x] = dropped(soft[x / 2].prob(s[nb][x]), kept, pr.dropout.keep_scale);
      }
    }
    mma_weights<D, kS, kDim>(o, s, sm.v, sev, ev, l);
  }
  float row_lse[2], factor[2];
  D* rows[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    soft[r].finish(warp_reduce<4>(soft[r].l, SumOp{}), row_lse[r], factor[r]);
    rows[r] = i[r] < g.lq ? out + (nh * g.lq + i[r]) * ev : nullptr;
    if (i[r] < g.lq && l.t == 0) lse[nh * g.lq + i[r]] = row_lse[r];
  }
  store_acc<D, kDim>(rows, o, factor, ev, l);
}

template <typename D, int kDim>
__global__ void __launch_bounds__(kTcThreads)
    attention_dkdv_tc(Problem<D> pr, HeadRows<const D> dout, const float* lse, const float* delta,
                      D* grad_k, D* grad_v) {
  constexpr int kS = kTcQueryCols / 8;  // score blocks per warp
  const Geometry& g = pr.g;
  const int e = pr.e, ev = pr.ev, se = e + kTcPad, sev = ev + kTcPad;
  const int64_t tiles = ceil_div(g.lk, kTcRows);
  const int64_t nh = blockIdx.x / tiles, j0 = blockIdx.x % tiles * kTcRows;
  const int w0 = threadIdx.x / kWarp * 16;
  const Lane l;
  const int k_local[2] = {w0 + l.g, w0 + l.g + 8};
  const int64_t j[2] = {j0 + k_local[0], j0 + k_local[1]};
  const TcKeySmem sm(attention_smem, e, ev);
  const Scorer<D> score = pr.scorer(nh);
  const KeepTile<kTcRows> keep = pr.template keep_tile<kTcRows>(sm.bits);
  const float keep_scale = pr.dropout.keep_scale;

  copy_rows(sm.k, se, pr.k.head(nh, g.heads) + j0 * pr.k.sl, pr.k.sl, kTcRows, g.lk - j0, e);
  copy_rows(sm.v, sev, pr.v.head(nh, g.heads) + j0 * pr.v.sl, pr.v.sl, kTcRows, g.lk - j0, ev);
  float dk[kDim / 8][4] = {}, dv[kDim / 8][4] = {};
  for (int64_t i0 = g.first_query(j0) / kTcQueryCols * kTcQueryCols; i0 < g.lq;
       i0 += kTcQueryCols) {
    __syncthreads();  // the previous tile is consumed
    copy_rows(sm.q, se, pr.q.head(nh, g.heads) + i0 * pr.q.sl, pr.q.sl, kTcQueryCols, g.lq - i0, e);
    copy_rows(sm.dout, sev, dout.head(nh, g.heads) + i0 * dout.sl, dout.sl, kTcQueryCols, g.lq - i0,
              ev);
    for (int t = threadIdx.x; t < kTcQueryCols; t += blockDim.x) {
      const bool valid = i0 + t < g.lq;
      sm.lse[t] = valid ? lse[nh * g.lq + i0 + t] : neg_inf<float>();
      sm.delta[t] = valid ? delta[nh * g.lq + i0 + t] : 0.0f;
    }
    keep.fill(pr.dropout, g, nh, i0, j0, kTcQueryCols);
    __syncthreads();

    // S^T and dPd^T: rows are this warp's keys, columns the tile's queries.
    float st[kS][4] = {}, dpt[kS][4] = {};
    mma_rows<D, kS, kDim>(st, sm.k, sm.q, se, w0, e, l);
    mma_rows<D, kS, kDim>(dpt, sm.v, sm.dout, sev, w0, ev, l);
#pragma unroll
    for (int nb = 0; nb < kS; ++nb) {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int qc = 8 * nb + 2 * l.t + x % 2;
        const float p = prob_from_lse(score(st[nb][x], i0 + qc, j[x / 2]), sm.lse[qc]);
        const bool kept = keep.kept(qc, k_local[x / 2]);
        st[nb][x] = dropped(p, kept, keep_scale);
        dpt[nb][x] = score_grad(p, dpt[nb][x], kept, keep_scale, sm.delta[qc]);
      }
    }
    mma_weights<D, kS, kDim>(dv, st, sm.dout, sev, ev, l);
    mma_weights<D, kS, kDim>(dk, dpt, sm.q, se, e, l);
  }
  D* k_rows[2];
  D* v_rows[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    k_rows[r] = j[r] < g.lk ? grad_k + (nh * g.lk + j[r]) * e : nullptr;
    v_rows[r] = j[r] < g.lk ? grad_v + (nh * g.lk + j[r]) * ev : nullptr;
  }
  store_acc<D, kDim>(k_rows, dk, {pr.scale, pr.scale}, e, l);
  store_acc<D, kDim>(v_rows, dv, {1.0f, 1.0f}, ev, l);
}

template <typename D, int kDim>
__global__ void __launch_bounds__(kTcThreads)
    attention_dq_tc(Problem<D> pr, HeadRows<const D> dout, const float* lse, const float* delta,
                    D* grad_q) {
  constexpr int kS = kTcKeyCols / 8;  // score blocks per warp
  const Geometry& g = pr.g;
  const int e = pr.e, ev = pr.ev, se = e + kTcPad, sev = ev + kTcPad;
  const int64_t tiles = ceil_div(g.lq, kTcRows);
  const int64_t nh = blockIdx.x / tiles, i0 = blockIdx.x % tiles * kTcRows;
  const int w0 = threadIdx.x / kWarp * 16;
  const Lane l;
  const int r_local[2] = {w0 + l.g, w0 + l.g + 8};
  const int64_t i[2] = {i0 + r_local[0], i0 + r_local[1]};
  const TcQuerySmem sm(attention_smem, e, ev, true);
  const Scorer<D> score = pr.scorer(nh);
  const KeepTile<kTcKeyCols> keep = pr.template keep_tile<kTcKeyCols>(sm.bits);

  copy_rows(sm.q, se, pr.q.head(nh, g.heads) + i0 * pr.q.sl, pr.q.sl, kTcRows, g.lq - i0, e);
  copy_rows(sm.dout, sev, dout.head(nh, g.heads) + i0 * dout.sl, dout.sl, kTcRows, g.lq - i0, ev);
  float row_lse[2], row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_lse[r] = i[r] < g.lq ? lse[nh * g.lq + i[r]] : neg_inf<float>();
    row_delta[r] = i[r] < g.lq ? delta[nh * g.lq + i[r]] : 0.0f;
  }
  float dq[kDim / 8][4] = {};
  const int64_t key_end = g.key_end(std::min(i0 + kTcRows, g.lq) - 1);
  for (int64_t j0 = 0; j0 < key_end; j0 += kTcKeyCols) {
    __syncthreads();  // the previous tile is consumed
    copy_rows(sm.k, se, pr.k.head(nh, g.heads) + j0 * pr.k.sl, pr.k.sl, kTcKeyCols, g.lk - j0, e);
    copy_rows(sm.v, sev, pr.v.head(nh, g.heads) + j0 * pr.v.sl, pr.v.sl, kTcKeyCols, g.lk - j0, ev);
    keep.fill(pr.dropout, g, nh, i0, j0, kTcRows);
    __syncthreads();

    float s[kS][4] = {}, dp[kS][4] = {};
    mma_rows<D, kS, kDim>(s, sm.q, sm.k, se, w0, e, l);
    mma_rows<D, kS, kDim>(dp, sm.dout, sm.v, sev, w0, ev, l);
#pragma unroll
    for (int nb = 0; nb < kS; ++nb) {
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int col = 8 * nb + 2 * l.t + x % 2;
        const float p = prob_from_lse(score(s[nb][x], i[x / 2], j0 + col), row_lse[x / 2]);
        s[nb][x] = score_grad(p, dp[nb][x], keep.kept(r_local[x / 2], col), pr.dropout.keep_scale,
                              row_delta[x / 2]);
      }
    }
    mma_weights<D, kS, kDim>(dq, s, sm.k, se, e, l);
  }
  D* rows[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) rows[r] = i[r] < g.lq ? grad_q + (nh * g.lq + i[r]) * e : nullptr;
  store_acc<D, kDim>(rows, dq, {pr.scale, pr.scale}, e, l);
}

// ---- launchers ------------------------------------------------------------------

struct Dims {
  int64_t n, h, lq, lk, e, ev;
};

std::string meta(const Tensor& t) { return TensorMeta::of(t).str(); }

bool last_dim_dense(const Tensor& t) { return t.shape()[3] <= 1 || t.strides()[3] == 1; }

// The operands every attention kernel reads; throws naming the kernel.
Dims check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& mask) {
  REMAT_CHECK_SHAPE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                    "{}: expected 4-d q, k, v [N, H, L, E], got {}, {}, {}", op, meta(q), meta(k),
                    meta(v));
  const Dims d{q.shape()[0], q.shape()[1], q.shape()[2], k.shape()[2], q.shape()[3], v.shape()[3]};
  REMAT_CHECK_SHAPE(
      k.shape() == Shape({d.n, d.h, d.lk, d.e}) && v.shape() == Shape({d.n, d.h, d.lk, d.ev}),
      "{}: expected q [N, H, Lq, E], k [N, H, Lk, E], v [N, H, Lk, Ev], got {}, {}, {}", op,
      meta(q), meta(k), meta(v));
  REMAT_CHECK(q.device().is_cuda() && k.device() == q.device() && v.device() == q.device() &&
                  k.dtype() == q.dtype() && v.dtype() == q.dtype(),
              "{}: q, k, v must share one dtype and one CUDA device, got {}, {}, {}", op, meta(q),
              meta(k), meta(v));
  REMAT_CHECK(last_dim_dense(q) && last_dim_dense(k) && last_dim_dense(v),
              "{}: q, k, v must have stride 1 in their last dim, got strides {}, {}, {}", op,
              fmt::join(q.strides(), "x"), fmt::join(k.strides(), "x"),
              fmt::join(v.strides(), "x"));
  if (mask.defined()) {
    REMAT_CHECK_SHAPE(mask.shape() == Shape({d.n, d.h, d.lq, d.lk}),
                      "{}: expected mask [N, H, Lq, Lk] = [{}, {}, {}, {}], got {}", op, d.n, d.h,
                      d.lq, d.lk, meta(mask));
    REMAT_CHECK(mask.dtype() == q.dtype() && mask.device() == q.device(),
                "{}: mask must have q's dtype and device ({}), got {}", op, meta(q), meta(mask));
  }
  return d;
}

// A tensor the kernel reads row by row with any strides, stride 1 in the
// last dim (grad_out and out in the backward).
void check_rows(const char* op, const char* name, const Tensor& t, const Shape& shape,
                const Tensor& q) {
  REMAT_CHECK_SHAPE(t.shape() == shape, "{}: expected {} of shape {}, got {}", op, name,
                    fmt::join(shape, "x"), meta(t));
  REMAT_CHECK(t.dtype() == q.dtype() && t.device() == q.device() && last_dim_dense(t),
              "{}: {} must have q's dtype and device ({}) and stride 1 in its last dim, got {} "
              "with strides {}",
              op, name, meta(q), meta(t), fmt::join(t.strides(), "x"));
}

// A tensor the kernel writes or reads as a flat array.
void check_flat(const char* op, const char* name, const Tensor& t, const Shape& shape, DType dtype,
                Device device) {
  REMAT_CHECK_SHAPE(t.shape() == shape, "{}: expected {} of shape {}, got {}", op, name,
                    fmt::join(shape, "x"), meta(t));
  REMAT_CHECK(t.dtype() == dtype && t.device() == device && t.is_contiguous(),
              "{}: {} must be a contiguous {} tensor on {}, got {}", op, name, dtype, device,
              meta(t));
}

DType lse_dtype(DType t) { return t == kFloat64 ? kFloat64 : kFloat32; }

template <typename T>
HeadRows<T> rows_of(const Tensor& t) {
  return {static_cast<T*>(t.data_ptr()), t.strides()[0], t.strides()[1], t.strides()[2]};
}

template <typename D>
Problem<D> problem_of(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                      const Tensor& mask, const AttentionParams& params) {
  using A = acc_t<D>;
  Problem<D> pr{};
  pr.q = rows_of<const D>(q);
  pr.k = rows_of<const D>(k);
  pr.v = rows_of<const D>(v);
  if (mask.defined()) {
    pr.mask = rows_of<const D>(mask);
    pr.mask_sj = mask.strides()[3];
  }
  pr.g = {d.h, d.lq, d.lk, params.causal};
  pr.e = static_cast<int>(d.e);
  pr.ev = static_cast<int>(d.ev);
  pr.scale = static_cast<A>(params.scale);
  pr.dropout = {params.dropout_p > 0, static_cast<float>(params.dropout_p), params.seed,
                params.offset, static_cast<A>(params.keep_scale)};
  return pr;
}

// Lets `kernel` take `bytes` of dynamic shared memory (beyond the default
// 48 KiB where needed); throws NotImplementedError past the device's limit.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, const char* op, const Tensor& q,
                         const Dims& d) {
  int device = 0, limit = 0;
  REMAT_CUDA_CHECK(cudaGetDevice(&device));
  REMAT_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > static_cast<size_t>(limit)) {
    throw NotImplementedError(fmt::format(
        "{} on CUDA: head dims E {} and Ev {} of {} need {} bytes of shared memory per block, "
        "the device allows {}",
        op, d.e, d.ev, q.dtype(), bytes, limit));
  }
  if (bytes > 48 * 1024) {
    REMAT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
  }
}

// One block per (head, tile of `rows` rows of length len).
unsigned grid_of(int64_t heads, int64_t len, int rows, const char* op) {
  const int64_t blocks = heads * ceil_div(len, rows);
  REMAT_CHECK(blocks <= INT_MAX, "{} on CUDA: {} thread blocks exceed the grid's limit", op,
              blocks);
  return static_cast<unsigned>(blocks);
}

// Calls fn.template operator()<kDim>() with the SIMT kernels' head-dim bound
// for dims up to `dim`; throws NotImplementedError past kSimtMaxDim.
template <typename Fn>
void visit_simt_dim(const char* op, DType dtype, const Dims& d, Fn&& fn) {
  const int64_t dim = std::max(d.e, d.ev);
  if (dim > kSimtMaxDim) {
    throw NotImplementedError(
        fmt::format("{} on CUDA: head dims E {} and Ev {} of {} (at most {} each)", op, d.e, d.ev,
                    dtype, kSimtMaxDim));
  }
  if (dim <= 64) {
    fn.template operator()<64>();
  } else if (dim <= 128) {
    fn.template operator()<128>();
  } else {
    fn.template operator()<kSimtMaxDim>();
  }
}

template <typename D>
void forward_simt(const Problem<D>& pr, const Dims& d, const Tensor& q, const Tensor& out,
                  const Tensor& lse) {
  using A = acc_t<D>;
  visit_simt_dim("attention", q.dtype(), d, [&]<int kDim>() {
    auto kernel = attention_forward_simt<D, kDim>;
    const size_t bytes = SimtQuerySmem<A>(nullptr, pr.e, pr.ev, false).bytes;
    allow_shared_memory(kernel, bytes, "attention", q, d);
    kernel<<<grid_of(d.n * d.h, d.lq, kSimtRows, "attention"), kSimtThreads, bytes, stream_of(q)>>>(
        pr, static_cast<D*>(out.data_ptr()), static_cast<A*>(lse.data_ptr()));
    REMAT_CUDA_LAUNCH_CHECK("attention_forward_simt");
  });
}

template <typename D>
void backward_simt(const Problem<D>& pr, const Dims& d, const Tensor& q, const Tensor& grad_out,
                   const Tensor& lse, const Tensor& delta, const Tensor& grad_q,
                   const Tensor& grad_k, const Tensor& grad_v) {
  using A = acc_t<D>;
  const char* op = "attention_backward";
  const HeadRows<const D> dout = rows_of<const D>(grad_out);
  const auto* lse_p = static_cast<const A*>(lse.data_ptr());
  const auto* delta_p = static_cast<const A*>(delta.data_ptr());
  visit_simt_dim(op, q.dtype(), d, [&]<int kDim>() {
    if (d.lk > 0) {
      auto kernel = attention_dkdv_simt<D, kDim>;
      const size_t bytes = SimtKeySmem<A>(nullptr, pr.e, pr.ev).bytes;
      allow_shared_memory(kernel, bytes, op, q, d);
      kernel<<<grid_of(d.n * d.h, d.lk, kSimtRows, op), kSimtThreads, bytes, stream_of(q)>>>(
          pr, dout, lse_p, delta_p, static_cast<D*>(grad_k.data_ptr()),
          static_cast<D*>(grad_v.data_ptr()));
      REMAT_CUDA_LAUNCH_CHECK("attention_dkdv_simt");
    }
    if (d.lq > 0) {
      auto kernel = attention_dq_simt<D, kDim>;
      const size_t bytes = SimtQuerySmem<A>(nullptr, pr.e, pr.ev, true).bytes;
      allow_shared_memory(kernel, bytes, op, q, d);
      kernel<<<grid_of(d.n * d.h, d.lq, kSimtRows, op), kSimtThreads, bytes, stream_of(q)>>>(
          pr, dout, lse_p, delta_p, static_cast<D*>(grad_q.data_ptr()));
      REMAT_CUDA_LAUNCH_CHECK("attention_dq_simt");
    }
  });
}

// Whether the tensor-core kernels take these operands: bfloat16 or float16
// (the caller's check), head dims multiples of 16 up to kTcMaxDim, and every
// staged row 16-byte aligned, as copy_rows moves 16 bytes at a time.
bool tensor_core_fits(const Dims& d,
                      std::initializer_list<std::reference_wrapper<const Tensor>> staged) {
  if (d.e == 0 || d.ev == 0 || d.e % 16 != 0 || d.ev % 16 != 0 || d.e > kTcMaxDim ||
      d.ev > kTcMaxDim) {
    return false;
  }
  for (const Tensor& t : staged) {
    if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return false;
    for (size_t dim = 0; dim < 3; ++dim) {
      if (t.shape()[dim] > 1 && t.strides()[dim] % 8 != 0) return false;
    }
  }
  return true;
}

// Calls fn.template operator()<kDim>() with the tensor-core kernels' head-dim
// bound for these dims.
template <typename Fn>
void visit_tc_dim(const Dims& d, Fn&& fn) {
  if (std::max(d.e, d.ev) <= 64) {
    fn.template operator()<64>();
  } else {
    fn.template operator()<kTcMaxDim>();
  }
}

template <typename D>
void forward_tc(const Problem<D>& pr, const Dims& d, const Tensor& q, const Tensor& out,
                const Tensor& lse) {
  visit_tc_dim(d, [&]<int kDim>() {
    auto kernel = attention_forward_tc<D, kDim>;
    const size_t bytes = TcQuerySmem(nullptr, pr.e, pr.ev, false).bytes;
    allow_shared_memory(kernel, bytes, "attention", q, d);
    kernel<<<grid_of(d.n * d.h, d.lq, kTcRows, "attention"), kTcThreads, bytes, stream_of(q)>>>(
        pr, static_cast<D*>(out.data_ptr()), static_cast<float*>(lse.data_ptr()));
    REMAT_CUDA_LAUNCH_CHECK("attention_forward_tc");
  });
}

template <typename D>
void backward_tc(const Problem<D>& pr, const Dims& d, const Tensor& q, const Tensor& grad_out,
                 const Tensor& lse, const Tensor& delta, const Tensor& grad_q, const Tensor& grad_k,
                 const Tensor& grad_v) {
  const char* op = "attention_backward";
  const HeadRows<const D> dout = rows_of<const D>(grad_out);
  const auto* lse_p = static_cast<const float*>(lse.data_ptr());
  const auto* delta_p = static_cast<const float*>(delta.data_ptr());
  visit_tc_dim(d, [&]<int kDim>() {
    if (d.lk > 0) {
      auto kernel = attention_dkdv_tc<D, kDim>;
      const size_t bytes = TcKeySmem(nullptr, pr.e, pr.ev).bytes;
      allow_shared_memory(kernel, bytes, op, q, d);
      kernel<<<grid_of(d.n * d.h, d.lk, kTcRows, op), kTcThreads, bytes, stream_of(q)>>>(
          pr, dout, lse_p, delta_p, static_cast<D*>(grad_k.data_ptr()),
          static_cast<D*>(grad_v.data_ptr()));
      REMAT_CUDA_LAUNCH_CHECK("attention_dkdv_tc");
    }
    if (d.lq > 0) {
      auto kernel = attention_dq_tc<D, kDim>;
      const size_t bytes = TcQuerySmem(nullptr, pr.e, pr.ev, true).bytes;
      allow_shared_memory(kernel, bytes, op, q, d);
      kernel<<<grid_of(d.n * d.h, d.lq, kTcRows, op), kTcThreads, bytes, stream_of(q)>>>(
          pr, dout, lse_p, delta_p, static_cast<D*>(grad_q.data_ptr()));
      REMAT_CUDA_LAUNCH_CHECK("attention_dq_tc");
    }
  });
}

void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
             const AttentionParams& params, const Tensor& out, const Tensor& lse) {
  const char* op = "attention";
  const Dims d = check_inputs(op, q, k, v, mask);
  check_flat(op, "out", out, {d.n, d.h, d.lq, d.ev}, q.dtype(), q.device());
  check_flat(op, "lse", lse, {d.n, d.h, d.lq}, lse_dtype(q.dtype()), q.device());
  if (d.n * d.h * d.lq == 0) return;
  DeviceScope scope(q);
  visit_floating(q.dtype(), op, [&]<typename D>() {
    const Problem<D> pr = problem_of<D>(d, q, k, v, mask, params);
    if constexpr (kTensorCoreType<D>) {
      if (tensor_core_fits(d, {q, k, v})) return forward_tc(pr, d, q, out, lse);
    }
    forward_simt(pr, d, q, out, lse);
  });
}

void backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& mask, const Tensor& out, const Tensor& lse,
              const AttentionParams& params, const Tensor& grad_q, const Tensor& grad_k,
              const Tensor& grad_v) {
  const char* op = "attention_backward";
  const Dims d = check_inputs(op, q, k, v, mask);
  check_rows(op, "grad_out", grad_out, {d.n, d.h, d.lq, d.ev}, q);
  check_rows(op, "out", out, {d.n, d.h, d.lq, d.ev}, q);
  check_flat(op, "lse", lse, {d.n, d.h, d.lq}, lse_dtype(q.dtype()), q.device());
  check_flat(op, "grad_q", grad_q, q.shape(), q.dtype(), q.device());
  check_flat(op, "grad_k", grad_k, k.shape(), q.dtype(), q.device());
  check_flat(op, "grad_v", grad_v, v.shape(), q.dtype(), q.device());
  if (d.n * d.h == 0) return;
  DeviceScope scope(q);
  // D per query row, from the caching allocator (so it is counted) and
  // released to it on return, stream-ordered behind the kernels below.
  const Tensor delta = Tensor::empty({d.n, d.h, d.lq}, lse.dtype(), q.device());
  visit_floating(q.dtype(), op, [&]<typename D>() {
    using A = acc_t<D>;
    const Problem<D> pr = problem_of<D>(d, q, k, v, mask, params);
    const int64_t rows = d.n * d.h * d.lq;
    if (rows > 0) {
      attention_delta_kernel<D><<<blocks_for(rows * kWarp), kThreads, 0, stream_of(q)>>>(
          rows_of<const D>(grad_out), rows_of<const D>(out), static_cast<const A*>(lse.data_ptr()),
          static_cast<A*>(delta.data_ptr()), rows, d.h, d.lq, pr.ev);
      REMAT_CUDA_LAUNCH_CHECK("attention_delta_kernel");
    }
    if constexpr (kTensorCoreType<D>) {
      if (tensor_core_fits(d, {q, k, v, grad_out})) {
        return backward_tc(pr, d, q, grad_out, lse, delta, grad_q, grad_k, grad_v);
      }
    }
    backward_simt(pr, d, q, grad_out, lse, delta, grad_q, grad_k, grad_v);
  });
}

}  // namespace

const AttentionKernels attention_kernels{forward, backward};

}  // namespace remat::kernels::cuda
