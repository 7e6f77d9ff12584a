// One registry-driven CUDA test: every sample of the gradcheck tables (plus a
// few below that only the GPU needs) runs on the CPU in float64 and on CUDA in
// float64, float32, float32 with TF32 and bfloat16; outputs and the gradients
// of every differentiable op must match the CPU's. Without a device every
// test skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ops/registry.h"
#include "remat/core/math_mode.h"
#include "support/gradcheck.h"

namespace remat::testing {
namespace {

const Device kGpu = Device::cuda(0);

// Samples the GPU needs beyond the gradcheck tables: batch_norm's running
// statistics as operands (the tables capture CPU tensors for them, see
// kNotOnCuda) and the optimizer update, which has no gradient to check.
std::vector<OpSample> cuda_samples() {
  auto bn = [](bool training) {
    return [training](const std::vector<Tensor>& x) {
      return batch_norm(x[0], x[3], x[4], x[1], x[2], training);
    };
  };
  auto adam = [](bool decoupled) {
    return [decoupled](const std::vector<Tensor>& x) {
      Tensor param = x[0].clone(), exp_avg = x[2].clone(), exp_avg_sq = x[3].clone();
      ops::call(ops::op("adam_update"), {param, x[1], exp_avg, exp_avg_sq},
                ops::AdamUpdateAttrs{.lr = 1e-2,
                                     .beta1 = 0.9,
                                     .beta2 = 0.999,
                                     .eps = 1e-8,
                                     .weight_decay = 0.1,
                                     .decoupled_weight_decay = decoupled,
                                     .step = 3});
      return concat({param, exp_avg, exp_avg_sq}, 0);
    };
  };
  auto adam_inputs = [](uint64_t seed) {
    return std::vector<Tensor>{
        uniform({3, 4}, -1, 1, seed, false), uniform({3, 4}, -1, 1, seed + 1, false),
        uniform({3, 4}, -0.1, 0.1, seed + 2, false), uniform({3, 4}, 0.01, 0.1, seed + 3, false)};
  };
  auto sgd = [](bool first_step, bool nesterov) {
    return [first_step, nesterov](const std::vector<Tensor>& x) {
      Tensor param = x[0].clone(), buffer = x[2].clone();
      ops::call(ops::op("sgd_update"), {param, x[1], buffer},
                ops::SgdUpdateAttrs{.lr = 1e-2,
                                    .momentum = 0.9,
                                    .dampening = nesterov ? 0.0 : 0.2,
                                    .weight_decay = 0.1,
                                    .nesterov = nesterov,
                                    .first_step = first_step});
      return concat({param, buffer}, 0);
    };
  };
  return {
      {"sgd_update", "first_step", sgd(true, false), adam_inputs(521)},
      {"sgd_update", "momentum_dampening", sgd(false, false), adam_inputs(525)},
      {"sgd_update", "nesterov", sgd(false, true), adam_inputs(529)},
      {"batch_norm",
       "cuda_train_running_stats",
       bn(true),
       {uniform({4, 3, 2}, -1, 1, 501), uniform({3}, 0.5, 1.5, 502), uniform({3}, -0.5, 0.5, 503),
        uniform({3}, -0.5, 0.5, 504, false), uniform({3}, 0.5, 2, 505, false)}},
      {"batch_norm",
       "cuda_eval_4d",
       bn(false),
       {uniform({2, 3, 2, 2}, -1, 1, 506), uniform({3}, 0.5, 1.5, 507),
        uniform({3}, -0.5, 0.5, 508), uniform({3}, -0.5, 0.5, 509, false),
        uniform({3}, 0.5, 2, 510, false)}},
      {"adam_update", "adam", adam(false), adam_inputs(511)},
      {"adam_update", "adamw", adam(true), adam_inputs(515)},
  };
}

// Gradcheck samples whose function captures or creates CPU tensors, so they
// cannot run on another device; cuda_samples() covers what they test.
const std::set<std::pair<std::string, std::string>> kNotOnCuda = {
    {"batch_norm", "train_running_stats"},
    {"batch_norm", "eval_4d"},
    {"batch_norm", "eval_2d_no_affine"},
    {"batch_norm", "eval_bias_only"},
};

std::vector<OpSample> all_samples() {
  std::vector<OpSample> all = registry_samples();
  for (OpSample& s : cuda_samples()) all.push_back(std::move(s));
  return all;
}

bool runs_on_cuda(const OpSample& s) { return !kNotOnCuda.count({s.op, s.label}); }

// How a sample runs on the GPU, and how close it must come to the float64
// reference. An element passes when |got - ref| <= rtol * max(|ref|, floor)
// with floor = floor_fraction * max(1, max |ref|): relative, with an absolute
// floor for elements near zero: a small element that comes from the
// cancellation of large ones carries their rounding error. Where
// intermediates are rounded coarsely (bfloat16 results, TF32 operands) the
// floor is the tensor's largest magnitude. A dry run of this test with the CPU
// standing in for the GPU (float32 and bfloat16 computed by the CPU kernels)
// peaked at 4.7e-6 in float32 with a floor of 1e-2 of that magnitude, and in
// bfloat16 at 2.4e-2 with a floor of 1e-1 but 6e-3 with the whole.
struct Mode {
  const char* name;
  DType dtype;
  bool tf32;  // matmul and cuDNN convolutions may use TF32
  double rtol;
  double floor_fraction;
};

const Mode kModes[] = {
    {"float64", kFloat64, false, 1e-9, 1e-3},
    {"float32", kFloat32, false, 1e-5, 1e-1},
    {"tf32", kFloat32, true, 1e-3, 1},
    {"bfloat16", kBFloat16, false, 1e-2, 1},
};

// Sets both TF32 switches for its scope.
class Tf32Scope {
 public:
  explicit Tf32Scope(bool on) : matmul_(matmul_allow_tf32()), cudnn_(cudnn_allow_tf32()) {
    set_matmul_allow_tf32(on);
    set_cudnn_allow_tf32(on);
  }
  ~Tf32Scope() {
    set_matmul_allow_tf32(matmul_);
    set_cudnn_allow_tf32(cudnn_);
  }
  Tf32Scope(const Tf32Scope&) = delete;
  Tf32Scope& operator=(const Tf32Scope&) = delete;

