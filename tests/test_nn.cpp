// nn: module registration and naming, layer shapes and initialisation,
// train/eval, device and dtype moves, checkpointing modules, and state files
// in the safetensors format (layout and the errors corrupt files give).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "remat/remat.h"

using namespace remat;

namespace {

std::vector<std::string> names_of(const nn::NamedTensors& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  return names;
}

// A tensor's bytes, for bitwise comparisons across dtypes.
std::vector<char> bytes_of(const Tensor& t) {
  const Tensor host = t.to(kCPU).contiguous();
  const auto* p = static_cast<const char*>(host.data_ptr());
  return std::vector<char>(p, p + host.nbytes());
}

std::vector<std::vector<char>> state_bytes(const nn::Module& m) {
  std::vector<std::vector<char>> out;
  for (const auto& [name, t] : m.state_dict()) out.push_back(bytes_of(t));
  return out;
}

std::vector<std::vector<float>> grads_of(const nn::Module& m) {
  std::vector<std::vector<float>> out;
  for (const Tensor& p : m.parameters()) out.push_back(p.grad().to_vector<float>());
  return out;
}

// A file path private to the running test (ctest runs tests in parallel).
std::string temp_path(const std::string& suffix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return (std::filesystem::temp_directory_path() /
          fmt::format("remat_{}_{}_{}", info->name(), getpid(), suffix))
      .string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and the data section's bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  const uint64_t length = header.size();
  std::string out(sizeof(length), '\0');
  std::memcpy(out.data(), &length, sizeof(length));
  return out + header + data;
}

// Loading `path` throws a remat::Error naming the file and containing `problem`.
void expect_load_error(const std::string& path, const std::string& problem) {
  try {
    nn::load_safetensors(path);
    ADD_FAILURE() << "loading " << path << " did not throw; expected: " << problem;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
  }
}

// A module holding a ModuleList under a name, as a GPT holds its blocks.
struct TinyGpt : nn::Module {
  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<nn::ModuleList> blocks;
  TinyGpt(int64_t vocab, int64_t d, int layers) : Module("TinyGpt") {
    embed = register_module("embed", std::make_shared<nn::Embedding>(vocab, d));
    blocks = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < layers; ++i) {
      blocks->push_back(std::make_shared<nn::TransformerBlock>(d, 2));
    }
  }
};

// One tensor registered under two names, as tied input and output embeddings are.
struct TiedModule : nn::Module {
  TiedModule() : Module("Tied") {
    Tensor w = register_parameter("weight", randn({5, 3}));
    register_parameter("weight_alias", w);
    register_buffer("steps", zeros({}, kInt64));
  }
};

}  // namespace

TEST(Module, LinearShapesAndParameterCount) {
  nn::Linear linear(784, 256);
  EXPECT_EQ(linear.num_parameters(), 784 * 256 + 256);
  EXPECT_EQ(names_of(linear.named_parameters()), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(linear.weight().shape(), (Shape{256, 784}));
  EXPECT_TRUE(linear.weight().requires_grad());
  EXPECT_EQ(linear.forward(randn({32, 784})).shape(), (Shape{32, 256}));
  EXPECT_EQ(linear(randn({2, 5, 784})).shape(), (Shape{2, 5, 256}));
  EXPECT_THROW(linear(randn({32, 783})), ShapeError);

  nn::Linear no_bias(10, 4, /*bias=*/false);
  EXPECT_EQ(no_bias.num_parameters(), 40);
  EXPECT_FALSE(no_bias.bias().defined());
}

TEST(Module, LinearComputesXWTransposedPlusB) {
  nn::Linear linear(2, 3);
  {
    NoGradGuard g;
    linear.weight().copy_(from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}));
    linear.bias().copy_(from_vector(std::vector<float>{10, 20, 30}, {3}));
  }
  Tensor x = from_vector(std::vector<float>{1, -1, 2, 0.5f}, {2, 2});
  // Row 0: [1-2, 3-4, 5-6] + b; row 1: [2+1, 6+2, 10+3] + b.
  EXPECT_EQ(linear(x).to_vector<float>(), (std::vector<float>{9, 19, 29, 13, 28, 43}));
}

