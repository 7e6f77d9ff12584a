// Views (reshape, transpose, permute, slice, expand, split) share storage with
// their input; copies (clone, casts, device moves, concat) do not.
#include <numeric>
#include <span>

#include "ops/dispatch.h"
#include "ops/elementwise_defs.h"
#include "remat/ops.h"

namespace remat::ops {
namespace {

// Resolves one -1 and checks the element count.
Shape infer_shape(const char* op, const Shape& x, Shape want) {
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == -1) {
      REMAT_CHECK_SHAPE(infer_at < 0, "{}: more than one -1 in {}", op, shape_str(want));
      infer_at = static_cast<int64_t>(i);
    } else {
      REMAT_CHECK_SHAPE(want[i] >= 0, "{}: negative size in {}", op, shape_str(want));
      known *= want[i];
    }
  }
  const int64_t n = numel_of(x);
  if (infer_at >= 0) {
    REMAT_CHECK_SHAPE(known != 0 && n % known == 0, "{}: cannot reshape {} into {}", op,
                      shape_str(x), shape_str(want));
    want[static_cast<size_t>(infer_at)] = n / known;
  }
  REMAT_CHECK_SHAPE(numel_of(want) == n, "{}: cannot reshape {} ({} elements) into {}", op,
                    shape_str(x), n, shape_str(want));
  return want;
}

