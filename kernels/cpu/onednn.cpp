// oneDNN's shared pieces (contract: kernels/cpu/onednn.h).
#include "kernels/cpu/onednn.h"

#ifdef REMAT_WITH_ONEDNN

#include <omp.h>

#include <bit>

#include "remat/core/error.h"

namespace remat::kernels::cpu::onednn {
namespace {

// One stream per thread: threads of a kernel's parallel region run steps
// side by side.
dnnl::engine& the_engine() {
  static dnnl::engine e{dnnl::engine::kind::cpu, 0};
  return e;
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

dnnl::engine& engine() { return the_engine(); }
dnnl::stream& stream() {
  thread_local dnnl::stream s{the_engine()};
  return s;
}

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

void record(const Step& step) {
  latest.scratch_bytes += static_cast<int64_t>(step.scratch.get_size());
  if (!step.implementation.empty()) latest.implementation = step.implementation;
}

void execute(const Step& step, std::unordered_map<int, memory> args) {
  const remat::memory::Allocation scratch = block(step.scratch.get_size());
  record(step);
  if (step.scratch.get_size() > 0)
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(step.scratch, engine(), scratch.get()));
  step.primitive.execute(stream(), args);
  stream().wait();
}

BoundStep::BoundStep(const Step& step, std::initializer_list<std::pair<int, memory::desc>> args,
                     void* scratch)
    : primitive_(step.primitive) {
  auto bind = [this](int arg, const memory::desc& desc, void* data) {
    memories_.emplace_back(desc, engine(), data);
    args_.push_back({arg, memories_.back().get()});  // a handle, valid as the vector grows
  };
  for (const auto& [arg, desc] : args) bind(arg, desc, nullptr);
  if (step.scratch.get_size() > 0) bind(DNNL_ARG_SCRATCHPAD, step.scratch, scratch);
}

void BoundStep::run(std::initializer_list<const void*> data) const {
  size_t i = 0;
  for (const void* d : data) memories_[i++].set_data_handle(const_cast<void*>(d));
  dnnl::error::wrap_c_api(dnnl_primitive_execute(primitive_.get(), stream().get(),
                                                 static_cast<int>(args_.size()), args_.data()),
                          "could not execute a primitive");
  stream().wait();
}

namespace {

// A cache key of plain C descriptors' bytes: a blocked layout is not its
// dims and strides alone.
Cache<Step>::Key key_of(std::initializer_list<const memory::desc*> descs) {
  Cache<Step>::Key key;
  for (const memory::desc* desc : descs) {
    static_assert(sizeof(desc->data) % sizeof(int64_t) == 0);
    const auto* words = reinterpret_cast<const int64_t*>(&desc->data);
    key.insert(key.end(), words, words + sizeof(desc->data) / sizeof(int64_t));
  }
  return key;
}

}  // namespace

Step single_thread_matmul(const memory::desc& a, const memory::desc& b, const memory::desc& c,
                          float scale, bool accumulate) {
  static Cache<Step> matmuls;
  Cache<Step>::Key key = key_of({&a, &b, &c});
  key.push_back(std::bit_cast<int32_t>(scale));
  key.push_back(accumulate);
  // Created under a one-thread setting (which the cache's key records): a
  // primitive splits its work for the thread count it was created under.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  struct Restore {
    int threads;
    ~Restore() { omp_set_num_threads(threads); }
  } restore{threads};
  return matmuls.get(key, [&] {
    dnnl::primitive_attr attr = user_scratchpad();
    if (scale != 1.0f) attr.set_output_scales(0, {scale});
    if (accumulate) {
      dnnl::post_ops sum;
      sum.append_sum(1.0f);
      attr.set_post_ops(sum);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, engine(),
                                          /*allow_empty=*/true);
    if (!pd || is_reference(pd.impl_info_str())) return Step{};
    return Step{dnnl::matmul(pd), pd.scratchpad_desc(), pd.impl_info_str()};
  });
}

memory wrap(const memory::desc& desc, const void* data) {
  return memory(desc, engine(), const_cast<void*>(data));
}

void reorder_into(const memory& from, const memory& to) {
  if (from == to) return;
  static Cache<Step> reorders;
  const memory::desc src = from.get_desc(), dst = to.get_desc();
  const Step step = reorders.get(key_of({&src, &dst}), [&] {
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
