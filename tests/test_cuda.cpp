// The caching allocator on CUDA (reuse, statistics, limits and OOM recovery,
// empty_cache, stream-aware reuse and record_stream), streams, steady-state
// training without raw device allocations, device mixing, transfers, dropout
// masks across devices, and checkpointing on the GPU. Every test skips without
// a device, except the SimulatedStreams tests: they drive the stream-aware
// policy through a host-memory backend with scripted streams and events, so
// the policy is tested wherever the suite runs.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "memory/caching_allocator.h"
#include "ops/quantize.h"
#include "ops/registry.h"
#include "remat/remat.h"
#include "support/limited_backend.h"

#if defined(REMAT_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace remat {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
const Device kGpu = Device::cuda(0);

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- The stream-aware policy, simulated on the host ---------------------------

// Host memory posing as cuda:0, with streams that are plain handles and events
// that complete when the test says so (finish) or when the allocator waits.
class SimulatedStreams final : public memory::RawBackend, public memory::StreamEvents {
 public:
  explicit SimulatedStreams(int64_t budget = int64_t{1} << 40) : memory_(budget, kGpu) {}

  void* raw_alloc(size_t bytes) override { return memory_.raw_alloc(bytes); }
  void raw_free(void* ptr, size_t bytes) override { memory_.raw_free(ptr, bytes); }
  Device device() const override { return kGpu; }
  const char* name() const override { return "simulated"; }

  void* current_stream() const override { return stream; }
  void* record_event(void* on) override {
    events_.push_back({on, false});
    ++recorded;
    return &events_.back();
  }
  bool event_done(void* event) override { return static_cast<SimEvent*>(event)->done; }
  void synchronize_event(void* event) override {
    static_cast<SimEvent*>(event)->done = true;
    ++waited;
  }
  void release_event(void*) override { ++released; }

  // Everything queued on `on` so far has run.
  void finish(void* on) {
    for (SimEvent& e : events_) e.done = e.done || e.stream == on;
  }

  void* stream = nullptr;  // the "current stream"
  int recorded = 0, waited = 0, released = 0;

 private:
  struct SimEvent {
    void* stream;
    bool done;
  };
  testing::LimitedBackend memory_;
  std::deque<SimEvent> events_;  // a deque keeps the handles stable
};

void* const kSide = reinterpret_cast<void*>(uintptr_t{0x5de});
const Stream kSideStream = Stream::from_handle(kGpu, kSide);

struct Simulated {
  explicit Simulated(int64_t budget = int64_t{1} << 40) {
    auto owned = std::make_unique<SimulatedStreams>(budget);
    sim = owned.get();
    alloc = std::make_unique<memory::CachingAllocator>(std::move(owned));
  }
  SimulatedStreams* sim;
  std::unique_ptr<memory::CachingAllocator> alloc;
};

TEST(SimulatedStreams, AFreedBlockServesOnlyItsOwnStream) {
  Simulated s;
  void* on_default = s.alloc->allocate(1000).get();  // freed at once
  s.sim->stream = kSide;
  void* on_side = nullptr;
  {
    memory::Allocation a = s.alloc->allocate(1000);
    on_side = a.get();
    EXPECT_NE(on_side, on_default);
    EXPECT_EQ(s.alloc->stats().num_raw_allocs, 2);  // a segment per stream
  }
  EXPECT_EQ(s.alloc->allocate(1000).get(), on_side);
  s.sim->stream = nullptr;
  EXPECT_EQ(s.alloc->allocate(1000).get(), on_default);
  EXPECT_EQ(s.alloc->stats().num_raw_allocs, 2);
  EXPECT_EQ(s.sim->recorded, 0);  // no record_stream, no events
}

