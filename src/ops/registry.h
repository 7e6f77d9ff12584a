// The op registry. An op is data: one OpDef holds its shape rule, its forward
// (dispatching to a CPU or CUDA kernel), its backward (written with other
// ops) and which of its inputs and outputs backward needs. Every entry on the
// tape points at one, so the tape can replay a forward and run a backward.
#pragma once

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ops/attrs.h"
#include "remat/core/tensor.h"

namespace remat::ops {

struct OpDef;

// What a backward formula sees: the incoming gradients, the attributes, the
// inputs' metadata, and the tensors the op declared it saves.
struct BackwardArgs {
  const OpDef& op;
  const Attrs& attrs;
  const std::vector<TensorMeta>& input_meta;
  std::vector<Tensor> grad_outputs;  // undefined where no gradient flows
  std::vector<bool> needs_input_grad;
  std::vector<Tensor> saved_inputs;   // indexed like the op's inputs; set where saved
  std::vector<Tensor> saved_outputs;  // indexed like the op's outputs; set where saved

  const Tensor& grad(int i = 0) const { return grad_outputs.at(static_cast<size_t>(i)); }
  const Tensor& input(int i) const;
  const Tensor& output(int i) const;
  bool needs(int i) const { return needs_input_grad.at(static_cast<size_t>(i)); }
};

using ShapeFn = std::function<std::vector<TensorMeta>(const std::vector<Tensor>&, const Attrs&)>;
using ForwardFn =
    std::function<void(const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out)>;
using BackwardFn = std::function<std::vector<Tensor>(const BackwardArgs&)>;

struct OpDef {
  std::string name;
  // The attribute struct of its calls (ops/attrs.h); null: it takes none.
  const AttrsType* attrs = nullptr;
  // Validates operands (throwing ShapeError/Error naming the op) and returns
  // the outputs' metadata. Outputs past `visible_outputs` are auxiliary: kept
  // for backward (layer_norm's mean and rstd), not returned to the caller.
  ShapeFn shape;
  // Writes the outputs, which the dispatcher allocated from `shape`. A view op
  // instead receives an empty `out` and appends aliases of its input.
  ForwardFn forward;
  // Empty for ops that are not differentiable (integer results, and the
  // internal backward kernels that backward formulas call).
  BackwardFn backward;
  std::vector<int> save_inputs;
  std::vector<int> save_outputs;
  // Saved outputs whose zeros backward reads (relu's derivative is output >
  // 0): compression keeps which of their elements are zero exact, where it
  // lets other tensors' smallest values round to zero (checkpoint/pack.cpp).
  std::vector<int> zero_mask_outputs;
  // Saved outputs that compression leaves exact (attention's row
  // log-sum-exp: an error in it scales every probability of its row).
  std::vector<int> exact_outputs;
  int visible_outputs = 1;  // -1: every output is visible (split)
  bool view = false;
  // Random ops draw `random_count(in, attrs)` numbers from Attrs::philox,
  // which call() reserves from the default generator.
  std::function<int64_t(const std::vector<Tensor>&, const Attrs&)> random_count;
  // On the CPU, bfloat16/float16 operands are computed in float32 and rounded
  // back; ops that move bytes without arithmetic (views, copies) turn this off.
  bool compute_reduced_in_float = true;
  // Edits a call's attributes for a checkpoint replay, to switch off side
  // effects of the forward that must happen once (batch_norm's
  // running-statistics update). Null: a replay runs the call as recorded.
  void (*for_replay)(Attrs& attrs) = nullptr;
  // Whether the forward run for a replay ignores input `index` of a call with
  // these attributes (batch_norm in training mode reads its running
  // statistics only to update them): a segment neither keeps nor checks it.
  // Null: the replay reads every input.
  bool (*replay_ignores_input)(const Attrs& attrs, size_t index) = nullptr;

  bool visible(size_t output) const {
    return visible_outputs < 0 || static_cast<int>(output) < visible_outputs;
  }
};

class Registry {
 public:
  static Registry& instance();
  const OpDef& add(OpDef def);
  const OpDef& get(std::string_view name) const;
  const OpDef* find(std::string_view name) const;  // null when there is none
  std::vector<const OpDef*> all() const;

