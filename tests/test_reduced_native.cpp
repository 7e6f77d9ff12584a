// The CPU ops that compute bfloat16/float16 operands natively (their OpDef
// sets compute_reduced_in_float = false: each element converted to float as
// loaded, the result rounded once on store) give, bit for bit, what the
// widening path gives: the op on float32 copies of the operands, its 16-bit
// outputs rounded. Operands include broadcasts, strided views, rows longer
// than the kernels' float blocks, and values where rounding matters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "ops/attrs.h"
#include "ops/registry.h"
#include "remat/remat.h"

namespace remat {
namespace {

struct Case {
  std::string op;
  std::vector<Tensor> inputs;  // float32 values; the test rounds them to 16 bits
  ops::Attrs attrs;
};

Tensor values(const Shape& shape, double low, double high, uint64_t seed) {
  manual_seed(seed);
  return rand(shape) * (high - low) + low;
}

// Bits of a 16-bit tensor, so NaNs compare too.
std::vector<uint16_t> bits(const Tensor& t) {
  Tensor c = t.contiguous();
  std::vector<uint16_t> out(static_cast<size_t>(c.numel()));
  std::memcpy(out.data(), c.data_ptr(), out.size() * sizeof(uint16_t));
  return out;
}

std::vector<Case> cases() {
  const Tensor a = values({3, 1, 700}, -3, 3, 1), b = values({4, 700}, -3, 3, 2);
  const Tensor wide = values({6, 1100}, -4, 4, 3);  // rows longer than a float block (512)
  const Tensor t = values({40, 30}, -2, 2, 4).transpose(0, 1);  // strided
  const Tensor positive = values({5, 33}, 0.01, 9, 5);
  const Tensor g = values({6, 1100}, -1, 1, 6);
  const Tensor w = values({1100}, 0.5, 1.5, 7), bias = values({1100}, -0.5, 0.5, 8);
  std::vector<Case> all{
      {"add", {a, b}, {}},
      {"sub", {b, a}, {}},
      {"mul", {a, b}, {}},
      {"div", {a, positive.slice(1, 0, 1).expand({5, 700}).slice(0, 0, 4)}, {}},
      {"add", {t, t.transpose(0, 1).contiguous().transpose(0, 1)}, {}},
      {"add_scalar", {wide}, ops::ScalarAttrs{.scalar = 0.1}},
      {"mul_scalar", {t}, ops::ScalarAttrs{.scalar = 1.0 / 3.0}},
      {"pow_scalar", {positive}, ops::ScalarAttrs{.scalar = 1.5}},
      {"neg", {t}, {}},
      {"exp", {wide}, {}},
      {"log", {positive}, {}},
      {"sqrt", {positive}, {}},
      {"relu", {t}, {}},
      {"gelu", {wide}, {}},
      {"gelu", {t}, {}},
      {"gelu_tanh", {wide}, {}},
      {"tanh", {wide}, {}},
      {"sigmoid", {t}, {}},
      {"relu_backward", {g, wide}, {}},
      {"gelu_backward", {g, wide}, {}},
      {"gelu_backward", {t, t}, {}},
      {"gelu_tanh_backward", {g, wide}, {}},
      {"tanh_backward", {g, wide}, {}},
      {"sigmoid_backward", {g, wide}, {}},
      {"softmax", {wide}, ops::DimAttrs{.dim = 1}},
      {"softmax", {wide}, ops::DimAttrs{.dim = 0}},
      {"softmax", {values({2, 9, 12}, -3, 3, 9)}, ops::DimAttrs{.dim = 2, .causal = true}},
      {"log_softmax", {t}, ops::DimAttrs{.dim = 1}},
      {"softmax_backward", {g, softmax(wide, 1)}, ops::DimAttrs{.dim = 1}},
      {"log_softmax_backward", {g, log_softmax(wide, 0)}, ops::DimAttrs{.dim = 0}},
      {"sum", {wide}, ops::ReduceAttrs{.dims = {1}}},
      {"sum", {t}, ops::ReduceAttrs{}},
      {"mean", {a}, ops::ReduceAttrs{.dims = {0, 2}, .keepdim = true}},
      {"layer_norm", {wide, w, bias}, ops::LayerNormAttrs{}},
      {"layer_norm", {wide, Tensor(), Tensor()}, ops::LayerNormAttrs{.normalized_ndim = 1}},
  };
  // The backward of layer_norm, from its own forward's statistics.
  const std::vector<Tensor> forward =
      ops::run_forward(ops::op("layer_norm"), {wide, w, bias}, ops::LayerNormAttrs{});
  all.push_back({"layer_norm_backward",
                 {g, wide, w, forward[1], forward[2]},
                 ops::LayerNormBackwardAttrs{.normalized_ndim = 1}});
  return all;
}

TEST(ReducedNative, EveryOpGivesTheWidenedResultBitForBit) {
  for (DType reduced : {kBFloat16, kFloat16}) {
    for (const Case& c : cases()) {
      SCOPED_TRACE(fmt::format("{} {}", c.op, reduced));
      const ops::OpDef& def = ops::op(c.op);
      ASSERT_FALSE(def.compute_reduced_in_float) << "the op widens: nothing native to test";
      std::vector<Tensor> narrow, widened;
      for (const Tensor& x : c.inputs) {
        // Statistics stay float32, as the forward makes them.
        const bool stat = c.op == "layer_norm_backward" && narrow.size() >= 3;
        Tensor n = !x.defined() || stat ? x : x.to(reduced);
        narrow.push_back(n.defined() && x.dim() == 2 && !x.is_contiguous()
                             ? n.transpose(0, 1).contiguous().transpose(0, 1)  // keep the strides
                             : n);
        widened.push_back(n.defined() && is_reduced_float(n.dtype()) ? n.to(kFloat32) : n);
      }
      // Every output, layer_norm's statistics included.
      const std::vector<Tensor> got = ops::run_forward(def, narrow, c.attrs);
      const std::vector<Tensor> want = ops::run_forward(def, widened, c.attrs);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        SCOPED_TRACE(fmt::format("output {}", i));
        if (is_reduced_float(got[i].dtype())) {
          EXPECT_EQ(got[i].dtype(), reduced);
          EXPECT_EQ(bits(got[i]), bits(want[i].to(reduced)));
        } else {  // float32 statistics
          EXPECT_EQ(got[i].dtype(), want[i].dtype());
          EXPECT_EQ(got[i].to_vector<float>(), want[i].to_vector<float>());
        }
      }
    }
  }
}

// The in-place updates of one kernel (a.add_(b), a.mul_(s)) compute a 16-bit
// tensor in float with no float32 copy of it; alpha != 1 still goes through
// float32 so that alpha * b is not rounded to 16 bits.
TEST(ReducedNative, InPlaceUpdatesRoundOnce) {
  const Tensor x = values({300}, -2, 2, 11).to(kBFloat16),
               y = values({300}, -2, 2, 12).to(kBFloat16);
  Tensor a = x.clone();
  a.add_(y);
  EXPECT_EQ(bits(a), bits((x.to(kFloat32) + y.to(kFloat32)).to(kBFloat16)));
  Tensor c = x.clone();
  c.add_(y, 0.3);
  EXPECT_EQ(bits(c), bits((x.to(kFloat32) + y.to(kFloat32) * 0.3).to(kBFloat16)));
  memory::PeakWatch watch(kCPU);
  const int64_t before = memory::stats(kCPU).allocated_bytes.current;
  a.add_(y);
  a.mul_(0.5);
  EXPECT_EQ(watch.peak(), before) << "a one-kernel in-place update allocates nothing";
}

// bfloat16 matmul (oneDNN where built in, else float32 copies through BLAS)
// against a float64 product of the same bfloat16 values: each result is the
// float32-accumulated sum rounded once, so within bfloat16's rounding of the
// float64 value plus float32 accumulation error.
TEST(ReducedNative, Bfloat16MatmulMatchesTheFloat64Product) {
  struct Product {
    std::string label;
    Tensor a, b, bias;
  };
  const Tensor w = values({48, 40}, -1, 1, 21).to(kBFloat16);
  const std::vector<Product> products{
      {"plain", values({33, 40}, -1, 1, 22), values({40, 24}, -1, 1, 23), Tensor()},
      {"bias", values({7, 40}, -1, 1, 24), values({40, 48}, -1, 1, 25), values({48}, -1, 1, 26)},
      {"transposed weight (a Linear)", values({9, 40}, -1, 1, 27), w.transpose(0, 1),
       values({48}, -1, 1, 28)},
      {"transposed input", values({40, 17}, -1, 1, 29).transpose(0, 1), values({40, 5}, -1, 1, 30),
       Tensor()},
      {"batched, broadcast b", values({3, 2, 11, 40}, -1, 1, 31), values({40, 13}, -1, 1, 32),
       Tensor()},
      {"strided bias", values({6, 40}, -1, 1, 33), values({40, 12}, -1, 1, 34),
       values({24}, -1, 1, 35).slice(0, 0, 24, 2)},
      {"empty inner dim", values({4, 0}, -1, 1, 36), values({0, 3}, -1, 1, 37),
       values({3}, -1, 1, 38)},
  };
  for (const Product& p : products) {
    SCOPED_TRACE(p.label);
    auto narrow = [](const Tensor& t) { return t.defined() ? t.to(kBFloat16) : t; };
    auto wide = [](const Tensor& t) { return t.defined() ? t.to(kFloat64) : t; };
    const Tensor a = p.a.dtype() == kBFloat16 ? p.a : narrow(p.a);
    const Tensor b = p.b.dtype() == kBFloat16 ? p.b : narrow(p.b);
    const Tensor bias = narrow(p.bias);
    const Tensor got = matmul(a, b, bias);
    ASSERT_EQ(got.dtype(), kBFloat16);
    const Tensor want = matmul(wide(a), wide(b), wide(bias));
    ASSERT_EQ(got.shape(), want.shape());
    const std::vector<double> g = got.to_vector<double>(), e = want.to_vector<double>();
    for (size_t i = 0; i < g.size(); ++i) {
      // Half a bfloat16 ulp of the exact value, plus the float32 sum's error.
      EXPECT_NEAR(g[i], e[i], std::abs(e[i]) * 0x1p-8 + 1e-5) << i;
    }
  }
}

// Under a memory limit with no room left the product throws OutOfMemoryError
// (its output and oneDNN's scratch come from remat's allocator), and
// afterwards it works again.
TEST(ReducedNative, Bfloat16MatmulUnderAMemoryLimitThrowsAndRecovers) {
  const Tensor a = values({2048, 512}, -1, 1, 41).to(kBFloat16);
  const Tensor b = values({512, 2048}, -1, 1, 42).to(kBFloat16);
  const Tensor before = matmul(a, b);
  memory::empty_cache(kCPU);
  memory::set_memory_limit(kCPU, memory::stats(kCPU).reserved_bytes.current);
  EXPECT_THROW((void)matmul(a, b), OutOfMemoryError);
  memory::set_memory_limit(kCPU, 0);
  EXPECT_EQ(bits(matmul(a, b)), bits(before));
}

}  // namespace
}  // namespace remat
