// Float exp and normal CDF written so that the compiler vectorises them inside
// `#pragma omp simd` loops (libm's expf and erff are a call per element): no
// branches, only min/max and selects (the library builds with
// -fno-trapping-math, which lets GCC if-convert the selects), and always
// inlined, since a call per element is what they replace. They serve the float
// GELU; double keeps libm as the reference precision.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace remat::kernels::cpu {

// exp(x) within 2 ulp on [-87, 88] (Cephes' expf reduction and polynomial);
// the argument is clamped to that range, so far below it the result is about
// 1.6e-38 rather than 0.
[[gnu::always_inline]] inline float vec_exp(float input) {
  // In this argument order a NaN clamps to 88 (converting NaN to an integer
  // below is undefined); it is given back at the end.
  const float x = std::max(-87.0f, std::min(88.0f, input));
  const float v = x * 1.44269504088896341f + 0.5f;  // x / ln 2, rounded below by floor
  auto n = static_cast<int32_t>(v);
  n -= v < static_cast<float>(n);  // truncation to floor for negative v
  const auto nf = static_cast<float>(n);
  const float r = x - nf * 0.693359375f - nf * -2.12194440e-4f;  // ln 2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float result = p * std::bit_cast<float>((n + 127) << 23);
  // __builtin_isnan: GCC 12 if-converts neither `input == input` nor
  // std::isnan here for AVX2 (it does for SSE2), and the AVX2 clone of
  // every loop calling this stayed scalar.
  return __builtin_isnan(input) ? input : result;
}

// Phi(x), the standard normal CDF, as erfc(|x| / sqrt 2) / 2 for x < 0 and its
// complement otherwise, with erfc from the Chebyshev fit of Numerical Recipes'
// erfcc (fractional error below 1.2e-7). Relative error a few 1e-7 near 0,
// growing in the far tails as the float rounding of z^2 allows.
[[gnu::always_inline]] inline float vec_normal_cdf(float x) {
  const float z = std::abs(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float half_erfc = 0.5f * t * vec_exp(p - z * z);
  return x < 0 ? half_erfc : 1.0f - half_erfc;
}

}  // namespace remat::kernels::cpu
