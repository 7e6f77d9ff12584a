// The storage dtypes int8 and float8_e4m3 (conversions against ml_dtypes'
// float8_e4m3fn, through Tensor::to, rejected by arithmetic) and the block
// quantization kernels (kernels/quantize.h): error bounds, edge blocks,
// thread-count independence and argument checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "kernels/quantize.h"
#include "ops/quantize.h"
#include "remat/nn/state.h"
#include "remat/ops.h"
#include "support/float8_e4m3_reference.h"

namespace remat {
// For gtest's messages (found by argument-dependent lookup).
std::ostream& operator<<(std::ostream& os, DType d) { return os << dtype_name(d); }
}  // namespace remat

namespace remat::testing {
namespace {

uint32_t bits_of(float f) { return detail::float_bits(f); }
float float_of(uint32_t b) { return detail::bits_float(b); }

// ml_dtypes' code for x, from the generated table.
uint8_t reference_code(float x) {
  const uint32_t b = bits_of(x), abs = b & 0x7fffffffu;
  int code = 0x7f;
  if (abs <= 0x7f800000u) {
    code = static_cast<int>(std::upper_bound(std::begin(kFloat8E4M3FirstInput),
                                             std::end(kFloat8E4M3FirstInput), abs) -
                            std::begin(kFloat8E4M3FirstInput)) -
           1;
  }
  return static_cast<uint8_t>(code | ((b >> 24) & 0x80u));
}

// Edge floats (each code's boundaries, specials) and random ones, both signs.
std::vector<float> float8_inputs() {
  std::vector<uint32_t> bits;
  for (uint32_t first : kFloat8E4M3FirstInput) {
    for (int d = -3; d <= 3; ++d) bits.push_back(first + static_cast<uint32_t>(d));
  }
  for (float f : {0.0f, 448.0f, 464.0f, 480.0f, 1e30f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                  0x1p-9f, 0x1p-10f, 0x1.8p-10f, 0x1p-6f, 0x1.ep-7f}) {
    bits.push_back(bits_of(f));
    bits.push_back(bits_of(std::nextafter(f, 0.0f)));
    bits.push_back(bits_of(std::nextafter(f, 1e38f)));
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any;
  std::uniform_int_distribution<uint32_t> near(0x3a000000u, 0x44000000u);  // 2^-11 .. 512
  for (int i = 0; i < 150000; ++i) bits.push_back(any(rng));
  for (int i = 0; i < 150000; ++i) bits.push_back(near(rng));
  std::vector<float> out;
  for (uint32_t b : bits) {
    out.push_back(float_of(b & 0x7fffffffu));
    out.push_back(float_of(b | 0x80000000u));
  }
  return out;
}

TEST(Float8E4M3, EveryCodeDecodesAsMlDtypes) {
  for (int c = 0; c < 256; ++c) {
    EXPECT_EQ(bits_of(Float8E4M3::from_bits(static_cast<uint8_t>(c))), kFloat8E4M3Decoded[c])
        << "code " << c;
  }
}

TEST(Float8E4M3, EncodesAsMlDtypes) {
  for (float x : float8_inputs()) {
    ASSERT_EQ(Float8E4M3(x).bits, reference_code(x)) << std::hexfloat << x;
  }
  // The overflow rule: 464 ties down to 448, anything above is NaN.
  EXPECT_EQ(Float8E4M3(464.0f).bits, 0x7e);
  EXPECT_EQ(Float8E4M3(std::nextafter(464.0f, 1e38f)).bits, 0x7f);
  EXPECT_EQ(Float8E4M3(-std::numeric_limits<float>::infinity()).bits, 0xff);
  EXPECT_EQ(Float8E4M3(-0.0f).bits, 0x80);
}

TEST(Float8E4M3, TensorConversionMatchesTheScalarType) {
  const std::vector<float> x = float8_inputs();
  const auto n = static_cast<int64_t>(x.size());
  const Tensor codes = from_vector(x, {n}).to(kFloat8E4M3);
  ASSERT_EQ(codes.dtype(), kFloat8E4M3);
  ASSERT_EQ(codes.element_size(), 1u);
  const auto* c = static_cast<const uint8_t*>(codes.data_ptr());
  const std::vector<float> back = codes.to(kFloat32).to_vector<float>();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(c[i], reference_code(x[static_cast<size_t>(i)])) << i;
    ASSERT_EQ(bits_of(back[static_cast<size_t>(i)]), kFloat8E4M3Decoded[c[i]]) << i;
  }
  // float64 sources round through float32, as every narrow float's do.
  const Tensor from_double = from_vector(x, {n}).to(kFloat64).to(kFloat8E4M3);
  EXPECT_EQ(std::memcmp(from_double.data_ptr(), codes.data_ptr(), static_cast<size_t>(n)), 0);
}

TEST(Float8E4M3, EveryCodeRoundTripsThroughTheFloatDtypes) {
  std::vector<Float8E4M3> all;
  for (int c = 0; c < 256; ++c) all.push_back(Float8E4M3::from_bits(static_cast<uint8_t>(c)));
  const Tensor codes = from_vector(all, {256});
  for (DType d : {kFloat32, kFloat64, kBFloat16, kFloat16}) {
    const Tensor back = codes.to(d).to(kFloat8E4M3);
    EXPECT_EQ(std::memcmp(back.data_ptr(), codes.data_ptr(), 256), 0) << dtype_name(d);
  }
  EXPECT_EQ(full({3}, 1.3, kFloat8E4M3).to_vector<float>(), std::vector<float>(3, 1.25f));
  EXPECT_EQ(dtype_name(kFloat8E4M3), std::string("float8_e4m3"));
  EXPECT_FALSE(is_floating(kFloat8E4M3));
}

TEST(Int8, ConvertsToAndFromEveryDtype) {
  std::vector<int8_t> all;
  for (int v = -128; v < 128; ++v) all.push_back(static_cast<int8_t>(v));
  const Tensor x = from_vector(all, {256});
  EXPECT_EQ(x.element_size(), 1u);
  for (DType d : {kFloat32, kFloat64, kBFloat16, kFloat16, kInt64, kInt32}) {
    EXPECT_EQ(x.to(d).to(kInt8).to_vector<int8_t>(), all) << dtype_name(d);
  }
  EXPECT_EQ(from_vector(std::vector<float>{-3.7f, -0.5f, 0.9f, 127.0f}, {4})
                .to(kInt8)
                .to_vector<int8_t>(),
            (std::vector<int8_t>{-3, 0, 0, 127}));  // casts truncate, as C++'s do
  // Through float8, within int8's range (127 would round to 128, out of it).
  EXPECT_EQ(from_vector(std::vector<int8_t>{17, -17, 100}, {3})
                .to(kFloat8E4M3)
                .to(kInt8)
                .to_vector<int8_t>(),
            (std::vector<int8_t>{16, -16, 96}));
  EXPECT_EQ(x.to(kBool).to_vector<bool>()[128], false);
  EXPECT_EQ(full({2}, -5, kInt8).to_vector<int8_t>(), (std::vector<int8_t>{-5, -5}));
  EXPECT_EQ(dtype_name(kInt8), std::string("int8"));
  EXPECT_FALSE(is_floating(kInt8));
}

// safetensors codes I8 and F8_E4M3 (the format's names for these dtypes).
TEST(StorageDTypes, RoundTripThroughSafetensors) {
  const std::string path = ::testing::TempDir() + "remat_storage_dtypes.safetensors";
  const Tensor i8 = from_vector(std::vector<int8_t>{-128, -1, 0, 127}, {2, 2});
  const Tensor f8 = from_vector(std::vector<float>{-448, 0.5f, 1e-3f}, {3}).to(kFloat8E4M3);
  nn::save_safetensors({{"i8", i8}, {"f8", f8}}, path);
  std::ifstream file(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), {});
  EXPECT_NE(bytes.find("\"dtype\":\"I8\""), std::string::npos);
  EXPECT_NE(bytes.find("\"dtype\":\"F8_E4M3\""), std::string::npos);
  const nn::NamedTensors back = nn::load_safetensors(path);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].second.dtype(), kInt8);
  EXPECT_EQ(back[0].second.shape(), (Shape{2, 2}));
  EXPECT_EQ(back[0].second.to_vector<int8_t>(), i8.to_vector<int8_t>());
  EXPECT_EQ(back[1].second.dtype(), kFloat8E4M3);
  EXPECT_EQ(back[1].second.to(kFloat32).to_vector<float>(), f8.to(kFloat32).to_vector<float>());
  std::remove(path.c_str());
}

