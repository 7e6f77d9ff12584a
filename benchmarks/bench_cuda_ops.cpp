// bench_cuda_ops: remat's CUDA ops against the GPU's own limits, for the
// performance targets of the CUDA backend (docs/benchmarks.md):
//
//   gemm_bf16     remat::matmul of two bfloat16 [8192, 8192] matrices (cuBLAS,
//                 float32 compute); TFLOP/s = 2*M*N*K per second. The anchor is
//                 torch.matmul on the same GPU (benchmarks/pytorch/bench_cuda_ops.py
//                 writes the same JSON; target: remat >= 85% of PyTorch).
//   copy          cudaMemcpyAsync device to device of a 1 GiB buffer: the
//                 practical bandwidth ceiling of a streaming kernel (bytes moved
//                 = read + write).
//   add           a + b of two 256M-float tensors (3 x 1 GiB of traffic);
//                 target >= 80% of copy bandwidth.
//   layer_norm    forward over [65536, 4096] float32 rows (read x, write y);
//   softmax       forward over [65536, 4096] float32 rows; targets >= 70% of
//                 copy bandwidth.
//   attention     causal scaled_dot_product_attention (the fused op), forward
//                 and backward, bfloat16 [4, 16, 4096, 64]; TFLOP/s counts 2
//                 forward and 4 backward [T, T, 64] products, 2 flops a
//                 multiply-add, halved by causality (FlashAttention's
//                 convention). Target: >= 70% of PyTorch's SDPA (its
//                 FlashAttention-2 backend) on the same GPU.
//
// Every op but attention runs under NoGradGuard, out of place as users call it (results come
// from the caching allocator, which after the first call makes no raw
// allocation). Times: wall clock around `iters` calls, bracketed by device
// synchronisations, median of `repeats`. Without a CUDA device it says so and
// exits 0.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include <remat/remat.h>

#include "common/median.h"

