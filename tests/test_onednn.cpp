// The CPU's oneDNN paths (kernels/cpu/onednn.h): float32 and bfloat16
// convolutions (forward, input and weight gradients) and bfloat16 matmul
// against float64 references on many shapes; run-to-run determinism; scratch
// and reordered copies counted by remat's allocator; recovery after an
// allocation fails anywhere inside a call. Without oneDNN built in the same
// checks run on the fallback paths (the tests that need oneDNN skip).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "kernels/cpu/onednn.h"
#include "remat/remat.h"

namespace remat {
namespace {

using kernels::cpu::last_onednn_call;
using kernels::cpu::onednn_built;

Tensor values(const Shape& shape, uint64_t seed) {
  manual_seed(seed);
  return rand(shape) * 2.0 - 1.0;
}

// |t| elementwise, in t's dtype (for the error bounds; not differentiated).
Tensor absolute(const Tensor& t) {
  std::vector<double> v = t.to_vector<double>();
  for (double& e : v) e = std::abs(e);
  return from_vector(v, t.shape()).to(t.dtype());
}

struct ConvCase {
  std::string label;
  Shape x, w;
  bool bias = false;
  std::vector<int64_t> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"3x3 pad 1", {2, 8, 10, 10}, {16, 8, 3, 3}, true, {1, 1}, {1, 1}},
      {"batch 1, odd sizes", {1, 3, 7, 9}, {5, 3, 3, 3}, false, {1, 1}, {1, 1}},
      {"stride 2 (resnet downsample)", {4, 16, 12, 12}, {32, 16, 3, 3}, false, {2, 2}, {1, 1}},
      {"1x1 stride 2 (shortcut)", {3, 16, 9, 9}, {24, 16, 1, 1}, false, {2, 2}, {0, 0}},
      {"1x1 pointwise", {2, 12, 5, 6}, {20, 12, 1, 1}, true},
      {"stride 3 over an odd size", {2, 4, 11, 13}, {6, 4, 3, 3}, false, {3, 3}, {1, 1}},
      {"asymmetric stride, padding, kernel", {2, 5, 9, 8}, {7, 5, 3, 2}, true, {2, 1}, {2, 0}},
      {"dilation 2", {2, 6, 12, 12}, {8, 6, 3, 3}, false, {1, 1}, {2, 2}, {2, 2}},
      {"dilation 2x3, stride 2", {1, 4, 15, 17}, {4, 4, 3, 3}, true, {2, 2}, {1, 3}, {2, 3}},
      {"groups 2", {2, 8, 8, 8}, {12, 4, 3, 3}, true, {1, 1}, {1, 1}, {1, 1}, 2},
      {"depthwise", {2, 16, 9, 9}, {16, 1, 3, 3}, false, {1, 1}, {1, 1}, {1, 1}, 16},
      {"depthwise x2, stride 2", {1, 6, 10, 10}, {12, 1, 5, 5}, false, {2, 2}, {2, 2}, {1, 1}, 6},
      {"groups 3, dilated", {2, 9, 14, 11}, {6, 3, 3, 3}, false, {2, 1}, {2, 1}, {2, 1}, 3},
      {"kernel the input's size", {3, 4, 5, 5}, {6, 4, 5, 5}, true},
      {"large padding", {1, 3, 4, 4}, {4, 3, 3, 3}, false, {1, 1}, {3, 3}},
      {"7x7 stem, stride 2", {2, 3, 20, 20}, {8, 3, 7, 7}, false, {2, 2}, {3, 3}},
  };
}

// y = conv2d(x, w, b) and, from grad_out gy, the gradients of x, w (and b).
struct ConvResult {
  Tensor y, gx, gw, gb;
};

ConvResult run_conv(const ConvCase& c, DType dtype, bool absolute = false) {
  auto input = [&](const Shape& shape, uint64_t seed) {
    Tensor t = values(shape, seed).to(kBFloat16);  // every dtype holds these values exactly
    if (absolute) t = remat::absolute(t);
    t = t.to(dtype);
    t.requires_grad_();
    return t;
  };
  Tensor x = input(c.x, 1), w = input(c.w, 2);
  Tensor b = c.bias ? input({c.w[0]}, 3) : Tensor();
  Tensor y = conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
  Tensor gy;
  {
    NoGradGuard no_grad;
    gy = values(y.shape(), 4).to(kBFloat16);
    if (absolute) gy = remat::absolute(gy);
    gy = gy.to(dtype);
  }
  backward(sum(y * gy));  // y's gradient is gy, exactly in every dtype
  return {y, x.grad(), w.grad(), c.bias ? b.grad() : Tensor()};
}