TEST(SimulatedStreams, ARecordedBlockWaitsForTheOtherStream) {
  Simulated s;
  const int64_t size = 12 * kMiB;  // its own segment
  void* first = nullptr;
  {
    memory::Allocation a = s.alloc->allocate(size);
    first = a.get();
    memory::record_stream(a, kSideStream);
    memory::record_stream(a, kSideStream);  // once per stream is enough
  }
  EXPECT_EQ(s.sim->recorded, 1);
  memory::Stats stats = s.alloc->stats();
  EXPECT_EQ(stats.allocated_bytes.current, 0);
  EXPECT_EQ(stats.allocation_count.current, 0);
  EXPECT_EQ(stats.active_bytes.current, size);  // still in use by the side stream
  EXPECT_EQ(stats.requested_bytes.current, size);

  memory::Allocation b = s.alloc->allocate(size);  // the side stream is still busy
  EXPECT_NE(b.get(), first);
  EXPECT_EQ(s.alloc->stats().num_raw_allocs, 2);

  s.sim->finish(kSide);
  memory::Allocation c = s.alloc->allocate(size);  // polls the event, reuses the block
  EXPECT_EQ(c.get(), first);
  EXPECT_EQ(s.sim->released, 1);
  EXPECT_EQ(s.sim->waited, 0);
  stats = s.alloc->stats();
  EXPECT_EQ(stats.num_raw_allocs, 2);
  EXPECT_EQ(stats.active_bytes.current, 2 * size);
  EXPECT_EQ(stats.active_bytes.freed, size);
}

TEST(SimulatedStreams, RecordingTheBlocksOwnStreamChangesNothing) {
  Simulated s;
  s.sim->stream = kSide;
  void* first = nullptr;
  {
    memory::Allocation a = s.alloc->allocate(4096);
    first = a.get();
    memory::record_stream(a, kSideStream);
  }
  EXPECT_EQ(s.sim->recorded, 0);
  EXPECT_EQ(s.alloc->allocate(4096).get(), first);
}

TEST(SimulatedStreams, EmptyCacheWaitsForPendingBlocks) {
  Simulated s;
  {
    memory::Allocation a = s.alloc->allocate(12 * kMiB);
    memory::record_stream(a, kSideStream);
  }
  s.alloc->empty_cache();
  EXPECT_EQ(s.sim->waited, 1);
  memory::Stats stats = s.alloc->stats();
  EXPECT_EQ(stats.reserved_bytes.current, 0);
  EXPECT_EQ(stats.active_bytes.current, 0);
  EXPECT_EQ(stats.num_raw_frees, 1);
}

TEST(SimulatedStreams, OutOfMemoryRetryWaitsForPendingBlocks) {
  Simulated s(12 * kMiB);  // room for one segment
  void* first = nullptr;
  {
    memory::Allocation a = s.alloc->allocate(12 * kMiB);
    first = a.get();
    memory::record_stream(a, kSideStream);
  }
  memory::Allocation b = s.alloc->allocate(12 * kMiB);
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(s.sim->waited, 1);
  EXPECT_EQ(s.alloc->stats().num_alloc_retries, 1);
  EXPECT_EQ(s.alloc->stats().num_ooms, 0);
  // Held by a live allocation, nothing can be waited for: a real OOM.
  EXPECT_THROW(s.alloc->allocate(12 * kMiB), OutOfMemoryError);
}

TEST(SimulatedStreams, RecordStreamRefusesOtherDevicesAndHostMemory) {
  Simulated s;
  memory::Allocation a = s.alloc->allocate(100);
  EXPECT_THROW(memory::record_stream(a, Stream::default_stream(Device::cuda(1))), Error);
  memory::record_stream(memory::Allocation(), kSideStream);  // empty: nothing to do
  memory::CachingAllocator host(memory::make_cpu_backend());
  memory::Allocation h = host.allocate(100);
  try {
    memory::record_stream(h, kSideStream);
    FAIL() << "expected remat::Error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "cpu")) << e.what();
    EXPECT_TRUE(contains(e.what(), "cuda:0")) << e.what();
  }
}

// ---- The allocator on a real device --------------------------------------------