TEST(StorageDTypes, ArithmeticRejectsThem) {
  for (DType d : {kInt8, kFloat8E4M3}) {
    const Tensor x = full({4}, 1, d);
    try {
      (void)add(x, x);
      ADD_FAILURE() << "add on " << dtype_name(d) << " computed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(dtype_name(d)), std::string::npos) << e.what();
    }
    EXPECT_THROW((void)mul(x, 2.0), Error) << dtype_name(d);
    EXPECT_THROW((void)sum(x), Error) << dtype_name(d);
    EXPECT_THROW((void)relu(x), Error) << dtype_name(d);
  }
  // Storage only: a conversion to float8 does not carry gradients.
  const Tensor w = full({4}, 1.0).requires_grad_();
  EXPECT_FALSE(w.to(kFloat8E4M3).requires_grad());
}

// ---- block quantization ---------------------------------------------------------

// Normal values with a few large outliers, so blocks differ in scale.
std::vector<float> normal_with_outliers(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n));
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = normal(rng) * (i % 97 == 5 ? 300.0f : 1.0f) * (i % 1000 < 256 ? 1e-3f : 1.0f);
  }
  return x;
}

struct Quantized {
  Tensor codes, scales;
};

using kernels::QuantZeros;

Quantized quantize(const Tensor& src, DType format, QuantZeros zeros = QuantZeros::Rounded) {
  Quantized q{Tensor::empty(src.shape(), format, src.device()),
              Tensor::empty({ops::quant_scale_count(src.numel())}, kFloat32, src.device())};
  ops::quantize_blocks(src, q.codes, q.scales, zeros);
  return q;
}