// Each element of got within tol_rel * |want| + tol_sum * bound, where bound
// is the same computation on absolute values (the sum of |terms| that
// bounds a float accumulation's error).
void expect_close(const Tensor& got, const Tensor& want, const Tensor& bound, double tol_rel,
                  double tol_sum, const char* what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> g = got.to_vector<double>(), e = want.to_vector<double>(),
                            a = bound.to_vector<double>();
  int bad = 0;
  for (size_t i = 0; i < g.size() && bad < 5; ++i) {
    const double tol = tol_rel * std::abs(e[i]) + tol_sum * a[i] + 1e-30;
    if (!(std::abs(g[i] - e[i]) <= tol)) {
      ADD_FAILURE() << what << " element " << i << ": got " << g[i] << ", want " << e[i]
                    << " (tolerance " << tol << ")";
      ++bad;
    }
  }
}

void expect_conv_matches_float64(DType dtype, double tol_rel, double tol_sum) {
  for (const ConvCase& c : conv_cases()) {
    SCOPED_TRACE(fmt::format("{} {}", c.label, dtype));
    const ConvResult got = run_conv(c, dtype), want = run_conv(c, kFloat64),
                     bound = run_conv(c, kFloat64, /*absolute=*/true);
    ASSERT_EQ(got.y.dtype(), dtype);
    ASSERT_EQ(got.gw.dtype(), dtype);
    expect_close(got.y, want.y, bound.y, tol_rel, tol_sum, "output");
    expect_close(got.gx, want.gx, bound.gx, tol_rel, tol_sum, "input gradient");
    expect_close(got.gw, want.gw, bound.gw, tol_rel, tol_sum, "weight gradient");
    if (c.bias) expect_close(got.gb, want.gb, bound.gb, tol_rel, tol_sum, "bias gradient");
  }
}

// float32: the operands are exact, so the only error is float32 accumulation,
// bounded by (terms) * 2^-24 * sum |terms|; the largest reductions here
// (weight gradients) have a few thousand terms, and the blocked sums of
// oneDNN and OpenBLAS stay far below that worst case: 2^-17 of the sum.
TEST(Onednn, Float32ConvMatchesFloat64) { expect_conv_matches_float64(kFloat32, 0, 0x1p-17); }

// bfloat16: float32 accumulation as above, then one rounding to bfloat16:
// half an ulp, 2^-8 of the value (bfloat16 keeps 8 significant bits).
TEST(Onednn, Bfloat16ConvMatchesFloat64) {
  expect_conv_matches_float64(kBFloat16, 0x1p-8, 0x1p-17);
}

std::vector<uint16_t> bits16(const Tensor& t) {
  std::vector<uint16_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.contiguous().data_ptr(), out.size() * sizeof(uint16_t));
  return out;
}

std::vector<uint32_t> bits32(const Tensor& t) {
  std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.contiguous().data_ptr(), out.size() * sizeof(uint32_t));
  return out;
}

// Weight gradients reduce over the batch and the image across threads: two
// identical runs must still agree bit for bit (checkpoint's replay promise).
TEST(Onednn, ConvGradientsAreBitwiseRepeatable) {
  const ConvCase c{"resnet block", {8, 32, 16, 16}, {32, 32, 3, 3}, true, {1, 1}, {1, 1}};
  for (DType dtype : {kFloat32, kBFloat16}) {
    SCOPED_TRACE(fmt::format("{}", dtype));
    const ConvResult first = run_conv(c, dtype);
    for (int run = 0; run < 3; ++run) {
      const ConvResult again = run_conv(c, dtype);
      if (dtype == kFloat32) {
        EXPECT_EQ(bits32(again.y), bits32(first.y));
        EXPECT_EQ(bits32(again.gx), bits32(first.gx));
        EXPECT_EQ(bits32(again.gw), bits32(first.gw));
      } else {
        EXPECT_EQ(bits16(again.y), bits16(first.y));
        EXPECT_EQ(bits16(again.gx), bits16(first.gx));
        EXPECT_EQ(bits16(again.gw), bits16(first.gw));
      }
    }
  }
}

bool cpu_has(const std::string& flag) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string word;
  while (cpuinfo >> word) {
    if (word == flag) return true;
  }
  return false;
}