TEST(Module, ConvAndBasicBlockShapes) {
  nn::Conv2d conv(3, 8, 3, /*stride=*/2, /*padding=*/1);
  EXPECT_EQ(conv.num_parameters(), 8 * 3 * 3 * 3 + 8);
  EXPECT_EQ(conv(randn({2, 3, 16, 16})).shape(), (Shape{2, 8, 8, 8}));
  nn::Conv2d grouped(4, 8, 3, 1, 1, 1, /*groups=*/2, /*bias=*/false);
  EXPECT_EQ(grouped.weight().shape(), (Shape{8, 2, 3, 3}));
  EXPECT_THROW(nn::Conv2d(3, 8, 3, 1, 0, 1, /*groups=*/2), Error);

  nn::BasicBlock same(8, 8);
  EXPECT_FALSE(same.has_downsample());
  EXPECT_EQ(same(randn({2, 8, 6, 6})).shape(), (Shape{2, 8, 6, 6}));
  nn::BasicBlock down(8, 16, /*stride=*/2);
  EXPECT_TRUE(down.has_downsample());
  EXPECT_EQ(down(randn({2, 8, 6, 6})).shape(), (Shape{2, 16, 3, 3}));
  // conv 3x3 (no bias), bn, conv 3x3, bn, 1x1 conv, bn.
  EXPECT_EQ(down.num_parameters(), 8 * 16 * 9 + 2 * 16 + 16 * 16 * 9 + 2 * 16 + 8 * 16 + 2 * 16);
}

TEST(Module, StateDictNamesFollowPyTorch) {
  nn::BasicBlock block(4, 8, 2);
  const std::vector<std::string> bn_names = {"weight", "bias", "running_mean", "running_var",
                                             "num_batches_tracked"};
  std::vector<std::string> expected = {"conv1.weight"};
  for (const auto& n : bn_names) expected.push_back("bn1." + n);
  expected.push_back("conv2.weight");
  for (const auto& n : bn_names) expected.push_back("bn2." + n);
  expected.push_back("downsample.0.weight");
  for (const auto& n : bn_names) expected.push_back("downsample.1." + n);
  EXPECT_EQ(names_of(block.state_dict()), expected);
  EXPECT_EQ(names_of(block.named_buffers()).size(), 9u);
  EXPECT_EQ(names_of(block.named_parameters()).size(), expected.size() - 9);
}