Tensor dequantize(const Quantized& q, DType dst) {
  Tensor out = Tensor::empty(q.codes.shape(), dst, q.codes.device());
  ops::dequantize_blocks(q.codes, q.scales, out);
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), static_cast<size_t>(a.nbytes())) == 0;
}

// The documented bound of kernels/quantize.h for one element, with the
// float32 roundings of q = x / scale and of the product.
double error_bound(DType format, QuantZeros zeros, double x, double scale) {
  const double q = std::abs(x) / scale;
  const double roundings = 0x1p-22 * (std::abs(x) + scale);
  const double smallest = format == kInt8 ? 1 : 0x1p-9;  // the smallest nonzero code
  if (x != 0 && q < smallest / 2) {
    return (zeros == QuantZeros::Exact ? (smallest - q) * scale : std::abs(x)) + roundings;
  }
  if (format == kInt8) return scale / 2 + roundings;
  return (q >= 0x1p-6 ? 0x1p-4 * std::abs(x) : 0x1p-10 * scale) + roundings;
}

// Exact zeros: zeros stay zeros, nonzeros keep their sign (the rule ReLU's
// backward needs); rounded, values below half the smallest code become zero.
TEST(Quantize, ExactZerosKeepZerosAndTheSignOfEverythingElse) {
  const std::vector<float> x = {100.0f, 0.3f, -0.3f, 0.0f, -0.0f, 1e-30f, -1e-30f, 0.5f, 0.4f};
  const Tensor src = from_vector(x, {static_cast<int64_t>(x.size())});
  for (DType format : {kInt8, kFloat8E4M3}) {
    const std::vector<float> back =
        dequantize(quantize(src, format, QuantZeros::Exact), kFloat32).to_vector<float>();
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(back[i] == 0.0f, x[i] == 0.0f) << format << " " << x[i];
      if (x[i] != 0) {
        EXPECT_EQ(std::signbit(back[i]), std::signbit(x[i])) << format << " " << x[i];
      }
    }
  }
  // 0.3 / (100 / 127) = 0.381, 0.4 -> 0.508, 0.5 -> 0.635
  EXPECT_EQ(quantize(src, kInt8, QuantZeros::Exact).codes.to_vector<int8_t>(),
            (std::vector<int8_t>{127, 1, -1, 0, 0, 1, -1, 1, 1}));
  EXPECT_EQ(quantize(src, kInt8, QuantZeros::Rounded).codes.to_vector<int8_t>(),
            (std::vector<int8_t>{127, 0, 0, 0, 0, 0, 0, 1, 1}));
  // float8: 1e-30 is below half of 2^-9 * (100 / 448); 0.3 is not.
  const std::vector<float> rounded =
      dequantize(quantize(src, kFloat8E4M3, QuantZeros::Rounded), kFloat32).to_vector<float>();
  EXPECT_EQ(rounded[5], 0.0f);
  EXPECT_EQ(rounded[6], 0.0f);
  EXPECT_NE(rounded[1], 0.0f);
}

