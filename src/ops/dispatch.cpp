#include "ops/dispatch.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "kernels/elementwise.h"
#include "remat/core/generator.h"
#include "remat/core/grad_mode.h"

namespace remat::ops {

// ---- Registry ---------------------------------------------------------------

Registry::Registry() {
  register_elementwise_ops(*this);
  register_reduction_ops(*this);
  register_shape_ops(*this);
  register_linalg_ops(*this);
  register_activation_ops(*this);
  register_softmax_ops(*this);
  register_attention_ops(*this);
  register_normalization_ops(*this);
  register_random_ops(*this);
  register_loss_ops(*this);
  register_conv_ops(*this);
  register_pool_ops(*this);
  register_embedding_ops(*this);
  register_optimizer_ops(*this);
}

Registry& Registry::instance() {
  static Registry registry;
  return registry;
}

const OpDef& Registry::add(OpDef def) {
  for (const auto& existing : ops_) {
    REMAT_CHECK(existing->name != def.name, "op '{}' registered twice", def.name);
  }
  REMAT_CHECK(def.shape && def.forward, "op '{}' needs a shape rule and a forward", def.name);
  ops_.push_back(std::make_unique<OpDef>(std::move(def)));
  return *ops_.back();
}

const OpDef* Registry::find(std::string_view name) const {
  for (const auto& def : ops_) {
    if (def->name == name) return def.get();
  }
  return nullptr;
}

const OpDef& Registry::get(std::string_view name) const {
  const OpDef* def = find(name);
  if (def == nullptr) throw Error(fmt::format("no op named '{}' in the registry", name));
  return *def;
}

std::vector<const OpDef*> Registry::all() const {
  std::vector<const OpDef*> out;
  for (const auto& def : ops_) out.push_back(def.get());
  return out;
}

// ---- Backward arguments -------------------------------------------------------

// Undefined when the op declared the input saved but the caller passed none
// (an absent optional operand such as a bias).
const Tensor& BackwardArgs::input(int i) const {
  REMAT_CHECK(std::find(op.save_inputs.begin(), op.save_inputs.end(), i) != op.save_inputs.end(),
              "op '{}' backward reads input {} but does not declare it saved", op.name, i);
  return saved_inputs.at(static_cast<size_t>(i));
}

const Tensor& BackwardArgs::output(int i) const {
  REMAT_CHECK(std::find(op.save_outputs.begin(), op.save_outputs.end(), i) != op.save_outputs.end(),
              "op '{}' backward reads output {} but does not declare it saved", op.name, i);
  return saved_outputs.at(static_cast<size_t>(i));
}

// ---- Checks ---------------------------------------------------------------------

std::string describe(const std::vector<Tensor>& inputs) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < inputs.size(); ++i) {
    parts.push_back(inputs[i].defined() ? fmt::format("#{}: {}", i, TensorMeta::of(inputs[i]).str())
                                        : fmt::format("#{}: (none)", i));
  }
  return fmt::format("{}", fmt::join(parts, "; "));
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  REMAT_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch: {} vs {} (operands {} and {})", op,
              a.dtype(), b.dtype(), TensorMeta::of(a).str(), TensorMeta::of(b).str());
}

void check_floating(const char* op, const Tensor& x) {
  REMAT_CHECK(is_floating(x.dtype()), "{}: expected a floating-point tensor, got {}", op,
              TensorMeta::of(x).str());
}

void check_dtype(const char* op, const Tensor& x, DType want, const char* role) {
  REMAT_CHECK(x.dtype() == want, "{}: {} must be {}, got {}", op, role, want,
              TensorMeta::of(x).str());
}

std::array<int64_t, 2> pair_of(const char* op, const char* key, const std::vector<int64_t>& v) {
  REMAT_CHECK(v.size() == 2, "{}: {} must be 2 values, got [{}]", op, key, fmt::join(v, ", "));
  return {v[0], v[1]};
}

std::vector<int64_t> normalize_dims(const char* op, std::span<const int64_t> dims, int64_t ndim) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < ndim; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, ndim, op));
  std::sort(out.begin(), out.end());
  REMAT_CHECK_SHAPE(std::adjacent_find(out.begin(), out.end()) == out.end(),
                    "{}: dim repeated in [{}]", op, fmt::join(dims, ", "));
  if (ndim == 0) out.clear();
  return out;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    bool reduced = std::find(dims.begin(), dims.end(), static_cast<int64_t>(d)) != dims.end();
    if (!reduced) {
      out.push_back(shape[d]);
    } else if (keepdim) {
      out.push_back(1);
    }
  }
  return out;
}

// ---- Running an op ------------------------------------------------------------

namespace {
std::atomic<RecordFn> recorder{nullptr};

Tensor cast_for_compute(const Tensor& t, DType to) {
  Tensor out = Tensor::empty(t.shape(), to, t.device());
  kernels::cpu::elementwise_kernels.copy(t, out);
  return out;
}
}  // namespace

void install_recorder(RecordFn fn) { recorder.store(fn); }