TEST(CudaAllocator, TensorsCountInTheDeviceStatistics) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  const memory::Stats before = memory::stats(kGpu);
  {
    Tensor t = full({1000}, 3.0, kFloat32, kGpu);
    EXPECT_EQ(t.to_vector<float>(), std::vector<float>(1000, 3.0f));
    const memory::Stats during = memory::stats(kGpu);
    EXPECT_EQ(during.allocated_bytes.current - before.allocated_bytes.current, 4096);
    EXPECT_EQ(during.requested_bytes.current - before.requested_bytes.current, 4000);
    EXPECT_EQ(during.allocation_count.current - before.allocation_count.current, 1);
  }
  const memory::Stats after = memory::stats(kGpu);
  EXPECT_EQ(after.allocated_bytes.current, before.allocated_bytes.current);
  EXPECT_EQ(after.active_bytes.current, before.active_bytes.current);
  // The block is cached: the same request needs no new segment.
  Tensor again = Tensor::empty({1000}, kFloat32, kGpu);
  EXPECT_EQ(memory::stats(kGpu).num_raw_allocs, after.num_raw_allocs);
}

TEST(CudaAllocator, MemoryLimitThrowsAndTheLibraryKeepsWorking) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  memory::empty_cache(kGpu);
  const memory::Stats before = memory::stats(kGpu);
  memory::set_memory_limit(kGpu, before.reserved_bytes.current + 8 * kMiB);
  try {
    Tensor big = Tensor::empty({16 * kMiB}, kFloat32, kGpu);  // 64 MiB
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_TRUE(contains(e.what(),
                         "out of memory on cuda:0: tried to allocate 64.00 MiB "
                         "(67108864 bytes)"))
        << e.what();
    EXPECT_TRUE(contains(e.what(), "would pass the limit")) << e.what();
  }
  EXPECT_EQ(memory::stats(kGpu).num_ooms, before.num_ooms + 1);
  memory::set_memory_limit(kGpu, 0);
  Tensor x = full({16 * kMiB}, 2.0, kFloat32, kGpu);
  EXPECT_EQ(sum(x).item<double>(), 2.0 * 16 * kMiB);
}

TEST(CudaAllocator, CudaMallocFailureFreesTheCacheThenThrows) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  const memory::Stats before = memory::stats(kGpu);
  const int64_t huge = int64_t{1} << 42;  // 4 TiB: no device has it
  try {
    memory::Allocation a = memory::allocate(kGpu, huge);
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    EXPECT_TRUE(contains(e.what(), "out of memory on cuda:0: tried to allocate 4.00 TiB"))
        << e.what();
    EXPECT_TRUE(contains(e.what(), "cudaMalloc backend has no")) << e.what();
  }
  const memory::Stats after = memory::stats(kGpu);
  EXPECT_EQ(after.num_alloc_retries, before.num_alloc_retries + 1);
  EXPECT_EQ(after.num_ooms, before.num_ooms + 1);
  Tensor x = ones({4, 4}, kFloat32, kGpu);  // the device still works
  EXPECT_EQ(matmul(x, x).to_vector<float>(), std::vector<float>(16, 4.0f));
}

TEST(CudaAllocator, EmptyCacheReturnsFreeSegments) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  { Tensor t = Tensor::empty({3 * kMiB}, kFloat32, kGpu); }  // 12 MiB: its own segment
  const memory::Stats cached = memory::stats(kGpu);
  EXPECT_GE(cached.reserved_bytes.current - cached.allocated_bytes.current, 12 * kMiB);
  memory::empty_cache(kGpu);
  const memory::Stats emptied = memory::stats(kGpu);
  EXPECT_GT(emptied.num_raw_frees, cached.num_raw_frees);
  EXPECT_LE(emptied.reserved_bytes.current, cached.reserved_bytes.current - 12 * kMiB);
  EXPECT_EQ(emptied.allocated_bytes.current, cached.allocated_bytes.current);
}

TEST(CudaAllocator, RecordStreamOnHostTensorsIsAnError) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  EXPECT_THROW(memory::record_stream(ones({2}), Stream::default_stream(kGpu)), Error);
}

#if defined(REMAT_WITH_CUDA)

