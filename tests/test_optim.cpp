// The optim layer: SGD, Adam and AdamW against their published update rules
// computed here with plain loops in double, their state and its lifetime,
// the learning-rate schedules, gradient clipping, a small regression each
// optimizer must solve, and the errors for bad hyperparameters.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>

#include "remat/remat.h"

namespace remat::optim {
namespace {

using Values = std::vector<double>;

// ---- references: the update rules as plain loops --------------------------------

// torch.optim.SGD's documented algorithm.
struct SgdReference {
  SGDOptions o;
  Values buffer;  // empty until the first step

  void step(Values& p, const Values& g) {
    const bool first = buffer.empty();
    buffer.resize(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      double d = g[i] + o.weight_decay * p[i];
      if (o.momentum != 0) {
        buffer[i] = first ? d : o.momentum * buffer[i] + (1 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * buffer[i] : buffer[i];
      }
      p[i] -= o.lr * d;
    }
  }
};

// Kingma & Ba's Adam with bias-corrected moments m_hat and v_hat; with
// `decoupled`, Loshchilov & Hutter's AdamW.
struct AdamReference {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;
  Values m, v;
  int t = 0;

  void step(Values& p, const Values& g) {
    ++t;
    m.resize(p.size(), 0.0);
    v.resize(p.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      double gi = g[i];
      if (decoupled) {
        p[i] -= lr * weight_decay * p[i];
      } else {
        gi += weight_decay * p[i];
      }
      m[i] = beta1 * m[i] + (1 - beta1) * gi;
      v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
      const double m_hat = m[i] / (1 - std::pow(beta1, t));
      const double v_hat = v[i] / (1 - std::pow(beta2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

// ---- helpers ----------------------------------------------------------------------

Tensor parameter(const Values& values, DType dtype = kFloat64) {
  Tensor p = from_vector(values, {static_cast<int64_t>(values.size())}).to(dtype);
  p.requires_grad_();
  return p;
}

void set_grad(const Tensor& p, const Values& g) {
  p.set_grad(from_vector(g, p.shape()).to(p.dtype()));
}

void expect_near_all(const Values& got, const Values& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

void expect_error_mentioning(const std::function<void()>& fn,
                             std::initializer_list<std::string> fragments) {
  std::string message = "(no error)";
  try {
    fn();
  } catch (const Error& e) {
    message = e.what();
  }
  for (const std::string& fragment : fragments) {
    EXPECT_NE(message.find(fragment), std::string::npos)
        << "message \"" << message << "\" lacks \"" << fragment << "\"";
  }
}

const Values kStart{1.0, -2.0, 0.5, 3.0};
const Values kGrad1{0.1, -0.3, 2.0, 0.0};
const Values kGrad2{-0.5, 0.2, 1.0, -4.0};

// Two steps of `optimizer` on `p` (starting at kStart) and of `reference` on
// plain values, with the gradients kGrad1 then kGrad2; compares after each.
template <typename Reference>
void expect_two_steps_match(Optimizer& optimizer, const Tensor& p, Reference reference,
                            double tol) {
  Values want = kStart;
  for (const Values* g : {&kGrad1, &kGrad2}) {
    set_grad(p, *g);
    optimizer.step();
    reference.step(want, *g);
    expect_near_all(p.to_vector<double>(), want, tol);
  }
}

// A parameter and gradient above the parallel threshold, of a length that
// does not divide evenly.
std::pair<Values, Values> large_start_and_grad() {
  const size_t n = 100003;
  Values start(n), grad(n);
  for (size_t i = 0; i < n; ++i) {
    start[i] = std::cos(0.001 * static_cast<double>(i));
    grad[i] = std::sin(0.01 * static_cast<double>(i));
  }
  return {start, grad};
}

// A 16-bit parameter is updated in float32 and rounded once on store, so one
// step from 16-bit values equals the float32 step rounded to the 16-bit type.
void expect_reduced_step_is_float32_step_rounded(
    const std::function<std::unique_ptr<Optimizer>(const Tensor&)>& make, double grad_scale = 1.0,
    const std::function<void(const Optimizer&, DType)>& check = {}) {
  for (DType reduced : {kBFloat16, kFloat16}) {
    SCOPED_TRACE(fmt::format("{}", reduced));
    Values start(300), grad(300);
    for (size_t i = 0; i < start.size(); ++i) {
      start[i] = std::cos(0.01 * static_cast<double>(i));
      grad[i] = std::sin(0.03 * static_cast<double>(i)) * grad_scale;
    }
    // Round the inputs to the 16-bit type first, so both runs start equal.
    start = from_vector(start, {300}).to(reduced).to_vector<double>();
    grad = from_vector(grad, {300}).to(reduced).to_vector<double>();
    Tensor p16 = parameter(start, reduced), p32 = parameter(start, kFloat32);
    set_grad(p16, grad);
    set_grad(p32, grad);
    const std::unique_ptr<Optimizer> opt16 = make(p16), opt32 = make(p32);
    opt16->step();
    opt32->step();
    EXPECT_EQ(p16.dtype(), reduced);
    EXPECT_EQ(p16.to_vector<double>(), p32.to(reduced).to_vector<double>());
    EXPECT_NE(p16.to_vector<double>(), start) << "the step must move the parameter";
    if (check) check(*opt16, reduced);
  }
}

// ---- SGD --------------------------------------------------------------------------

TEST(SGD, FirstTwoStepsFollowTheUpdateRule) {
  const std::vector<std::pair<std::string, SGDOptions>> cases{
      {"plain", {.lr = 0.1}},
      {"weight decay", {.lr = 0.1, .weight_decay = 0.01}},
      {"momentum", {.lr = 0.1, .momentum = 0.9}},
      {"momentum, dampening, weight decay",
       {.lr = 0.05, .momentum = 0.8, .dampening = 0.3, .weight_decay = 0.02}},
      {"nesterov", {.lr = 0.1, .momentum = 0.9, .nesterov = true}},
      {"nesterov, weight decay",
       {.lr = 0.1, .momentum = 0.5, .weight_decay = 0.1, .nesterov = true}},
  };
  for (const auto& [label, options] : cases) {
    SCOPED_TRACE(label);
    Tensor p = parameter(kStart);
    SGD sgd({p}, options);
    expect_two_steps_match(sgd, p, SgdReference{options}, 1e-14);
  }
}

TEST(SGD, MomentumBufferStartsAsTheGradientNotAFraction) {
  // With dampening the first buffer is still the raw gradient (PyTorch's rule).
  Tensor p = parameter({0.0});
  SGD sgd({p}, {.lr = 1.0, .momentum = 0.9, .dampening = 0.5});
  set_grad(p, {2.0});
  sgd.step();
  EXPECT_EQ(sgd.state(0).momentum_buffer.to_vector<double>(), Values{2.0});
  EXPECT_EQ(p.to_vector<double>(), Values{-2.0});
}

TEST(SGD, KeepsNoBufferWithoutMomentum) {
  Tensor p = parameter(kStart);
  SGD sgd({p}, {.lr = 0.1});
  set_grad(p, kGrad1);
  sgd.step();
  EXPECT_FALSE(sgd.state(0).momentum_buffer.defined());
  EXPECT_EQ(sgd.state(0).step, 1);
}

TEST(SGD, LargeParameterWithMomentumMatchesTheReference) {
  // Two steps, so the buffer's second rule runs.
  auto [start, grad] = large_start_and_grad();
  const SGDOptions options{.lr = 0.05, .momentum = 0.8, .dampening = 0.3, .weight_decay = 0.02};
  Tensor p = parameter(start);
  SGD sgd({p}, options);
  SgdReference reference{options};
  for (int step = 0; step < 2; ++step) {
    set_grad(p, grad);
    sgd.step();
    reference.step(start, grad);
  }
  expect_near_all(p.to_vector<double>(), start, 1e-14);
}

TEST(SGD, ReducedPrecisionStepIsTheFloat32StepRoundedOnce) {
  // Without a buffer: the parameter is the only value rounded.
  expect_reduced_step_is_float32_step_rounded([](const Tensor& p) {
    return std::make_unique<SGD>(std::vector{p}, SGDOptions{.lr = 0.01, .weight_decay = 0.1});
  });
}

TEST(SGD, StepUsesTheCurrentLearningRate) {
  Tensor p = parameter({1.0});
  SGD sgd({p}, {.lr = 0.1});
  sgd.set_lr(0.5);
  set_grad(p, {1.0});
  sgd.step();
  EXPECT_DOUBLE_EQ(p.item<double>(), 0.5);
}

// ---- Adam and AdamW -----------------------------------------------------------------

TEST(Adam, FirstTwoStepsFollowTheUpdateRule) {
  struct Case {
    std::string label;
    AdamOptions options;
    AdamReference reference;
  };
  const std::vector<Case> cases{
      {"defaults", {}, {}},
      {"betas, lr",
       {.lr = 0.01, .beta1 = 0.5, .beta2 = 0.9},
       {.lr = 0.01, .beta1 = 0.5, .beta2 = 0.9}},
      // A large eps shows where it enters: added to sqrt(v_hat).
      {"large eps", {.lr = 0.1, .eps = 0.5}, {.lr = 0.1, .eps = 0.5}},
      {"L2 weight decay", {.lr = 0.1, .weight_decay = 0.3}, {.lr = 0.1, .weight_decay = 0.3}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    Tensor p = parameter(kStart);
    Adam adam({p}, c.options);
    expect_two_steps_match(adam, p, c.reference, 1e-14);
  }
}

TEST(AdamW, FirstTwoStepsFollowTheUpdateRule) {
  struct Case {
    std::string label;
    AdamOptions options;
    AdamReference reference;
  };
  const std::vector<Case> cases{
      {"default weight decay is 1e-2", {.lr = 0.1}, {.lr = 0.1, .weight_decay = 1e-2}},
      {"weight decay", {.lr = 0.1, .weight_decay = 0.5}, {.lr = 0.1, .weight_decay = 0.5}},
      {"no weight decay", {.lr = 0.1, .weight_decay = 0.0}, {.lr = 0.1}},
  };
  for (Case c : cases) {
    SCOPED_TRACE(c.label);
    c.reference.decoupled = true;
    Tensor p = parameter(kStart);
    AdamW adamw({p}, c.options);
    expect_two_steps_match(adamw, p, c.reference, 1e-14);
  }
}

// One step from kStart with kGrad1; returns the parameter.
Values one_step(const std::function<std::unique_ptr<Optimizer>(Tensor)>& make,
                const Values& grad = kGrad1) {
  Tensor p = parameter(kStart);
  std::unique_ptr<Optimizer> optimizer = make(p);
  set_grad(p, grad);
  optimizer->step();
  return p.to_vector<double>();
}

TEST(AdamW, DiffersFromAdamExactlyAsTheFormulasSay) {
  const double lr = 0.1, wd = 0.2;
  auto adam = [&](double weight_decay) {
    return [=](Tensor p) {
      return std::make_unique<Adam>(std::vector{p},
                                    AdamOptions{.lr = lr, .weight_decay = weight_decay});
    };
  };
  const Values plain = one_step(adam(0));
  // AdamW shrinks p by lr * wd * p and leaves the moments alone.
  const Values decoupled = one_step([&](Tensor p) {
    return std::make_unique<AdamW>(std::vector{p}, AdamOptions{.lr = lr, .weight_decay = wd});
  });
  for (size_t i = 0; i < kStart.size(); ++i) {
    EXPECT_NEAR(decoupled[i] - plain[i], -lr * wd * kStart[i], 1e-15) << "element " << i;
  }
  // Adam's L2 term is a gradient of g + wd * p.
  Values l2_grad = kGrad1;
  for (size_t i = 0; i < l2_grad.size(); ++i) l2_grad[i] += wd * kStart[i];
  expect_near_all(one_step(adam(wd)), one_step(adam(0), l2_grad), 1e-15);
  EXPECT_GT(std::abs(one_step(adam(wd))[0] - decoupled[0]), 1e-3);
}

TEST(Adam, Float32MatchesTheReferenceToFloatPrecision) {
  Tensor p = parameter(kStart, kFloat32);
  AdamW adamw({p}, {.lr = 0.1, .weight_decay = 0.1});
  AdamReference reference{.lr = 0.1, .weight_decay = 0.1, .decoupled = true};
  expect_two_steps_match(adamw, p, reference, 1e-6);
  EXPECT_EQ(adamw.state(0).exp_avg.dtype(), kFloat32);
}

TEST(Adam, UpdatesAStridedParameterThroughItsView) {
  Values start(12);
  for (size_t i = 0; i < start.size(); ++i) start[i] = 0.25 * static_cast<double>(i) - 1.0;
  Tensor base = from_vector(start, {3, 4});
  Tensor p = base.transpose(0, 1);  // [4, 3], strides {1, 4}
  p.requires_grad_();
  Values grad(12);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = std::sin(static_cast<double>(i));
  p.set_grad(from_vector(grad, {4, 3}));

  Values want = p.to_vector<double>();
  AdamReference reference{.lr = 0.1, .weight_decay = 0.05};
  reference.step(want, grad);
  Adam adam({p}, {.lr = 0.1, .weight_decay = 0.05});
  adam.step();
  expect_near_all(p.to_vector<double>(), want, 1e-14);
}

TEST(Adam, LargeParameterMatchesTheReference) {
  auto [start, grad] = large_start_and_grad();
  Tensor p = parameter(start);
  set_grad(p, grad);
  Adam adam({p}, {.lr = 0.01, .weight_decay = 0.1});
  adam.step();
  AdamReference reference{.lr = 0.01, .weight_decay = 0.1};
  reference.step(start, grad);
  expect_near_all(p.to_vector<double>(), start, 1e-14);
}

TEST(AdamW, ReducedPrecisionStepIsTheFloat32StepRoundedOnce) {
  expect_reduced_step_is_float32_step_rounded(
      [](const Tensor& p) {
        return std::make_unique<AdamW>(std::vector{p}, AdamOptions{.lr = 0.05});
      },
      1e-2,
      [](const Optimizer& opt, DType reduced) {
        EXPECT_EQ(opt.state(0).exp_avg.dtype(), reduced);  // the state keeps the dtype
      });
}

// ---- state, skipping, versions, zero_grad ----------------------------------------

TEST(Optimizer, StateIsAllocatedLazilyLikeTheParameterAndAccounted) {
  Tensor p = parameter(Values(256, 1.0), kFloat32);
  set_grad(p, Values(256, 0.5));
  Adam adam({p});
  EXPECT_FALSE(adam.state(0).exp_avg.defined());
  EXPECT_EQ(adam.state(0).step, 0);

  const int64_t before = memory::stats(kCPU).requested_bytes.current;
  adam.step();
  EXPECT_EQ(memory::stats(kCPU).requested_bytes.current - before, 2 * p.nbytes());
  for (const Tensor& s : {adam.state(0).exp_avg, adam.state(0).exp_avg_sq}) {
    ASSERT_TRUE(s.defined());
    EXPECT_EQ(s.shape(), p.shape());
    EXPECT_EQ(s.dtype(), p.dtype());
    EXPECT_EQ(s.device(), p.device());
    EXPECT_FALSE(s.is_alias_of(p));
  }
  adam.step();
  EXPECT_EQ(adam.state(0).step, 2);
}

TEST(Optimizer, SkipsParametersWithoutGradientsAndCountsStepsPerParameter) {
  Tensor a = parameter(kStart), b = parameter(kStart);
  Adam adam({a, b}, {.lr = 0.1});
  set_grad(a, kGrad1);
  adam.step();
  EXPECT_EQ(b.to_vector<double>(), kStart);
  EXPECT_EQ(adam.state(1).step, 0);
  EXPECT_FALSE(adam.state(1).exp_avg.defined());

  // b's first update is a first step (bias correction at t = 1) while a takes its second.
  set_grad(b, kGrad1);
  adam.step();
  EXPECT_EQ(adam.state(0).step, 2);
  EXPECT_EQ(adam.state(1).step, 1);
  Values want = kStart;
  AdamReference{.lr = 0.1}.step(want, kGrad1);
  expect_near_all(b.to_vector<double>(), want, 1e-14);
}

TEST(Optimizer, StepBumpsVersionsSoStaleSavedTensorsAreRefused) {
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "Adam" : "SGD");
    Tensor w = parameter({1.0, 2.0});
    std::unique_ptr<Optimizer> optimizer;
    if (adam) {
      optimizer = std::make_unique<Adam>(std::vector{w});
    } else {
      optimizer = std::make_unique<SGD>(std::vector{w});
    }
    Tensor x = from_vector(Values{3.0, 4.0}, {2});
    Tensor loss = sum(x * w);  // mul saves w
    set_grad(w, {1.0, 1.0});
    const uint32_t version = w.version();
    optimizer->step();
    EXPECT_GT(w.version(), version);
    EXPECT_THROW(loss.backward(), Error);
  }
}

TEST(Optimizer, ZeroGradDropsTheGradientsByDefault) {
  Tensor a = parameter(kStart), b = parameter(kStart);
  set_grad(a, kGrad1);
  SGD sgd({a, b});
  sgd.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(Optimizer, ZeroGradWithoutSetToNoneZeroesInPlaceAndKeepsTheBuffers) {
  Tensor a = parameter(kStart), b = parameter(kStart);
  set_grad(a, kGrad1);
  void* buffer = a.grad().data_ptr();
  SGD sgd({a, b});
  sgd.zero_grad(/*set_to_none=*/false);
  EXPECT_EQ(a.grad().data_ptr(), buffer);
  EXPECT_EQ(a.grad().to_vector<double>(), Values(kStart.size(), 0.0));
  EXPECT_FALSE(b.grad().defined());
}

// ---- schedules ----------------------------------------------------------------------

// The optimizer's rate after `steps` scheduler steps, for each entry.
template <typename Scheduler, typename... Args>
std::vector<double> rates_at(double base_lr, const std::vector<int64_t>& steps, Args... args) {
  Tensor p = parameter({0.0});
  SGD sgd({p}, {.lr = base_lr});
  Scheduler schedule(sgd, args...);
  std::vector<double> rates;
  for (int64_t target : steps) {
    while (schedule.steps_taken() < target) schedule.step();
    rates.push_back(sgd.lr());
    EXPECT_EQ(schedule.lr_at(target), sgd.lr()) << "step " << target;
  }
  return rates;
}

TEST(CosineWithWarmup, RatesAtChosenSteps) {
  // base 0.1, warmup 10, total 110, min 0.01: cosine over 100 steps.
  const std::vector<double> got =
      rates_at<CosineWithWarmup>(0.1, {0, 1, 5, 10, 35, 60, 85, 110, 500}, 10, 110, 0.01);
  const double quarter = (1 + std::cos(std::numbers::pi / 4)) / 2;  // 0.8535...
  const Values want{
      0.0, 0.01, 0.05, 0.1, 0.01 + 0.09 * quarter, 0.055, 0.01 + 0.09 * (1 - quarter), 0.01, 0.01};
  expect_near_all(got, want, 1e-15);
}

TEST(CosineWithWarmup, WithoutWarmupStartsAtTheBaseRate) {
  expect_near_all(rates_at<CosineWithWarmup>(2.0, {0, 50, 100}, 0, 100, 0.0), {2.0, 1.0, 0.0},
                  1e-15);
}

TEST(ConstantWithWarmup, RampsThenHolds) {
  expect_near_all(rates_at<ConstantWithWarmup>(0.2, {0, 1, 3, 4, 1000}, 4),
                  {0.0, 0.05, 0.15, 0.2, 0.2}, 1e-15);
}

TEST(LRScheduler, CustomScheduleSetsTheRateFromStepZero) {
  Tensor p = parameter({0.0});
  SGD sgd({p}, {.lr = 1.0});
  LRScheduler halving(sgd,
                      [](int64_t t) { return 0.1 * std::pow(0.5, static_cast<double>(t / 10)); });
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.1);
  for (int i = 0; i < 25; ++i) halving.step();
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.025);
}

TEST(LRScheduler, BadArgumentsThrowWithContext) {
  Tensor p = parameter({0.0});
  SGD sgd({p}, {.lr = 0.1});
  expect_error_mentioning([&] { CosineWithWarmup(sgd, 100, 100); },
                          {"CosineWithWarmup", "total_steps (100)", "warmup_steps (100)"});
  expect_error_mentioning([&] { CosineWithWarmup(sgd, 0, 10, 0.5); },
                          {"CosineWithWarmup", "min_lr", "0.5"});
  expect_error_mentioning([&] { ConstantWithWarmup(sgd, -1); },
                          {"ConstantWithWarmup", "warmup_steps", "-1"});
  expect_error_mentioning([&] { LRScheduler(sgd, [](int64_t) { return -1.0; }); },
                          {"SGD", "learning rate", "-1"});
  ConstantWithWarmup schedule(sgd, 3);
  expect_error_mentioning([&] { schedule.lr_at(-1); }, {"-1"});
}

// ---- gradient clipping ----------------------------------------------------------------

TEST(ClipGradNorm, ScalesByMaxNormOverTheTotalNorm) {
  Tensor a = parameter({0, 0}), b = parameter({0}), no_grad = parameter({0});
  set_grad(a, {3, 4});
  set_grad(b, {12});
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b, no_grad}, 6.5), 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  expect_near_all(a.grad().to_vector<double>(), {3 * coef, 4 * coef}, 1e-15);
  expect_near_all(b.grad().to_vector<double>(), {12 * coef}, 1e-15);
  EXPECT_FALSE(no_grad.grad().defined());
}

TEST(ClipGradNorm, LeavesGradientsWhenTheCoefficientIsNotBelowOne) {
  Tensor a = parameter({0, 0});
  set_grad(a, {3, 4});
  EXPECT_DOUBLE_EQ(clip_grad_norm({a}, 100), 5.0);
  EXPECT_EQ(a.grad().to_vector<double>(), (Values{3, 4}));
  // At max_norm == total the 1e-6 still makes the coefficient < 1, as in PyTorch.
  clip_grad_norm({a}, 5.0);
  EXPECT_LT(a.grad().to_vector<double>()[0], 3.0);
}

TEST(ClipGradNorm, OtherNormTypes) {
  auto total = [](double norm_type) {
    Tensor a = parameter({0, 0}), b = parameter({0});
    set_grad(a, {3, -4});
    set_grad(b, {-12});
    return clip_grad_norm({a, b}, 1e9, norm_type);
  };
  EXPECT_DOUBLE_EQ(total(1), 19.0);
  EXPECT_NEAR(total(3), std::cbrt(27.0 + 64.0 + 1728.0), 1e-12);
  EXPECT_DOUBLE_EQ(total(std::numeric_limits<double>::infinity()), 12.0);
}

TEST(ClipGradNorm, AccumulatesFloat32GradientsInFloat64) {
  const int64_t n = int64_t{1} << 20;
  Tensor p = zeros({n}, kFloat32).requires_grad_();
  p.set_grad(full({n}, 0.1, kFloat32));
  const double want = std::sqrt(static_cast<double>(n)) * static_cast<double>(0.1f);
  EXPECT_NEAR(clip_grad_norm({p}, 1e9), want, want * 1e-10);
}

TEST(ClipGradNorm, NonFiniteGradientsPropagateAsInPyTorch) {
  Tensor a = parameter({1, 2}), b = parameter({3});
  set_grad(a, {1, std::numeric_limits<double>::quiet_NaN()});
  set_grad(b, {3});
  EXPECT_TRUE(std::isnan(clip_grad_norm({a, b}, 1.0)));
  EXPECT_TRUE(std::isnan(b.grad().item<double>()));
}

TEST(ClipGradNorm, BadArgumentsThrow) {
  Tensor a = parameter({1});
  set_grad(a, {1});
  expect_error_mentioning([&] { clip_grad_norm({a}, -1.0); }, {"clip_grad_norm", "max_norm", "-1"});
  expect_error_mentioning([&] { clip_grad_norm({a}, 1.0, 0.0); }, {"clip_grad_norm", "norm_type"});
}

// ---- a regression each optimizer must solve ----------------------------------------------

// Fits y = 3x + 1 on 32 points of [-1, 1] with float32 w [1, 1] and b [1];
// returns {w, b}.
std::pair<double, double> fit_line(
    const std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)>& make, int steps) {
  Tensor x = arange(-1.0, 1.0 + 1e-9, 2.0 / 31, kFloat32).reshape({32, 1});
  Tensor y = x * 3.0 + 1.0;
  Tensor w = zeros({1, 1}).requires_grad_(), b = zeros({1}).requires_grad_();
  std::unique_ptr<Optimizer> optimizer = make({w, b});
  for (int i = 0; i < steps; ++i) {
    optimizer->zero_grad();
    mse_loss(matmul(x, w) + b, y).backward();
    optimizer->step();
  }
  return {w.item<double>(), b.item<double>()};
}

TEST(Optimizers, FitALine) {
  using Params = std::vector<Tensor>;
  const std::vector<std::pair<std::string, std::function<std::unique_ptr<Optimizer>(Params)>>>
      optimizers{
          {"SGD", [](Params p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.3}); }},
          {"SGD nesterov",
           [](Params p) {
             return std::make_unique<SGD>(p,
                                          SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
           }},
          {"Adam", [](Params p) { return std::make_unique<Adam>(p, AdamOptions{.lr = 0.05}); }},
          {"AdamW",
           [](Params p) {
             return std::make_unique<AdamW>(p, AdamOptions{.lr = 0.05, .weight_decay = 1e-4});
           }},
      };
  for (const auto& [label, make] : optimizers) {
    SCOPED_TRACE(label);
    const auto [w, b] = fit_line(make, 300);
    EXPECT_NEAR(w, 3.0, 1e-3);
    EXPECT_NEAR(b, 1.0, 1e-3);
  }
}

// ---- bad hyperparameters and parameter lists -------------------------------------------------

TEST(Optimizer, BadHyperparametersThrowWithContext) {
  const Tensor p = parameter({1.0});
  const std::vector<Tensor> ps{p};
  expect_error_mentioning([&] { SGD(ps, {.lr = -0.1}); }, {"SGD", "learning rate", "-0.1"});
  expect_error_mentioning([&] { SGD(ps, {.momentum = -0.5}); }, {"SGD", "momentum", "-0.5"});
  expect_error_mentioning([&] { SGD(ps, {.weight_decay = -1}); }, {"SGD", "weight_decay", "-1"});
  expect_error_mentioning([&] { SGD(ps, {.nesterov = true}); }, {"SGD", "nesterov", "momentum"});
  expect_error_mentioning([&] { SGD(ps, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
                          {"SGD", "nesterov", "dampening 0.1"});
  expect_error_mentioning([&] { Adam(ps, {.lr = -1e-3}); }, {"Adam", "learning rate", "-0.001"});
  expect_error_mentioning([&] { Adam(ps, {.beta1 = 1.0}); }, {"Adam", "beta1", "[0, 1)", "1"});
  expect_error_mentioning([&] { Adam(ps, {.beta2 = -0.1}); }, {"Adam", "beta2", "-0.1"});
  expect_error_mentioning([&] { AdamW(ps, {.beta2 = 1.5}); }, {"AdamW", "beta2", "1.5"});
  expect_error_mentioning([&] { Adam(ps, {.eps = -1e-8}); }, {"Adam", "eps"});
  expect_error_mentioning([&] { AdamW(ps, {.weight_decay = -0.1}); },
                          {"AdamW", "weight_decay", "-0.1"});
  expect_error_mentioning([&] { AdamW(ps, {.lr = std::nan("")}); }, {"AdamW", "learning rate"});
  SGD sgd(ps);
  expect_error_mentioning([&] { sgd.set_lr(-2); }, {"SGD", "learning rate", "-2"});
  EXPECT_DOUBLE_EQ(sgd.lr(), 1e-3);
}

TEST(Optimizer, BadParameterListsThrowWithContext) {
  const Tensor p = parameter({1.0});
  expect_error_mentioning([&] { SGD({}); }, {"SGD", "empty parameter list"});
  expect_error_mentioning([&] { Adam({p, Tensor()}); }, {"Adam", "parameter 1", "undefined"});
  expect_error_mentioning([&] { Adam({from_vector(std::vector<int64_t>{1}, {1})}); },
                          {"Adam", "floating-point", "int64"});
  expect_error_mentioning([&] { SGD({p * 2.0}); }, {"SGD", "leaf"});
  expect_error_mentioning([&] { AdamW({p, p}); }, {"AdamW", "parameter 1", "twice"});
  Adam adam({p});
  expect_error_mentioning([&] { adam.state(1); }, {"Adam", "no parameter 1"});
}

}  // namespace
}  // namespace remat::optim
