// remat::distributed under `mpirun -np 2` (tests/CMakeLists.txt): the
// collectives, their agreement check and timeout, DistributedDataParallel
// against single-process gradients (bitwise where the reduction order is
// fixed), with checkpoint(), unused parameters and no_sync, and ZeRO-1
// against unsharded AdamW. Every rank runs every test in the same order, so
// their collectives pair up; a rank that fails early makes its peer's next
// collective time out (60 s here) instead of hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>

#include "remat/distributed.h"
#include "remat/remat.h"

namespace remat::distributed {
namespace {

ProcessGroup& group() { return ProcessGroup::world(); }

template <typename Fn>
void expect_error(Fn&& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ProcessGroup, TwoRanks) {
  EXPECT_EQ(group().size(), 2);
  EXPECT_TRUE(group().rank() == 0 || group().rank() == 1);
}

TEST(ProcessGroup, AllReduceOps) {
  const double r = group().rank();
  Tensor t = from_vector(std::vector<float>{float(r + 1), float(-r), 3.5f}, {3});
  group().all_reduce(t);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{3, -1, 7}));
  Tensor a = from_vector(std::vector<double>{r, 10 * r}, {2});
  group().all_reduce(a, ReduceOp::kAverage);
  EXPECT_EQ(a.to_vector<double>(), (std::vector<double>{0.5, 5}));
  Tensor m = from_vector(std::vector<int64_t>{int64_t(r), -int64_t(r)}, {2});
  group().all_reduce(m, ReduceOp::kMax);
  EXPECT_EQ(m.to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
  Tensor n = from_vector(std::vector<int32_t>{int32_t(r), -int32_t(r)}, {2});
  group().all_reduce(n, ReduceOp::kMin);
  EXPECT_EQ(n.to_vector<int32_t>(), (std::vector<int32_t>{0, -1}));
}

TEST(ProcessGroup, BroadcastGatherScatter) {
  const int r = group().rank();
  Tensor b = full({2, 2}, r == 1 ? 4.0 : -1.0, kFloat32);
  group().broadcast(b, 1);
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>(4, 4.0f)));

  Tensor g = group().all_gather(from_vector(std::vector<int64_t>{r, 7 * r}, {2}));
  EXPECT_EQ(g.shape(), (Shape{2, 2}));
  EXPECT_EQ(g.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 7}));

  // Rows [2r, 2r + 2) of the sum come back.
  Tensor s = from_vector(std::vector<double>{1.0 + r, 2, 3, 4.0 * r}, {4});
  Tensor mine = group().reduce_scatter(s);
  EXPECT_EQ(mine.to_vector<double>(),
            r == 0 ? (std::vector<double>{3, 4}) : (std::vector<double>{6, 4}));
  group().barrier();
}

TEST(ProcessGroup, ReduceReachesOnlyTheRoot) {
  const int r = group().rank();
  Tensor t = from_vector(std::vector<float>{float(r + 1), float(2 * r)}, {2});
  group().reduce(t, /*root=*/1);
  EXPECT_EQ(t.to_vector<float>(), r == 1 ? (std::vector<float>{3, 2}) : (std::vector<float>{1, 0}));
  Tensor a = from_vector(std::vector<double>{4.0 * r, 1}, {2});
  group().reduce_async(a, /*root=*/0, ReduceOp::kAverage).wait();
  EXPECT_EQ(a.to_vector<double>(),
            r == 0 ? (std::vector<double>{2, 1}) : (std::vector<double>{4, 1}));
  expect_error([&] { group().reduce(t, 2); }, "root 2 is not a rank of a group of 2");
}

TEST(ProcessGroup, AsyncOverlapsAndCompletes) {
  Tensor t = full({1 << 16}, 1.0 + group().rank(), kFloat32);
  Work w = group().all_reduce_async(t);
  while (!w.test()) {
  }
  EXPECT_TRUE(w.test());
  w.wait();  // a completed work waits at once
  EXPECT_EQ(t.to_vector<float>()[12345], 3.0f);
}

