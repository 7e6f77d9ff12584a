// oneDNN's shared pieces (contract: kernels/cpu/onednn.h).
#include "kernels/cpu/onednn.h"

#ifdef REMAT_WITH_ONEDNN

#include <omp.h>

#include "remat/core/error.h"

namespace remat::kernels::cpu::onednn {
namespace {

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Runtime& runtime() {
  static Runtime r;
  return r;
}

thread_local OnednnCall latest;

// A block of remat's allocator for `bytes` (none for 0).
remat::memory::Allocation block(size_t bytes) {
  if (bytes == 0) return {};
  return remat::memory::allocate(kCPU, static_cast<int64_t>(bytes));
}

}  // namespace

void start_call() { latest = {}; }

int64_t max_threads() { return omp_get_max_threads(); }

dnnl::engine& engine() { return runtime().engine; }
dnnl::stream& stream() { return runtime().stream; }

memory::data_type data_type(DType dtype) {
  switch (dtype) {
    case kFloat32: return memory::data_type::f32;
    case kBFloat16: return memory::data_type::bf16;
    default: return memory::data_type::undef;
  }
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

void execute(const Step& step, std::unordered_map<int, memory> args) {
  const remat::memory::Allocation scratch = block(step.scratch.get_size());
  if (scratch.get())
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(step.scratch, engine(), scratch.get()));
  latest.scratch_bytes += static_cast<int64_t>(step.scratch.get_size());
  if (!step.implementation.empty()) latest.implementation = step.implementation;
  step.primitive.execute(stream(), args);
  stream().wait();
}

memory wrap(const memory::desc& desc, const void* data) {
  return memory(desc, engine(), const_cast<void*>(data));
}

void reorder_into(const memory& from, const memory& to) {
  if (from == to) return;
  static Cache<Step> reorders;
  const memory::desc src = from.get_desc(), dst = to.get_desc();
  // A plain descriptor's layout is its dims and strides; a blocked one's
  // is not, so the key takes the descriptors' bytes (POD C structs).
  const auto* a = reinterpret_cast<const int64_t*>(&src.data);
  const auto* b = reinterpret_cast<const int64_t*>(&dst.data);
  static_assert(sizeof(src.data) % sizeof(int64_t) == 0);
  Cache<Step>::Key key(a, a + sizeof(src.data) / sizeof(int64_t));
  key.insert(key.end(), b, b + sizeof(dst.data) / sizeof(int64_t));
  const Step step = reorders.get(key, [&] {
    const dnnl::reorder::primitive_desc pd(engine(), src, engine(), dst, user_scratchpad());
    return Step{dnnl::reorder(pd), pd.scratchpad_desc()};
  });
  execute(step, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

memory in_layout(const memory& user, const memory::desc& inner, bool copy_in,
                 std::vector<remat::memory::Allocation>& keep) {
  if (user.get_desc() == inner) return user;
  keep.push_back(block(inner.get_size()));
  latest.reorder_bytes += static_cast<int64_t>(inner.get_size());
  memory m(inner, engine(), keep.back().get());
  if (copy_in) reorder_into(user, m);
  return m;
}

}  // namespace remat::kernels::cpu::onednn

namespace remat::kernels::cpu {
bool onednn_built() { return true; }
OnednnCall last_onednn_call() { return onednn::latest; }
}  // namespace remat::kernels::cpu

#else

namespace remat::kernels::cpu {
bool onednn_built() { return false; }
OnednnCall last_onednn_call() { return {}; }
}  // namespace remat::kernels::cpu

#endif
