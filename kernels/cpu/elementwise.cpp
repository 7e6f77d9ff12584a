// Elementwise maps on the CPU (contract: kernels/elementwise.h; formulas:
// kernels/scalar_math.h): strided loops from kernels/cpu/loops.h, and whole
// rows cloned per ISA for the float GELU. bfloat16 and float16 compute in
// float element by element (compute_t), never through a float32 tensor.
#include "kernels/elementwise.h"

#include "kernels/cpu/clones.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/scalar_math.h"

namespace remat::kernels::cpu {
namespace {

constexpr size_t kUnaryOps = static_cast<size_t>(UnaryOp::Abs) + 1;
constexpr size_t kBinaryOps = static_cast<size_t>(BinaryOp::SigmoidBackward) + 1;

// GELU's normal CDF and density: vectorisable for float, libm for double.
struct CpuNormal {
  template <typename T>
  [[gnu::always_inline]] static T cdf(T x) {
    if constexpr (std::is_same_v<T, float>) {
      return vec_normal_cdf(x);
    } else {
      return StdNormal::cdf(x);
    }
  }
  template <typename T>
  [[gnu::always_inline]] static T pdf(T x) {
    if constexpr (std::is_same_v<T, float>) {
      return T(kInvSqrt2Pi) * vec_exp(T(-0.5) * x * x);
    } else {
      return StdNormal::pdf(x);
    }
  }
};

// Float GELU and its backward as whole rows, cloned per ISA: with their
// polynomial CDF they are the costliest pointwise ops of a transformer's MLP,
// and AVX2+FMA runs them 3.4x faster than baseline SSE2.
REMAT_CPU_CLONES void gelu_rows(float* out, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = apply_unary<UnaryOp::Gelu, CpuNormal>(x[i]);
}

REMAT_CPU_CLONES void gelu_backward_rows(float* out, const float* grad, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    out[i] = apply_binary<BinaryOp::GeluBackward, CpuNormal>(grad[i], x[i]);
  }
}

// Calls fn(std::integral_constant<Enum, op>{}): one loop per op, so each
// loop compiles one operation.
template <typename Enum, size_t kCount, typename Fn>
void specialise(Enum op, Fn&& fn) {
  [&]<size_t... I>(std::index_sequence<I...>) {
    ((op == static_cast<Enum>(I) ? (fn(std::integral_constant<Enum, static_cast<Enum>(I)>{}), 0)
                                 : 0),
     ...);
  }
  (std::make_index_sequence<kCount>{});
}

// Floating types compute every op, integers only those integer_op admits.
template <typename T, typename Op>
constexpr bool computes(Op op) {
  return std::is_floating_point_v<compute_t<T>> || integer_op(op);
}

// A float row kernel run over contiguous 16-bit rows: blocks converted to
// float on the stack, computed, rounded back (no float32 copy of the tensor).
template <typename T, typename FloatRows, typename... In>
void rows_in_float(FloatRows&& rows, T* out, int64_t n, const In*... in) {
  constexpr int64_t kBlock = 512;
  float out_block[kBlock];
  std::array<std::array<float, kBlock>, sizeof...(In)> in_blocks;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    [&]<size_t... K>(std::index_sequence<K...>) {
      const std::array<const T*, sizeof...(In)> sources{in...};
      for (size_t k = 0; k < sizeof...(In); ++k) {
        for (int64_t i = 0; i < len; ++i) in_blocks[k][i] = sources[k][start + i];
      }
      rows(out_block, in_blocks[K].data()..., len);
    }
    (std::index_sequence_for<In...>{});
    for (int64_t i = 0; i < len; ++i) out[start + i] = static_cast<T>(out_block[i]);
  }
}

// fn.template operator()<T>() for a 16-bit dtype; false for the others.
template <typename Fn>
bool with_reduced(DType t, Fn&& fn) {
  if (t == kBFloat16) return fn.template operator()<BFloat16>();
  if (t == kFloat16) return fn.template operator()<Float16>();
  return false;
}