TEST(Module, TransformerBlockParametersAndNames) {
  const int64_t d = 64;
  nn::TransformerBlock block(d, 4);
  // ln1, ln2: 2d each; attention: 4 (d^2 + d); mlp: d*4d + 4d + 4d*d + d.
  EXPECT_EQ(block.num_parameters(), 2 * 2 * d + 4 * (d * d + d) + (8 * d * d + 5 * d));
  EXPECT_EQ(names_of(block.named_parameters()),
            (std::vector<std::string>{
                "ln1.weight", "ln1.bias", "attn.q_proj.weight", "attn.q_proj.bias",
                "attn.k_proj.weight", "attn.k_proj.bias", "attn.v_proj.weight", "attn.v_proj.bias",
                "attn.out_proj.weight", "attn.out_proj.bias", "ln2.weight", "ln2.bias",
                "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}));
  EXPECT_EQ(block(randn({2, 7, d})).shape(), (Shape{2, 7, d}));
  EXPECT_THROW(nn::MultiheadAttention(d, 5), Error);

  TinyGpt gpt(11, 8, 2);
  const auto names = names_of(gpt.named_parameters());
  EXPECT_EQ(names.front(), "embed.weight");
  EXPECT_EQ(names[3], "blocks.0.attn.q_proj.weight");
  EXPECT_EQ(names.back(), "blocks.1.mlp.2.bias");
}

// A model moved to bfloat16 keeps BatchNorm's running statistics in float32
// (what batch_norm takes for 16-bit inputs) and trains; to(kFloat64) moves them
// along with everything else.
TEST(Module, BatchNormStatisticsStayFloat32UnderBfloat16) {
  manual_seed(2);
  nn::BasicBlock block(4, 8, 2);
  block.to(kBFloat16);
  for (const auto& [name, t] : block.named_buffers()) {
    const bool statistic = name.ends_with("running_mean") || name.ends_with("running_var");
    EXPECT_EQ(t.dtype(), statistic ? kFloat32 : kInt64) << name;
  }
  for (const auto& [name, p] : block.named_parameters()) EXPECT_EQ(p.dtype(), kBFloat16) << name;
  const Tensor y = block(randn({2, 4, 6, 6}).to(kBFloat16));
  EXPECT_EQ(y.dtype(), kBFloat16);
  mean(y).backward();
  block.to(kFloat64);
  for (const auto& [name, t] : block.named_buffers()) {
    EXPECT_EQ(t.dtype(), name.ends_with("num_batches_tracked") ? kInt64 : kFloat64) << name;
  }
}

// forward is the two residual halves in order; the MLP uses the chosen
// activation (ReLU: no negative pre-activation reaches the second Linear).
TEST(Module, TransformerBlockHalvesAndReluActivation) {
  manual_seed(5);
  nn::TransformerBlock gelu_block(16, 2, /*causal=*/true);
  manual_seed(5);
  nn::TransformerBlock relu_block(16, 2, /*causal=*/true, 0.0, nn::MlpActivation::ReLU);
  const Tensor x = randn({2, 6, 16});
  EXPECT_EQ(gelu_block(x).to_vector<float>(),
            gelu_block.mlp_residual(gelu_block.attention_residual(x)).to_vector<float>());
  EXPECT_EQ(relu_block(x).to_vector<float>(),
            relu_block.mlp_residual(relu_block.attention_residual(x)).to_vector<float>());
  // Same weights (same seed), different nonlinearity: the attention halves
  // agree and the outputs do not.
  EXPECT_EQ(gelu_block.attention_residual(x).to_vector<float>(),
            relu_block.attention_residual(x).to_vector<float>());
  EXPECT_NE(gelu_block(x).to_vector<float>(), relu_block(x).to_vector<float>());
  const auto& mlp = relu_block.named_children()[3];
  ASSERT_EQ(mlp.first, "mlp");
  EXPECT_NE(dynamic_cast<nn::ReLU*>(mlp.second->named_children()[1].second.get()), nullptr);
}

TEST(Module, CausalAttentionIgnoresLaterPositions) {
  manual_seed(3);
  nn::MultiheadAttention causal(8, 2, /*causal=*/true);
  Tensor x = randn({1, 5, 8});
  Tensor changed = x.clone();
  {
    NoGradGuard g;
    changed.slice(1, 4, 5).add_(1.0);  // perturb the last position only
  }
  const auto before = causal(x).slice(1, 0, 4).to_vector<float>();
  EXPECT_EQ(causal(changed).slice(1, 0, 4).to_vector<float>(), before);

  nn::MultiheadAttention full(8, 2, /*causal=*/false);
  EXPECT_NE(full(changed).slice(1, 0, 4).to_vector<float>(),
            full(x).slice(1, 0, 4).to_vector<float>());
}

TEST(Module, RegistrationRejectsBadNames) {
  struct Probe : nn::Module {
    Probe() : Module("Probe") {}
  } probe;
  probe.register_parameter("w", zeros({2}));
  EXPECT_THROW(probe.register_buffer("w", zeros({2})), Error);
  EXPECT_THROW(probe.register_parameter("a.b", zeros({2})), Error);
  EXPECT_THROW(probe.register_parameter("", zeros({2})), Error);
  EXPECT_THROW(probe.register_parameter("ints", zeros({2}, kInt64)), Error);
  EXPECT_THROW(probe.register_module("child", std::shared_ptr<nn::Linear>()), Error);
  EXPECT_THROW(probe.forward(zeros({2})), Error);
}

TEST(Module, TiedWeightsAreCountedOnce) {
  TiedModule tied;
  EXPECT_EQ(names_of(tied.named_parameters()), std::vector<std::string>{"weight"});
  EXPECT_EQ(tied.num_parameters(), 15);
  EXPECT_EQ(names_of(tied.state_dict()),
            (std::vector<std::string>{"weight", "weight_alias", "steps"}));
}

TEST(Module, InitialisationMatchesPyTorchDefaults) {
  auto check_uniform = [](const Tensor& t, double bound) {
    const auto v = t.to_vector<float>();
    const auto n = static_cast<double>(v.size());
    double lo = bound, hi = -bound, total = 0.0;
    for (float e : v) {
      lo = std::min<double>(lo, e);
      hi = std::max<double>(hi, e);
      total += e;
    }
    EXPECT_GT(lo, -bound);
    EXPECT_LE(hi, bound);
    // Fills the range, centred: a narrower or shifted distribution would fail.
    EXPECT_LT(lo, -0.9 * bound);
    EXPECT_GT(hi, 0.9 * bound);
    EXPECT_NEAR(total / n, 0.0, 4.0 * bound / std::sqrt(3.0 * n));  // 4 standard errors
  };
  manual_seed(0);
  nn::Linear linear(100, 300);
  check_uniform(linear.weight(), 0.1);
  check_uniform(linear.bias(), 0.1);
  nn::Conv2d conv(4, 64, 3);
  check_uniform(conv.weight(), 1.0 / 6.0);  // fan_in = 4 * 3 * 3

  nn::Embedding embedding(1000, 16);
  const auto e = embedding.weight().to_vector<float>();
  double mean = 0.0, square = 0.0;
  for (float v : e) mean += v / static_cast<double>(e.size());
  for (float v : e) square += (v - mean) * (v - mean) / static_cast<double>(e.size());
  EXPECT_NEAR(mean, 0.0, 0.03);
  EXPECT_NEAR(std::sqrt(square), 1.0, 0.03);

  nn::LayerNorm ln(6);
  nn::BatchNorm2d bn(6);
  for (const Tensor& w : {ln.weight(), bn.weight(), bn.running_var()}) {
    EXPECT_EQ(w.to_vector<float>(), std::vector<float>(6, 1.0f));
  }
  for (const Tensor& b : {ln.bias(), bn.bias(), bn.running_mean()}) {
    EXPECT_EQ(b.to_vector<float>(), std::vector<float>(6, 0.0f));
  }
  EXPECT_EQ(bn.num_batches_tracked().dtype(), kInt64);
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 0);
}

TEST(Module, ManualSeedMakesConstructionDeterministic) {
  manual_seed(7);
  nn::TransformerBlock a(16, 2);
  manual_seed(7);
  nn::TransformerBlock b(16, 2);
  nn::TransformerBlock c(16, 2);  // the stream has moved on
  EXPECT_EQ(state_bytes(a), state_bytes(b));
  EXPECT_NE(state_bytes(a), state_bytes(c));
}

TEST(Module, SequentialAppliesChildrenInOrder) {
  auto first = std::make_shared<nn::Linear>(6, 5);
  auto second = std::make_shared<nn::Linear>(5, 2);
  nn::Sequential seq({first, std::make_shared<nn::ReLU>(), second});
  EXPECT_EQ(seq.size(), 3u);
  EXPECT_EQ(seq[1]->type_name(), "ReLU");
  EXPECT_THROW(seq[3], Error);
  EXPECT_EQ(names_of(seq.named_parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  Tensor x = randn({4, 6});
  EXPECT_EQ(seq(x).to_vector<float>(), second->forward(relu(first->forward(x))).to_vector<float>());
}

TEST(Module, TrainAndEvalSwitchDropout) {
  auto drop = std::make_shared<nn::Dropout>(0.5);
  nn::Sequential seq({std::make_shared<nn::ReLU>(), drop});
  Tensor x = ones({1000});
  EXPECT_TRUE(drop->is_training());
  const auto trained = seq(x).to_vector<float>();
  const auto zeros_kept = std::count(trained.begin(), trained.end(), 0.0f);
  EXPECT_GT(zeros_kept, 400);
  EXPECT_LT(zeros_kept, 600);
  seq.eval();  // reaches the child
  EXPECT_FALSE(drop->is_training());
  EXPECT_EQ(seq(x).to_vector<float>(), x.to_vector<float>());
  seq.train();
  EXPECT_TRUE(drop->is_training());
}

TEST(Module, TrainAndEvalSwitchBatchNorm) {
  manual_seed(1);
  nn::BatchNorm2d bn(3);
  Tensor x = randn({4, 3, 5, 5}) * 3.0 + 2.0;

  Tensor y = bn(x);  // training: batch statistics, running statistics move
  const auto channel_means = mean(y, {0, 2, 3}).to_vector<float>();
  for (float m : channel_means) EXPECT_NEAR(m, 0.0, 1e-5);
  EXPECT_EQ(bn.num_batches_tracked().item<int64_t>(), 1);
  const auto batch_means = mean(x, {0, 2, 3}).to_vector<float>();
  const auto running = bn.running_mean().to_vector<float>();
  for (size_t c = 0; c < 3; ++c) EXPECT_NEAR(running[c], 0.1f * batch_means[c], 1e-5);

  bn.eval();  // running statistics normalise and stay
  const auto stats_before = state_bytes(bn);
  Tensor expected = (x - bn.running_mean().reshape({1, 3, 1, 1})) /
                    sqrt(bn.running_var().reshape({1, 3, 1, 1}) + 1e-5);
  const auto got = bn(x).to_vector<float>();
  const auto want = expected.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4);
  EXPECT_EQ(state_bytes(bn), stats_before);
}

TEST(Module, ToDTypeConvertsInPlaceKeepingHandles) {
  nn::BatchNorm2d bn(3);
  nn::Linear linear(4, 3);
  const Tensor weight = linear.weight();  // as an optimizer would hold it
  const auto values = weight.to_vector<double>();
  sum(linear(randn({2, 4}))).backward();
  linear.to(kFloat64);
  EXPECT_EQ(weight.dtype(), kFloat64);
  EXPECT_EQ(weight.to_vector<double>(), values);
  EXPECT_TRUE(weight.requires_grad());
  EXPECT_EQ(weight.grad().dtype(), kFloat64);
  sum(linear(randn({2, 4}, kFloat64))).backward();  // still trainable in the new dtype

  bn.to(kBFloat16);
  EXPECT_EQ(bn.weight().dtype(), kBFloat16);
  EXPECT_EQ(bn.running_var().dtype(), kFloat32);        // statistics stay float32 (see below)
  EXPECT_EQ(bn.num_batches_tracked().dtype(), kInt64);  // integers keep their dtype
}

TEST(Module, ToDeviceMovesAndComesBack) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  manual_seed(5);
  nn::TransformerBlock block(16, 2);
  const Tensor q = block.named_parameters()[2].second;
  const auto before = state_bytes(block);
  block.to(Device::cuda());
  EXPECT_EQ(q.device(), Device::cuda());
  for (const auto& [name, t] : block.state_dict()) EXPECT_TRUE(t.device().is_cuda()) << name;
  block.to(kCPU);
  EXPECT_EQ(q.device(), kCPU);
  EXPECT_EQ(state_bytes(block), before);
}

TEST(Module, ZeroGradDropsGradientsByDefault) {
  nn::Linear linear(8, 4);
  sum(linear(randn({3, 8}))).backward();
  ASSERT_TRUE(linear.weight().grad().defined());
  linear.zero_grad();
  EXPECT_FALSE(linear.weight().grad().defined());
  EXPECT_FALSE(linear.bias().grad().defined());
}

TEST(Module, ZeroGradWithoutSetToNoneKeepsGradientsAllocated) {
  nn::Linear linear(8, 4);
  sum(linear(randn({3, 8}))).backward();
  const void* storage = linear.weight().grad().data_ptr();
  EXPECT_NE(linear.weight().grad().to_vector<float>(), std::vector<float>(32, 0.0f));
  linear.zero_grad(/*set_to_none=*/false);
  EXPECT_EQ(linear.weight().grad().data_ptr(), storage);
  EXPECT_EQ(linear.weight().grad().to_vector<float>(), std::vector<float>(32, 0.0f));
  EXPECT_EQ(linear.bias().grad().to_vector<float>(), std::vector<float>(4, 0.0f));
}

TEST(ModuleCheckpoint, SequentialGivesBitwiseEqualGradients) {
  manual_seed(21);
  nn::Sequential seq;
  for (int i = 0; i < 4; ++i) {
    seq.push_back(std::make_shared<nn::TransformerBlock>(16, 2, /*causal=*/true, /*dropout=*/0.1));
  }
  Tensor x = randn({2, 6, 16});
  auto run = [&](const std::function<Tensor()>& forward) {
    seq.zero_grad();
    manual_seed(99);  // the same dropout masks in every run
    sum(forward()).backward();
    return grads_of(seq);
  };
  const auto plain = run([&] { return seq(x); });
  reset_checkpoint_stats();
  EXPECT_EQ(run([&] { return checkpoint_sequential(seq, 2, x); }), plain);
  EXPECT_EQ(checkpoint_stats().segments_replayed, 2);
  reset_checkpoint_stats();
  EXPECT_EQ(run([&] { return checkpoint_sequential(seq, x); }), plain);  // round(sqrt(4)) = 2
  EXPECT_EQ(checkpoint_stats().segments_replayed, 2);
  EXPECT_EQ(run([&] { return checkpoint([&](const Tensor& h) { return seq(h); }, x); }), plain);
}

TEST(ModuleCheckpoint, BatchNormStatisticsMoveOnceUnderCheckpoint) {
  auto run = [](bool checkpointed) {
    manual_seed(4);
    auto bn = std::make_shared<nn::BatchNorm2d>(4);
    nn::Sequential seq(
        {std::make_shared<nn::Conv2d>(2, 4, 3, 1, 1), bn, std::make_shared<nn::ReLU>()});
    Tensor x = randn({3, 2, 5, 5});
    Tensor y = checkpointed ? checkpoint_sequential(seq, 1, x) : seq(x);
    sum(y * y).backward();
    EXPECT_EQ(bn->num_batches_tracked().item<int64_t>(), 1);
    return std::pair{state_bytes(seq), grads_of(seq)};
  };
  const auto plain = run(false);
  reset_checkpoint_stats();
  EXPECT_EQ(run(true), plain);
  EXPECT_EQ(checkpoint_stats().segments_replayed, 1);
}

TEST(State, SaveLoadRoundTripIsBitwise) {
  const std::string path = temp_path("block.safetensors");
  manual_seed(8);
  nn::BasicBlock saved(3, 6, 2);
  saved(randn({2, 3, 8, 8}));  // move the running statistics off their initial values
  nn::save_state(saved, path);

  manual_seed(9);
  nn::BasicBlock loaded(3, 6, 2);
  EXPECT_NE(state_bytes(loaded), state_bytes(saved));
  const void* conv_weight_storage = loaded.named_parameters()[0].second.data_ptr();
  nn::load_state(loaded, path);
  EXPECT_EQ(state_bytes(loaded), state_bytes(saved));
  EXPECT_EQ(loaded.named_parameters()[0].second.data_ptr(), conv_weight_storage);  // in place
  std::filesystem::remove(path);
}

TEST(State, EveryDTypeRoundTrips) {
  const std::string path = temp_path("dtypes.safetensors");
  const nn::NamedTensors tensors = {
      {"f32", randn({2, 3})},
      {"f64", randn({4}, kFloat64)},
      {"bf16", randn({3, 1}).to(kBFloat16)},
      {"f16", randn({5}).to(kFloat16)},
      {"i64", from_vector(std::vector<int64_t>{-1, 1LL << 40}, {2})},
      {"i32", from_vector(std::vector<int32_t>{7, -8, 9}, {3})},
      {"bool", from_vector(std::vector<bool>{true, false, true}, {3})},
      {"scalar", full({}, 2.5)},
      {"empty", zeros({0, 4})}};
  nn::save_safetensors(tensors, path, {{"format", "pt"}});
  nn::Metadata metadata;
  const nn::NamedTensors loaded = nn::load_safetensors(path, &metadata);
  EXPECT_EQ(metadata, (nn::Metadata{{"format", "pt"}}));
  ASSERT_EQ(names_of(loaded), names_of(tensors));
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(loaded[i].second.dtype(), tensors[i].second.dtype()) << tensors[i].first;
    EXPECT_EQ(loaded[i].second.shape(), tensors[i].second.shape()) << tensors[i].first;
    EXPECT_EQ(bytes_of(loaded[i].second), bytes_of(tensors[i].second)) << tensors[i].first;
  }
  EXPECT_THROW(nn::save_safetensors({{"a", zeros({1})}, {"a", zeros({1})}}, path), Error);
  EXPECT_THROW(nn::save_safetensors({{"__metadata__", zeros({1})}}, path), Error);
  std::filesystem::remove(path);
}

TEST(State, HeaderByteLayout) {
  const std::string path = temp_path("layout.safetensors");
  nn::Sequential seq({std::make_shared<nn::Linear>(3, 2), std::make_shared<nn::BatchNorm2d>(2)});
  nn::save_state(seq, path);
  const std::string file = read_file(path);

  ASSERT_GE(file.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) {  // little-endian, independent of the host's order
    header_length = header_length << 8 | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
  }
  EXPECT_EQ(header_length % 8, 0u);
  ASSERT_LE(8 + header_length, file.size());
  const auto header = nlohmann::json::parse(file.substr(8, header_length));

  const nn::NamedTensors state = seq.state_dict();
  ASSERT_EQ(header.size(), state.size());
  int64_t offset = 0;
  for (const auto& [name, t] : state) {  // in state_dict order, contiguous
    const auto& entry = header.at(name);
    EXPECT_EQ(entry.at("shape").get<Shape>(), t.shape()) << name;
    EXPECT_EQ(entry.at("data_offsets"), nlohmann::json::array({offset, offset + t.nbytes()}))
        << name;
    const std::vector<char> bytes = bytes_of(t);
    EXPECT_EQ(file.substr(8 + header_length + static_cast<size_t>(offset), bytes.size()),
              std::string(bytes.begin(), bytes.end()))
        << name;
    offset += t.nbytes();
  }
  EXPECT_EQ(header.at("0.weight").at("dtype"), "F32");
  EXPECT_EQ(header.at("1.num_batches_tracked").at("dtype"), "I64");
  EXPECT_EQ(header.at("1.num_batches_tracked").at("shape"), nlohmann::json::array());
  EXPECT_EQ(file.size(), 8 + header_length + static_cast<uint64_t>(offset));
  std::filesystem::remove(path);
}

TEST(State, CorruptFilesGiveErrors) {
  const std::string path = temp_path("corrupt.safetensors");
  nn::save_safetensors({{"a", randn({2, 2})}, {"b", randn({3})}}, path);
  const std::string good = read_file(path);
  const std::string a16 = R"("a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]})";
  const std::string data(28, '\0');

  struct Case {
    std::string bytes;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {good.substr(0, 5), "truncated"},
      {good.substr(0, good.size() - 4), "beyond the 24 bytes of data (truncated file?)"},
      {safetensors_bytes("{}", "") + std::string(4, ' '), "bytes of data"},
      {std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}", "header length"},
      {safetensors_bytes("{\"a\": ", data), "not valid JSON"},
      {safetensors_bytes("[1, 2]", data), "JSON object"},
      // nlohmann throws out_of_range, not parse_error, for a number beyond double.
      {safetensors_bytes(R"({"a": 1e400})", data),
       "not valid JSON: [json.exception.out_of_range.406]"},
      {safetensors_bytes("{" + a16 +
                             R"(, "b": {"dtype": "F32", "shape": [3], )"
                             R"("data_offsets": [12, 24]}})",
                         data),
       "overlaps"},
      {safetensors_bytes("{" + a16 +
                             R"(, "b": {"dtype": "F32", "shape": [3], )"
                             R"("data_offsets": [20, 32]}})",
                         data),
       "beyond"},
      {safetensors_bytes("{" + a16 +
                             R"(, "b": {"dtype": "F32", "shape": [2], )"
                             R"("data_offsets": [20, 28]}})",
                         data),
       "gap"},
      {safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})",
                         data.substr(0, 16)),
       "needs 24"},
      {safetensors_bytes(R"({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}})",
                         data.substr(0, 16)),
       "unsupported dtype"},
      {safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})",
                         data.substr(0, 16)),
       "invalid shape"},
      {safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], )"
                         R"("data_offsets": [0, 16]}})",
                         data.substr(0, 16)),
       "invalid shape"},
      // No element, but strides past int64.
      {safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], )"
                         R"("data_offsets": [0, 0]}})",
                         ""),
       "invalid shape"},
      {safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [[4]], "data_offsets": [0, 16]}})",
                         data.substr(0, 16)),
       "deeper than 3 levels"},
      {safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})",
                         data.substr(0, 16)),
       "data_offsets must be"},
      {safetensors_bytes(R"({"__metadata__": {"k": 1}})", ""), "not a string"},
      {safetensors_bytes(R"({"": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                         data.substr(0, 16)),
       "a tensor name must not be empty"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.problem);
    write_file(path, c.bytes);
    expect_load_error(path, c.problem);
  }
  std::filesystem::remove(path);
  expect_load_error(path, "cannot open");
}

