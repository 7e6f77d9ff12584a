// libtorch's per-op host overhead on the CPU from C++: the same three cases as
// bench_overhead.py (PyTorch from Python) and bench_ops' BM_AddTinyNoGrad,
// BM_MulTinyRecorded and BM_MlpBlockTinyStep. With Python's interpreter and
// bindings gone, what is left is ATen's dispatcher, the op's kernel and, where
// a tensor requires grad, autograd's recording and engine. Medians of --repeats
// runs of --calls calls (the MLP step: calls / 10), one thread. Built outside
// remat's CMake build by benchmarks/pytorch/build_libtorch_anchor.sh:
//
//   bash benchmarks/pytorch/build_libtorch_anchor.sh build
//   build/bench_overhead_libtorch --json bench_overhead_libtorch.json
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

// As bench_overhead.py: one warm-up run of calls / 10, then the median over
// `repeats` timed runs of the time per call, in microseconds.
double median_us_per_call(const std::function<void(int64_t)>& body, int64_t calls, int repeats) {
  body(calls / 10);
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body(calls);
    const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    times.push_back(took.count() / static_cast<double>(calls));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// a + b on 8 floats, nothing requires grad: dispatch, the output's allocation
// and the kernel, no autograd recording.
void add_no_grad(int64_t calls) {
  torch::Tensor a = torch::ones({8}), b = torch::ones({8});
  for (int64_t i = 0; i < calls; ++i) {
    torch::Tensor c = a + b;  // a call into libtorch: the compiler cannot drop it
  }
}

// acc * b with b requiring grad, so each call records a MulBackward node. The
// chain is cut every 64 ops inside the timing, so its freeing is timed too (as
// in bench_ops and bench_overhead.py).
void mul_recorded(int64_t calls) {
  torch::Tensor b = torch::ones({8}, torch::requires_grad());
  torch::Tensor acc = torch::ones({8});
  for (int64_t i = 0; i < calls; ++i) {
    acc = acc * b;
    if (i % 64 == 63) acc = torch::ones({8});
  }
}

// One forward and backward step of the tiny MLP block (16 dims, batch 4): the
// host cost of a whole step (six ops, their backward nodes and the engine's
// run), not of one op. The gradients accumulate across calls, as in the Python
// script and bench_ops.
void mlp_block_step(int64_t calls) {
  constexpr int64_t kDim = 16, kBatch = 4;
  auto param = [](torch::IntArrayRef shape) { return torch::ones(shape, torch::requires_grad()); };
  torch::Tensor ln_w = param({kDim}), ln_b = param({kDim}), w1 = param({kDim, kDim}),
                b1 = param({kDim}), w2 = param({kDim, kDim}), b2 = param({kDim});
  torch::Tensor x = torch::ones({kBatch, kDim});
  for (int64_t i = 0; i < calls; ++i) {
    torch::Tensor h = torch::layer_norm(x, {kDim}, ln_w, ln_b);
    // remat's matmul(a, w, bias) is a @ w + bias: the same as addmm.
    h = torch::addmm(b2, torch::gelu(torch::addmm(b1, h, w1)), w2);
    (x + h).sum().backward();
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t calls = 20000;
  int repeats = 5;
  std::string json_path = "bench_overhead_libtorch.json";
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--calls") && has_value) {
      calls = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--repeats") && has_value) {
      repeats = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--json") && has_value) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--calls N] [--repeats N] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  if (calls < 10 || repeats < 1) {
    std::fprintf(stderr, "--calls must be >= 10 and --repeats >= 1\n");
    return 2;
  }
  // One thread, as bench_ops runs with OMP_NUM_THREADS=1 and the Python script
  // calls torch.set_num_threads(1). The inter-op pool is not used by these ops;
  // it is set before any work for completeness (it cannot be changed later).
  at::set_num_interop_threads(1);
  torch::set_num_threads(1);

  const char* keys[] = {"add_tiny_no_grad_us", "mul_tiny_recorded_us", "mlp_block_tiny_step_us"};
  const double us[] = {median_us_per_call(add_no_grad, calls, repeats),
                       median_us_per_call(mul_recorded, calls, repeats),
                       median_us_per_call(mlp_block_step, calls / 10, repeats)};
  for (int k = 0; k < 3; ++k) std::printf("%s: %.2f\n", keys[k], us[k]);

  // The schema of bench_overhead.py's JSON, framework "libtorch".
  std::FILE* f = std::fopen(json_path.c_str(), "w");
  if (!f) {
    std::perror(json_path.c_str());
    return 1;
  }
  std::fprintf(f, "{\n  \"framework\": \"libtorch\",\n  \"version\": \"%s\",\n  \"cases\": {\n",
               TORCH_VERSION);
  for (int k = 0; k < 3; ++k)
    std::fprintf(f, "    \"%s\": %.6g%s\n", keys[k], us[k], k < 2 ? "," : "");
  std::fprintf(f, "  }\n}\n");
  std::fclose(f);
  return 0;
}