// Strides that view x's memory with `shape`, if there are any (the rule of
// PyTorch's computeStride: each run of x's dims that is contiguous in memory
// may be regrouped freely).
std::optional<Strides> view_strides(const Tensor& x, const Shape& shape) {
  if (x.numel() == 0 || x.shape().empty()) return contiguous_strides(shape);
  Strides out(shape.size());
  const Shape& old_shape = x.shape();
  const Strides& old_strides = x.strides();
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[static_cast<size_t>(d)];
    bool chunk_ends =
        d == 0 || (old_shape[static_cast<size_t>(d - 1)] != 1 &&
                   old_strides[static_cast<size_t>(d - 1)] != tensor_numel * chunk_base_stride);
    if (chunk_ends) {
      while (view_d >= 0 &&
             (view_numel < tensor_numel || shape[static_cast<size_t>(view_d)] == 1)) {
        out[static_cast<size_t>(view_d)] = view_numel * chunk_base_stride;
        view_numel *= shape[static_cast<size_t>(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base_stride = old_strides[static_cast<size_t>(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

OpDef view_def(const char* name) {
  OpDef def;
  def.name = name;
  def.view = true;
  def.compute_reduced_in_float = false;
  return def;
}

std::vector<int64_t> inverse_permutation(std::span<const int64_t> dims) {
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); ++i)
    inv[static_cast<size_t>(dims[i])] = static_cast<int64_t>(i);
  return inv;
}

std::vector<int64_t> checked_permutation(const Tensor& x, std::span<const int64_t> dims) {
  REMAT_CHECK_SHAPE(static_cast<int64_t>(dims.size()) == x.dim(),
                    "permute: {} dims given for a {}-d tensor", dims.size(), x.dim());
  std::vector<int64_t> wrapped;
  for (int64_t d : dims) wrapped.push_back(wrap_dim(d, x.dim(), "permute"));
  std::vector<int64_t> sorted = wrapped;
  std::sort(sorted.begin(), sorted.end());
  REMAT_CHECK_SHAPE(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(),
                    "permute: dims [{}] repeat a dim", fmt::join(dims, ", "));
  return wrapped;
}

struct SliceSpec {
  int64_t dim, start, end, step, length;
};

SliceSpec slice_spec(const Shape& shape, const SliceAttrs& a) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  REMAT_CHECK_SHAPE(nd > 0, "slice: cannot slice a 0-d tensor");
  SliceSpec s{wrap_dim(a.dim, nd, "slice"), a.start, a.end, a.step, 0};
  REMAT_CHECK_SHAPE(s.step > 0, "slice: step must be positive, got {}", s.step);
  const int64_t size = shape[static_cast<size_t>(s.dim)];
  auto clamp = [size](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + size : v, 0, size); };
  s.start = clamp(s.start);
  s.end = std::max(clamp(s.end), s.start);
  s.length = (s.end - s.start + s.step - 1) / s.step;
  return s;
}

void copy_on_device(const char* name, const Tensor& src, const Tensor& dst) {
  elementwise_kernels(name, dst.device()).copy(src, dst);
}

int64_t concat_dim(const std::vector<Tensor>& xs, const Attrs& a) {
  REMAT_CHECK(!xs.empty(), "concat: no tensors");
  REMAT_CHECK_SHAPE(xs[0].dim() > 0, "concat: cannot concatenate 0-d tensors ({})", describe(xs));
  return wrap_dim(a.get<DimAttrs>().dim, xs[0].dim(), "concat");
}

}  // namespace

void register_shape_ops(Registry& r) {
  OpDef reshape_def = view_def("reshape");
  reshape_def.attrs = attrs_type<ShapeAttrs>();
  reshape_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {infer_shape("reshape", in[0].shape(), a.get<ShapeAttrs>().shape), in[0].dtype(),
         in[0].device()}};
  };
  reshape_def.forward = [](const std::vector<Tensor>& in, const Attrs& a,
                           std::vector<Tensor>& out) {
    Shape shape = infer_shape("reshape", in[0].shape(), a.get<ShapeAttrs>().shape);
    Tensor x = in[0];
    std::optional<Strides> strides = view_strides(x, shape);
    if (!strides) {  // not expressible as a view: copy first
      x = Tensor::empty(x.shape(), x.dtype(), x.device());
      copy_on_device("reshape", in[0], x);
      strides = contiguous_strides(shape);
    }
    out.push_back(x.as_strided(shape, *strides, x.offset()));
  };
  reshape_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{reshape(a.grad(), a.input_meta[0].shape)};
  };
  r.add(std::move(reshape_def));

  OpDef permute_def = view_def("permute");
  permute_def.attrs = attrs_type<DimsAttrs>();
  permute_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    auto dims = checked_permutation(in[0], a.get<DimsAttrs>().dims);
    Shape s;
    for (int64_t d : dims) s.push_back(in[0].shape()[static_cast<size_t>(d)]);
    return std::vector<TensorMeta>{{s, in[0].dtype(), in[0].device()}};
  };
  permute_def.forward = [](const std::vector<Tensor>& in, const Attrs& a,
                           std::vector<Tensor>& out) {
    auto dims = checked_permutation(in[0], a.get<DimsAttrs>().dims);
    Shape s;
    Strides st;
    for (int64_t d : dims) {
      s.push_back(in[0].shape()[static_cast<size_t>(d)]);
      st.push_back(in[0].strides()[static_cast<size_t>(d)]);
    }
    out.push_back(in[0].as_strided(s, st, in[0].offset()));
  };
  permute_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{
        permute(a.grad(), inverse_permutation(a.attrs.get<DimsAttrs>().dims))};
  };
  r.add(std::move(permute_def));

  OpDef slice_def = view_def("slice");
  slice_def.attrs = attrs_type<SliceAttrs>();
  slice_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    SliceSpec s = slice_spec(in[0].shape(), a.get<SliceAttrs>());
    Shape shape = in[0].shape();
    shape[static_cast<size_t>(s.dim)] = s.length;
    return std::vector<TensorMeta>{{shape, in[0].dtype(), in[0].device()}};
  };
  slice_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    SliceSpec s = slice_spec(in[0].shape(), a.get<SliceAttrs>());
    Shape shape = in[0].shape();
    Strides strides = in[0].strides();
    const auto d = static_cast<size_t>(s.dim);
    shape[d] = s.length;
    int64_t offset = in[0].offset() + s.start * strides[d];
    strides[d] *= s.step;
    out.push_back(in[0].as_strided(shape, strides, offset));
  };
  slice_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{call1(op<"slice_backward">(), {a.grad()},
                                     SliceBackwardAttrs{.slice = a.attrs.get<SliceAttrs>(),
                                                        .input_shape = a.input_meta[0].shape})};
  };
  r.add(std::move(slice_def));

  // Zeros of the input's shape with the gradient written into the slice.
  OpDef slice_backward;
  slice_backward.name = "slice_backward";
  slice_backward.compute_reduced_in_float = false;
  slice_backward.attrs = attrs_type<SliceBackwardAttrs>();
  slice_backward.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{
        {a.get<SliceBackwardAttrs>().input_shape, in[0].dtype(), in[0].device()}};
  };
  slice_backward.forward = [](const std::vector<Tensor>& in, const Attrs& a,
                              std::vector<Tensor>& out) {
    SliceSpec s = slice_spec(out[0].shape(), a.get<SliceBackwardAttrs>().slice);
    Tensor region = out[0].slice(s.dim, s.start, s.end, s.step);
    const kernels::ElementwiseKernels& k = elementwise_kernels("slice_backward", out[0].device());
    k.fill(out[0], 0.0);
    k.copy(in[0], region);
  };
  r.add(std::move(slice_backward));

  OpDef expand_def = view_def("expand");
  expand_def.attrs = attrs_type<ShapeAttrs>();
  expand_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    const Shape& want = a.get<ShapeAttrs>().shape;
    const Shape& have = in[0].shape();
    REMAT_CHECK_SHAPE(want.size() >= have.size(), "expand: cannot expand {} to {}", shape_str(have),
                      shape_str(want));
    Shape out = want;
    const size_t lead = want.size() - have.size();
    for (size_t i = 0; i < want.size(); ++i) {
      // -1 keeps the size of an existing dim; new leading dims need a size.
      if (i >= lead && want[i] == -1) out[i] = have[i - lead];
      REMAT_CHECK_SHAPE(
          out[i] >= 0 && (i < lead || have[i - lead] == out[i] || have[i - lead] == 1),
          "expand: cannot expand {} to {} (dim {})", shape_str(have), shape_str(want), i);
    }
    return std::vector<TensorMeta>{{out, in[0].dtype(), in[0].device()}};
  };
  expand_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    Shape shape = op<"expand">().shape(in, a)[0].shape;
    const size_t lead = shape.size() - in[0].shape().size();
    Strides strides(shape.size(), 0);
    for (size_t i = 0; i < in[0].shape().size(); ++i) {
      strides[lead + i] = in[0].shape()[i] == shape[lead + i] ? in[0].strides()[i] : 0;
    }
    out.push_back(in[0].as_strided(shape, strides, in[0].offset()));
  };
  expand_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{sum_to(a.grad(), a.input_meta[0].shape)};
  };
  r.add(std::move(expand_def));

  OpDef split_def = view_def("split");
  split_def.visible_outputs = -1;
  split_def.attrs = attrs_type<SplitAttrs>();
  split_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    REMAT_CHECK_SHAPE(in[0].dim() > 0, "split: cannot split a 0-d tensor");
    const auto& attrs = a.get<SplitAttrs>();
    int64_t dim = wrap_dim(attrs.dim, in[0].dim(), "split");
    const IntList& sizes = attrs.sizes;
    int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
    REMAT_CHECK_SHAPE(total == in[0].shape()[static_cast<size_t>(dim)],
                      "split: sizes [{}] do not add up to dim {} of {}", fmt::join(sizes, ", "),
                      dim, shape_str(in[0].shape()));
    std::vector<TensorMeta> metas;
    for (int64_t s : sizes) {
      Shape shape = in[0].shape();
      shape[static_cast<size_t>(dim)] = s;
      metas.push_back({shape, in[0].dtype(), in[0].device()});
    }
    return metas;
  };
  split_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    const auto& attrs = a.get<SplitAttrs>();
    int64_t dim = wrap_dim(attrs.dim, in[0].dim(), "split");
    int64_t start = 0;
    for (int64_t s : attrs.sizes) {
      Shape shape = in[0].shape();
      shape[static_cast<size_t>(dim)] = s;
      out.push_back(
          in[0].as_strided(shape, in[0].strides(),
                           in[0].offset() + start * in[0].strides()[static_cast<size_t>(dim)]));
      start += s;
    }
  };
  split_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{concat(a.grad_outputs, a.attrs.get<SplitAttrs>().dim)};
  };
  r.add(std::move(split_def));

  OpDef concat_def;
  concat_def.name = "concat";
  concat_def.compute_reduced_in_float = false;
  concat_def.attrs = attrs_type<DimAttrs>();
  concat_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    int64_t dim = concat_dim(in, a);
    Shape shape = in[0].shape();
    shape[static_cast<size_t>(dim)] = 0;
    for (const Tensor& t : in) {
      check_same_dtype("concat", in[0], t);
      bool fits = t.dim() == in[0].dim();
      for (int64_t d = 0; fits && d < t.dim(); ++d) {
        fits =
            d == dim || t.shape()[static_cast<size_t>(d)] == in[0].shape()[static_cast<size_t>(d)];
      }
      REMAT_CHECK_SHAPE(fits, "concat: shapes differ outside dim {} ({})", dim, describe(in));
      shape[static_cast<size_t>(dim)] += t.shape()[static_cast<size_t>(dim)];
    }
    return std::vector<TensorMeta>{{shape, in[0].dtype(), in[0].device()}};
  };
  concat_def.forward = [](const std::vector<Tensor>& in, const Attrs& a, std::vector<Tensor>& out) {
    int64_t dim = concat_dim(in, a), start = 0;
    for (const Tensor& t : in) {
      int64_t len = t.shape()[static_cast<size_t>(dim)];
      copy_on_device("concat", t, out[0].slice(dim, start, start + len));
      start += len;
    }
  };
  concat_def.backward = [](const BackwardArgs& a) {
    std::vector<int64_t> sizes;
    int64_t dim = wrap_dim(a.attrs.get<DimAttrs>().dim,
                           static_cast<int64_t>(a.input_meta[0].shape.size()), "concat");
    for (const TensorMeta& m : a.input_meta) sizes.push_back(m.shape[static_cast<size_t>(dim)]);
    return split(a.grad(), sizes, dim);
  };
  r.add(std::move(concat_def));

  OpDef clone_def;
  clone_def.name = "clone";
  clone_def.compute_reduced_in_float = false;
  clone_def.shape = [](const std::vector<Tensor>& in, const Attrs&) {
    return std::vector<TensorMeta>{TensorMeta::of(in[0])};
  };
  clone_def.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    copy_on_device("clone", in[0], out[0]);
  };
  clone_def.backward = [](const BackwardArgs& a) { return std::vector<Tensor>{a.grad()}; };
  r.add(std::move(clone_def));

  OpDef cast_def;
  cast_def.name = "to_dtype";
  cast_def.compute_reduced_in_float = false;
  cast_def.attrs = attrs_type<ToDTypeAttrs>();
  cast_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{{in[0].shape(), a.get<ToDTypeAttrs>().dtype, in[0].device()}};
  };
  cast_def.forward = [](const std::vector<Tensor>& in, const Attrs&, std::vector<Tensor>& out) {
    copy_on_device("to_dtype", in[0], out[0]);
  };
  cast_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{a.grad().to(a.input_meta[0].dtype)};
  };
  r.add(std::move(cast_def));

  OpDef to_device_def;
  to_device_def.name = "to_device";
  to_device_def.compute_reduced_in_float = false;
  to_device_def.attrs = attrs_type<ToDeviceAttrs>();
  to_device_def.shape = [](const std::vector<Tensor>& in, const Attrs& a) {
    return std::vector<TensorMeta>{{in[0].shape(), in[0].dtype(), a.get<ToDeviceAttrs>().device}};
  };
  to_device_def.forward = [](const std::vector<Tensor>& in, const Attrs&,
                             std::vector<Tensor>& out) {
    const Tensor& src = in[0];
    // The copy is the kernel of the device other than the host, if any.
    const Device device = src.device().is_cpu() ? out[0].device() : src.device();
    const kernels::ElementwiseKernels& k = elementwise_kernels("to_device", device);
    if (device.is_cpu()) {
      k.copy(src, out[0]);
      return;
    }
    Tensor packed = src;
    if (!src.is_contiguous()) {  // packed first on its own device
      packed = Tensor::empty(src.shape(), src.dtype(), src.device());
      copy_on_device("to_device", src, packed);
    }
    k.copy_between_devices(packed, out[0]);
  };
  to_device_def.backward = [](const BackwardArgs& a) {
    return std::vector<Tensor>{a.grad().to(a.input_meta[0].device)};
  };
  r.add(std::move(to_device_def));
}

}  // namespace remat::ops