namespace {
thread_local bool replay_side_effects = false;
}  // namespace

ReplaySideEffectsScope::ReplaySideEffectsScope() : previous_(replay_side_effects) {
  replay_side_effects = true;
}
ReplaySideEffectsScope::~ReplaySideEffectsScope() { replay_side_effects = previous_; }
bool side_effects_suppressed() { return replay_side_effects; }

namespace {

// A new tensor of m's shape, dense in the memory order m names.
Tensor empty_in_order(const TensorMeta& m) {
  if (m.order.empty()) return Tensor::empty(m.shape, m.dtype, m.device);
  REMAT_CHECK(m.order.size() == m.shape.size(), "a layout of {} dims for a {}-d output",
              m.order.size(), m.shape.size());
  Strides strides(m.shape.size());
  int64_t step = 1;
  for (size_t k = m.order.size(); k-- > 0;) {
    strides[static_cast<size_t>(m.order[k])] = step;
    step *= m.shape[static_cast<size_t>(m.order[k])];
  }
  return Tensor::empty({numel_of(m.shape)}, m.dtype, m.device).as_strided(m.shape, strides, 0);
}

}  // namespace

std::vector<Tensor> run_forward(const OpDef& def, const std::vector<Tensor>& inputs,
                                const Attrs& attrs) {
  std::vector<TensorMeta> metas = def.shape(inputs, attrs);
  const bool reduced = std::any_of(inputs.begin(), inputs.end(), [](const Tensor& t) {
    return t.defined() && t.device().is_cpu() && is_reduced_float(t.dtype());
  });
  if (def.compute_reduced_in_float && reduced) {
    // CPU kernels compute in float32: widen the operands, narrow the results.
    std::vector<Tensor> widened;
    for (const Tensor& t : inputs) {
      widened.push_back(t.defined() && is_reduced_float(t.dtype()) ? cast_for_compute(t, kFloat32)
                                                                   : t);
    }
    std::vector<Tensor> outs = run_forward(def, widened, attrs);
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].dtype() != metas[i].dtype) outs[i] = cast_for_compute(outs[i], metas[i].dtype);
    }
    return outs;
  }
  std::vector<Tensor> outs;
  if (!def.view) {
    for (const TensorMeta& m : metas) outs.push_back(empty_in_order(m));
  }
  def.forward(inputs, attrs, outs);
  REMAT_CHECK(outs.size() == metas.size(), "op '{}' forward made {} outputs, its shape rule {}",
              def.name, outs.size(), metas.size());
  return outs;
}

std::vector<Tensor> replay_forward(const OpDef& def, const std::vector<Tensor>& inputs,
                                   const Attrs& attrs) {
  if (!def.for_replay) return run_forward(def, inputs, attrs);
  Attrs replay_attrs = attrs;
  def.for_replay(replay_attrs);
  return run_forward(def, inputs, replay_attrs);
}

namespace {
std::atomic<int> forward_timers{0};
thread_local int64_t latest_forward_ns = 0;
}  // namespace

void time_forwards(bool on) { forward_timers.fetch_add(on ? 1 : -1, std::memory_order_relaxed); }
int64_t last_forward_ns() { return latest_forward_ns; }

std::vector<Tensor> call(const OpDef& def, const std::vector<Tensor>& inputs, Attrs attrs) {
  const Tensor* first = nullptr;
  for (const Tensor& t : inputs) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    REMAT_CHECK(t.device() == first->device(), "{}: operands on different devices ({})", def.name,
                describe(inputs));
  }
  if (attrs.type() != def.attrs) {
    throw Error(fmt::format("{}: attributes must be {}, got {}", def.name,
                            def.attrs ? def.attrs->name : "none",
                            attrs.type() ? attrs.type()->name : "none"));
  }
  if (def.random_count && !attrs.philox)
    attrs.philox = reserve_philox(def.random_count(inputs, attrs));
  if (replay_side_effects && def.for_replay) def.for_replay(attrs);
  std::vector<Tensor> outs;
  {
    NoGradGuard forward_only;  // ops composed inside a forward are not recorded
    if (forward_timers.load(std::memory_order_relaxed) > 0) {
      const auto start = std::chrono::steady_clock::now();
      outs = run_forward(def, inputs, attrs);
      latest_forward_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count();
    } else {
      outs = run_forward(def, inputs, attrs);
    }
  }
  RecordFn record = recorder.load();
  if (record && def.backward && GradMode::is_enabled() &&
      std::any_of(inputs.begin(), inputs.end(),
                  [](const Tensor& t) { return t.defined() && t.requires_grad(); })) {
    record(def, inputs, attrs, outs);
  }
  if (def.visible_outputs >= 0) outs.resize(static_cast<size_t>(def.visible_outputs));
  return outs;
}

Tensor call1(const OpDef& def, const std::vector<Tensor>& inputs, Attrs attrs) {
  return call(def, inputs, std::move(attrs)).at(0);
}

}  // namespace remat::ops
