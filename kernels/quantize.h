// Block quantization kernels: compress a contiguous 1-d tensor to 8-bit (or
// bfloat16) codes with one float32 scale per block of kQuantBlock elements,
// and expand it back, which every backend implements (kernels/cpu/quantize.cpp,
// kernels/cuda/quantize.cu), declared once. The per-element rules below are
// shared by both backends, so their results are identical bit for bit; each
// block is computed on its own, so results do not depend on the thread count.
//
// Formats (the codes' dtype) and what quantize_blocks writes, per block with
// amax = max |x| over its elements (computed in float32):
//   int8:        scale = amax / 127, code = round-half-even(x / scale) clamped
//                to [-127, 127]
//   float8_e4m3: scale = amax / 448, code = Float8E4M3(x / scale) (x / scale
//                clamped to [-448, 448], which only binds for subnormal scales)
//   bfloat16:    code = BFloat16(x), no scales
// Zeros (QuantZeros): with Rounded, codes are the rounding above, so values
// below half the smallest code become 0. With Exact, in a finite block with a
// nonzero scale, a nonzero x whose code would be 0 gets the smallest code of
// x's sign instead (int8 +-1, float8 +-2^-9): zeros stay zeros and nothing
// else becomes one, which ReLU's backward (a mask of its saved output > 0)
// needs. Why not always Exact: it biases small values upwards. Measured:
//   ResNet stack, int8 gradient error: Rounded 10.9%, Exact 0.41% (ReLU)
//   examples' transformer, int8, 1500 steps: Exact (on attention's
//   probabilities, most of them below amax / 254) diverges, Rounded trains
//   as without compression (docs/checkpointing.md).
// Sources are float32, float64, bfloat16 or float16, taken as float32 (a
// float64 source is rounded to float32 first, as Tensor::to(kFloat32) does;
// beyond float32's range it becomes infinite). A block whose scale is 0 (all
// zeros, or amax so small that amax / 127 underflows) has codes 0. A block
// holding a NaN gets a NaN scale, one holding an infinity (and no NaN) a +inf
// scale; their codes are 0, so every element of such a block decodes to NaN:
// a non-finite input never comes back finite.
//
// dequantize_blocks writes code * scale (bfloat16: the code's value), the
// exact product rounded once to dst's dtype; NaN results are the dtype's
// canonical quiet NaN.
//
// Error bounds, x̂ the float32 result, x the float32 source value, per block:
//   int8:        |x - x̂| <= scale / 2 = amax / 254 where |x| >= scale / 2,
//                below: Rounded |x|, Exact < scale - |x| (the smallest code)
//   float8_e4m3: |x - x̂| <= 2^-4 |x| where |x / scale| >= 2^-6 (e4m3's normal
//                range), <= 2^-10 scale down to 2^-10 scale; below: Rounded
//                |x|, Exact < 2^-9 scale - |x| (the smallest code)
//   bfloat16:    |x - x̂| <= 2^-8 |x| (round to nearest, 8 significant bits)
// each plus a float32 rounding (2^-24 relative) of the scale and of the
// product; narrower dsts add their own rounding of the result. Blocks whose
// scale is subnormal (amax below about 2^-126 * 127) add at most 448 * 2^-149.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kernels/dtype_visit.h"
#include "remat/core/tensor.h"

