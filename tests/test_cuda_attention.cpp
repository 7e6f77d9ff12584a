// The CUDA attention kernels (kernels/cuda/attention.cu), called through
// their table, against a float64 host reference that builds the whole score
// matrix with the contract's rules (bottom-right causal alignment, additive
// mask, dropout_keeps, lse before dropout). Each case runs in float64,
// float32, bfloat16 and float16: bfloat16/float16 with E and Ev multiples of
// 16 take the tensor-core kernels, everything else the SIMT ones. Without a
// device, or without CUDA compiled in, every test skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dropout.h"
#include "remat/remat.h"

namespace remat {
namespace {

const Device kGpu = Device::cuda(0);
constexpr double kInf = std::numeric_limits<double>::infinity();

const kernels::AttentionKernels* cuda_kernels() {
#if defined(REMAT_WITH_CUDA)
  return &kernels::cuda::attention_kernels;
#else
  return nullptr;
#endif
}

bool can_run() { return cuda_kernels() != nullptr && cuda_is_available(); }

// How q, k, v and grad_out lie in device memory.
enum class Layout {
  kContiguous,
  kTransposed,  // [N, L, H, E] in memory, viewed as [N, H, L, E]
  kPadded,      // rows of E + 1 elements, starting one element in: not 16-byte aligned
};
enum class MaskKind { kNone, kFull, kBroadcast /* [1, 1, Lq, Lk] expanded: stride 0 in N, H */ };

struct Case {
  std::string name;
  int64_t n, h, lq, lk, e, ev;
  bool causal = false;
  MaskKind mask = MaskKind::kNone;
  Layout layout = Layout::kContiguous;
  double dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
};

kernels::AttentionParams params_of(const Case& c) {
  kernels::AttentionParams p;
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.e));
  p.causal = c.causal;
  p.dropout_p = c.dropout_p;
  p.keep_scale = 1.0 / (1.0 - c.dropout_p);
  p.seed = c.seed;
  p.offset = c.offset;
  return p;
}

std::vector<double> random_values(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(count));
  for (double& x : v) x = dist(rng);
  return v;
}

// An operand's values rounded to the tested dtype (row-major [N, H, L, E],
// what the reference reads) and its tensor on the device.
struct Operand {
  std::vector<double> values;
  Tensor device;
};

Operand make_operand(const std::vector<double>& values, const Shape& shape, DType dtype,
                     Layout layout) {
  const Tensor host = from_vector(values, shape).to(dtype);
  const Tensor dense = host.to(kGpu);
  Operand op{host.to(kFloat64).to_vector<double>(), dense};
  if (layout == Layout::kTransposed) {
    op.device = dense.transpose(1, 2).contiguous().transpose(1, 2);
  } else if (layout == Layout::kPadded) {
    Shape wide = shape;
    wide.back() += 1;
    Tensor rows = zeros(wide, dtype, kGpu).slice(3, 1, shape.back() + 1);
    rows.copy_(dense);
    op.device = rows;
  }
  return op;
}

// The additive mask: uniform in [-1, 1) with -inf at a few positions (a row
// may lose all of its keys to it and to the causal rule).
std::vector<double> mask_values(int64_t planes, int64_t lq, int64_t lk) {
  std::vector<double> m = random_values(planes * lq * lk, 77);
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < lq; ++i) {
      for (int64_t j = 0; j < lk; ++j) {
        if ((i + 2 * j + p) % 7 == 0) m[static_cast<size_t>((p * lq + i) * lk + j)] = -kInf;
      }
    }
  }
  return m;
}

struct Inputs {
  Operand q, k, v, dout;
  Tensor mask;                    // undefined without one
  std::vector<double> mask_full;  // [N, H, Lq, Lk] values, empty without one
};