TEST(ProcessGroup, DisagreementIsAnErrorOnEveryRankAndTheGroupGoesOn) {
  Tensor t = zeros({group().rank() == 0 ? 4 : 5}, kFloat32);
  try {
    group().all_reduce(t);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the ranks disagree"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("between 4 and 5 elements"), std::string::npos)
        << e.what();
  }
  Tensor dtype = zeros({3}, group().rank() == 0 ? kFloat32 : kFloat64);
  EXPECT_THROW(group().broadcast(dtype, 0), Error);
  Tensor ok = ones({3}, kFloat32);
  group().all_reduce(ok);
  EXPECT_EQ(ok.to_vector<float>(), (std::vector<float>(3, 2.0f)));
}

TEST(ProcessGroup, LatePeerTimesOutThenCompletes) {
  const auto saved = group().timeout();
  group().set_timeout(std::chrono::milliseconds(200));
  Tensor t = full({8}, 1.0 + group().rank(), kFloat64);
  if (group().rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Work w = group().all_reduce_async(t);
  if (group().rank() == 0) {
    try {
      w.wait();
      ADD_FAILURE() << "rank 1 joined within 200 ms";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not complete after 200 ms"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("all_reduce(sum) of [8] float64 on cpu (rank 0 of 2)"),
                std::string::npos)
          << e.what();
    }
  }
  group().set_timeout(saved);
  w.wait();  // the late peer completes it
  EXPECT_EQ(t.to_vector<double>(), (std::vector<double>(8, 3.0)));
}

TEST(ProcessGroup, RefusesWhatItCannotMove) {
  Tensor strided = zeros({4, 4}, kFloat32).transpose(0, 1);
  EXPECT_THROW(group().all_reduce(strided), Error);
  EXPECT_THROW(group().all_reduce(zeros({2}, kBFloat16)), NotImplementedError);
  EXPECT_THROW(group().all_reduce(zeros({2}, kInt64), ReduceOp::kAverage), Error);
  EXPECT_THROW(group().broadcast(zeros({2}, kFloat32), 2), Error);
  group().barrier();
}

TEST(ProcessGroup, SplitMakesSubGroupsOfTheirOwn) {
  const int r = group().rank();
  // Both ranks, in reverse order.
  std::unique_ptr<ProcessGroup> reversed = group().split(/*color=*/0, /*key=*/-r);
  ASSERT_NE(reversed, nullptr);
  EXPECT_EQ(reversed->size(), 2);
  EXPECT_EQ(reversed->rank(), 1 - r);
  EXPECT_EQ(reversed->timeout(), group().timeout());
  Tensor b = full({2}, double(r), kFloat64);
  reversed->broadcast(b, /*root=*/0);  // the root is world rank 1
  EXPECT_EQ(b.to_vector<double>(), (std::vector<double>{1, 1}));
  expect_error([&] { reversed->all_reduce(zeros({r == 0 ? 3 : 4}, kFloat32)); },
               "the ranks disagree");

  // One group per rank: its collectives involve no peer.
  std::unique_ptr<ProcessGroup> alone = group().split(/*color=*/r);
  ASSERT_NE(alone, nullptr);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  Tensor t = from_vector(std::vector<float>{float(r + 5)}, {1});
  alone->all_reduce(t);
  EXPECT_EQ(t.item<float>(), float(r + 5));
  alone->barrier();

  // A negative color joins no group.
  std::unique_ptr<ProcessGroup> second = group().split(r == 0 ? -1 : 0);
  EXPECT_EQ(second == nullptr, r == 0);
  if (second) {
    EXPECT_EQ(second->size(), 1);
  }
  group().barrier();
}

// Run by its own ctest entry (distributed_peer_death_np2), which expects the
// job to fail, not to hang: rank 1 dies mid-run, and mpirun ends the job (or
// rank 0's collective times out).
TEST(PeerDeath, TheJobEndsInsteadOfHanging) {
  if (std::getenv("REMAT_TEST_PEER_DEATH") == nullptr) GTEST_SKIP() << "its own ctest entry";
  group().set_timeout(std::chrono::seconds(20));
  group().barrier();
  if (group().rank() == 1) std::_Exit(3);
  Tensor t = ones({4}, kFloat32);
  group().all_reduce(t);
  ADD_FAILURE() << "an all_reduce with a dead peer completed";
}

// ---- DistributedDataParallel -------------------------------------------------

struct Mlp : nn::Module {
  std::shared_ptr<nn::Linear> l1, l2, l3, branch, unused;
  bool checkpointed = false;
  bool use_branch = false;

