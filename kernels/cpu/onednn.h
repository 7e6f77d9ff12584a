// The CPU kernels' entry to oneDNN (Debian's libdnnl-dev, what PyTorch itself
// uses on the CPU), shared by the convolutions (kernels/cpu/conv.cpp) and the
// bfloat16 matrix products (kernels/cpu/gemm.cpp): one engine and stream,
// primitives cached by problem, scratch and reordered copies in blocks of
// remat's caching allocator (so they count in its statistics and limits),
// and oneDNN's errors turned into remat::Error. Built only where CMake found
// oneDNN (REMAT_WITH_ONEDNN); elsewhere the callers keep their own paths.
#pragma once

#include <cstdint>
#include <string>

namespace remat::kernels::cpu {

// What this thread's latest convolution pass or bfloat16 matmul took from
// oneDNN, for tests and benchmarks: the implementation of its primitive
// (e.g. "brg:avx512_core_amx_bf16"), the scratch and the reordered copies it
// held in remat's allocator. Empty where oneDNN did not serve the call.
struct OnednnCall {
  std::string implementation;
  int64_t scratch_bytes = 0;
  int64_t reorder_bytes = 0;
};
bool onednn_built();
OnednnCall last_onednn_call();

}  // namespace remat::kernels::cpu

#ifdef REMAT_WITH_ONEDNN

#include <oneapi/dnnl/dnnl.hpp>

#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "remat/core/tensor.h"
#include "remat/memory/memory.h"

namespace remat::kernels::cpu::onednn {

using dnnl::memory;

dnnl::engine& engine();
dnnl::stream& stream();

// oneDNN's type for a remat dtype it computes (float32, bfloat16); undef for
// the others (the callers keep their own paths for them).
memory::data_type data_type(DType dtype);

// Every primitive is created with a user scratchpad, so the call's scratch
// comes from remat's allocator (execute) instead of oneDNN's own.
dnnl::primitive_attr user_scratchpad();

// A created primitive, the scratch it needs per call, and its
// implementation's name (empty for reorders).
struct Step {
  dnnl::primitive primitive;
  memory::desc scratch;
  std::string implementation;
};

// Whether an implementation is one of oneDNN's reference loops (what it
// offers where no JIT kernel fits, e.g. bfloat16 on a CPU without AVX-512):
// slower than the callers' own paths, so they take those instead.
inline bool is_reference(const std::string& implementation) {
  return implementation.rfind("ref", 0) == 0;
}

// Starts recording a new call for last_onednn_call() (an empty one until a
// step runs).
void start_call();

// Runs one step on this thread's stream and waits, its scratch a block of
// remat's allocator held for the call (an over-limit scratch throws
// OutOfMemoryError before oneDNN runs).
void execute(const Step& step, std::unordered_map<int, memory> args);

// For kernels that run steps on the threads of their own parallel region
// (attention's tiles): a matmul c = scale * a @ b (+ c when `accumulate`) on
// plain descriptors, created for one thread; empty where oneDNN has only its
// reference loops. Cached by descriptors and parameters.
Step single_thread_matmul(const memory::desc& a, const memory::desc& b, const memory::desc& c,
                          float scale, bool accumulate);
// A step with its arguments' memory objects made once and pointed at new
// data per run (set_data_handle), for kernels that run small steps many
// times (attention's tiles): a memory object and an argument map per call
// cost about as much as a 128 x 256 x 128 product. Runs on this thread's
// stream with the caller's scratch (at least step.scratch's size: allocated
// before the parallel region, where running out of memory can be handled),
// recording nothing.
class BoundStep {
 public:
  BoundStep(const Step& step, std::initializer_list<std::pair<int, memory::desc>> args,
            void* scratch);
  // The arguments' data, in the order the constructor listed them.
  void run(std::initializer_list<const void*> data) const;

 private:
  dnnl::primitive primitive_;
  std::vector<memory> memories_;  // the arguments', then the scratch's
  std::vector<dnnl_exec_arg_t> args_;
};
// Adds a step that the caller's threads run to this thread's
// last_onednn_call().
void record(const Step& step);

// A user buffer as oneDNN memory (oneDNN never writes a source, so a const
// pointer is safe to hand it).
memory wrap(const memory::desc& desc, const void* data);

// A memory in oneDNN's layout `inner` for the user memory `user`: `user`
// itself when the layouts agree, else a block of remat's allocator, filled
// from `user` when `copy_in` (a reorder). `keep` holds the block.
memory in_layout(const memory& user, const memory::desc& inner, bool copy_in,
                 std::vector<remat::memory::Allocation>& keep);
// Copies `from` into `to` when they are different memories (a reorder).
void reorder_into(const memory& from, const memory& to);

// OpenMP's thread count now: a primitive splits its work for the count it
// was created under (and a reduction's order with it), so caches key on it.
int64_t max_threads();

// Created primitives by problem: creating one (choosing an implementation,
// generating its JIT code) costs far more than a small call runs. Keys list
// every size, dtype and parameter of a problem; the empty (default) Entry
// says oneDNN refuses the problem. Thread-safe; entries are
// returned by value (oneDNN handles are shared references), so clearing a
// full cache never invalidates one in use.
template <typename Entry>
class Cache {
 public:
  using Key = std::vector<int64_t>;
  Entry get(Key key, const std::function<Entry()>& make) {
    key.push_back(max_threads());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(key);
      if (it != entries_.end()) return it->second;
    }
    // Outside the lock: creation is slow. A problem oneDNN rejects as
    // invalid (a layout it cannot describe) is cached as the empty entry, so
    // the caller falls back to its own path; running out of memory is not.
    Entry entry;
    try {
      entry = make();
    } catch (const dnnl::error& e) {
      if (e.status == dnnl_out_of_memory) throw;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= kCapacity) entries_.clear();  // a shape sweep; rare
    return entries_.emplace(std::move(key), std::move(entry)).first->second;
  }

 private:
  static constexpr size_t kCapacity = 512;
  std::mutex mutex_;
  std::map<Key, Entry> entries_;
};

// Calls fn() and turns a dnnl::error it throws into remat::Error naming
// `what` (the op, shapes and dtypes) and oneDNN's status.
template <typename Fn>
decltype(auto) guarded(const std::function<std::string()>& what, Fn&& fn) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("{}: oneDNN failed: {} (status {})", what(), e.what(),
                            static_cast<int>(e.status)));
  }
}

}  // namespace remat::kernels::cpu::onednn

#endif