// A million nested arrays once overflowed the stack while the error message
// printed the shape; now the parse stops at the fourth level.
TEST(State, DeeplyNestedHeaderIsAnErrorNotACrash) {
  const std::string path = temp_path("deep.safetensors");
  const size_t depth = 1'000'000;
  write_file(path,
             safetensors_bytes(R"({"a": {"dtype": "F32", "shape": )" + std::string(depth, '[') +
                                   std::string(depth, ']') + R"(, "data_offsets": [0, 0]}})",
                               ""));
  expect_load_error(path, "deeper than 3 levels");
  std::filesystem::remove(path);
}

// Empty tensors share their data offset; enough of them that an unstable
// sort would shuffle them. They load in name order, so a load, save and load
// again gives the same list.
TEST(State, EmptyTensorsAtOneOffsetLoadInNameOrder) {
  const std::string path = temp_path("empties.safetensors");
  nn::NamedTensors tensors;
  for (int i = 39; i >= 0; --i) tensors.emplace_back(fmt::format("t{:02}", i), zeros({0, 3}));
  nn::save_safetensors(tensors, path);
  std::vector<std::string> names;
  for (const auto& [name, t] : nn::load_safetensors(path)) names.push_back(name);
  ASSERT_EQ(names.size(), 40u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  std::filesystem::remove(path);
}

TEST(State, LoadStateReportsMismatchesAndChangesNothing) {
  const std::string path = temp_path("mismatch.safetensors");
  nn::Sequential small({std::make_shared<nn::Linear>(4, 3)});
  nn::Linear other(4, 3);
  nn::save_safetensors({{"0.weight", randn({3, 5})}, {"0.extra", zeros({1})}}, path);
  const auto before = state_bytes(small);
  try {
    nn::load_state(small, path);
    ADD_FAILURE() << "load_state accepted a mismatched file";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const char* part : {"missing key '0.bias'", "unexpected key '0.extra'",
                             "'0.weight' is [3, 5] float32 in the file, [3, 4] float32"}) {
      EXPECT_NE(message.find(part), std::string::npos) << message;
    }
    EXPECT_NE(message.find(path), std::string::npos) << message;
  }
  EXPECT_EQ(state_bytes(small), before);

  nn::save_state(other, path);  // keys "weight", "bias": no "0." prefix
  EXPECT_THROW(nn::load_state(small, path), Error);
  nn::save_safetensors({{"weight", other.weight().to(kFloat64)}, {"bias", other.bias()}}, path);
  EXPECT_THROW(nn::load_state(other, path), Error);  // dtype differs
  std::filesystem::remove(path);
}