  Mlp() : Module("Mlp") {
    l1 = register_module("l1", std::make_shared<nn::Linear>(6, 16));
    l2 = register_module("l2", std::make_shared<nn::Linear>(16, 16));
    branch = register_module("branch", std::make_shared<nn::Linear>(16, 16));
    unused = register_module("unused", std::make_shared<nn::Linear>(4, 4));
    l3 = register_module("l3", std::make_shared<nn::Linear>(16, 3));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = relu((*l1)(x));
    auto block = [this](const Tensor& t) { return tanh((*l2)(t)); };
    h = checkpointed ? checkpoint(block, h) : block(h);
    if (use_branch) h = h + (*branch)(h);
    return (*l3)(h);
  }
};

std::shared_ptr<Mlp> make_mlp() {
  manual_seed(7);  // every rank and every reference starts from the same weights
  auto m = std::make_shared<Mlp>();
  m->to(kFloat64);
  return m;
}

struct Batch {
  Tensor x, y;
};
// The concatenated batch of both ranks, and each rank's half.
Batch full_batch(int step = 0) {
  manual_seed(100 + step);
  return {randn({8, 6}, kFloat64), randn({8, 3}, kFloat64)};
}
Batch half(const Batch& b, int rank) {
  return {b.x.slice(0, 4 * rank, 4 * rank + 4).contiguous(),
          b.y.slice(0, 4 * rank, 4 * rank + 4).contiguous()};
}
Tensor loss_of(nn::Module& m, const Batch& b) { return mse_loss(m(b.x), b.y); }

using Grads = std::vector<std::vector<double>>;  // empty where a parameter has none
Grads grads_of(const nn::Module& m) {
  Grads out;
  for (const Tensor& p : m.parameters()) {
    out.push_back(p.grad().defined() ? p.grad().to_vector<double>() : std::vector<double>{});
  }
  return out;
}

// (g0 + g1) * 0.5 computed in one process: DDP's own order of operations.
// `configure` sets the model up as rank r runs it.
Grads mean_of_halves(const std::function<void(Mlp&, int)>& configure, const Batch& b) {
  auto ref = make_mlp();
  std::vector<Tensor> g[2];
  for (int r = 0; r < 2; ++r) {
    ref->zero_grad();
    configure(*ref, r);
    loss_of(*ref, half(b, r)).backward();
    for (const Tensor& p : ref->parameters()) g[r].push_back(p.grad());
  }
  Grads out;
  for (size_t k = 0; k < g[0].size(); ++k) {
    if (!g[0][k].defined() && !g[1][k].defined()) {
      out.emplace_back();
      continue;
    }
    Tensor a = g[0][k].defined() ? g[0][k] : zeros_like(g[1][k]);
    Tensor c = g[1][k].defined() ? g[1][k] : zeros_like(g[0][k]);
    out.push_back(((a + c) * 0.5).to_vector<double>());
  }
  return out;
}

void expect_bitwise(const Grads& got, const Grads& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k], want[k]) << "parameter " << k;
}

TEST(DistributedDataParallel, GradientsAreTheMeanOfTheRanksBitwise) {
  auto model = make_mlp();
  DistributedDataParallel ddp(model);
  const Batch b = full_batch();
  mse_loss(ddp(half(b, group().rank()).x), half(b, group().rank()).y).backward();
  const Grads got = grads_of(*model);
  expect_bitwise(got, mean_of_halves([](Mlp&, int) {}, b));
  EXPECT_TRUE(got[4].empty() && got[6].empty()) << "branch and unused were never reached";
  EXPECT_EQ(ddp.stats().buckets, 1);
}

TEST(DistributedDataParallel, EqualsTheConcatenatedBatchWithinRounding) {
  auto model = make_mlp();
  DistributedDataParallel ddp(model);
  const Batch b = full_batch(1);
  loss_of(ddp.module(), half(b, group().rank())).backward();
  auto ref = make_mlp();
  loss_of(*ref, b).backward();
  const Grads got = grads_of(*model);
  const Grads want = grads_of(*ref);
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_EQ(got[k].size(), want[k].size());
    for (size_t i = 0; i < got[k].size(); ++i) EXPECT_NEAR(got[k][i], want[k][i], 1e-14);
  }
}

// Three Linear layers, every parameter reached by backward.
std::shared_ptr<nn::Sequential> make_stack(DType dtype = kFloat32) {
  manual_seed(3);
  auto model = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
      std::make_shared<nn::Linear>(6, 16), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(16, 16), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(16, 3)});
  model->to(dtype);
  return model;
}