TEST(Quantize, ErrorWithinTheDocumentedBound) {
  for (int64_t n : {1, 255, 256, 257, 1000, 70000}) {
    const std::vector<float> x = normal_with_outliers(n, static_cast<uint32_t>(n));
    const Tensor src = from_vector(x, {n});
    for (const auto& [format, zeros] : {std::pair{kInt8, QuantZeros::Rounded},
                                        {kInt8, QuantZeros::Exact},
                                        {kFloat8E4M3, QuantZeros::Rounded},
                                        {kFloat8E4M3, QuantZeros::Exact}}) {
      const Quantized q = quantize(src, format, zeros);
      const std::vector<float> back = dequantize(q, kFloat32).to_vector<float>();
      const std::vector<float> scales = q.scales.to_vector<float>();
      double worst = 0;
      for (int64_t b = 0; b < ops::quant_scale_count(n); ++b) {
        float amax = 0;
        for (int64_t i = b * 256; i < std::min(n, (b + 1) * 256); ++i) {
          amax = std::max(amax, std::abs(x[static_cast<size_t>(i)]));
        }
        ASSERT_EQ(scales[static_cast<size_t>(b)], amax / (format == kInt8 ? 127.0f : 448.0f));
      }
      for (int64_t i = 0; i < n; ++i) {
        const auto k = static_cast<size_t>(i);
        const double scale = scales[k / 256];
        const double error = std::abs(static_cast<double>(x[k]) - back[k]);
        const double bound = error_bound(format, zeros, x[k], scale);
        ASSERT_LE(error, bound) << format << " n=" << n << " i=" << i << " x=" << x[k];
        worst = std::max(worst, error / bound);
      }
      // A lone element is its block's amax and comes back exactly.
      if (n >= 256) {
        EXPECT_GT(worst, 0.5) << format << ": the bound should be nearly reached";
      }
    }
  }
}

