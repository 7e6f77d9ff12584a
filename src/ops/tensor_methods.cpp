// Tensor methods that compute: in-place updates, reading values, printing.
#include <cmath>

#include "core/overlap.h"
#include "ops/dispatch.h"
#include "ops/elementwise_defs.h"
#include "remat/core/grad_mode.h"
#include "remat/ops.h"

namespace remat {
namespace {

using kernels::BinaryOp;

// The elementwise kernels of the output's device.
void binary(const char* op, BinaryOp kind, const Tensor& a, const Tensor& b, const Tensor& out) {
  ops::elementwise_kernels(op, out.device()).binary(kind, a, b, out);
}

void binary_scalar(const char* op, BinaryOp kind, const Tensor& a, double s, const Tensor& out) {
  ops::elementwise_kernels(op, out.device()).binary_scalar(kind, a, s, out);
}

void copy(const char* op, const Tensor& src, const Tensor& dst) {
  ops::elementwise_kernels(op, dst.device()).copy(src, dst);
}

// In-place writes are invisible to the tape, so they are refused on tensors
// whose history it records.
void check_in_place(const Tensor& self, const char* op) {
  REMAT_CHECK(!(GradMode::is_enabled() && self.requires_grad()),
              "{}: in-place op on a tensor that requires grad ({}); run it under NoGradGuard "
              "(optimizer updates) or on a detached tensor",
              op, TensorMeta::of(self).str());
}

// The source of an in-place op as its kernel may read it, elementwise while
// writing self. A source sharing memory with self in another layout would be
// read after being overwritten: refused where that is certain (PyTorch's
// error), read from a copy where strided layouts hide whether any element is
// shared (disjoint column blocks of one matrix are common).
Tensor readable_source(const char* op, const Tensor& self, const Tensor& src) {
  switch (overlap(self, src)) {
    case Overlap::Partial:
      throw Error(fmt::format(
          "{}: the source {} (strides {}) and the destination {} (strides {}) share memory in "
          "different layouts, so the op would read elements it already overwrote; clone() the "
          "source first",
          op, TensorMeta::of(src).str(), shape_str(src.strides()), TensorMeta::of(self).str(),
          shape_str(self.strides())));
    case Overlap::Unknown: {
      Tensor copied = Tensor::empty(src.shape(), src.dtype(), src.device());
      copy(op, src, copied);
      return copied;
    }
    default: return src;
  }
}

void check_operand(const Tensor& self, const Tensor& other, const char* op) {
  REMAT_CHECK(self.device() == other.device(), "{}: operands on different devices ({} and {})", op,
              TensorMeta::of(self).str(), TensorMeta::of(other).str());
  broadcast_shapes(self.shape(), other.shape(), op);
  REMAT_CHECK_SHAPE(broadcast_shapes(self.shape(), other.shape(), op) == self.shape(),
                    "{}: {} does not broadcast to the destination {}", op, shape_str(other.shape()),
                    shape_str(self.shape()));
}

// Runs an in-place update of a bfloat16/float16 self in float32, then writes
// back, when it takes more than one kernel of self's dtype (`one_kernel`
// false), so that it rounds no intermediate (alpha * other, another dtype's
// operand) to 16 bits. One kernel computes a 16-bit tensor in float32
// itself, on both devices.
template <typename Fn>
void update(Tensor& self, const char* op, bool one_kernel, Fn&& fn) {
  check_in_place(self, op);
  check_no_internal_overlap(op, self);
  if (is_reduced_float(self.dtype()) && !one_kernel) {
    Tensor wide = Tensor::empty(self.shape(), kFloat32, self.device());
    copy(op, self, wide);
    fn(wide);
    copy(op, wide, self);
  } else {
    fn(self);
  }
  self.bump_version();
}

Tensor as_dtype(const char* op, const Tensor& t, DType dtype) {
  if (t.dtype() == dtype) return t;
  Tensor out = Tensor::empty(t.shape(), dtype, t.device());
  copy(op, t, out);
  return out;
}

}  // namespace

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_operand(*this, other, "add_");
  update(*this, "add_", alpha == 1.0 && other.dtype() == dtype(), [&](const Tensor& self) {
    Tensor b = as_dtype("add_", readable_source("add_", *this, other), self.dtype());
    if (alpha != 1.0) {
      Tensor scaled = Tensor::empty(b.shape(), b.dtype(), b.device());
      binary_scalar("add_", BinaryOp::Mul, b, alpha, scaled);
      b = scaled;
    }
    binary("add_", BinaryOp::Add, self, b, self);
  });
  return *this;
}