// Which implementation serves: the JIT kernels, never a reference loop (the
// kernels take their own paths instead), bfloat16 where the CPU has
// AVX-512 BF16 and AMX for the products where it has AMX (unless
// ONEDNN_MAX_CPU_ISA holds oneDNN below them).
TEST(Onednn, ServesConvAndBfloat16Matmul) {
  if (!onednn_built()) GTEST_SKIP() << "built without oneDNN";
  const bool capped = std::getenv("ONEDNN_MAX_CPU_ISA") || std::getenv("DNNL_MAX_CPU_ISA");
  const bool bf16 = cpu_has("avx512_bf16") && !capped, amx = cpu_has("amx_bf16") && !capped;
  const ConvCase c{"3x3", {2, 16, 8, 8}, {16, 16, 3, 3}, false, {1, 1}, {1, 1}};
  NoGradGuard no_grad;
  for (DType dtype : {kFloat32, kBFloat16}) {
    (void)conv2d(values(c.x, 1).to(dtype), values(c.w, 2).to(dtype), Tensor(), c.stride, c.padding);
    const std::string impl = last_onednn_call().implementation;
    if (dtype == kFloat32 || bf16) {
      EXPECT_FALSE(impl.empty()) << fmt::format("{}", dtype);
    }
    EXPECT_EQ(impl.find("ref"), std::string::npos) << fmt::format("{}: {}", dtype, impl);
  }
  (void)matmul(values({64, 64}, 1).to(kBFloat16), values({64, 64}, 2).to(kBFloat16));
  const std::string impl = last_onednn_call().implementation;
  if (bf16) {
    EXPECT_FALSE(impl.empty());
  }
  EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
  if (amx) {
    EXPECT_NE(impl.find("amx"), std::string::npos) << impl;
  }
}

// float64 convolutions stay on im2col (the gradient checks' reference), as
// do float16 ones (oneDNN 2.6 has no float16 convolution on this CPU).
TEST(Onednn, Float64AndFloat16ConvKeepTheIm2colPath) {
  NoGradGuard no_grad;
  for (DType dtype : {kFloat64, kFloat16}) {
    (void)conv2d(values({1, 2, 5, 5}, 1).to(dtype), values({3, 2, 3, 3}, 2).to(dtype));
    EXPECT_EQ(last_onednn_call().implementation, "") << fmt::format("{}", dtype);
  }
}

// Scratch and reordered copies are blocks of remat's allocator: a pass's
// peak rises by at least its output, its scratch and its copies.
TEST(Onednn, ScratchAndReordersAreCountedByTheAllocator) {
  if (!onednn_built()) GTEST_SKIP() << "built without oneDNN";
  const Tensor x = values({8, 32, 16, 16}, 1), w = values({64, 32, 3, 3}, 2);
  {
    NoGradGuard no_grad;
    memory::PeakWatch watch(kCPU);
    const int64_t start = memory::stats(kCPU).allocated_bytes.current;
    const Tensor out = conv2d(x, w, Tensor(), {1, 1}, {1, 1});
    const kernels::cpu::OnednnCall call = last_onednn_call();
    ASSERT_FALSE(call.implementation.empty());
    EXPECT_GT(call.scratch_bytes + call.reorder_bytes, 0) << call.implementation;
    EXPECT_GE(watch.peak() - start, out.numel() * 4 + call.scratch_bytes + call.reorder_bytes);
  }
  // Only the weight needs a gradient: backward's one oneDNN pass is the
  // weight gradient's (a reduction across threads).
  Tensor wg = w.clone();
  wg.requires_grad_();
  const Tensor y = conv2d(x, wg, Tensor(), {1, 1}, {1, 1});
  const Tensor loss = sum(y * values(y.shape(), 3));
  memory::PeakWatch watch(kCPU);
  const int64_t start = memory::stats(kCPU).allocated_bytes.current;
  backward(loss);
  const kernels::cpu::OnednnCall call = last_onednn_call();
  ASSERT_FALSE(call.implementation.empty());
  EXPECT_GT(call.scratch_bytes + call.reorder_bytes, 0) << call.implementation;
  EXPECT_GE(watch.peak() - start, w.numel() * 4 + call.scratch_bytes + call.reorder_bytes);
}