// Holds a stream at a host function until opened (or destroyed), so a test
// knows that work queued behind it has not run.
class StreamGate {
 public:
  explicit StreamGate(const Stream& stream) {
    cudaError_t err = cudaLaunchHostFunc(static_cast<cudaStream_t>(stream.handle()), &wait, &open_);
    EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
  }
  ~StreamGate() { open(); }
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;
  void open() { open_.store(true); }

 private:
  static void CUDART_CB wait(void* flag) {
    while (!static_cast<std::atomic<bool>*>(flag)->load()) std::this_thread::yield();
  }
  std::atomic<bool> open_{false};
};

TEST(CudaAllocator, AllocatesFreesAndReuses) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  memory::CachingAllocator alloc(memory::make_cuda_backend(0));
  void* first = nullptr;
  {
    memory::Allocation a = alloc.allocate(1000);
    first = a.get();
    ASSERT_EQ(cudaMemset(a.get(), 0x7f, 1000), cudaSuccess);  // the memory is usable
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(alloc.stats().allocated_bytes.current, 1024);
    EXPECT_EQ(alloc.stats().reserved_bytes.current, 2 * kMiB);
  }
  EXPECT_EQ(alloc.stats().allocated_bytes.current, 0);
  EXPECT_EQ(alloc.stats().active_bytes.current, 0);
  EXPECT_EQ(alloc.allocate(1000).get(), first);
  memory::Allocation large = alloc.allocate(11 * kMiB);  // a 12 MiB segment of its own
  EXPECT_EQ(alloc.stats().reserved_bytes.current, 14 * kMiB);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 2);
  EXPECT_EQ(alloc.stats().num_raw_frees, 0);
}

TEST(CudaAllocator, BlocksAreReusedOnlyOnTheirStream) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  memory::CachingAllocator alloc(memory::make_cuda_backend(0));
  const Stream side = Stream::create(kGpu);
  void* on_side = nullptr;
  {
    StreamGuard guard(side);
    on_side = alloc.allocate(1000).get();
  }
  memory::Allocation on_default = alloc.allocate(1000);
  EXPECT_NE(on_default.get(), on_side);
  StreamGuard guard(side);
  EXPECT_EQ(alloc.allocate(1000).get(), on_side);
}

TEST(CudaAllocator, RecordStreamKeepsABlockUntilTheOtherStreamIsDone) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  memory::CachingAllocator alloc(memory::make_cuda_backend(0));
  const Stream side = Stream::create(kGpu);
  const int64_t size = 12 * kMiB;
  StreamGate gate(side);  // the side stream's work cannot finish yet
  void* first = nullptr;
  {
    memory::Allocation a = alloc.allocate(size);
    first = a.get();
    memory::record_stream(a, side);
  }
  EXPECT_EQ(alloc.stats().active_bytes.current, size);
  memory::Allocation b = alloc.allocate(size);
  EXPECT_NE(b.get(), first);
  gate.open();
  side.synchronize();
  memory::Allocation c = alloc.allocate(size);
  EXPECT_EQ(c.get(), first);
  EXPECT_EQ(alloc.stats().num_raw_allocs, 2);
  EXPECT_EQ(alloc.stats().active_bytes.current, 2 * size);
}

TEST(CudaAllocator, EmptyCacheWaitsForRecordedStreams) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  memory::CachingAllocator alloc(memory::make_cuda_backend(0));
  const Stream side = Stream::create(kGpu);
  {
    StreamGate gate(side);
    memory::Allocation a = alloc.allocate(12 * kMiB);
    memory::record_stream(a, side);
  }  // the gate opens here; the block is freed while the stream may still run
  alloc.empty_cache();
  EXPECT_EQ(alloc.stats().reserved_bytes.current, 0);
  EXPECT_EQ(alloc.stats().active_bytes.current, 0);
  EXPECT_EQ(alloc.stats().num_raw_frees, 1);
}

#endif  // REMAT_WITH_CUDA

// ---- Streams ----------------------------------------------------------------------