// What DDP computes, in one process: the halves' gradients widened to the
// bucket's float32, summed, halved and rounded back to the parameter's dtype.
std::vector<std::vector<float>> stack_reference(DType dtype, const Batch& b) {
  auto ref = make_stack(dtype);
  std::vector<Tensor> g[2];
  for (int r = 0; r < 2; ++r) {
    ref->zero_grad();
    const Batch mine = half(b, r);
    mse_loss((*ref)(mine.x.to(dtype)), mine.y.to(dtype)).backward();
    for (const Tensor& p : ref->parameters()) g[r].push_back(p.grad());
  }
  std::vector<std::vector<float>> out;
  for (size_t k = 0; k < g[0].size(); ++k) {
    out.push_back(((g[0][k].to(kFloat32) + g[1][k].to(kFloat32)) * 0.5)
                      .to(dtype)
                      .to(kFloat32)
                      .to_vector<float>());
  }
  return out;
}

std::vector<std::vector<float>> float_grads(const nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (const Tensor& p : m.parameters()) out.push_back(p.grad().to(kFloat32).to_vector<float>());
  return out;
}

TEST(DistributedDataParallel, SmallBucketsStartWhileBackwardRuns) {
  auto model = make_stack();
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 256});
  EXPECT_GE(ddp.stats().buckets, 4);
  const Batch b = full_batch(2);
  const Batch mine = half(b, group().rank());
  mse_loss(ddp(mine.x.to(kFloat32)), mine.y.to(kFloat32)).backward();
  // Every parameter is reached, so every bucket starts inside backward, the
  // first ones while the layers below still compute.
  EXPECT_EQ(ddp.stats().started_during_backward, ddp.stats().buckets);
  EXPECT_EQ(ddp.stats().started_at_end, 0);
}

TEST(DistributedDataParallel, BFloat16GradientsTravelInFloat32) {
  auto model = make_stack(kBFloat16);
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 256});
  const Batch b = full_batch(7);
  const Batch mine = half(b, group().rank());
  mse_loss(ddp(mine.x.to(kBFloat16)), mine.y.to(kBFloat16)).backward();
  EXPECT_EQ(model->parameters()[0].grad().dtype(), kBFloat16);
  EXPECT_EQ(float_grads(*model), stack_reference(kBFloat16, b));
}

TEST(DistributedDataParallel, ABackwardThatThrowsLeavesTheNextOneCorrect) {
  auto model = make_stack();
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 256});
  // Fails the first backward on every rank once the first layer's weight,
  // the last gradient to be final, is ready: every bucket has started.
  bool fail = true;
  GradReadyHandle failing =
      register_grad_ready_hook(model->parameters()[0], [&fail](const Tensor&) {
        if (fail) throw Error("injected failure");
      });
  const Batch b = full_batch(8);
  const Batch mine = half(b, group().rank());
  EXPECT_THROW(mse_loss(ddp(mine.x.to(kFloat32)), mine.y.to(kFloat32)).backward(), Error);
  EXPECT_FALSE(model->parameters()[0].grad().defined()) << "the failed pass's gradients dropped";
  fail = false;
  model->zero_grad();
  mse_loss(ddp(mine.x.to(kFloat32)), mine.y.to(kFloat32)).backward();
  EXPECT_EQ(float_grads(*model), stack_reference(kFloat32, b));
}

TEST(DistributedDataParallel, BucketsAfterAnUnreachedParameterStartAtTheEnd) {
  auto model = make_mlp();
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 1024});
  const Batch b = full_batch(2);
  loss_of(ddp.module(), half(b, group().rank())).backward();
  // Buckets start in order on every rank, and the first holds `unused`.
  EXPECT_EQ(ddp.stats().started_at_end, ddp.stats().buckets);
  expect_bitwise(grads_of(*model), mean_of_halves([](Mlp&, int) {}, b));
}

TEST(DistributedDataParallel, CheckpointReplaysDoNotReduceTwice) {
  const Batch b = full_batch(3);
  Grads plain;
  {
    auto model = make_mlp();
    DistributedDataParallel ddp(model, {.bucket_cap_bytes = 1024});
    loss_of(ddp.module(), half(b, group().rank())).backward();
    plain = grads_of(*model);
  }
  auto model = make_mlp();
  model->checkpointed = true;
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 1024});
  loss_of(ddp.module(), half(b, group().rank())).backward();
  expect_bitwise(grads_of(*model), plain);
  EXPECT_EQ(ddp.stats().started_during_backward + ddp.stats().started_at_end, ddp.stats().buckets);
}