 private:
  Registry();
  std::vector<std::unique_ptr<OpDef>> ops_;
};

// An op found by name at run time (tests, tools); code that calls an op
// names it with op<"name">() instead.
inline const OpDef& op(std::string_view name) { return Registry::instance().get(name); }

// An op name as a template argument.
template <size_t N>
struct OpName {
  constexpr OpName(const char (&name)[N]) { std::copy_n(name, N, chars); }  // NOLINT: implicit
  constexpr std::string_view view() const { return {chars, N - 1}; }
  char chars[N];
};

// The op, resolved in the registry once per name (a function-local static)
// and a plain load after that: wrappers and backward formulas call ops
// through it, so no call looks an op up by its name.
template <OpName Name>
const OpDef& op() {
  static const OpDef& def = Registry::instance().get(Name.view());
  return def;
}

// Runs an op: checks that operands share a device and that the attributes
// are the op's type (reserving a random op's numbers), applies the shape rule,
// allocates outputs, runs the forward, and records a tape entry when grad
// mode is on and an operand requires grad. Returns the visible outputs.
std::vector<Tensor> call(const OpDef& def, const std::vector<Tensor>& inputs, Attrs attrs = {});
Tensor call1(const OpDef& def, const std::vector<Tensor>& inputs, Attrs attrs = {});

// Runs only the forward (no recording): what call() and tape replay share.
// Returns every output, auxiliary ones included.
std::vector<Tensor> run_forward(const OpDef& def, const std::vector<Tensor>& inputs,
                                const Attrs& attrs);

// run_forward as a replay runs it: an op with a for_replay hook leaves its
// side effects out (batch_norm's running statistics). Checkpoint replay and
// the eviction mode's regeneration share it.
std::vector<Tensor> replay_forward(const OpDef& def, const std::vector<Tensor>& inputs,
                                   const Attrs& attrs);

// While some caller has it on, call() times each forward: last_forward_ns()
// is this thread's latest, what the eviction mode records as the cost of
// regenerating an entry's outputs. Calls nest (a count, not a flag).
void time_forwards(bool on);
int64_t last_forward_ns();

// While it lives, this thread's calls of ops with a for_replay hook run as a
// replay would (batch_norm leaves its running statistics alone): for runs
// that measure a forward without being one, such as profile_blocks.
class ReplaySideEffectsScope {
 public:
  ReplaySideEffectsScope();
  ~ReplaySideEffectsScope();
  ReplaySideEffectsScope(const ReplaySideEffectsScope&) = delete;
  ReplaySideEffectsScope& operator=(const ReplaySideEffectsScope&) = delete;

 private:
  bool previous_;
};

// Whether this thread is inside a ReplaySideEffectsScope: modules with side
// effects of their own outside the ops (BatchNorm2d's batch count) skip them.
bool side_effects_suppressed();

// The tape's entry point: the autograd layer installs it when the first
// tensor is marked requires_grad (no tensor needs recording before that).
using RecordFn = void (*)(const OpDef& def, const std::vector<Tensor>& inputs, const Attrs& attrs,
                          std::vector<Tensor>& outputs);
void install_recorder(RecordFn fn);

// Each op family registers its ops here (called once by Registry's constructor).
void register_elementwise_ops(Registry& r);
void register_reduction_ops(Registry& r);
void register_shape_ops(Registry& r);
void register_linalg_ops(Registry& r);
void register_activation_ops(Registry& r);
void register_softmax_ops(Registry& r);
void register_attention_ops(Registry& r);
void register_normalization_ops(Registry& r);
void register_random_ops(Registry& r);
void register_loss_ops(Registry& r);
void register_conv_ops(Registry& r);
void register_pool_ops(Registry& r);
void register_embedding_ops(Registry& r);
void register_optimizer_ops(Registry& r);

// Shared by shape rules: message fragments naming operands.
std::string describe(const std::vector<Tensor>& inputs);
// Reduces a broadcast gradient back to `shape` (sums the broadcast dims).
Tensor sum_to(const Tensor& grad, const Shape& shape);

}  // namespace remat::ops
