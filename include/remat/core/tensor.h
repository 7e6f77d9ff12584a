// Tensor: a cheap handle to a refcounted TensorImpl (storage, offset, shape,
// strides, dtype, autograd identity). Views share storage and its version
// counter. Methods that compute are defined by the op layer (src/ops), those
// that concern gradients by the autograd layer (src/autograd).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "remat/core/device.h"
#include "remat/core/dtype.h"
#include "remat/core/error.h"
#include "remat/core/shape.h"
#include "remat/memory/memory.h"

namespace remat {

namespace autograd {
struct Node;
}

struct Storage;

// Where the bytes of a storage the tape keeps for backward wait while they
// are away from the device: copied to the offload pool or compressed
// (Policy::offload, Policy::compress; src/checkpoint/pack.cpp).
struct PackedStorage {
  virtual ~PackedStorage() = default;
  // Starts bringing the bytes back into storage.data (allocated here) and
  // clears storage.evicted; they may still be on their way when it returns.
  virtual void unpack(Storage& storage) = 0;
  // Before a read: brings the bytes back if they are away, orders the
  // caller's later work after their arrival and carries an in-place change
  // of the tensor they were packed from into storage.version.
  virtual void prepare_read(Storage& storage) = 0;
};

// Bytes on a device plus the version counter that in-place ops bump; shared
// by every view of it.
struct Storage {
  memory::Allocation data;
  std::atomic<uint32_t> version{0};
  // `data` is not there: under a BudgetGuard the tape freed it and makes it
  // again on demand (src/checkpoint/evict.cpp), or `packed` holds it. Only
  // the tape holds such a storage.
  bool evicted = false;
  std::unique_ptr<PackedStorage> packed;  // set on the tape's stand-ins for packed tensors
  explicit Storage(memory::Allocation a) : data(std::move(a)) {}
};

class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Strides strides;  // in elements
  DType dtype = kFloat32;
  Device device = kCPU;
  // Autograd identity: a leaf that wants .grad, or output `output_nr` of a tape entry.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  int output_nr = 0;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  // A fresh contiguous tensor from the allocator; contents uninitialised.
  static Tensor empty(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t numel() const { return numel_of(impl().shape); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().device; }
  size_t element_size() const { return remat::element_size(dtype()); }
  // numel() * element_size(); throws ShapeError for a view (an expand) too large to materialise.
  int64_t nbytes() const { return nbytes_of(shape(), element_size()); }
  bool is_contiguous() const;
  // Address of the first element (storage base + offset).
  void* data_ptr() const;
  template <typename T>
  T* data() const {
    REMAT_CHECK(dtype_of_v<T> == dtype(), "data<{}>() on a {} tensor", dtype_name(dtype_of_v<T>),
                dtype());
    return static_cast<T*>(data_ptr());
  }
  uint32_t version() const;
  void bump_version() const;
  bool is_alias_of(const Tensor& other) const;
  // A tensor sharing storage (and version counter) with no autograd history.
  Tensor detach() const;
  // A view of this tensor's storage with another layout (offset in elements
  // from the storage's start), with no autograd history: what view ops and
  // kernels build their views with. Throws ShapeError for a shape numel_of refuses.
  Tensor as_strided(Shape shape, Strides strides, int64_t offset) const;

  // Autograd (src/autograd).
  bool requires_grad() const { return defined() && impl().requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  void backward(const Tensor& gradient = {}, bool retain_graph = false) const;

  // Conversions and views (src/ops).
  Tensor to(Device d) const;
  Tensor to(DType t) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;  // throws unless expressible as a view
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor expand(const Shape& shape) const;
  template <typename T>
  std::vector<T> to_vector() const;
  template <typename T>
  T item() const;

  // In place: bump the version counter; refused on tensors that require grad
  // while grad mode is on.
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& add_(double value);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(double value);
  Tensor& zero_();
  Tensor& fill_(double value);
  Tensor& copy_(const Tensor& src);

  std::string str() const;
  TensorImpl& impl() const {
    REMAT_CHECK(impl_ != nullptr, "operation on an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// A tensor's metadata (shape, dtype, device), for shape rules and messages.
// An op's shape rule may also choose its output's memory layout: `order`
// lists the dims from outermost to innermost in memory (empty: contiguous).
struct TensorMeta {
  Shape shape;
  DType dtype = kFloat32;
  Device device = kCPU;
  std::vector<int64_t> order = {};
  static TensorMeta of(const Tensor& t) { return {t.shape(), t.dtype(), t.device()}; }
  std::string str() const;
};

// Strides of t viewed with `shape`, which t's shape broadcasts to: stride 0 on
// new or size-1 dims.
Strides broadcast_strides(const Tensor& t, const Shape& shape);

// Creation (src/ops/factories.cpp).
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = kCPU);
Tensor zeros(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);
Tensor ones(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);
Tensor full(const Shape& shape, double value, DType dtype = kFloat32, Device device = kCPU);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor arange(int64_t end, DType dtype = kInt64, Device device = kCPU);
Tensor arange(double start, double end, double step, DType dtype = kFloat32, Device device = kCPU);
// Philox-based: the values are a pure function of (seed, offset, index).
Tensor randn(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);
Tensor rand(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);

}  // namespace remat

template <>
struct fmt::formatter<remat::Tensor> : fmt::formatter<std::string> {
  auto format(const remat::Tensor& t, format_context& ctx) const {
    return fmt::formatter<std::string>::format(t.str(), ctx);
  }
};