TEST(DistributedDataParallel, ParameterUsedOnOneRankOnly) {
  auto model = make_mlp();
  model->use_branch = group().rank() == 0;
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 2048});
  const Batch b = full_batch(4);
  loss_of(ddp.module(), half(b, group().rank())).backward();
  const Grads got = grads_of(*model);
  expect_bitwise(got, mean_of_halves([](Mlp& m, int r) { m.use_branch = r == 0; }, b));
  EXPECT_FALSE(got[4].empty()) << "rank 1 gets half of rank 0's branch gradient";
  EXPECT_TRUE(got[6].empty()) << "no rank reached `unused`";
}

TEST(DistributedDataParallel, NoSyncAccumulatesThenReducesTheTotal) {
  auto model = make_mlp();
  DistributedDataParallel ddp(model);
  const Batch b0 = full_batch(5), b1 = full_batch(6);
  {
    auto guard = ddp.no_sync();
    loss_of(ddp.module(), half(b0, group().rank())).backward();
  }
  EXPECT_EQ(ddp.stats().started_during_backward + ddp.stats().started_at_end, 0);
  loss_of(ddp.module(), half(b1, group().rank())).backward();

  // One process: the two steps' local sums, then their mean over ranks.
  auto ref = make_mlp();
  std::vector<Tensor> g[2];
  for (int r = 0; r < 2; ++r) {
    ref->zero_grad();
    loss_of(*ref, half(b0, r)).backward();
    loss_of(*ref, half(b1, r)).backward();
    for (const Tensor& p : ref->parameters()) g[r].push_back(p.grad());
  }
  const Grads got = grads_of(*model);
  for (size_t k = 0; k < got.size(); ++k) {
    if (!g[0][k].defined()) continue;
    EXPECT_EQ(got[k], ((g[0][k] + g[1][k]) * 0.5).to_vector<double>()) << "parameter " << k;
  }
}

TEST(DistributedDataParallel, BroadcastsRankZerosWeightsAndChecksTheModel) {
  manual_seed(1000 + static_cast<uint64_t>(group().rank()));  // different weights per rank
  auto model = std::make_shared<nn::Linear>(3, 2);
  DistributedDataParallel ddp(model);
  Tensor w = model->parameters()[0].detach().clone();
  group().broadcast(w, 0);
  EXPECT_EQ(model->parameters()[0].to_vector<float>(), w.to_vector<float>());

  auto different = std::make_shared<nn::Linear>(3, group().rank() == 0 ? 2 : 3);
  try {
    DistributedDataParallel bad(different);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("every rank must pass the same model"), std::string::npos)
        << e.what();
  }
}

TEST(DistributedDataParallel, TrainingGivesTheSameLossesAsOneProcess) {
  auto model = make_mlp();
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 1024});
  optim::SGD opt(model->parameters(), {.lr = 0.1});
  auto ref = make_mlp();
  optim::SGD ref_opt(ref->parameters(), {.lr = 0.1});
  for (int step = 0; step < 5; ++step) {
    const Batch b = full_batch(10 + step);
    Tensor local = loss_of(ddp.module(), half(b, group().rank()));
    local.backward();
    opt.step();
    opt.zero_grad();
    Tensor mean_loss = local.detach().clone();
    group().all_reduce(mean_loss, ReduceOp::kAverage);
    Tensor ref_loss = loss_of(*ref, b);
    ref_loss.backward();
    ref_opt.step();
    ref_opt.zero_grad();
    EXPECT_NEAR(mean_loss.item<double>(), ref_loss.item<double>(), 1e-13) << "step " << step;
  }
}

