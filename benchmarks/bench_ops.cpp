// bench_ops: how close remat's CPU ops come to the hardware's own limits.
//
//   GEMM   float32 2048 x 2048 x 2048 through remat::matmul (under NoGradGuard,
//          inputs and nothing else preallocated) against cblas_sgemm called
//          directly on the same sizes. Counter `GFLOPS` = 2*M*N*K per second.
//   add    two 16M-float (64 MiB) tensors through remat::add (out of place, as
//          users call it: the 64 MiB result comes from the caching allocator
//          each time) and through Tensor::add_ (in place), against std::memcpy
//          of 64 MiB. Counter `bytes_per_second` is the memory traffic the op
//          must do at least: add moves 3 x 64 MiB (read a, read b, write out;
//          add_ reads a and b and writes a), memcpy 2 x 64 MiB (read, write).
//
//   optimizer  AdamW and SGD-with-momentum steps over 160 MiB of float32
//          parameters (the deep-mlp preset's), bytes_per_second the traffic
//          the update must do at least, against a threaded copy of 160 MiB
//          (target >= 0.80).
//
//   conv   conv2d forward and backward (input and weight gradients) on the
//          resnet preset's float32 layers, batch 32: the stem (3->64, 32x32),
//          a 3x3 64->64 at 32x32, the downsampling 3x3 64->128 stride 2 and
//          its 1x1 shortcut, a 3x3 128->128 at 16x16. GFLOPS counts the three
//          products (3 x 2*N*O*oH*oW*C*kH*kW per step).
//
//   bf16 GEMM  bfloat16 remat::matmul on the long-seq preset's Linear shapes
//          (M = 4096 tokens; K x N = 512x512, 512x2048, 2048x512) in the three
//          forms a Linear runs: forward x @ W^T (b transposed), backward
//          dx = dy @ W and dW = dy^T @ x (a transposed).
//
//   host   the per-op overhead on tiny tensors, where the kernel is nothing:
//          a + b on 8 floats without grad (dispatch, shape rule, allocation),
//          and acc * b recorded on the tape (the same plus a tape entry; the
//          chain is cut every 64 ops so the graph stays small). Reported per op.
//          And a tiny MLP block, forward and backward (layer_norm, two
//          linears around a GELU, the residual add, the sum; 16 dims, batch 4):
//          about 20 ops a step, reported per step.
//          benchmarks/pytorch/bench_overhead.py times the same three in PyTorch.
//
// Reading the ratios: remat GEMM GFLOPS / OpenBLAS GFLOPS is the overhead of
// remat's dispatch, checks and allocation around the same BLAS call (target
// >= 0.90). remat add bytes/s / memcpy bytes/s measures how well the
// elementwise loop streams memory compared with the C library's copy (target
// >= 0.70); memcpy is the practical bandwidth ceiling for a streaming kernel.
// All runs use real (wall) time, since the kernels are multithreaded. Run with
//   bench_ops --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// on a noisy machine and compare medians. docs/benchmarks.md records results.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstring>
#include <iterator>
#include <vector>

#include <remat/remat.h>

