// Strided iteration shared by the CPU kernels: N operands viewed over one
// shape (kernels/strided.h merges their dims first, so a contiguous operation
// becomes one flat loop); the outer rows (or chunks of a flat loop) run in
// parallel with OpenMP once the work pays for the threads.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "kernels/cpu/clones.h"
#include "kernels/strided.h"
#include "remat/core/tensor.h"

namespace remat::kernels::cpu {

inline constexpr int64_t kParallelGrain = 32768;  // elements per thread, at least

// fn(i) for every i in [0, n): split over the OpenMP threads when `parallel`.
// A single item (a tiny op's one row or chunk) is a plain call: entering even
// an if(false) region costs libgomp a futex wake-up, a system call per op.
// Other serial work keeps the region. Its wake-up also keeps the idle worker
// threads from falling asleep between GEMMs; measured on the 2-core dev
// container, a 16-block transformer step with every block checkpointed ran
// 1.25-1.3x slower when all serial work skipped the region.
template <typename Fn>
void parallel_for(int64_t n, bool parallel, Fn&& fn) {
  if (n == 1) {
    fn(0);
    return;
  }
#pragma omp parallel for if (parallel) schedule(static)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// Calls row(offsets, length, inner_strides) for runs of the innermost dim;
// offsets are element offsets of each operand at the start of the run.
template <size_t N, typename RowFn>
void for_each_row(const Shape& shape, const std::array<Strides, N>& strides, RowFn&& row) {
  StridedLayout<N> l = merge_dims<N>(shape, strides);
  const size_t nd = l.shape.size();
  const int64_t inner = l.shape.back();
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = l.strides[k].back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < nd; ++d) rows *= l.shape[d];
  if (rows * inner == 0) return;

  if (rows == 1) {  // one long run: split it into chunks
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(inner / kParallelGrain, 256));
    const int64_t chunk = (inner + chunks - 1) / chunks;
    parallel_for(chunks, chunks > 1, [&](int64_t c) {
      int64_t begin = c * chunk, len = std::min(chunk, inner - begin);
      if (len <= 0) return;
      std::array<int64_t, N> offsets;
      for (size_t k = 0; k < N; ++k) offsets[k] = begin * inner_strides[k];
      row(offsets, len, inner_strides);
    });
    return;
  }
  parallel_for(rows, rows * inner >= 2 * kParallelGrain, [&](int64_t r) {
    std::array<int64_t, N> offsets{};
    int64_t rem = r;
    for (size_t d = nd - 1; d-- > 0;) {
      int64_t idx = rem % l.shape[d];
      rem /= l.shape[d];
      for (size_t k = 0; k < N; ++k) offsets[k] += idx * l.strides[k][d];
    }
    row(offsets, inner, inner_strides);
  });
}

// fn(out[i], in[i]...) for i in [0, len), cloned per ISA: a bfloat16
// operand's widening and rounding, and the float math of most ops, then run
// 8 or 16 lanes wide (AVX2, AVX-512) instead of baseline SSE2's 4.
template <typename Out, typename Fn, typename... In>
REMAT_CPU_CLONES void map_dense(const Fn& fn, Out* out, int64_t len, const In*... in) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) fn(out[i], in[i]...);
}

// Elementwise map over typed operands: fn(out_ref, in_values...).
template <typename Out, typename... In, typename Fn>
void map_elements(const Tensor& out, Fn&& fn, const std::pair<const Tensor*, const In*>&... ins) {
  constexpr size_t N = 1 + sizeof...(In);
  std::array<Strides, N> strides{out.strides(), broadcast_strides(*ins.first, out.shape())...};
  Out* o = static_cast<Out*>(out.data_ptr());
  std::tuple<const In*...> bases{ins.second...};
  for_each_row<N>(
      out.shape(), strides,
      [&](const std::array<int64_t, N>& off, int64_t len, const std::array<int64_t, N>& st) {
        [&]<size_t... I>(std::index_sequence<I...>) {
          Out* op = o + off[0];
          std::tuple<const In*...> p{(std::get<I>(bases) + off[I + 1])...};
          if (((st[I + 1] == 1) && ...) && st[0] == 1) {
            map_dense(fn, op, len, std::get<I>(p)...);
          } else {
            for (int64_t i = 0; i < len; ++i) {
              fn(op[i * st[0]], std::get<I>(p)[i * st[I + 1]]...);
            }
          }
        }
        (std::index_sequence_for<In...>{});
      });
}

// Runs row(out, in..., n) over parallel chunks of operands that are all
// contiguous and of out's shape; returns false, doing nothing, for any other
// layout. For kernels written as whole rows (see REMAT_CPU_CLONES).
template <typename Out, typename... In, typename RowFn>
bool map_contiguous(const Tensor& out, RowFn&& row,
                    const std::pair<const Tensor*, const In*>&... ins) {
  if (!out.is_contiguous() ||
      ((!ins.first->is_contiguous() || ins.first->shape() != out.shape()) || ...)) {
    return false;
  }
  Out* o = static_cast<Out*>(out.data_ptr());
  for_each_row<1>(
      Shape{out.numel()}, {Strides{1}},
      [&](const std::array<int64_t, 1>& off, int64_t len, const std::array<int64_t, 1>&) {
        row(o + off[0], (ins.second + off[0])..., len);
      });
  return true;
}

template <typename T>
std::pair<const Tensor*, const T*> operand(const Tensor& t) {
  return {&t, static_cast<const T*>(t.data_ptr())};
}

}  // namespace remat::kernels::cpu