TEST(DistributedDataParallel, GradientsAsBucketViewsAreTheSameMeansInOneCopy) {
  for (const bool set_to_none : {true, false}) {
    SCOPED_TRACE(set_to_none ? "zero_grad sets to none" : "zero_grad zeroes in place");
    auto model = make_mlp();
    model->use_branch = true;
    DistributedDataParallel ddp(model, {.gradient_as_bucket_view = true});
    optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
    auto ref = make_mlp();
    ref->use_branch = true;
    DistributedDataParallel ref_ddp(ref);
    optim::SGD ref_opt(ref->parameters(), {.lr = 0.1, .momentum = 0.9});
    const std::vector<Tensor> mine = model->parameters();
    const std::vector<Tensor> theirs = ref->parameters();
    for (int step = 0; step < 3; ++step) {
      // A rank that reaches the branch only on rank 1: rank 0 gets the
      // branch's mean as a view too.
      model->use_branch = ref->use_branch = group().rank() == 1 || step != 1;
      const Batch b = half(full_batch(70 + step), group().rank());
      loss_of(*model, b).backward();
      loss_of(*ref, b).backward();
      expect_bitwise(grads_of(*model), grads_of(*ref));
      // Every float64 gradient is a slice of the one bucket: no copies.
      const Tensor& first = mine.front().grad();
      for (const Tensor& p : mine) {
        if (p.grad().defined()) {
          EXPECT_TRUE(p.grad().is_alias_of(first));
        }
      }
      opt.step();
      opt.zero_grad(set_to_none);
      ref_opt.step();
      ref_opt.zero_grad(set_to_none);
    }
    for (size_t k = 0; k < mine.size(); ++k) {
      EXPECT_EQ(mine[k].to_vector<double>(), theirs[k].to_vector<double>()) << "parameter " << k;
    }
  }
}

TEST(DistributedDataParallel, OnAOneRankSubGroupKeepsTheLocalGradients) {
  std::unique_ptr<ProcessGroup> alone = group().split(/*color=*/group().rank());
  auto model = make_mlp();
  DistributedDataParallel ddp(model, *alone);
  const Batch b = half(full_batch(60), group().rank());
  loss_of(ddp.module(), b).backward();
  auto ref = make_mlp();
  loss_of(*ref, b).backward();
  expect_bitwise(grads_of(*model), grads_of(*ref));
}

// ---- ZeRO stage 1 -----------------------------------------------------------------

// Trains `model` under DDP with `zero` and a copy with the unsharded `ref_opt`
// on the very gradients DDP produced, `steps` steps, each optimizer under its
// own cosine schedule when `scheduled`; ref_opt's parameters are ref's.
void train_zero_and_reference(const std::shared_ptr<nn::Module>& model, nn::Module& ref,
                              ZeroRedundancyOptimizer& zero, optim::Optimizer& ref_opt, int steps,
                              bool scheduled) {
  DistributedDataParallel ddp(model);
  std::optional<optim::CosineWithWarmup> zero_schedule;
  std::optional<optim::CosineWithWarmup> ref_schedule;
  if (scheduled) {
    zero_schedule.emplace(zero, /*warmup_steps=*/2, /*total_steps=*/steps);
    ref_schedule.emplace(ref_opt, /*warmup_steps=*/2, /*total_steps=*/steps);
  }
  for (int step = 0; step < steps; ++step) {
    const Batch b = full_batch(20 + step);
    loss_of(ddp.module(), half(b, group().rank())).backward();
    const std::vector<Tensor> mine = model->parameters();
    const std::vector<Tensor> theirs = ref.parameters();
    for (size_t k = 0; k < mine.size(); ++k) {
      if (mine[k].grad().defined()) theirs[k].set_grad(mine[k].grad().clone());
    }
    EXPECT_EQ(zero.lr(), ref_opt.lr()) << "step " << step;
    zero.step();
    zero.zero_grad();
    ref_opt.step();
    ref_opt.zero_grad();
    if (scheduled) {
      zero_schedule->step();
      ref_schedule->step();
    }
  }
}

TEST(ZeroRedundancyOptimizer, SameParametersAsUnshardedAdamW) {
  auto model = make_mlp();
  const optim::AdamOptions options{.lr = 1e-2, .weight_decay = 0.1};
  ZeroRedundancyOptimizer zero(model->parameters(), [&](std::vector<Tensor> params) {
    return std::make_unique<optim::AdamW>(std::move(params), options);
  });
  auto ref = make_mlp();
  optim::AdamW ref_opt(ref->parameters(), options);
  train_zero_and_reference(model, *ref, zero, ref_opt, /*steps=*/3, /*scheduled=*/false);
  const std::vector<Tensor> mine = model->parameters();
  const std::vector<Tensor> theirs = ref->parameters();
  for (size_t k = 0; k < mine.size(); ++k) {
    EXPECT_EQ(mine[k].to_vector<double>(), theirs[k].to_vector<double>()) << "parameter " << k;
  }
  // Each rank holds part of the state; together all of it.
  int64_t full_state = 0;
  for (size_t k = 0; k < theirs.size(); ++k) {
    const optim::ParamState& s = ref_opt.state(k);
    if (s.exp_avg.defined()) full_state += s.exp_avg.nbytes() + s.exp_avg_sq.nbytes();
  }
  const int64_t local = optimizer_state_bytes(zero);
  EXPECT_LT(local, full_state);
  Tensor total = from_vector(std::vector<int64_t>{local}, {1});
  group().all_reduce(total);
  EXPECT_EQ(total.item<int64_t>(), full_state);
}