TEST(CudaStreams, StreamGuardSetsAndRestores) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  const Stream original = current_stream(kGpu);
  EXPECT_EQ(original, Stream::default_stream(kGpu));
  const Stream a = Stream::create(kGpu), b = Stream::create(kGpu);
  {
    StreamGuard outer(a);
    EXPECT_EQ(current_stream(kGpu), a);
    {
      StreamGuard inner(b);
      EXPECT_EQ(current_stream(kGpu), b);
    }
    EXPECT_EQ(current_stream(kGpu), a);
  }
  EXPECT_EQ(current_stream(kGpu), original);
}

TEST(CudaStreams, OpsOnASideStreamComputeTheSame) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  manual_seed(3);
  Tensor x = randn({64, 32});
  Tensor w = randn({32, 16});
  std::vector<float> expected = gelu(matmul(x.to(kGpu), w.to(kGpu))).to_vector<float>();
  const Stream side = Stream::create(kGpu);
  Tensor y;
  {
    StreamGuard guard(side);
    y = gelu(matmul(x.to(kGpu), w.to(kGpu)));
    side.synchronize();
  }
  EXPECT_EQ(y.to_vector<float>(), expected);
}

// ---- Training without raw device allocations ----------------------------------------

TEST(CudaTraining, SteadyStateMakesNoRawDeviceAllocations) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  manual_seed(11);
  nn::Sequential model({std::make_shared<nn::Linear>(32, 128), std::make_shared<nn::GELU>(),
                        std::make_shared<nn::Linear>(128, 32)});
  model.to(kGpu);
  optim::AdamW opt(model.parameters(), {.lr = 1e-3});
  const Tensor x = randn({64, 32}).to(kGpu);
  const Tensor target = randn({64, 32}).to(kGpu);
  std::vector<float> losses;
  int64_t raw_allocs_after_warmup = 0;
  for (int step = 1; step <= 6; ++step) {
    opt.zero_grad();
    Tensor loss = mse_loss(model(x), target);
    loss.backward();
    opt.step();
    losses.push_back(loss.item<float>());
    if (step == 3) raw_allocs_after_warmup = memory::stats(kGpu).num_raw_allocs;
  }
  synchronize(kGpu);
  EXPECT_EQ(memory::stats(kGpu).num_raw_allocs, raw_allocs_after_warmup)
      << "steps 4 to 6 called cudaMalloc";
  EXPECT_LT(losses.back(), losses.front());
}

// ---- Devices ------------------------------------------------------------------------

TEST(CudaDevices, MixingDevicesInOneOpIsAClearError) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  Tensor a = ones({2, 3});
  Tensor b = ones({2, 3}, kFloat32, kGpu);
  try {
    Tensor c = a + b;
    FAIL() << "expected remat::Error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "different devices")) << e.what();
    EXPECT_TRUE(contains(e.what(), "cpu")) << e.what();
    EXPECT_TRUE(contains(e.what(), "cuda:0")) << e.what();
  }
  EXPECT_THROW(matmul(ones({2, 3}, kFloat32, kGpu), ones({3, 2})), Error);
}

TEST(CudaDevices, ToDeviceRoundTripKeepsEveryValue) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  manual_seed(4);
  for (DType dtype : {kFloat32, kFloat64, kBFloat16, kFloat16}) {
    Tensor x = randn({5, 7}).to(dtype);
    Tensor back = x.to(kGpu).to(kCPU);
    EXPECT_EQ(back.dtype(), dtype);
    EXPECT_EQ(back.to_vector<double>(), x.to_vector<double>()) << dtype_name(dtype);
    // Strided views travel as their values.
    EXPECT_EQ(x.transpose(0, 1).to(kGpu).to(kCPU).to_vector<double>(),
              x.transpose(0, 1).to_vector<double>())
        << dtype_name(dtype);
  }
  Tensor labels = from_vector(std::vector<int64_t>{3, -1, 7, int64_t{1} << 40}, {4});
  EXPECT_EQ(labels.to(kGpu).to(kCPU).to_vector<int64_t>(), labels.to_vector<int64_t>());
  Tensor on_gpu = from_vector(std::vector<float>{1, 2, 3}, {3}, kGpu);
  EXPECT_EQ(on_gpu.device(), kGpu);
  EXPECT_EQ(on_gpu.to_vector<float>(), (std::vector<float>{1, 2, 3}));
}