namespace {

struct Result {
  std::string name;
  double seconds = 0;  // median per call
  double work = 0;     // flops or bytes per call
  std::string unit;    // "TFLOP/s" or "GB/s"
};

double median_seconds(const std::function<void()>& call, int iters, int repeats,
                      remat::Device device) {
  call();  // warm-up: cuBLAS heuristics, allocator segments
  remat::synchronize(device);
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) call();
    remat::synchronize(device);
    std::chrono::duration<double> d = std::chrono::steady_clock::now() - start;
    times.push_back(d.count() / iters);
  }
  return bench::median(std::move(times));
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw remat::Error(std::string(what) + ": " + cudaGetErrorString(err));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"remat CUDA ops against the GPU's limits (GEMM TFLOP/s, streaming GB/s)"};
  int iters = 20, repeats = 5;
  int64_t gemm_n = 8192, rows = 65536, width = 4096;
  std::string json_path = "bench_cuda_ops.json";
  app.add_option("--iters", iters, "calls per timed repeat")->capture_default_str();
  app.add_option("--repeats", repeats, "timed repeats (the median is reported)")
      ->capture_default_str();
  app.add_option("--gemm-n", gemm_n, "M = N = K of the bf16 GEMM")->capture_default_str();
  app.add_option("--rows", rows, "rows of the layer_norm/softmax input")->capture_default_str();
  app.add_option("--width", width, "row width of the layer_norm/softmax input")
      ->capture_default_str();
  app.add_option("--json", json_path, "where to write the results")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (!remat::cuda_is_available()) {
    std::cout << "bench_cuda_ops: no CUDA device; nothing measured\n";
    return 0;
  }
  using namespace remat;
  const Device gpu = Device::cuda(0);
  NoGradGuard no_grad;
  manual_seed(0);
  std::vector<Result> results;

  {
    Tensor a = randn({gemm_n, gemm_n}, kBFloat16, gpu);
    Tensor b = randn({gemm_n, gemm_n}, kBFloat16, gpu);
    double s = median_seconds([&] { Tensor c = matmul(a, b); }, iters, repeats, gpu);
    results.push_back(
        {"gemm_bf16", s, 2.0 * static_cast<double>(gemm_n * gemm_n * gemm_n), "TFLOP/s"});
  }
  {
    const int64_t n = int64_t{256} << 20;  // floats: 1 GiB
    Tensor src = randn({n}, kFloat32, gpu);
    Tensor dst = Tensor::empty({n}, kFloat32, gpu);
    const auto bytes = static_cast<size_t>(src.nbytes());
    double copy_s = median_seconds(
        [&] {
          check_cuda(
              cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyDeviceToDevice,
                              static_cast<cudaStream_t>(current_stream(gpu).handle())),
              "cudaMemcpyAsync");
        },
        iters, repeats, gpu);
    results.push_back({"copy", copy_s, 2.0 * static_cast<double>(bytes), "GB/s"});
    double add_s = median_seconds([&] { Tensor c = src + dst; }, iters, repeats, gpu);
    results.push_back({"add", add_s, 3.0 * static_cast<double>(bytes), "GB/s"});
  }
  {
    Tensor x = randn({rows, width}, kFloat32, gpu);
    Tensor w = ones({width}, kFloat32, gpu);
    Tensor bias = zeros({width}, kFloat32, gpu);
    const auto bytes = 2.0 * static_cast<double>(x.nbytes());
    double ln_s = median_seconds([&] { Tensor y = layer_norm(x, w, bias); }, iters, repeats, gpu);
    results.push_back({"layer_norm", ln_s, bytes, "GB/s"});
    double sm_s = median_seconds([&] { Tensor y = softmax(x, -1); }, iters, repeats, gpu);
    results.push_back({"softmax", sm_s, bytes, "GB/s"});
  }

  {
    GradMode::set_enabled(true);  // attention is timed forward and backward
    constexpr int64_t kBatch = 4, kHeads = 16, kTokens = 4096, kHeadDim = 64;
    auto input = [&] {
      Tensor t = randn({kBatch, kHeads, kTokens, kHeadDim}, kBFloat16, gpu);
      t.requires_grad_();
      return t;
    };
    Tensor q = input(), k = input(), v = input();
    double s = median_seconds(
        [&] {
          backward(sum(scaled_dot_product_attention(q, k, v, true)));
          for (Tensor* t : {&q, &k, &v}) t->set_grad({});
        },
        iters, repeats, gpu);
    results.push_back({"attention", s,
                       6.0 * 2.0 * kBatch * kHeads * kTokens * kTokens * kHeadDim / 2.0,
                       "TFLOP/s"});
    GradMode::set_enabled(false);
  }

  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  nlohmann::json out = {{"framework", "remat"}, {"device", prop.name}, {"results", {}}};
  double copy_rate = 0;
  fmt::print("{} ({})\n{:<12} {:>10} {:>12}\n", prop.name, "median of repeats", "op", "ms", "rate");
  for (const Result& r : results) {
    const double rate = r.work / r.seconds / (r.unit == "TFLOP/s" ? 1e12 : 1e9);
    if (r.name == "copy") copy_rate = rate;
    fmt::print("{:<12} {:>10.3f} {:>8.1f} {}\n", r.name, r.seconds * 1e3, rate, r.unit);
    out["results"].push_back(
        {{"name", r.name}, {"ms", r.seconds * 1e3}, {"rate", rate}, {"unit", r.unit}});
  }
  for (const Result& r : results) {
    if (r.unit == "GB/s" && r.name != "copy") {
      fmt::print("{} at {:.0f}% of copy bandwidth\n", r.name,
                 100.0 * r.work / r.seconds / 1e9 / copy_rate);
    }
  }
  std::ofstream(json_path) << out.dump(2) << "\n";
  fmt::print("wrote {}\n", json_path);
  return 0;
}