// Every allocation of a convolution step (outputs, copies, scratch) failing
// in turn: each failure is an OutOfMemoryError, and afterwards the same step
// gives the same bits as before.
TEST(Onednn, RecoversFromAFailedAllocationAnywhereInAStep) {
  const ConvCase c{"3x3", {4, 16, 10, 10}, {32, 16, 3, 3}, true, {1, 1}, {1, 1}};
  for (DType dtype : {kFloat32, kBFloat16}) {
    SCOPED_TRACE(fmt::format("{}", dtype));
    const ConvResult want = run_conv(c, dtype);
    int failures = 0;
    for (int64_t k = 1; k < 200; ++k) {
      bool failed = false;
      try {
        memory::FailAllocationScope fail(kCPU, k);
        (void)run_conv(c, dtype);
      } catch (const OutOfMemoryError&) {
        failed = true;
      }
      if (!failed) break;
      ++failures;
    }
    EXPECT_GT(failures, 3);
    const ConvResult again = run_conv(c, dtype);
    EXPECT_EQ(again.gw.to_vector<double>(), want.gw.to_vector<double>());
    EXPECT_EQ(again.gx.to_vector<double>(), want.gx.to_vector<double>());
  }
}

// Under a hard memory limit with room for the output but not for the
// reordered copies the call throws OutOfMemoryError, and once the limit is
// lifted it works. Tensors over 10 MiB get segments of their own size, so
// the limit leaves no slack in a shared segment.
TEST(Onednn, ConvUnderAMemoryLimitThrowsAndRecovers) {
  if (!onednn_built()) GTEST_SKIP() << "built without oneDNN";
  NoGradGuard no_grad;
  const Tensor x = values({16, 64, 64, 64}, 1), w = values({64, 64, 3, 3}, 2);  // x: 16 MiB
  const Tensor before = conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  ASSERT_GT(last_onednn_call().reorder_bytes, x.numel() * 4) << "no copies to refuse";
  memory::empty_cache(kCPU);
  memory::set_memory_limit(kCPU, memory::stats(kCPU).reserved_bytes.current + (20 << 20));
  EXPECT_THROW((void)conv2d(x, w, Tensor(), {1, 1}, {1, 1}), OutOfMemoryError);
  memory::set_memory_limit(kCPU, 0);
  EXPECT_EQ(conv2d(x, w, Tensor(), {1, 1}, {1, 1}).to_vector<float>(), before.to_vector<float>());
}

// bfloat16 matmul in the forms a Linear runs (x @ W^T, dy @ W, dy^T @ x),
// batched and with a bias, against float64 products of the same values.
TEST(Onednn, Bfloat16MatmulMatchesFloat64) {
  struct Product {
    std::string label;
    Tensor a, b, bias;
  };
  const std::vector<Product> products{
      {"plain", values({33, 70}, 1), values({70, 24}, 2), Tensor()},
      {"x @ W^T + b", values({40, 96}, 3), values({48, 96}, 4).transpose(0, 1), values({48}, 5)},
      {"dy^T @ x", values({300, 20}, 6).transpose(0, 1), values({300, 12}, 7), Tensor()},
      {"batched", values({3, 17, 64}, 8), values({3, 64, 9}, 9), Tensor()},
      {"broadcast b", values({2, 5, 31}, 10), values({31, 8}, 11), values({8}, 12)},
      {"long inner dim", values({4, 4096}, 13), values({4096, 6}, 14), Tensor()},
      {"bias of stride 0", values({5, 16}, 15), values({16, 8}, 16), values({1}, 17).expand({8})},
  };
  for (const Product& p : products) {
    SCOPED_TRACE(p.label);
    auto narrow = [](const Tensor& t) { return t.defined() ? t.to(kBFloat16) : t; };
    auto wide = [](const Tensor& t, bool absolute) {
      return !t.defined() ? t : absolute ? remat::absolute(t.to(kFloat64)) : t.to(kFloat64);
    };
    const Tensor a = narrow(p.a), b = narrow(p.b), bias = narrow(p.bias);
    const Tensor got = matmul(a, b, bias);
    ASSERT_EQ(got.dtype(), kBFloat16);
    const Tensor want = matmul(wide(a, false), wide(b, false), wide(bias, false));
    const Tensor bound = matmul(wide(a, true), wide(b, true), wide(bias, true));
    expect_close(got, want, bound, 0x1p-8, 0x1p-17, "product");
  }
}