// Both backends round through the same BFloat16/Float16 code
// (remat/core/dtype.h): every 16-bit value, every midpoint between two
// neighbours (the ties of round-to-nearest-even), NaNs and values past the
// largest finite one round to the same bits on the device as on the host.
TEST(CudaDevices, SixteenBitRoundingIsBitwiseTheHosts) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  auto bits = [](const Tensor& t) {
    const std::vector<float> v = t.to_vector<float>();
    std::vector<uint32_t> out(v.size());
    std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
    return out;
  };
  for (DType dtype : {kBFloat16, kFloat16}) {
    std::vector<float> values;
    for (uint32_t h = 0; h < 0x10000u; ++h) {
      const auto b = static_cast<uint16_t>(h);
      const float here = dtype == kBFloat16 ? static_cast<float>(BFloat16::from_bits(b))
                                            : static_cast<float>(Float16::from_bits(b));
      values.push_back(here);
      values.push_back(std::nextafter(here, std::numeric_limits<float>::infinity()));
      const uint16_t next = static_cast<uint16_t>(h + 1);
      const float above = dtype == kBFloat16 ? static_cast<float>(BFloat16::from_bits(next))
                                             : static_cast<float>(Float16::from_bits(next));
      values.push_back(here + (above - here) / 2);  // the tie (NaN or inf stay so)
    }
    values.insert(values.end(), {1e30f, -1e30f, 65519.996f, 65520.0f, 3.4e38f, 1e-45f});
    const Tensor x = from_vector(values, {static_cast<int64_t>(values.size())});
    const Tensor on_host = x.to(dtype).to(kFloat32);
    const Tensor on_device = x.to(kGpu).to(dtype).to(kFloat32).to(kCPU);
    EXPECT_EQ(bits(on_device), bits(on_host)) << dtype_name(dtype);
  }
}

TEST(CudaDevices, DropoutMaskIsTheSameOnCpuAndCuda) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  manual_seed(8);
  Tensor x = randn({37, 53}) + 10.0;  // no zeros: a zero in the output is a dropped element
  auto dropout_at = [](const Tensor& in) {
    ops::Attrs attrs = ops::DropoutAttrs{.p = 0.3};
    attrs.philox = PhiloxState{.seed = 1234, .offset = 8};
    return ops::call1(ops::op("dropout"), {in}, attrs);
  };
  auto check_same = [&](const Tensor& on_cpu, const Tensor& on_gpu) {
    std::vector<float> c = on_cpu.to_vector<float>(), g = on_gpu.to_vector<float>();
    ASSERT_EQ(c.size(), g.size());
    int64_t dropped = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      ASSERT_EQ(c[i] == 0.0f, g[i] == 0.0f) << "element " << i;
      EXPECT_NEAR(g[i], c[i], 1e-6 * std::abs(c[i])) << "element " << i;
      dropped += c[i] == 0.0f;
    }
    EXPECT_GT(dropped, 0);
    EXPECT_LT(dropped, static_cast<int64_t>(c.size()));
  };
  check_same(dropout_at(x), dropout_at(x.to(kGpu)));
  // Through the default generator: the same seed gives the same mask.
  manual_seed(99);
  Tensor on_cpu = dropout(x, 0.5, true);
  manual_seed(99);
  Tensor on_gpu = dropout(x.to(kGpu), 0.5, true);
  check_same(on_cpu, on_gpu);
}

// ---- Checkpointing on the GPU ----------------------------------------------------------