namespace remat::kernels {

inline constexpr int64_t kQuantBlock = 256;

// Blocks (and scales) of n elements.
inline int64_t quant_block_count(int64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

// What becomes of nonzero values below half the smallest code (see above).
enum class QuantZeros : bool { Rounded, Exact };

struct QuantizeKernels {
  // src (n elements) to codes (n elements, the format's dtype) and scales
  // (float32, quant_block_count(n) elements; undefined for bfloat16 codes).
  // All contiguous, on one device; the op layer checks them.
  void (*quantize_blocks)(const Tensor& src, const Tensor& codes, const Tensor& scales,
                          QuantZeros zeros);
  // codes and scales as quantize_blocks writes them, to dst (n elements of
  // float32, float64, bfloat16 or float16).
  void (*dequantize_blocks)(const Tensor& codes, const Tensor& scales, const Tensor& dst);
};

namespace cpu {
extern const QuantizeKernels quantize_kernels;
}
namespace cuda {
extern const QuantizeKernels quantize_kernels;
}

// Calls fn.template operator()<Code>() with Code the C++ type of a format's
// codes; other dtypes throw naming `what` and the backend.
template <typename Fn>
void visit_quant_format(DType t, const char* backend, const char* what, Fn&& fn) {
  visit_cases<DTypeCase<kInt8, int8_t>, DTypeCase<kFloat8E4M3, Float8E4M3>,
              DTypeCase<kBFloat16, BFloat16>>(t, backend, what, fn);
}

// ---- per-element rules, shared by both backends ----------------------------------

namespace quant {

template <typename Code>
inline constexpr bool kScaled = !std::is_same_v<Code, BFloat16>;

// The largest code magnitude, which amax maps to.
template <typename Code>
inline constexpr float kCodeMax = std::is_same_v<Code, int8_t> ? 127.0f : 448.0f;

// One more element's |x| into a block's amax: a NaN wins, so it reaches the
// scale (std::max and fmax would drop it).
REMAT_SCALAR float amax_step(float amax, float x) {
  const float a = std::fabs(x);
  return a > amax || a != a ? a : amax;
}

// A block's scale; a NaN amax gives the canonical quiet NaN, so the scale does
// not depend on which NaN the reduction kept.
template <typename Code>
REMAT_SCALAR float scale_of(float amax) {
  if (amax != amax) return std::numeric_limits<float>::quiet_NaN();
  return amax / kCodeMax<Code>;
}

// x's code in a block of this scale (bfloat16: scale and zeros unused).
template <typename Code>
REMAT_SCALAR Code encode(float x, float scale, QuantZeros zeros) {
  if constexpr (!kScaled<Code>) {
    return Code(x);
  } else {
    // Zero, NaN and infinite scales: codes 0 (see the header comment).
    if (!(scale > 0.0f && scale <= std::numeric_limits<float>::max())) return Code(0.0f);
    const float q = std::fmin(std::fmax(x / scale, -kCodeMax<Code>), kCodeMax<Code>);
    // Exact: a nonzero x whose code would be zero gets the smallest code of
    // its sign, so a backward that reads the saved tensor's zeros (ReLU's
    // mask is its output > 0) sees the zeros the forward made, and no others.
    const bool keep_nonzero = zeros == QuantZeros::Exact && x != 0.0f;
    if constexpr (std::is_same_v<Code, int8_t>) {
      const float r = std::rint(q);
      return static_cast<int8_t>(r != 0.0f || !keep_nonzero ? r : (x > 0.0f ? 1.0f : -1.0f));
    } else {
      const Code c = Code(q);
      if ((c.bits & 0x7fu) != 0 || !keep_nonzero) return c;
      return Code::from_bits(static_cast<uint8_t>(c.bits | 0x01u));  // +-2^-9, sign kept
    }
  }
}

// p rounded to float by round-to-odd: exact values stay, the others go to the
// neighbour whose last bit is 1. Rounding that on to a format at least two
// bits narrower (bfloat16, float16) rounds p once, to nearest even.
REMAT_SCALAR float round_to_odd_float(double p) {
  const float f = static_cast<float>(p);
  if (static_cast<double>(f) == p) return f;
  uint32_t bits = detail::float_bits(f);
  if (std::fabs(static_cast<double>(f)) > std::fabs(p)) --bits;  // rounded away: truncate
  return detail::bits_float(bits | 1u);
}

// code * scale (bfloat16: the code's value), computed exactly in double
// (8 by 24 significant bits) and rounded once to Dst.
template <typename Dst, typename Code>
REMAT_SCALAR Dst decode(Code code, float scale) {
  const double p = kScaled<Code> ? static_cast<double>(static_cast<float>(code)) * scale
                                 : static_cast<double>(static_cast<float>(code));
  if (p != p) {
    if constexpr (std::is_arithmetic_v<Dst>) {
      return std::numeric_limits<Dst>::quiet_NaN();
    } else {
      return Dst(std::numeric_limits<float>::quiet_NaN());
    }
  }
  if constexpr (std::is_same_v<Dst, double>) {
    return p;
  } else if constexpr (std::is_same_v<Dst, float>) {
    return static_cast<float>(p);
  } else {
    return Dst(round_to_odd_float(p));
  }
}

}  // namespace quant

}  // namespace remat::kernels