TEST(ZeroRedundancyOptimizer, ASchedulerDrivesItAsTheUnshardedOptimizer) {
  auto model = make_mlp();
  const optim::SGDOptions options{.lr = 0.2, .momentum = 0.9};
  ZeroRedundancyOptimizer zero(model->parameters(), [&](std::vector<Tensor> params) {
    return std::make_unique<optim::SGD>(std::move(params), options);
  });
  auto ref = make_mlp();
  optim::SGD ref_opt(ref->parameters(), options);
  train_zero_and_reference(model, *ref, zero, ref_opt, /*steps=*/5, /*scheduled=*/true);
  EXPECT_LT(zero.lr(), options.lr);  // the schedule moved it
  EXPECT_EQ(ref_opt.state(0).step, 5);
  const std::vector<Tensor> mine = model->parameters();
  const std::vector<Tensor> theirs = ref->parameters();
  for (size_t k = 0; k < mine.size(); ++k) {
    EXPECT_EQ(mine[k].to_vector<double>(), theirs[k].to_vector<double>()) << "parameter " << k;
    // Each rank holds the momentum of the parameters it owns, and only those
    // (branch and unused never get a gradient here: no state anywhere).
    const bool trained = ref_opt.state(k).step > 0;
    EXPECT_EQ(zero.state(k).momentum_buffer.defined(), trained && zero.owner(k) == group().rank());
    EXPECT_EQ(zero.state(k).step, zero.owner(k) == group().rank() ? ref_opt.state(k).step : 0);
  }
}

TEST(ZeroRedundancyOptimizer, StageTwoKeepsOnlyTheOwnersGradientsAndTrainsTheSame) {
  const auto adamw = [](std::vector<Tensor> params) {
    return std::make_unique<optim::AdamW>(std::move(params), optim::AdamOptions{.lr = 1e-2});
  };
  // Stage 2: gradients reduced to their owners only, in small buckets.
  auto model = make_mlp();
  model->use_branch = true;
  ZeroRedundancyOptimizer zero(model->parameters(), adamw);
  DistributedDataParallel ddp(model, {.bucket_cap_bytes = 1024, .gradient_owners = zero.owners()});
  // Stage 1 on the same data: every rank gets every mean.
  auto ref = make_mlp();
  ref->use_branch = true;
  ZeroRedundancyOptimizer ref_zero(ref->parameters(), adamw);
  DistributedDataParallel ref_ddp(ref, {.bucket_cap_bytes = 1024});
  // Buckets split where the owner changes, so there are at least as many.
  EXPECT_GE(ddp.stats().buckets, ref_ddp.stats().buckets);
  EXPECT_GT(ddp.stats().buckets, 2);

  const std::vector<Tensor> mine = model->parameters();
  const std::vector<Tensor> theirs = ref->parameters();
  for (int step = 0; step < 3; ++step) {
    const Batch b = half(full_batch(40 + step), group().rank());
    loss_of(*model, b).backward();
    loss_of(*ref, b).backward();
    int64_t kept = 0, all = 0;
    for (size_t k = 0; k < mine.size(); ++k) {
      if (!theirs[k].grad().defined()) {  // `unused`: no rank has a gradient
        EXPECT_FALSE(mine[k].grad().defined()) << "parameter " << k;
        continue;
      }
      all += theirs[k].grad().nbytes();
      if (zero.owner(k) == group().rank()) {
        ASSERT_TRUE(mine[k].grad().defined()) << "parameter " << k;
        EXPECT_EQ(mine[k].grad().to_vector<double>(), theirs[k].grad().to_vector<double>())
            << "parameter " << k;
        kept += mine[k].grad().nbytes();
      } else {
        EXPECT_FALSE(mine[k].grad().defined()) << "parameter " << k << " is another rank's";
      }
    }
    EXPECT_LT(kept, all);
    zero.step();
    zero.zero_grad();
    ref_zero.step();
    ref_zero.zero_grad();
  }
  for (size_t k = 0; k < mine.size(); ++k) {
    EXPECT_EQ(mine[k].to_vector<double>(), theirs[k].to_vector<double>()) << "parameter " << k;
  }
  expect_error(
      [&] {
        DistributedDataParallel bad(model, {.gradient_owners = {0, 1}});
      },
      "2 gradient owners for");
}