Inputs make_inputs(const Case& c, DType dtype) {
  Inputs in;
  in.q = make_operand(random_values(c.n * c.h * c.lq * c.e, 1), {c.n, c.h, c.lq, c.e}, dtype,
                      c.layout);
  in.k = make_operand(random_values(c.n * c.h * c.lk * c.e, 2), {c.n, c.h, c.lk, c.e}, dtype,
                      c.layout);
  in.v = make_operand(random_values(c.n * c.h * c.lk * c.ev, 3), {c.n, c.h, c.lk, c.ev}, dtype,
                      c.layout);
  in.dout = make_operand(random_values(c.n * c.h * c.lq * c.ev, 4), {c.n, c.h, c.lq, c.ev}, dtype,
                         c.layout);
  if (c.mask == MaskKind::kFull) {
    Operand m = make_operand(mask_values(c.n * c.h, c.lq, c.lk), {c.n, c.h, c.lq, c.lk}, dtype,
                             Layout::kContiguous);
    in.mask = m.device;
    in.mask_full = m.values;
  } else if (c.mask == MaskKind::kBroadcast) {
    Operand m =
        make_operand(mask_values(1, c.lq, c.lk), {1, 1, c.lq, c.lk}, dtype, Layout::kContiguous);
    in.mask = m.device.expand({c.n, c.h, c.lq, c.lk});
    for (int64_t p = 0; p < c.n * c.h; ++p) {
      in.mask_full.insert(in.mask_full.end(), m.values.begin(), m.values.end());
    }
  }
  return in;
}