// The MLP block stack of test_checkpoint.cpp, on the GPU: Linear(d->4d),
// GELU, Linear(4d->d), dropout(0.1), no biases.
struct GpuMlpStack {
  std::vector<Tensor> w1, w2;
  GpuMlpStack(int blocks, int64_t d, uint64_t seed) {
    manual_seed(seed);
    for (int i = 0; i < blocks; ++i) {
      w1.push_back((randn({d, 4 * d}) * (1.0 / std::sqrt(static_cast<double>(d)))).to(kGpu));
      w2.push_back((randn({4 * d, d}) * (1.0 / std::sqrt(4.0 * static_cast<double>(d)))).to(kGpu));
      w1.back().requires_grad_();
      w2.back().requires_grad_();
    }
  }
  std::vector<std::function<Tensor(const Tensor&)>> blocks() const {
    std::vector<std::function<Tensor(const Tensor&)>> fns;
    for (size_t i = 0; i < w1.size(); ++i) {
      fns.push_back([this, i](const Tensor& x) {
        return dropout(matmul(gelu(matmul(x, w1[i])), w2[i]), 0.1, true);
      });
    }
    return fns;
  }
  struct Step {
    std::vector<std::vector<float>> grads;
    float loss = 0;
    int64_t activation_peak = 0;
  };
  Step step(const Tensor& x, const std::function<Tensor(const Tensor&)>& forward) const {
    for (const auto* ws : {&w1, &w2}) {
      for (const Tensor& w : *ws) w.set_grad({});
    }
    manual_seed(5);  // the same dropout masks in every run
    synchronize(kGpu);
    const int64_t before = memory::stats(kGpu).allocated_bytes.current;
    memory::reset_peak_stats(kGpu);
    Tensor loss = mean(forward(x));
    loss.backward();
    Step r;
    r.activation_peak = memory::stats(kGpu).allocated_bytes.peak - before;
    r.loss = loss.item<float>();
    for (const auto* ws : {&w1, &w2}) {
      for (const Tensor& w : *ws) r.grads.push_back(w.grad().to_vector<float>());
    }
    return r;
  }
};

TEST(CudaCheckpoint, GradientsAreBitwiseIdenticalWithAndWithoutCheckpoint) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  GpuMlpStack m(8, 64, 1);
  const Tensor x = randn({128, 64}).to(kGpu);
  const auto fns = m.blocks();
  const auto plain = m.step(x, [&](const Tensor& in) {
    Tensor h = in;
    for (const auto& f : fns) h = f(h);
    return h;
  });
  const auto every_block = m.step(x, [&](const Tensor& in) {
    Tensor h = in;
    for (const auto& f : fns) h = checkpoint(f, h);
    return h;
  });
  const auto sequential =
      m.step(x, [&](const Tensor& in) { return checkpoint_sequential(fns, 3, in); });
  EXPECT_EQ(every_block.loss, plain.loss);
  EXPECT_EQ(every_block.grads, plain.grads);
  EXPECT_EQ(sequential.loss, plain.loss);
  EXPECT_EQ(sequential.grads, plain.grads);
  EXPECT_LT(every_block.activation_peak, plain.activation_peak);
}

// Offload on the GPU: the copies run on the copy stream and come back before
// their first read, so the gradients are bitwise those of the plain step;
// the pinned pool empties, and every byte copied out comes back once.
TEST(CudaOffload, GradientsAreBitwiseThePlainStepsAndThePoolEmpties) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  GpuMlpStack m(8, 256, 3);
  const Tensor x = randn({512, 256}).to(kGpu);
  const auto fns = m.blocks();
  const auto plain = m.step(x, [&](const Tensor& in) {
    return checkpoint_blocks(fns, in, CheckpointPlan::parse("none"));
  });
  for (const Policy& policy : {Policy::offload(), Policy::recompute_all().offloaded()}) {
    SCOPED_TRACE(policy.str());
    const memory::OffloadStats before = memory::offload_stats(kGpu);
    CheckpointOptions opts;
    opts.policy = policy;
    const auto offloaded = m.step(x, [&](const Tensor& in) {
      return checkpoint_blocks(fns, in, CheckpointPlan::parse("block"), opts);
    });
    synchronize(kGpu);
    const memory::OffloadStats after = memory::offload_stats(kGpu);
    EXPECT_EQ(offloaded.loss, plain.loss);
    EXPECT_EQ(offloaded.grads, plain.grads);
    EXPECT_GT(after.bytes_to_host, before.bytes_to_host);
    EXPECT_EQ(after.bytes_to_device - before.bytes_to_device,
              after.bytes_to_host - before.bytes_to_host);
    EXPECT_EQ(after.pool.allocated_bytes.current, 0);
    EXPECT_EQ(after.bytes_in_flight, 0);
    EXPECT_GT(after.copy_ms, before.copy_ms);
    EXPECT_LT(offloaded.activation_peak, plain.activation_peak);
  }
}