namespace remat {

using ops::call1;
using ops::op;

Tensor reshape(const Tensor& x, const Shape& shape) {
  return call1(op<"reshape">(), {x}, ops::ShapeAttrs{.shape = shape});
}
Tensor view(const Tensor& x, const Shape& shape) {
  Shape resolved = ops::infer_shape("view", x.shape(), shape);
  REMAT_CHECK_SHAPE(ops::view_strides(x, resolved).has_value(),
                    "view: {} with strides {} cannot be viewed as {} (use reshape, which copies)",
                    shape_str(x.shape()), shape_str(x.strides()), shape_str(shape));
  return reshape(x, resolved);
}
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  return call1(op<"permute">(), {x}, ops::DimsAttrs{.dims = dims});
}
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(static_cast<size_t>(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  const auto a = static_cast<size_t>(wrap_dim(d0, x.dim(), "transpose"));
  const auto b = static_cast<size_t>(wrap_dim(d1, x.dim(), "transpose"));
  if (x.dim() > 0) std::swap(dims[a], dims[b]);  // a 0-d tensor's dim 0 is itself
  return permute(x, dims);
}
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  return call1(op<"slice">(), {x},
               ops::SliceAttrs{.dim = dim, .start = start, .end = end, .step = step});
}
Tensor expand(const Tensor& x, const Shape& shape) {
  return call1(op<"expand">(), {x}, ops::ShapeAttrs{.shape = shape});
}
Tensor contiguous(const Tensor& x) { return x.is_contiguous() ? x : call1(op<"clone">(), {x}); }
Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  return call1(op<"concat">(), xs, ops::DimAttrs{.dim = dim});
}
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  return ops::call(op<"split">(), {x}, ops::SplitAttrs{.sizes = sizes, .dim = dim});
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  return call1(op<"to_device">(), {*this}, ops::ToDeviceAttrs{.device = d});
}
Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  return call1(op<"to_dtype">(), {*this}, ops::ToDTypeAttrs{.dtype = t});
}
Tensor Tensor::contiguous() const { return remat::contiguous(*this); }
Tensor Tensor::clone() const { return call1(op<"clone">(), {*this}); }
Tensor Tensor::reshape(const Shape& shape) const { return remat::reshape(*this, shape); }
Tensor Tensor::view(const Shape& shape) const { return remat::view(*this, shape); }
Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return remat::transpose(*this, d0, d1); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  return remat::permute(*this, dims);
}
Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  return remat::slice(*this, dim, start, end, step);
}
Tensor Tensor::expand(const Shape& shape) const { return remat::expand(*this, shape); }

}  // namespace remat
