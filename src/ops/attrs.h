// The attributes of an op call, typed. Each op with attributes has one struct
// (below, or the kernel's own parameter struct where the kernel takes exactly
// the op's attributes, as conv2d does); the OpDef names it
// (`def.attrs = attrs_type<SoftmaxAttrs>()`), a call passes a value of it
// (`call1(op<"softmax">(), {x}, SoftmaxAttrs{.dim = -1})`), call() checks the
// type once (a pointer comparison) and the shape rule, forward and backward
// read its fields through `a.get<SoftmaxAttrs>()`. The value is held inline
// (no heap block per call or per tape entry); ggml's op_params, with types.
#pragma once

#include <array>
#include <cstddef>
#include <new>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

#include "kernels/conv.h"
#include "kernels/optimizer.h"
#include "kernels/pool.h"
#include "remat/core/error.h"
#include "remat/core/generator.h"
#include "remat/core/shape.h"

namespace remat::ops {

// How to copy, move and destroy one attribute struct held in Attrs' buffer,
// and its name for messages (docs/ops.md lists it per op).
struct AttrsType {
  std::string_view name;
  void (*copy)(void* to, const void* from);
  void (*move)(void* to, void* from);
  void (*destroy)(void* at);
};

namespace detail {
// The type's name as the compiler spells it in __PRETTY_FUNCTION__ (GCC:
// "... [with T = remat::ops::SoftmaxAttrs]", Clang: "... [T = ...]"), without
// the namespaces.
template <typename T>
constexpr std::string_view type_name() {
  std::string_view s = __PRETTY_FUNCTION__;
  s = s.substr(s.find("T = ") + 4);
  s = s.substr(0, s.find_first_of(";]"));
  const size_t colons = s.rfind("::");
  return colons == std::string_view::npos ? s : s.substr(colons + 2);
}

template <typename T>
inline constexpr AttrsType kAttrsType{
    type_name<T>(),
    [](void* to, const void* from) { new (to) T(*static_cast<const T*>(from)); },
    [](void* to, void* from) { new (to) T(std::move(*static_cast<T*>(from))); },
    [](void* at) { static_cast<T*>(at)->~T(); },
};
}  // namespace detail

template <typename T>
const AttrsType* attrs_type() {
  return &detail::kAttrsType<T>;
}

class Attrs {
 public:
  static constexpr size_t kCapacity = 128;

  Attrs() = default;
  template <typename T>
  requires(!std::is_same_v<std::remove_cvref_t<T>, Attrs>) Attrs(T value)
      : type_(attrs_type<T>()) {  // NOLINT(google-explicit-constructor): call sites
    static_assert(sizeof(T) <= kCapacity && alignof(T) <= alignof(std::max_align_t),
                  "an op's attribute struct must fit Attrs' inline buffer");
    new (storage_) T(std::move(value));
  }
  Attrs(const Attrs& other) : philox(other.philox), type_(other.type_) {
    if (type_ != nullptr) type_->copy(storage_, other.storage_);
  }
  Attrs(Attrs&& other) noexcept : philox(other.philox), type_(other.type_) {
    if (type_ != nullptr) type_->move(storage_, other.storage_);
  }
  Attrs& operator=(Attrs other) noexcept {
    reset();
    philox = other.philox;
    type_ = other.type_;
    if (type_ != nullptr) type_->move(storage_, other.storage_);
    return *this;
  }
  ~Attrs() { reset(); }

  // The attribute struct's type; null for an op without attributes.
  const AttrsType* type() const { return type_; }

  // The attributes as the op's struct T; throws when they are another type
  // (call() has checked the type against the op's already, so this cannot
  // fail inside an op).
  template <typename T>
  const T& get() const {
    check(attrs_type<T>());
    return *std::launder(reinterpret_cast<const T*>(storage_));
  }
  template <typename T>
  T& get() {
    check(attrs_type<T>());
    return *std::launder(reinterpret_cast<T*>(storage_));
  }

  // The counter range a random op draws from: reserved by call() from the
  // default generator unless the caller set it, and recorded on the tape with
  // the rest, so a replay or a backward draws the same numbers.
  std::optional<PhiloxState> philox;