Tensor& Tensor::add_(double value) {
  update(*this, "add_", true,
         [&](const Tensor& self) { binary_scalar("add_", BinaryOp::Add, self, value, self); });
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other) {
  check_operand(*this, other, "mul_");
  update(*this, "mul_", other.dtype() == dtype(), [&](const Tensor& self) {
    binary("mul_", BinaryOp::Mul, self,
           as_dtype("mul_", readable_source("mul_", *this, other), self.dtype()), self);
  });
  return *this;
}

Tensor& Tensor::mul_(double value) {
  update(*this, "mul_", true,
         [&](const Tensor& self) { binary_scalar("mul_", BinaryOp::Mul, self, value, self); });
  return *this;
}

// Unlike the other in-place ops, fill_ may write an expanded tensor: every
// element gets the same value however many indices address it (PyTorch too).
Tensor& Tensor::fill_(double value) {
  check_in_place(*this, "fill_");
  ops::elementwise_kernels("fill_", device()).fill(*this, value);
  bump_version();
  return *this;
}

Tensor& Tensor::zero_() { return fill_(0.0); }

Tensor& Tensor::copy_(const Tensor& src) {
  check_in_place(*this, "copy_");
  check_operand(*this, src, "copy_");
  check_no_internal_overlap("copy_", *this);
  copy("copy_", readable_source("copy_", *this, src), *this);
  bump_version();
  return *this;
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = to(kCPU).detach();
  Tensor converted = Tensor::empty(host.shape(), dtype_of_v<T>, kCPU);
  kernels::cpu::elementwise_kernels.copy(host, converted);
  const T* p = converted.data<T>();
  return std::vector<T>(p, p + converted.numel());
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<BFloat16> Tensor::to_vector() const;
template std::vector<Float16> Tensor::to_vector() const;
template std::vector<int8_t> Tensor::to_vector() const;
template std::vector<Float8E4M3> Tensor::to_vector() const;

template <>
std::vector<bool> Tensor::to_vector() const {
  std::vector<int32_t> v = to_vector<int32_t>();
  return std::vector<bool>(v.begin(), v.end());
}

template <typename T>
T Tensor::item() const {
  REMAT_CHECK(numel() == 1, "item() on a tensor of {} elements ({})", numel(),
              TensorMeta::of(*this).str());
  return to_vector<T>()[0];
}
template float Tensor::item() const;
template double Tensor::item() const;
template int64_t Tensor::item() const;
template int32_t Tensor::item() const;
template bool Tensor::item() const;

// PyTorch-like: tensor([[1.0000, 2.0000], ...], dtype=float32). Tensors over
// 1000 elements show the first and last three entries of each dim.
std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  const bool floating = is_floating(dtype());
  std::vector<double> values = to_vector<double>();
  const Shape& s = shape();
  const bool summarize = numel() > 1000;
  std::string out = "tensor(";
  auto number = [&](double v) {
    if (dtype() == kBool) return std::string(v != 0 ? "true" : "false");
    if (!floating) return fmt::format("{}", static_cast<int64_t>(v));
    return fmt::format("{:.4f}", v);
  };
  const Strides cs = contiguous_strides(s);
  auto print = [&](auto&& self, size_t d, int64_t base) -> void {
    if (d == s.size()) {
      out += number(values[static_cast<size_t>(base)]);
      return;
    }
    out += "[";
    for (int64_t i = 0; i < s[d]; ++i) {
      if (summarize && s[d] > 6 && i == 3) {
        out += "..., ";
        i = s[d] - 3;
      }
      self(self, d + 1, base + i * cs[d]);
      if (i + 1 < s[d]) out += d + 1 == s.size() ? ", " : ",\n" + std::string(8 + d, ' ');
    }
    out += "]";
  };
  print(print, 0, 0);
  out += fmt::format(", dtype={}", dtype());
  if (!device().is_cpu()) out += fmt::format(", device={}", device());
  if (requires_grad()) out += is_leaf() ? ", requires_grad=true" : ", grad_fn=<recorded>";
  return out + ")";
}

}  // namespace remat