// Compression on the GPU computes what the CPU computes: the block kernels
// share their per-element rules, so codes and decoded values are bitwise the
// CPU's; a compressed step leaves the forward exact and lowers the peak.
TEST(CudaCompress, BlockCodesAreBitwiseTheCpusAndLowerThePeak) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  manual_seed(4);
  const Tensor x = randn({70000}) * 3.0;
  for (DType format : {kBFloat16, kInt8, kFloat8E4M3}) {
    for (kernels::QuantZeros zeros : {kernels::QuantZeros::Rounded, kernels::QuantZeros::Exact}) {
      SCOPED_TRACE(dtype_name(format));
      SCOPED_TRACE(zeros == kernels::QuantZeros::Exact ? "exact zeros" : "rounded zeros");
      auto round_trip = [&](Device d) {
        const Tensor src = x.to(d);
        const Tensor codes = Tensor::empty(src.shape(), format, d);
        const Tensor scales = Tensor::empty({ops::quant_scale_count(src.numel())}, kFloat32, d);
        ops::quantize_blocks(src, codes, scales, zeros);
        const Tensor back = Tensor::empty(src.shape(), kFloat32, d);
        ops::dequantize_blocks(codes, scales, back);
        return std::pair{codes.to(kFloat32).to_vector<float>(), back.to_vector<float>()};
      };
      EXPECT_EQ(round_trip(kGpu), round_trip(kCPU));
    }
  }
  GpuMlpStack m(8, 256, 3);
  const Tensor in = randn({512, 256}).to(kGpu);
  const auto fns = m.blocks();
  const auto plain = m.step(in, [&](const Tensor& h) {
    return checkpoint_blocks(fns, h, CheckpointPlan::parse("none"));
  });
  const auto int8 = m.step(in, [&](const Tensor& h) {
    return checkpoint_blocks(fns, h, CheckpointPlan::parse("compress-int8"));
  });
  EXPECT_LT(int8.activation_peak, plain.activation_peak);
  EXPECT_EQ(int8.loss, plain.loss);  // only what backward reads is compressed
}

// The eviction mode on the GPU: under a limit of half the activations,
// device memory is evicted and regenerated with CUDA kernels, and the
// gradients are bitwise those without a limit.
TEST(CudaCheckpoint, BudgetGuardStaysUnderItsLimitWithTheSameGradients) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  GpuMlpStack m(16, 256, 2);
  const Tensor x = randn({1024, 256}).to(kGpu);
  const auto fns = m.blocks();
  auto forward = [&](const Tensor& in) {
    Tensor h = in;
    for (const auto& f : fns) h = f(h);
    return h;
  };
  const auto plain = m.step(x, forward);
  memory::empty_cache(kGpu);
  const memory::Stats start = memory::stats(kGpu);
  constexpr int64_t kSegment = int64_t{2} << 20;
  const int64_t limit =
      (start.reserved_bytes.current + plain.activation_peak / 2) / kSegment * kSegment;
  GpuMlpStack::Step limited;
  {
    BudgetGuard guard(kGpu, limit);
    memory::reset_peak_stats(kGpu);
    limited = m.step(x, forward);
  }
  const memory::Stats after = memory::stats(kGpu);
  EXPECT_LE(after.reserved_bytes.peak, limit);
  EXPECT_GT(after.num_regenerations, start.num_regenerations);
  EXPECT_EQ(limited.loss, plain.loss);
  EXPECT_EQ(limited.grads, plain.grads);
}

}  // namespace
}  // namespace remat