namespace {

constexpr int64_t kGemmN = 2048;
constexpr int64_t kAddN = int64_t{16} << 20;  // 16M floats = 64 MiB

double gemm_flops() { return 2.0 * static_cast<double>(kGemmN * kGemmN * kGemmN); }

void set_gemm_counters(benchmark::State& state) {
  state.counters["GFLOPS"] = benchmark::Counter(
      gemm_flops() * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_GemmRemat(benchmark::State& state) {
  remat::NoGradGuard no_grad;
  remat::manual_seed(0);
  remat::Tensor a = remat::randn({kGemmN, kGemmN}, remat::kFloat32);
  remat::Tensor b = remat::randn({kGemmN, kGemmN}, remat::kFloat32);
  for (auto _ : state) {
    remat::Tensor c = remat::matmul(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
    benchmark::ClobberMemory();
  }
  set_gemm_counters(state);
}

void BM_GemmOpenBLAS(benchmark::State& state) {
  const auto n = static_cast<size_t>(kGemmN);
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (size_t i = 0; i < n * n; ++i) {
    a[i] = static_cast<float>(i % 17) * 0.01f;
    b[i] = static_cast<float>(i % 13) * 0.01f;
  }
  const auto N = static_cast<blasint>(kGemmN);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a.data(), N, b.data(), N,
                0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_gemm_counters(state);
}

// One layer of the resnet preset: C -> O channels, k x k kernel, stride, on
// size x size inputs, padding k / 2 (batch 32, float32).
struct ConvLayer {
  int64_t c, o, k, stride, size;
};
constexpr ConvLayer kResnetConvs[] = {{3, 64, 3, 1, 32},
                                      {64, 64, 3, 1, 32},
                                      {64, 128, 3, 2, 32},
                                      {64, 128, 1, 2, 32},
                                      {128, 128, 3, 1, 16}};

void BM_Conv2dStep(benchmark::State& state) {
  constexpr int64_t kBatch = 32;
  const ConvLayer& l = kResnetConvs[state.range(0)];
  remat::manual_seed(0);
  remat::Tensor x = remat::randn({kBatch, l.c, l.size, l.size});
  remat::Tensor w = remat::randn({l.o, l.c, l.k, l.k});
  x.requires_grad_();
  w.requires_grad_();
  const int64_t out = (l.size + 2 * (l.k / 2) - l.k) / l.stride + 1;
  for (auto _ : state) {
    remat::backward(
        remat::sum(remat::conv2d(x, w, remat::Tensor(), {l.stride, l.stride}, {l.k / 2, l.k / 2})));
    x.set_grad({});
    w.set_grad({});
  }
  state.SetLabel(
      fmt::format("{}->{} {}x{} s{} {}x{}", l.c, l.o, l.k, l.k, l.stride, l.size, l.size));
  const double flops = 3.0 * 2.0 * kBatch * l.o * out * out * l.c * l.k * l.k;
  state.counters["GFLOPS"] = benchmark::Counter(
      flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// c [m, n] = a [m, k] @ b [k, n] in `dtype`, a or b read transposed (a view
// of a [k, m] or b [n, k] tensor) as a Linear's forward and backward do.
void gemm_linear(benchmark::State& state, remat::DType dtype) {
  remat::NoGradGuard no_grad;
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const bool ta = state.range(3) != 0, tb = state.range(4) != 0;
  remat::manual_seed(0);
  auto operand = [dtype](int64_t rows, int64_t cols, bool transposed) {
    if (!transposed) return remat::randn({rows, cols}).to(dtype);
    return remat::randn({cols, rows}).to(dtype).transpose(0, 1);
  };
  const remat::Tensor a = operand(m, k, ta), b = operand(k, n, tb);
  for (auto _ : state) {
    remat::Tensor c = remat::matmul(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * static_cast<double>(m * n * k);
  state.counters["GFLOPS"] = benchmark::Counter(
      flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_GemmBf16(benchmark::State& state) { gemm_linear(state, remat::kBFloat16); }
void BM_GemmFloat32(benchmark::State& state) { gemm_linear(state, remat::kFloat32); }

void set_bytes(benchmark::State& state, int64_t passes) {
  const int64_t bytes = passes * kAddN * static_cast<int64_t>(sizeof(float));
  state.SetBytesProcessed(state.iterations() * bytes);
}

void BM_AddRemat(benchmark::State& state) {
  remat::NoGradGuard no_grad;
  remat::Tensor a = remat::full({kAddN}, 1.0);
  remat::Tensor b = remat::full({kAddN}, 2.0);
  for (auto _ : state) {
    remat::Tensor c = remat::add(a, b);
    benchmark::DoNotOptimize(c.data_ptr());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3);
}

// bfloat16 maps on a [4096, 2048] activation of the long-seq preset (16 MiB):
// 0 a + b, 1 relu(a), 2 a * b, 3 a.to(float32). Bytes are what each reads
// and writes.
void BM_ElementwiseBf16(benchmark::State& state) {
  remat::NoGradGuard no_grad;
  remat::manual_seed(0);
  const remat::Tensor a = remat::randn({4096, 2048}).to(remat::kBFloat16);
  const remat::Tensor b = remat::randn({4096, 2048}).to(remat::kBFloat16);
  const int64_t op = state.range(0);
  for (auto _ : state) {
    remat::Tensor c = op == 0   ? remat::add(a, b)
                      : op == 1 ? remat::relu(a)
                      : op == 2 ? remat::mul(a, b)
                                : a.to(remat::kFloat32);
    benchmark::DoNotOptimize(c.data_ptr());
    benchmark::ClobberMemory();
  }
  const int64_t bytes = a.nbytes() * (op == 1 ? 2 : 3);
  state.SetBytesProcessed(state.iterations() * bytes);
}

void BM_AddInPlaceRemat(benchmark::State& state) {
  remat::NoGradGuard no_grad;
  remat::Tensor a = remat::full({kAddN}, 1.0);
  remat::Tensor b = remat::full({kAddN}, 0.0);  // a stays 1.0: no denormals or overflow
  for (auto _ : state) {
    a.add_(b);
    benchmark::DoNotOptimize(a.data_ptr());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3);
}

void BM_Memcpy(benchmark::State& state) {
  const auto n = static_cast<size_t>(kAddN);
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2);
}

// The deep-mlp preset's parameters: 40 weights of 1024 x 1024 float32, 160 MiB.
constexpr int64_t kParams = 40, kWidth = 1024;
constexpr int64_t kParamBytes = kParams * kWidth * kWidth * static_cast<int64_t>(sizeof(float));

// The copy bandwidth the optimizer's passes are held against: Tensor::copy_
// of 160 MiB (threaded, far beyond the caches; BM_Memcpy's 64 MiB is one
// thread and may sit partly in the last-level cache).
void BM_CopyParamBytes(benchmark::State& state) {
  remat::NoGradGuard no_grad;
  remat::Tensor src = remat::full({kParamBytes / 4}, 1.0), dst = remat::zeros({kParamBytes / 4});
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * kParamBytes);
}

// One optimizer step over those parameters with gradients in place.
// bytes_per_second is the traffic the update must do at least: AdamW reads
// parameter, gradient and both moments and writes parameter and moments (7
// passes), SGD with momentum reads parameter, gradient and buffer and writes
// parameter and buffer (5). Target: >= 0.80 of BM_CopyParamBytes' rate.
template <typename Optimizer, typename Options>
void optimizer_step(benchmark::State& state, Options options, int64_t passes) {
  remat::manual_seed(0);
  std::vector<remat::Tensor> params;
  for (int64_t i = 0; i < kParams; ++i) {
    remat::Tensor p = remat::randn({kWidth, kWidth});
    p.set_grad(remat::randn({kWidth, kWidth}) * 1e-3);
    p.requires_grad_();
    params.push_back(p);
  }
  Optimizer optimizer(params, options);
  optimizer.step();  // allocates the state
  for (auto _ : state) {
    optimizer.step();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * passes * kParamBytes);
}

void BM_AdamWStep(benchmark::State& state) {
  optimizer_step<remat::optim::AdamW>(state, remat::optim::AdamOptions{.lr = 1e-3}, 7);
}

void BM_SGDMomentumStep(benchmark::State& state) {
  optimizer_step<remat::optim::SGD>(state, remat::optim::SGDOptions{.lr = 1e-3, .momentum = 0.9},
                                    5);
}

}  // namespace

void BM_AddTinyNoGrad(benchmark::State& state) {
  remat::Tensor a = remat::ones({8}), b = remat::ones({8});
  for (auto _ : state) {
    remat::Tensor c = a + b;
    benchmark::DoNotOptimize(c.data_ptr());
  }
}

void BM_MulTinyRecorded(benchmark::State& state) {
  remat::Tensor b = remat::ones({8});
  b.requires_grad_();
  remat::Tensor acc = remat::ones({8});
  int64_t depth = 0;
  for (auto _ : state) {
    acc = acc * b;
    if (++depth == 64) {  // the graph of 64 entries is freed here, inside the timing
      acc = remat::ones({8});
      depth = 0;
    }
  }
}

void BM_MlpBlockTinyStep(benchmark::State& state) {
  constexpr int64_t kDim = 16, kBatch = 4;
  auto param = [](const remat::Shape& shape) {
    remat::Tensor p = remat::ones(shape);
    p.requires_grad_();
    return p;
  };
  remat::Tensor ln_w = param({kDim}), ln_b = param({kDim}), w1 = param({kDim, kDim}),
                b1 = param({kDim}), w2 = param({kDim, kDim}), b2 = param({kDim});
  remat::Tensor x = remat::ones({kBatch, kDim});
  for (auto _ : state) {
    remat::Tensor h = remat::layer_norm(x, ln_w, ln_b);
    h = remat::matmul(remat::gelu(remat::matmul(h, w1, b1)), w2, b2);
    remat::backward(remat::sum(x + h));
  }
}

// Causal self-attention of the long-seq preset's shape (1 x 4 heads x 4096
// tokens x 128, bfloat16), forward and backward, fused or math (argument 0:
// fused, 1: math). `GFLOPS` is FlashAttention's convention: 2 forward and 4
// backward [T, T, E] products, 2 flops a multiply-add, halved by causality
// (the fused backward's recomputed scores are not counted).
// benchmarks/pytorch/bench_attention.py times PyTorch's
// F.scaled_dot_product_attention on the same shape.
constexpr int64_t kHeads = 4, kTokens = 4096, kHeadDim = 128;

remat::Tensor attention_input() {
  remat::Tensor t = remat::randn({1, kHeads, kTokens, kHeadDim}).to(remat::kBFloat16);
  t.requires_grad_();
  return t;
}

remat::AttentionImpl attention_impl(const benchmark::State& state) {
  return state.range(0) == 0 ? remat::AttentionImpl::Fused : remat::AttentionImpl::Math;
}

// The forward alone, what a checkpointed segment's replay runs again.
void BM_AttentionCausalForward(benchmark::State& state) {
  remat::NoGradGuard no_grad;
  const auto impl = attention_impl(state);
  remat::manual_seed(0);
  remat::Tensor q = attention_input(), k = attention_input(), v = attention_input();
  for (auto _ : state) {
    remat::Tensor out =
        remat::scaled_dot_product_attention(q, k, v, {.causal = true, .impl = impl});
    benchmark::DoNotOptimize(out.data_ptr());
  }
  const double flops = 2.0 * 2.0 * kHeads * kTokens * kTokens * kHeadDim / 2.0;
  state.counters["GFLOPS"] = benchmark::Counter(
      flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_AttentionCausalStep(benchmark::State& state) {
  const auto impl = attention_impl(state);
  remat::manual_seed(0);
  remat::Tensor q = attention_input(), k = attention_input(), v = attention_input();
  for (auto _ : state) {
    remat::backward(
        remat::sum(remat::scaled_dot_product_attention(q, k, v, {.causal = true, .impl = impl})));
    q.set_grad({});
    k.set_grad({});
    v.set_grad({});
  }
  const double flops = 6.0 * 2.0 * kHeads * kTokens * kTokens * kHeadDim / 2.0;
  state.counters["GFLOPS"] = benchmark::Counter(
      flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_GemmRemat)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GemmOpenBLAS)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Conv2dStep)
    ->ArgName("layer")
    ->DenseRange(0, static_cast<int64_t>(std::size(kResnetConvs)) - 1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// {m, k, n, a transposed, b transposed}: forward x @ W^T, dx = dy @ W,
// dW = dy^T @ x, for the three Linear shapes of the long-seq preset.
BENCHMARK(BM_GemmBf16)
    ->ArgNames({"m", "k", "n", "ta", "tb"})
    ->Args({4096, 512, 512, 0, 1})
    ->Args({4096, 512, 512, 0, 0})
    ->Args({512, 4096, 512, 1, 0})
    ->Args({4096, 512, 2048, 0, 1})
    ->Args({4096, 2048, 512, 0, 0})
    ->Args({2048, 4096, 512, 1, 0})
    ->Args({4096, 2048, 512, 0, 1})
    ->Args({4096, 512, 2048, 0, 0})
    ->Args({512, 4096, 2048, 1, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// The same forms for the float32 presets: the wide transformer's MLP (2048
// tokens, d_model 1024, hidden 4096) and the deep MLP's layers (batch 64).
BENCHMARK(BM_GemmFloat32)
    ->ArgNames({"m", "k", "n", "ta", "tb"})
    ->Args({2048, 1024, 4096, 0, 1})
    ->Args({2048, 4096, 1024, 0, 0})
    ->Args({4096, 2048, 1024, 1, 0})
    ->Args({2048, 4096, 1024, 0, 1})
    ->Args({2048, 1024, 4096, 0, 0})
    ->Args({1024, 2048, 4096, 1, 0})
    ->Args({64, 1024, 1024, 0, 1})
    ->Args({64, 1024, 1024, 0, 0})
    ->Args({1024, 64, 1024, 1, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_AddRemat)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ElementwiseBf16)
    ->ArgName("op")
    ->DenseRange(0, 3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_AddInPlaceRemat)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CopyParamBytes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AdamWStep)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SGDMomentumStep)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AttentionCausalForward)
    ->ArgName("math")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_AttentionCausalStep)
    ->ArgName("math")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_AddTinyNoGrad)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MulTinyRecorded)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MlpBlockTinyStep)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