// GELU and its backward on contiguous operands: the float rows, through
// float blocks for the 16-bit types. False, doing nothing, otherwise.
bool gelu_contiguous(const Tensor& out, const Tensor& x) {
  if (x.dtype() == kFloat32) return map_contiguous<float>(out, gelu_rows, operand<float>(x));
  return with_reduced(x.dtype(), [&]<typename T>() {
    return map_contiguous<T>(
        out, [](T* o, const T* v, int64_t n) { rows_in_float<T>(gelu_rows, o, n, v); },
        operand<T>(x));
  });
}

bool gelu_backward_contiguous(const Tensor& out, const Tensor& grad, const Tensor& x) {
  if (x.dtype() == kFloat32) {
    return map_contiguous<float>(out, gelu_backward_rows, operand<float>(grad), operand<float>(x));
  }
  return with_reduced(x.dtype(), [&]<typename T>() {
    return map_contiguous<T>(
        out,
        [](T* o, const T* g, const T* v, int64_t n) {
          rows_in_float<T>(gelu_backward_rows, o, n, g, v);
        },
        operand<T>(grad), operand<T>(x));
  });
}

// specialise for the binary ops T computes; refuses the others before any loop.
template <typename T, typename Fn>
void specialise_binary(BinaryOp op, Fn&& fn) {
  REMAT_CHECK(computes<T>(op), "elementwise op {} on integer tensors", static_cast<int>(op));
  specialise<BinaryOp, kBinaryOps>(op, [&](auto k) {
    if constexpr (computes<T>(decltype(k)::value)) fn(k);
  });
}

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  if (op == UnaryOp::Gelu && gelu_contiguous(out, x)) return;
  visit_arith_and_reduced(x.dtype(), "unary", [&]<typename T>() {
    using C = compute_t<T>;
    REMAT_CHECK(computes<T>(op), "unary op {} on {} tensor", static_cast<int>(op), x.dtype());
    specialise<UnaryOp, kUnaryOps>(op, [&](auto k) {
      constexpr UnaryOp kOp = decltype(k)::value;
      if constexpr (computes<T>(kOp)) {
        map_elements<T>(
            out,
            [](T& o, T v) { o = static_cast<T>(apply_unary<kOp, CpuNormal>(static_cast<C>(v))); },
            operand<T>(x));
      }
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  if (op == BinaryOp::GeluBackward && gelu_backward_contiguous(out, a, b)) return;
  visit_arith_and_reduced(a.dtype(), "binary", [&]<typename T>() {
    using C = compute_t<T>;
    specialise_binary<T>(op, [&](auto k) {
      map_elements<T>(
          out,
          [](T& o, T x, T y) {
            o = static_cast<T>(
                apply_binary<decltype(k)::value, CpuNormal>(static_cast<C>(x), static_cast<C>(y)));
          },
          operand<T>(a), operand<T>(b));
    });
  });
}

// The scalar is rounded to compute_t<T> first (float for the 16-bit types).
void binary_scalar(BinaryOp op, const Tensor& a, double scalar, const Tensor& out) {
  visit_arith_and_reduced(a.dtype(), "binary_scalar", [&]<typename T>() {
    using C = compute_t<T>;
    const C s = static_cast<C>(scalar);
    specialise_binary<T>(op, [&](auto k) {
      map_elements<T>(
          out,
          [s](T& o, T x) {
            o = static_cast<T>(apply_binary<decltype(k)::value, CpuNormal>(static_cast<C>(x), s));
          },
          operand<T>(a));
    });
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  visit_dtype(dst.dtype(), [&]<typename Dst>() {
    visit_dtype(src.dtype(), [&]<typename Src>() {
      map_elements<Dst>(
          dst, [](Dst& o, Src v) { o = convert<Dst>(v); }, operand<Src>(src));
    });
  });
}

void fill(const Tensor& out, double value) {
  visit_dtype(out.dtype(), [&]<typename T>() {
    const T v = fill_value<T>(value);
    map_elements<T>(out, [v](T& o) { o = v; });
  });
}

}  // namespace

// The CPU copies between CPU tensors only: copy serves.
const ElementwiseKernels elementwise_kernels{unary, binary, binary_scalar, copy, fill, nullptr};

}  // namespace remat::kernels::cpu