TEST(ZeroRedundancyOptimizer, ShardedGradientsClipByTheNormOfAllOfThem) {
  auto model = make_mlp();
  ZeroRedundancyOptimizer zero(model->parameters(), [](std::vector<Tensor> params) {
    return std::make_unique<optim::SGD>(std::move(params), optim::SGDOptions{.lr = 0.1});
  });
  DistributedDataParallel ddp(model, {.gradient_owners = zero.owners()});
  auto ref = make_mlp();
  DistributedDataParallel ref_ddp(ref);
  const Batch b = half(full_batch(80), group().rank());
  loss_of(*model, b).backward();
  loss_of(*ref, b).backward();
  // One rank's shard alone has a smaller norm: clipping by it would be wrong.
  const double ref_total = optim::grad_norm(ref->parameters());
  EXPECT_LT(optim::grad_norm(model->parameters()), ref_total);
  const double max_norm = ref_total / 4;
  const double total = clip_grad_norm(model->parameters(), max_norm, group());
  EXPECT_NEAR(total, optim::clip_grad_norm(ref->parameters(), max_norm), 1e-13 * ref_total);
  const std::vector<Tensor> mine = model->parameters();
  const std::vector<Tensor> theirs = ref->parameters();
  for (size_t k = 0; k < mine.size(); ++k) {
    if (!mine[k].grad().defined()) continue;
    const std::vector<double> got = mine[k].grad().to_vector<double>();
    const std::vector<double> want = theirs[k].grad().to_vector<double>();
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-15) << k;
  }
  // The clipped norm over the ranks (clip_grad_norm's coefficient is
  // max_norm / (total + 1e-6)), and the largest entry for the infinity norm.
  const double clipped = max_norm * ref_total / (ref_total + 1e-6);
  EXPECT_NEAR(clip_grad_norm(model->parameters(), 1e9, group()), clipped, 1e-13 * clipped);
  EXPECT_NEAR(clip_grad_norm(model->parameters(), 1e9, group(), INFINITY),
              optim::grad_norm(ref->parameters(), INFINITY), 1e-15);
}

TEST(ZeroRedundancyOptimizer, ARankThatOwnsNothing) {
  manual_seed(5);
  auto model = std::make_shared<nn::Linear>(3, 2, /*bias=*/false);  // one parameter: rank 0's
  DistributedDataParallel ddp(model);
  ZeroRedundancyOptimizer zero(model->parameters(), [](std::vector<Tensor> params) {
    return std::make_unique<optim::AdamW>(std::move(params), optim::AdamOptions{.lr = 0.05});
  });
  EXPECT_EQ(zero.owner(0), 0);
  EXPECT_EQ(zero.local() != nullptr, group().rank() == 0);
  EXPECT_EQ(zero.lr(), 0.05);
  const Tensor x = full({4, 3}, 1.0 + group().rank(), kFloat32);
  sum(ddp(x)).backward();
  zero.step();
  EXPECT_EQ(optimizer_state_bytes(zero), group().rank() == 0 ? 2 * 6 * 4 : 0);
  EXPECT_EQ(zero.state(0).step, group().rank() == 0 ? 1 : 0);
  Tensor w = model->parameters()[0].detach().clone();
  group().broadcast(w, 0);
  EXPECT_EQ(model->parameters()[0].to_vector<float>(), w.to_vector<float>());
}

}  // namespace
}  // namespace remat::distributed

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // A failure on one rank makes its peer's next collective time out: keep
  // that short, so the job ends well inside ctest's own limit.
  remat::distributed::ProcessGroup::world().set_timeout(std::chrono::seconds(60));
  return RUN_ALL_TESTS();
}