 private:
  bool matmul_, cudnn_;
};

struct RunResult {
  std::vector<double> output;
  std::vector<std::vector<double>> grads;  // per input; empty for inputs without grad
};

// A fresh copy of a float64 sample input as the mode's dtype sees it (rounded
// through that dtype, back in float64), so the reference and the GPU start
// from the same numbers. Integer operands (targets, indices) are copied as is.
Tensor rounded(const Tensor& x, DType dtype) {
  Tensor out = x.detach();
  if (is_floating(out.dtype())) out = out.to(dtype).to(kFloat64);
  out = out.clone();
  if (x.requires_grad()) out.requires_grad_();
  return out;
}

// Runs the sample's function on `inputs` moved to (device, dtype), then the
// backward of sum(y * w) with w the gradcheck's fixed weights rounded through
// `rounding` (the mode's dtype, for the reference too), and returns the output
// and input gradients in float64.
RunResult run(const OpSample& s, const std::vector<Tensor>& inputs, Device device, DType dtype,
              DType rounding) {
  std::vector<Tensor> moved;
  bool differentiable = false;
  for (const Tensor& x : inputs) {
    Tensor m = x.detach();
    if (is_floating(m.dtype())) m = m.to(dtype);
    m = m.to(device).clone();  // ops that update operands in place must not touch `inputs`
    if (x.requires_grad()) {
      m.requires_grad_();
      differentiable = true;
    }
    moved.push_back(m);
  }
  Tensor y = s.fn(moved);
  RunResult r;
  r.output = y.to_vector<double>();
  if (!differentiable || !y.requires_grad()) return r;
  Tensor weights = uniform(y.shape(), -1, 1, 77, false).to(rounding).to(y.dtype()).to(y.device());
  backward(sum(y * weights));
  for (const Tensor& m : moved) {
    if (!m.requires_grad()) {
      r.grads.emplace_back();
    } else if (m.grad().defined()) {
      r.grads.push_back(m.grad().to_vector<double>());
    } else {
      r.grads.emplace_back(static_cast<size_t>(m.numel()), 0.0);  // no gradient reached it
    }
  }
  return r;
}

// Empty when every element passes; otherwise where the worst one is.
std::string compare(const std::vector<double>& got, const std::vector<double>& ref,
                    const Mode& mode, const std::string& what) {
  if (got.size() != ref.size()) {
    return fmt::format("{}: {} elements, the reference has {}", what, got.size(), ref.size());
  }
  double scale = 1;
  for (double v : ref) scale = std::max(scale, std::abs(v));
  const double floor = mode.floor_fraction * scale;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double err = std::abs(got[i] - ref[i]) / std::max(std::abs(ref[i]), floor);
    if (!(err <= worst)) {  // NaN is the worst
      worst = err;
      at = i;
      if (std::isnan(err)) break;
    }
  }
  if (worst <= mode.rtol) return {};
  return fmt::format("{} element {}: got {}, reference {} (relative error {:.3g} > {:.0e})", what,
                     at, got[at], ref[at], worst, mode.rtol);
}

// TF32 changes only matmul and convolution results (sdpa samples are matmuls).
bool uses_tf32(const OpSample& s) {
  return s.op == "matmul" || s.op == "conv2d" || s.label.find("sdpa") != std::string::npos;
}

// Checks one sample in one mode. Returns nullopt when the mode does not apply:
// the CPU itself cannot run the sample in the mode's dtype (a sample built for
// float64, or an op without that dtype), so the GPU is not asked either.
std::optional<std::vector<std::string>> check(const OpSample& s, const Mode& mode) {
  if (mode.tf32 && !uses_tf32(s)) return std::nullopt;
  std::vector<Tensor> inputs;
  for (const Tensor& x : s.inputs) inputs.push_back(rounded(x, mode.dtype));
  const RunResult ref = run(s, inputs, kCPU, kFloat64, mode.dtype);
  if (mode.dtype != kFloat64) {
    try {
      run(s, inputs, kCPU, mode.dtype, mode.dtype);
    } catch (const Error&) {
      return std::nullopt;
    }
  }
  std::vector<std::string> failures;
  RunResult got;
  try {
    Tf32Scope tf32(mode.tf32);
    got = run(s, inputs, kGpu, mode.dtype, mode.dtype);
  } catch (const Error& e) {
    failures.push_back(fmt::format("{}: {}", mode.name, e.what()));
    return failures;
  }
  auto add = [&](std::string failure) {
    if (!failure.empty()) failures.push_back(fmt::format("{}: {}", mode.name, failure));
  };
  add(compare(got.output, ref.output, mode, "output"));
  for (size_t k = 0; k < ref.grads.size() && k < got.grads.size(); ++k) {
    add(compare(got.grads[k], ref.grads[k], mode, fmt::format("gradient of input {}", k)));
  }
  return failures;
}

class CudaOp : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaOp, MatchesCpuFloat64) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  std::vector<OpSample> samples = all_samples();
  const OpSample& s = samples.at(GetParam());
  if (!runs_on_cuda(s)) GTEST_SKIP() << "captures CPU tensors; a cuda_samples() entry covers it";
  std::vector<std::string> checked;
  for (const Mode& mode : kModes) {
    std::optional<std::vector<std::string>> failures = check(s, mode);
    if (!failures) continue;
    checked.push_back(mode.name);
    for (const std::string& f : *failures) ADD_FAILURE() << s.op << " (" << s.label << "), " << f;
  }
  RecordProperty("modes", fmt::format("{}", fmt::join(checked, ",")));
}