// bfloat16 attention's tile products (kernels/cpu/attention.cpp) run on
// oneDNN's JIT kernels (AMX where the CPU has it), edge tiles in both dims
// included: outputs and gradients near the float64 math path of the same
// values (P and dS are rounded to bfloat16 for their products, as
// FlashAttention does), and bitwise the same when run again.
TEST(Onednn, Bfloat16AttentionTilesMatchFloat64) {
  struct Case {
    std::string label;
    int64_t lq, lk, e;
    AttentionOptions options;
    bool projected = false;  // q, k, v strided views of one [2, L, 3 x 2 heads x E] projection
  };
  const std::vector<Case> cases{
      {"causal, edge tiles in both dims", 300, 300, 64, {.causal = true}},
      {"more keys than queries, dropout", 130, 600, 32, {.causal = true, .dropout_p = 0.2}},
      {"whole tiles, head dim 128", 128, 512, 128, {}},
      {"views of one projection, causal", 300, 300, 64, {.causal = true}, true},
  };
  const bool capped = std::getenv("ONEDNN_MAX_CPU_ISA") || std::getenv("DNNL_MAX_CPU_ISA");
  const bool bf16 = cpu_has("avx512_bf16") && !capped, amx = cpu_has("amx_bf16") && !capped;
  struct Run {
    Tensor out, gq, gk, gv;
    std::string implementation;
  };
  auto run = [](const Case& c, DType dtype, AttentionImpl impl) {
    auto input = [&](int64_t l, uint64_t seed) {
      return values({2, 2, l, c.e}, seed).to(kBFloat16).to(dtype).requires_grad_();
    };
    Tensor q, k, v, leaf;
    if (c.projected) {  // [2, L, 3, 2, E] -> three [2, 2, L, E] views, rows 6 E apart
      leaf = values({2, c.lq, 3, 2, c.e}, 1).to(kBFloat16).to(dtype).requires_grad_();
      auto part = [&](int64_t i) {
        return permute(reshape(slice(leaf, 2, i, i + 1), {2, c.lq, 2, c.e}), {0, 2, 1, 3});
      };
      q = part(0), k = part(1), v = part(2);
    } else {
      q = input(c.lq, 1), k = input(c.lk, 2), v = input(c.lk, 3);
    }
    AttentionOptions options = c.options;
    options.impl = impl;
    manual_seed(7);
    const Tensor out = scaled_dot_product_attention(q, k, v, options);
    const std::string implementation = last_onednn_call().implementation;
    backward(sum(out * values(out.shape(), 4).to(kBFloat16).to(dtype)));
    if (c.projected) return Run{out, leaf.grad(), leaf.grad(), leaf.grad(), implementation};
    return Run{out, q.grad(), k.grad(), v.grad(), implementation};
  };
  // |got - want| / max(1, |want|), the worst element.
  auto worst = [](const Tensor& got, const Tensor& want) {
    const std::vector<double> g = got.to(kFloat64).to_vector<double>(),
                              w = want.to_vector<double>();
    double largest = 0;
    for (size_t i = 0; i < g.size(); ++i)
      largest = std::max(largest, std::abs(g[i] - w[i]) / std::max(1.0, std::abs(w[i])));
    return largest;
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    const Run got = run(c, kBFloat16, AttentionImpl::Fused);
    const Run want = run(c, kFloat64, AttentionImpl::Math);
    if (onednn_built() && bf16) {
      EXPECT_FALSE(got.implementation.empty());
    }
    EXPECT_EQ(got.implementation.find("ref"), std::string::npos) << got.implementation;
    if (onednn_built() && amx) {
      EXPECT_NE(got.implementation.find("amx"), std::string::npos) << got.implementation;
    }
    // Measured: 2.5e-3 (output) and 5.4e-3 (gradients) at most, about the
    // float32 tiles' 1.9e-3 and 3.7e-3: bfloat16's rounding of the results.
    EXPECT_LE(worst(got.out, want.out), 6e-3);
    EXPECT_LE(worst(got.gq, want.gq), 1.5e-2);
    EXPECT_LE(worst(got.gk, want.gk), 1.5e-2);
    EXPECT_LE(worst(got.gv, want.gv), 1.5e-2);
    const Run again = run(c, kBFloat16, AttentionImpl::Fused);
    for (const auto& [a, b] : {std::pair{got.out, again.out},
                               {got.gq, again.gq},
                               {got.gk, again.gk},
                               {got.gv, again.gv}}) {
      EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
    }
  }
}

}  // namespace
}  // namespace remat