struct Result {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive float64 attention over the full [Lq, Lk] score matrix, forward and
// backward. A row that sees no key (causal or masked) has NaN out, lse -inf,
// and no part in the gradients.
Result reference(const Case& c, const Inputs& in) {
  const kernels::AttentionParams prm = params_of(c);
  const int64_t lq = c.lq, lk = c.lk, e = c.e, ev = c.ev;
  Result r;
  r.out.assign(static_cast<size_t>(c.n * c.h * lq * ev), 0.0);
  r.lse.assign(static_cast<size_t>(c.n * c.h * lq), 0.0);
  r.dq.assign(in.q.values.size(), 0.0);
  r.dk.assign(in.k.values.size(), 0.0);
  r.dv.assign(in.v.values.size(), 0.0);
  std::vector<double> s(static_cast<size_t>(lk)), p(s.size()), dp(s.size());
  std::vector<char> keep(s.size());
  for (int64_t nh = 0; nh < c.n * c.h; ++nh) {
    const double* q = &in.q.values[static_cast<size_t>(nh * lq * e)];
    const double* k = &in.k.values[static_cast<size_t>(nh * lk * e)];
    const double* v = &in.v.values[static_cast<size_t>(nh * lk * ev)];
    const double* dout = &in.dout.values[static_cast<size_t>(nh * lq * ev)];
    double* dq = &r.dq[static_cast<size_t>(nh * lq * e)];
    double* dk = &r.dk[static_cast<size_t>(nh * lk * e)];
    double* dv = &r.dv[static_cast<size_t>(nh * lk * ev)];
    for (int64_t i = 0; i < lq; ++i) {
      const int64_t row = nh * lq + i;
      double* out = &r.out[static_cast<size_t>(row * ev)];
      double m = -kInf;
      for (int64_t j = 0; j < lk; ++j) {
        double sj = -kInf;
        if (!c.causal || j <= i + (lk - lq)) {
          double dot = 0;
          for (int64_t x = 0; x < e; ++x) dot += q[i * e + x] * k[j * e + x];
          sj = prm.scale * dot;
          if (!in.mask_full.empty()) sj += in.mask_full[static_cast<size_t>(row * lk + j)];
        }
        s[static_cast<size_t>(j)] = sj;
        m = std::max(m, sj);
      }
      if (m == -kInf) {
        r.lse[static_cast<size_t>(row)] = -kInf;
        std::fill(out, out + ev, std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < lk; ++j) sum += std::exp(s[static_cast<size_t>(j)] - m);
      r.lse[static_cast<size_t>(row)] = m + std::log(sum);
      double delta = 0;
      for (int64_t j = 0; j < lk; ++j) {
        const auto js = static_cast<size_t>(j);
        p[js] = std::exp(s[js] - m) / sum;
        keep[js] = kernels::dropout_keeps(prm.seed, prm.offset, static_cast<uint64_t>(row * lk + j),
                                          static_cast<float>(prm.dropout_p));
        const double pd = keep[js] ? p[js] * prm.keep_scale : 0.0;
        double dpd = 0;
        for (int64_t x = 0; x < ev; ++x) {
          out[x] += pd * v[j * ev + x];
          dpd += dout[i * ev + x] * v[j * ev + x];
        }
        dp[js] = keep[js] ? dpd * prm.keep_scale : 0.0;
        delta += p[js] * dp[js];
      }
      for (int64_t j = 0; j < lk; ++j) {
        const auto js = static_cast<size_t>(j);
        const double ds = p[js] * (dp[js] - delta) * prm.scale;
        const double pd = keep[js] ? p[js] * prm.keep_scale : 0.0;
        for (int64_t x = 0; x < e; ++x) {
          dq[i * e + x] += ds * k[j * e + x];
          dk[j * e + x] += ds * q[i * e + x];
        }
        for (int64_t x = 0; x < ev; ++x) dv[j * ev + x] += pd * dout[i * ev + x];
      }
    }
  }
  return r;
}

std::vector<double> to_host(const Tensor& t) { return t.to(kCPU).to(kFloat64).to_vector<double>(); }

// Every element within tol * (|want| + the largest finite |want|); NaN and
// infinities must match exactly.
void expect_close(const char* what, const std::vector<double>& got, const std::vector<double>& want,
                  double tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) {
    if (std::isfinite(w)) scale = std::max(scale, std::abs(w));
  }
  int bad = 0;
  double worst = 0;
  for (size_t x = 0; x < got.size(); ++x) {
    const double g = got[x], w = want[x];
    bool ok;
    if (std::isnan(w)) {
      ok = std::isnan(g);
    } else if (std::isinf(w)) {
      ok = g == w;
    } else {
      const double err = std::abs(g - w);
      worst = std::max(worst, err / (std::abs(w) + scale));
      ok = err <= tol * (std::abs(w) + scale);
    }
    if (!ok && ++bad <= 5) ADD_FAILURE() << what << "[" << x << "]: got " << g << ", want " << w;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                    << " elements off; worst relative error " << worst << " (tolerance " << tol
                    << ")";
}

double tolerance(DType dtype) {
  switch (dtype) {
    case kFloat64: return 1e-12;
    case kFloat32: return 1e-5;
    default: return 2e-2;
  }
}

DType lse_dtype(DType dtype) { return dtype == kFloat64 ? kFloat64 : kFloat32; }

struct Outputs {
  Tensor out, lse, dq, dk, dv;
};

Outputs forward(const Case& c, const Inputs& in, DType dtype) {
  Outputs o;
  o.out = Tensor::empty({c.n, c.h, c.lq, c.ev}, dtype, kGpu);
  o.lse = Tensor::empty({c.n, c.h, c.lq}, lse_dtype(dtype), kGpu);
  cuda_kernels()->forward(in.q.device, in.k.device, in.v.device, in.mask, params_of(c), o.out,
                          o.lse);
  return o;
}

void backward(const Case& c, const Inputs& in, DType dtype, Outputs& o) {
  o.dq = Tensor::empty(in.q.device.shape(), dtype, kGpu);
  o.dk = Tensor::empty(in.k.device.shape(), dtype, kGpu);
  o.dv = Tensor::empty(in.v.device.shape(), dtype, kGpu);
  cuda_kernels()->backward(in.dout.device, in.q.device, in.k.device, in.v.device, in.mask, o.out,
                           o.lse, params_of(c), o.dq, o.dk, o.dv);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      // E = 40: the SIMT kernels for every dtype; tiles cut at 37 and 45.
      {.name = "e40", .n = 2, .h = 2, .lq = 37, .lk = 45, .e = 40, .ev = 40},
      {.name = "e40_causal_lq_below_lk_masked",
       .n = 1,
       .h = 3,
       .lq = 21,
       .lk = 50,
       .e = 40,
       .ev = 24,
       .causal = true,
       .mask = MaskKind::kFull},
      // Lq > Lk: the first 37 queries see no key (NaN out, lse -inf).
      {.name = "e64_causal_lq_above_lk",
       .n = 2,
       .h = 1,
       .lq = 70,
       .lk = 33,
       .e = 64,
       .ev = 64,
       .causal = true},
      {.name = "e64_broadcast_mask_transposed",
       .n = 2,
       .h = 3,
       .lq = 67,
       .lk = 80,
       .e = 64,
       .ev = 64,
       .mask = MaskKind::kBroadcast,
       .layout = Layout::kTransposed},
      {.name = "e128_causal",
       .n = 1,
       .h = 2,
       .lq = 130,
       .lk = 130,
       .e = 128,
       .ev = 128,
       .causal = true},
      // Offsets 7 and 2: element 0 of the stream is not lane 0 of its Philox block.
      {.name = "e64_dropout_causal_masked",
       .n = 2,
       .h = 2,
       .lq = 50,
       .lk = 77,
       .e = 64,
       .ev = 64,
       .causal = true,
       .mask = MaskKind::kFull,
       .dropout_p = 0.3,
       .seed = 1234,
       .offset = 7},
      {.name = "e128_ev64_dropout_transposed",
       .n = 1,
       .h = 2,
       .lq = 40,
       .lk = 100,
       .e = 128,
       .ev = 64,
       .mask = MaskKind::kBroadcast,
       .layout = Layout::kTransposed,
       .dropout_p = 0.3,
       .seed = 99,
       .offset = 2},
      // 16-bit rows not 16-byte aligned: the SIMT fallback at E = 64.
      {.name = "e64_unaligned_rows_dropout",
       .n = 1,
       .h = 2,
       .lq = 33,
       .lk = 40,
       .e = 64,
       .ev = 64,
       .layout = Layout::kPadded,
       .dropout_p = 0.3,
       .seed = 5,
       .offset = 1},
      // Head dims up to 256 (the SIMT kernels' widest instantiation; float64
      // needs more than 48 KiB of shared memory there).
      {.name = "e200_ev136",
       .n = 1,
       .h = 1,
       .lq = 20,
       .lk = 35,
       .e = 200,
       .ev = 136,
       .causal = true},
  };
  return all;
}

struct Param {
  size_t which;
  DType dtype;
};

class CudaAttention : public ::testing::TestWithParam<Param> {};

TEST_P(CudaAttention, MatchesFloat64Reference) {
  if (!can_run()) GTEST_SKIP() << "no CUDA device";
  const Case& c = cases()[GetParam().which];
  const DType dtype = GetParam().dtype;
  const Inputs in = make_inputs(c, dtype);
  Outputs o = forward(c, in, dtype);
  backward(c, in, dtype, o);
  const Result want = reference(c, in);
  const double tol = tolerance(dtype);
  expect_close("out", to_host(o.out), want.out, tol);
  expect_close("lse", to_host(o.lse), want.lse, tol);
  expect_close("grad_q", to_host(o.dq), want.dq, tol);
  expect_close("grad_k", to_host(o.dk), want.dk, tol);
  expect_close("grad_v", to_host(o.dv), want.dv, tol);
}

std::vector<Param> all_params() {
  std::vector<Param> params;
  for (size_t which = 0; which < cases().size(); ++which) {
    for (DType dtype : {kFloat64, kFloat32, kBFloat16, kFloat16}) params.push_back({which, dtype});
  }
  return params;
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttention, ::testing::ValuesIn(all_params()),
                         [](const ::testing::TestParamInfo<Param>& test) {
                           return cases()[test.param.which].name + "_" +
                                  dtype_name(test.param.dtype);
                         });

// Two backward passes over the same inputs give bitwise identical gradients
// (no atomics): the tensor-core and the SIMT kernels, with dropout.
TEST(CudaAttentionDeterminism, BackwardRepeatsBitwise) {
  if (!can_run()) GTEST_SKIP() << "no CUDA device";
  for (DType dtype : {kBFloat16, kFloat32}) {
    const Case& c = cases()[5];  // e64_dropout_causal_masked
    SCOPED_TRACE(dtype_name(dtype));
    const Inputs in = make_inputs(c, dtype);
    Outputs first = forward(c, in, dtype);
    Outputs second = first;
    backward(c, in, dtype, first);
    backward(c, in, dtype, second);
    // Widening to float64 is exact, so equal doubles are equal bits.
    for (auto [a, b] : {std::pair{first.dq, second.dq}, std::pair{first.dk, second.dk},
                        std::pair{first.dv, second.dv}}) {
      const std::vector<double> x = to_host(a), y = to_host(b);
      ASSERT_EQ(x.size(), y.size());
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(double)), 0);
    }
  }
}

// Head dims past the SIMT kernels' 256 are refused with NotImplementedError.
TEST(CudaAttentionLimits, WideHeadsAreNotImplemented) {
  if (!can_run()) GTEST_SKIP() << "no CUDA device";
  const Case c{.name = "e264", .n = 1, .h = 1, .lq = 4, .lk = 4, .e = 264, .ev = 8};
  const Inputs in = make_inputs(c, kFloat32);
  EXPECT_THROW(forward(c, in, kFloat32), NotImplementedError);
}

}  // namespace
}  // namespace remat