 private:
  void check(const AttrsType* want) const {
    if (type_ != want) {
      throw Error(
          fmt::format("attributes are {}, read as {}", type_ ? type_->name : "(none)", want->name));
    }
  }
  void reset() {
    if (type_ != nullptr) type_->destroy(storage_);
    type_ = nullptr;
  }

  alignas(std::max_align_t) std::byte storage_[kCapacity];
  const AttrsType* type_ = nullptr;
};

// A list of dims or sizes, inline up to kInlineDims entries like a Shape.
using IntList = SmallVector<int64_t, kInlineDims>;

// ---- Every op's attributes ---------------------------------------------------

// add_scalar, mul_scalar, pow_scalar.
struct ScalarAttrs {
  double scalar = 0;
};

// sum, mean: over `dims` (every dim when empty).
struct ReduceAttrs {
  IntList dims;
  bool keepdim = false;
};

// max (values and indices along one dim) and its backward, which also needs
// the input's shape.
struct MaxAttrs {
  int64_t dim = 0;
  bool keepdim = false;
};
struct MaxBackwardAttrs {
  MaxAttrs max;
  Shape input_shape;
};

// reshape and expand (-1: inferred, or kept by expand).
struct ShapeAttrs {
  Shape shape;
};

// permute (dims, a permutation) and anything else that takes one dim list.
struct DimsAttrs {
  IntList dims;
};

// Ops along one dim: concat, softmax and log_softmax and their backwards.
// `causal` is softmax's fused attention mask (key j > query i is left out).
struct DimAttrs {
  int64_t dim = 0;
  bool causal = false;
};

// slice: [start, end) by step along dim (negative start/end count from the end).
struct SliceAttrs {
  int64_t dim = 0, start = 0, end = 0, step = 1;
};
struct SliceBackwardAttrs {
  SliceAttrs slice;
  Shape input_shape;
};

// split: consecutive pieces of `sizes` along dim.
struct SplitAttrs {
  IntList sizes;
  int64_t dim = 0;
};

struct ToDTypeAttrs {
  DType dtype = kFloat32;
};
struct ToDeviceAttrs {
  Device device;
};

// layer_norm: normalises the trailing dims of weight's shape, else bias's,
// else the last `normalized_ndim` (0: not given; needed without both).
struct LayerNormAttrs {
  double eps = 1e-5;
  int64_t normalized_ndim = 0;
};

// Which gradients a fused normalisation backward computes (dx, dweight,
// dbias); one not asked for comes out as an empty [0] tensor.
struct GradMask {
  bool input = true, weight = true, bias = true;
};
struct LayerNormBackwardAttrs {
  int64_t normalized_ndim = 1;
  GradMask mask;
};

// batch_norm. update_running_stats is the side effect a checkpoint replay
// turns off (OpDef::for_replay).
struct BatchNormAttrs {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
  bool update_running_stats = true;
};
struct BatchNormBackwardAttrs {
  bool training = true;  // the statistics were the batch's: dx flows through them
  GradMask mask;
};

// dropout and its backward; the mask's numbers are Attrs::philox.
struct DropoutAttrs {
  double p = 0;
};

// scaled_dot_product_attention (fused) and its backward: the scores are
// scale * q k^T (+ mask); dropout's numbers are Attrs::philox.
struct AttentionAttrs {
  double scale = 1.0;
  bool causal = false;
  double dropout_p = 0;
};

struct CrossEntropyAttrs {
  int64_t ignore_index = -100;
};

struct EmbeddingBackwardAttrs {
  int64_t num_weights = 0;
};

// conv2d takes the kernel's parameters as they are; its backwards also the
// shape of the gradient they produce (the input's or the weight's).
using Conv2dAttrs = kernels::Conv2dParams;
struct Conv2dBackwardAttrs {
  Conv2dAttrs conv;
  Shape grad_shape;
};

// max_pool2d, avg_pool2d: the window; the backwards also the input's shape.
using Pool2dAttrs = kernels::Pool2dParams;
struct Pool2dBackwardAttrs {
  Pool2dAttrs pool;
  Shape input_shape;
};
struct AdaptivePool2dAttrs {
  std::array<int64_t, 2> output_size{1, 1};
};
struct InputShapeAttrs {
  Shape input_shape;
};

using AdamUpdateAttrs = kernels::AdamStep;
using SgdUpdateAttrs = kernels::SgdStep;

}  // namespace remat::ops
