#include "remat/core/tensor.h"

namespace remat {

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const int64_t bytes = nbytes_of(shape, remat::element_size(dtype));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(memory::allocate(device, bytes));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->device = device;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const {
  REMAT_CHECK_SHAPE(dim() > 0, "size({}) of a 0-d tensor, which has no dims", d);
  return shape()[static_cast<size_t>(wrap_dim(d, dim(), "size"))];
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element can be out of place (PyTorch's rule too)
  int64_t expected = 1;
  for (size_t i = shape().size(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  const Storage& storage = *impl().storage;
  // Unreachable by design: the tape regenerates what it evicted before any
  // read. A bug there should be an error, not a read of freed memory.
  REMAT_CHECK(!storage.evicted, "data of an evicted tensor {} read before it was regenerated",
              TensorMeta::of(*this).str());
  char* base = static_cast<char*>(storage.data.get());
  return base + offset() * static_cast<int64_t>(element_size());
}

uint32_t Tensor::version() const { return impl().storage->version.load(); }
void Tensor::bump_version() const { impl().storage->version.fetch_add(1); }

bool Tensor::is_alias_of(const Tensor& other) const {
  return defined() && other.defined() && impl().storage == other.impl().storage;
}

Tensor Tensor::detach() const { return as_strided(shape(), strides(), offset()); }

Tensor Tensor::as_strided(Shape shape, Strides strides, int64_t offset) const {
  numel_of(shape);  // validates the shape
  REMAT_CHECK_SHAPE(strides.size() == shape.size() && offset >= 0,
                    "as_strided: {} strides and offset {} for shape {}", shape_str(strides), offset,
                    shape_str(shape));
  auto out = std::make_shared<TensorImpl>();
  out->storage = impl().storage;
  out->offset = offset;
  out->shape = std::move(shape);
  out->strides = std::move(strides);
  out->dtype = dtype();
  out->device = device();
  return Tensor(std::move(out));
}

Strides broadcast_strides(const Tensor& t, const Shape& shape) {
  Strides out(shape.size(), 0);
  const size_t lead = shape.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i) {
    out[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  }
  return out;
}

std::string TensorMeta::str() const {
  return fmt::format("{} {} on {}", shape_str(shape), dtype, device);
}

}  // namespace remat