INSTANTIATE_TEST_SUITE_P(Registry, CudaOp, ::testing::Range<size_t>(0, all_samples().size()),
                         [](const ::testing::TestParamInfo<size_t>& param_info) {
                           return sample_test_name(all_samples().at(param_info.param),
                                                   param_info.param);
                         });

// Every op in the registry is checked on CUDA: named by a sample that runs
// there, or an internal backward op ("<op>_backward...") reached through the
// gradients of such an op's samples.
TEST(CudaOps, EveryRegistryOpHasACudaCheckedSample) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  std::set<std::string> covered;
  for (const OpSample& s : all_samples()) {
    if (runs_on_cuda(s)) covered.insert(s.op);
  }
  auto reached = [&](const std::string& name) {
    if (covered.count(name)) return true;
    const size_t at = name.find("_backward");
    return at != std::string::npos && covered.count(name.substr(0, at));
  };
  std::vector<std::string> missing;
  for (const ops::OpDef* def : ops::Registry::instance().all()) {
    if (!reached(def->name)) missing.push_back(def->name);
  }
  EXPECT_TRUE(missing.empty()) << "ops without a CUDA-checked sample: "
                               << fmt::format("{}", fmt::join(missing, ", "));
}

// The skip list must name real samples, or it hides nothing and rots.
TEST(CudaOps, SamplesKeptOffCudaExist) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  std::set<std::pair<std::string, std::string>> present;
  for (const OpSample& s : all_samples()) present.insert({s.op, s.label});
  for (const auto& entry : kNotOnCuda) {
    EXPECT_TRUE(present.count(entry)) << entry.first << " (" << entry.second << ")";
  }
}

}  // namespace
}  // namespace remat::testing