TEST(Quantize, EverySourceAndDestinationDtype) {
  const int64_t n = 600;
  const Tensor src32 = from_vector(normal_with_outliers(n, 3), {n});
  for (DType src_dtype : {kFloat32, kFloat64, kBFloat16, kFloat16}) {
    const Tensor src = src32.to(src_dtype);
    const std::vector<float> x = src.to_vector<float>();
    for (DType format : {kInt8, kFloat8E4M3}) {
      const Quantized q = quantize(src, format);
      // A float64 source quantizes as its float32 rounding does.
      EXPECT_TRUE(same_bytes(q.codes, quantize(src.to(kFloat32), format).codes));
      const std::vector<float> scales = q.scales.to_vector<float>();
      const std::vector<double> exact = dequantize(q, kFloat64).to_vector<double>();
      for (DType dst : {kFloat32, kBFloat16, kFloat16}) {
        const std::vector<double> got = dequantize(q, dst).to_vector<double>();
        for (size_t i = 0; i < got.size(); ++i) {
          // Rounded once: the nearest dst value to the exact product (ties even).
          const double e = exact[i];
          const double below = from_vector(std::vector<double>{e}, {1}).to(dst).item<double>();
          ASSERT_LE(std::abs(got[i] - e), std::abs(below - e)) << dtype_name(dst) << " " << i;
          ASSERT_LE(std::abs(e - x[i]),
                    error_bound(format, QuantZeros::Rounded, x[i], scales[i / 256]));
        }
      }
    }
  }
}

TEST(Quantize, RoundsOnceToNarrowDestinations) {
  // 3 * 0x1.0101p0 = 0x1.8183p1 is exact in double; through float32 and then
  // bfloat16 a double rounding would be possible, round-to-odd avoids it.
  const Tensor codes = from_vector(std::vector<int8_t>{127, -127, 3, 1}, {4});
  const Tensor scales = from_vector(std::vector<float>{0x1.00808p0f}, {1});
  Tensor dst = Tensor::empty({4}, kBFloat16);
  ops::dequantize_blocks(codes, scales, dst);
  for (size_t i = 0; i < 4; ++i) {
    const double exact = static_cast<double>(codes.to_vector<int8_t>()[i]) * 0x1.00808p0;
    const double got = dst.to_vector<double>()[i];
    const uint16_t b = dst.to_vector<BFloat16>()[i].bits;
    for (uint16_t other : {static_cast<uint16_t>(b - 1), static_cast<uint16_t>(b + 1)}) {
      const double alt = static_cast<float>(BFloat16::from_bits(other));
      EXPECT_TRUE(std::abs(got - exact) < std::abs(alt - exact) ||
                  (std::abs(got - exact) == std::abs(alt - exact) && (b & 1) == 0))
          << i;
    }
  }
}

TEST(Quantize, BFloat16CodesAreTensorTo) {
  const int64_t n = 1000;
  for (DType src_dtype : {kFloat32, kFloat64, kFloat16}) {
    const Tensor src = from_vector(normal_with_outliers(n, 9), {n}).to(src_dtype);
    Tensor codes = Tensor::empty({n}, kBFloat16);
    ops::quantize_blocks(src, codes, Tensor());
    EXPECT_TRUE(same_bytes(codes, src.to(kBFloat16))) << dtype_name(src_dtype);
    Tensor back = Tensor::empty({n}, kFloat32);
    ops::dequantize_blocks(codes, Tensor(), back);
    EXPECT_TRUE(same_bytes(back, codes.to(kFloat32)));
  }
}

