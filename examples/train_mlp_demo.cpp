// The quick-start demo: trains a two-layer MLP on a synthetic classification
// task (points from Gaussian clusters) on the CPU, printing loss, step time and
// the allocator's peak memory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "remat/remat.h"

using namespace remat;

namespace {

struct Options {
  int64_t steps = 200;
  int64_t batch = 256;
  int64_t features = 32;
  int64_t hidden = 512;
  int64_t classes = 10;
  double lr = 0.1;
  uint64_t seed = 0;
};

const char* kUsage = R"(train_mlp_demo: train a two-layer MLP on synthetic clusters (CPU)

Usage: train_mlp_demo [options]
  --steps N     training steps (default 200)
  --batch N     examples per step (default 256)
  --hidden N    hidden width (default 512)
  --lr X        SGD learning rate (default 0.1)
  --seed N      random seed (default 0)
  --help        show this message
)";

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(fmt::format("{} needs a value", arg));
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--steps") {
      o.steps = std::stoll(value());
    } else if (arg == "--batch") {
      o.batch = std::stoll(value());
    } else if (arg == "--hidden") {
      o.hidden = std::stoll(value());
    } else if (arg == "--lr") {
      o.lr = std::stod(value());
    } else if (arg == "--seed") {
      o.seed = std::stoull(value());
    } else {
      throw Error(fmt::format("unknown option '{}' (see --help)", arg));
    }
  }
  return o;
}

Tensor init_weight(int64_t fan_in, int64_t fan_out) {
  Tensor w = randn({fan_in, fan_out}) * (1.0 / std::sqrt(static_cast<double>(fan_in)));
  w.requires_grad_();
  return w;
}

// A fixed dataset: class c's points scatter around a random centre.
struct Clusters {
  Tensor centres;  // [classes, features]
  Tensor sample(int64_t batch, Tensor& labels) const {
    const int64_t classes = centres.shape()[0];
    std::vector<int64_t> y(static_cast<size_t>(batch));
    std::vector<float> u = rand({batch}).to_vector<float>();
    for (int64_t i = 0; i < batch; ++i) {
      y[static_cast<size_t>(i)] = std::min<int64_t>(classes - 1, static_cast<int64_t>(u[static_cast<size_t>(i)] * static_cast<float>(classes)));
    }
    labels = from_vector(y, {batch});
    Tensor onehot = zeros({batch, classes});
    float* p = onehot.data<float>();
    for (int64_t i = 0; i < batch; ++i) p[i * classes + y[static_cast<size_t>(i)]] = 1.0f;
    return matmul(onehot, centres) + randn({batch, centres.shape()[1]}) * 1.5;
  }
};

}  // namespace

int main(int argc, char** argv) try {
  Options o = parse(argc, argv);
  manual_seed(o.seed);
  Clusters data{randn({o.classes, o.features})};
  Tensor w1 = init_weight(o.features, o.hidden);
  Tensor w2 = init_weight(o.hidden, o.classes);
  std::vector<Tensor> params{w1, w2};

  fmt::print("remat demo: MLP {}-{}-{} on synthetic clusters, batch {}, {} steps, cpu\n",
             o.features, o.hidden, o.classes, o.batch, o.steps);
  memory::reset_peak_stats(kCPU);
  std::vector<double> step_ms;
  double loss_value = 0;
  for (int64_t step = 1; step <= o.steps; ++step) {
    Tensor labels;
    Tensor x;
    {
      NoGradGuard no_grad;
      x = data.sample(o.batch, labels);
    }
    auto t0 = std::chrono::steady_clock::now();
    Tensor loss = cross_entropy(matmul(relu(matmul(x, w1)), w2), labels);
    loss.backward();
    {
      NoGradGuard no_grad;
      for (Tensor& p : params) {
        p.add_(p.grad(), -o.lr);
        p.set_grad({});
      }
    }
    step_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    loss_value = loss.item<double>();
    if (step == 1 || step % 20 == 0 || step == o.steps) {
      fmt::print("step {:4d}  loss {:.4f}  step {:.2f} ms\n", step, loss_value, step_ms.back());
    }
  }
  std::sort(step_ms.begin(), step_ms.end());
  memory::Stats s = memory::stats(kCPU);
  fmt::print("\nfinal loss        {:.4f}\n", loss_value);
  fmt::print("median step time  {:.2f} ms\n", step_ms[step_ms.size() / 2]);
  fmt::print("peak allocated    {:.2f} MiB\n", static_cast<double>(s.allocated_bytes.peak) / (1 << 20));
  fmt::print("peak reserved     {:.2f} MiB\n", static_cast<double>(s.reserved_bytes.peak) / (1 << 20));
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