TEST(Quantize, EdgeBlocks) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Block 0 all zeros (with a -0), block 1 a NaN, block 2 an infinity, block 3
  // tiny (scale underflows for float8), block 4 partial with one element.
  std::vector<float> x(4 * 256 + 1, 1.0f);
  std::fill(x.begin(), x.begin() + 256, 0.0f);
  x[3] = -0.0f;
  x[256 + 7] = nan;
  x[512 + 9] = -inf;
  std::fill(x.begin() + 768, x.begin() + 1024, 1e-44f);
  x[1024] = -2.5f;
  const Tensor src = from_vector(x, {static_cast<int64_t>(x.size())});
  for (DType format : {kInt8, kFloat8E4M3}) {
    const Quantized q = quantize(src, format);
    const std::vector<float> s = q.scales.to_vector<float>();
    const std::vector<float> back = dequantize(q, kFloat32).to_vector<float>();
    ASSERT_EQ(s.size(), 5u);
    EXPECT_EQ(s[0], 0.0f);
    EXPECT_TRUE(std::isnan(s[1]));
    EXPECT_EQ(s[2], inf);
    EXPECT_EQ(s[4], 2.5f / (format == kInt8 ? 127.0f : 448.0f));
    for (size_t i = 0; i < 256; ++i) EXPECT_EQ(back[i], 0.0f);
    for (size_t i = 256; i < 768; ++i)
      ASSERT_TRUE(std::isnan(back[i])) << dtype_name(format) << " " << i;
    for (size_t i = 768; i < 1024; ++i) ASSERT_LE(std::abs(back[i] - x[i]), 1e-44f);
    EXPECT_NEAR(back[1024], -2.5f, format == kInt8 ? 2.5 / 254 : 2.5 / 16);
  }
  for (DType format : {kInt8, kFloat8E4M3}) {  // n = 1: one block
    const Quantized q = quantize(full({1}, -3.0), format);
    EXPECT_EQ(dequantize(q, kFloat32).item<float>(), -3.0f);
  }
}

TEST(Quantize, ResultsDoNotDependOnTheThreadCount) {
  const int64_t n = 300000;
  const Tensor src = from_vector(normal_with_outliers(n, 11), {n});
  const int threads = omp_get_max_threads();
  for (DType format : {kInt8, kFloat8E4M3}) {
    omp_set_num_threads(1);
    const Quantized one = quantize(src, format);
    const Tensor one_back = dequantize(one, kFloat32);
    omp_set_num_threads(3);
    const Quantized three = quantize(src, format);
    const Tensor three_back = dequantize(three, kFloat32);
    omp_set_num_threads(threads);
    EXPECT_TRUE(same_bytes(one.codes, three.codes));
    EXPECT_TRUE(same_bytes(one.scales, three.scales));
    EXPECT_TRUE(same_bytes(one_back, three_back));
  }
}

TEST(Quantize, BadArgumentsThrow) {
  const Tensor src = full({300}, 1.0);
  const Tensor codes = Tensor::empty({300}, kInt8);
  const Tensor scales = Tensor::empty({2});
  EXPECT_NO_THROW(ops::quantize_blocks(src, codes, scales));
  auto throws = [](auto&& fn, const char* expect) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected " << expect;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  };
  throws([&] { ops::quantize_blocks(full({300}, 1, kInt32), codes, scales); }, "int32");
  throws([&] { ops::quantize_blocks(src.to(kFloat8E4M3), codes, scales); }, "quantize_blocks");
  throws([&] { ops::quantize_blocks(src, Tensor::empty({300}, kFloat16), scales); }, "codes");
  throws([&] { ops::quantize_blocks(src, codes, Tensor::empty({3})); }, "2 scales");
  throws([&] { ops::quantize_blocks(src, codes, Tensor::empty({2}, kFloat64)); }, "float32");
  throws([&] { ops::quantize_blocks(src, codes, Tensor()); }, "scales");
  throws([&] { ops::quantize_blocks(src, Tensor::empty({299}, kInt8), scales); }, "one size");
  throws([&] { ops::quantize_blocks(full({3, 100}, 1.0), codes.view({3, 100}), scales); }, "1-d");
  throws([&] { ops::quantize_blocks(full({600}, 1.0).as_strided({300}, {2}, 0), codes, scales); },
         "contiguous");
  throws([&] { ops::dequantize_blocks(codes, scales, Tensor::empty({300}, kInt32)); },
         "dequantize_blocks");
  throws([] { (void)ops::quant_scale_count(-1); }, "quant_scale_count");
  EXPECT_EQ(ops::quant_scale_count(0), 0);
  EXPECT_EQ(ops::quant_scale_count(256), 1);
  EXPECT_EQ(ops::quant_scale_count(257), 2);
}

}  // namespace
}  // namespace remat::testing
