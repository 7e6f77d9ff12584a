// 2-d convolution on the CPU (contract: kernels/conv.h). float32 and
// bfloat16 run in oneDNN's convolution primitives where it is built in and
// serves the problem (as PyTorch's CPU convolutions do); the rest (float64,
// float16, problems oneDNN refuses) through im2col + GEMM, with the column
// buffer built for a bounded chunk of the batch at a time so its size stays
// capped whatever the batch, 16-bit operands widened to float32 copies.
#include "kernels/conv.h"

#include <algorithm>
#include <array>

#include "kernels/contiguous.h"
#include "kernels/cpu/dtype_dispatch.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/onednn.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace remat::kernels::cpu {
namespace {

// Column buffers are capped at this size; larger batches go through in chunks.
constexpr int64_t kColumnBudgetBytes = int64_t{32} << 20;

// The sizes of one convolution, read from its operands' shapes.
struct ConvDims {
  int64_t n, c, h, w;  // input
  int64_t o, kh, kw;   // weight
  int64_t oh, ow;      // output
  int64_t groups;

  int64_t group_in() const { return c / groups; }
  int64_t group_out() const { return o / groups; }
  int64_t rows() const { return c * kh * kw; }                 // column rows, every group
  int64_t group_rows() const { return group_in() * kh * kw; }  // GEMM inner dim per group
  int64_t out_area() const { return oh * ow; }
  int64_t in_area() const { return h * w; }
};

ConvDims dims_of(const Shape& input, const Shape& weight, const Shape& output, int64_t groups) {
  return {input[0],  input[1],  input[2],  input[3],  weight[0],
          weight[2], weight[3], output[2], output[3], groups};
}

// A view of t's storage, starting `offset` elements past t's first element.
Tensor alias(const Tensor& t, Shape shape, Strides strides, int64_t offset) {
  return t.as_strided(std::move(shape), std::move(strides), t.offset() + offset);
}

// A contiguous view (t contiguous) with another shape.
Tensor alias(const Tensor& t, const Shape& shape, int64_t offset = 0) {
  return alias(t, shape, contiguous_strides(shape), offset);
}

// t with its last two dims swapped (no copy; BLAS reads it transposed).
Tensor transposed(const Tensor& t) {
  Shape shape = t.shape();
  Strides strides = t.strides();
  std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
  std::swap(strides[strides.size() - 1], strides[strides.size() - 2]);
  return alias(t, shape, strides, 0);
}

void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  gemm_kernels.matmul(a, b, Tensor(), out);
}

// Samples per chunk: as many as keep the column buffer within its budget.
int64_t chunk_size(const ConvDims& d, size_t element_size) {
  const int64_t per_sample =
      std::max<int64_t>(1, d.rows() * d.out_area() * static_cast<int64_t>(element_size));
  return std::clamp<int64_t>(kColumnBudgetBytes / per_sample, 1, std::max<int64_t>(d.n, 1));
}

// A 1x1 kernel with unit stride and no padding reads the input as it is.
bool is_pointwise(const ConvDims& d, const Conv2dParams& p) {
  return d.kh == 1 && d.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
         p.pad_w == 0;
}

// The outputs o in [0, count) that read input o*stride + shift inside [0, size).
struct Span {
  int64_t begin, end;
};
Span inside(int64_t count, int64_t size, int64_t stride, int64_t shift) {
  const int64_t begin = shift >= 0 ? 0 : (stride - 1 - shift) / stride;
  const int64_t end = size - shift <= 0 ? 0 : (size - shift + stride - 1) / stride;
  const int64_t b = std::min(begin, count);
  return {b, std::clamp(end, b, count)};
}

// One kernel tap (i, j) of input plane (n, c): its column row
// r = (c*kH + i)*kW + j, the input offsets it reads at, and the outputs
// whose reads fall inside the input.
struct Tap {
  int64_t n, c;
  int64_t index;  // i*kW + j: 0 for a plane's first tap
  int64_t row;
  int64_t shift_y, shift_x;
  Span ys, xs;
};

// Calls fn(tap) for every tap of every input plane, a plane's taps in order
// on one thread: the walk im2col and col2im share.
template <typename Fn>
void for_each_tap(int64_t samples, const ConvDims& d, const Conv2dParams& p, Fn&& fn) {
  const int64_t work = samples * d.rows() * d.out_area();
  parallel_for(samples * d.c, work >= 2 * kParallelGrain, [&](int64_t plane_index) {
    const int64_t n = plane_index / d.c, c = plane_index % d.c;
    for (int64_t i = 0; i < d.kh; ++i) {
      const int64_t shift_y = i * p.dilation_h - p.pad_h;
      const Span ys = inside(d.oh, d.h, p.stride_h, shift_y);
      for (int64_t j = 0; j < d.kw; ++j) {
        const int64_t shift_x = j * p.dilation_w - p.pad_w;
        fn(Tap{n, c, i * d.kw + j, (c * d.kh + i) * d.kw + j, shift_y, shift_x, ys,
               inside(d.ow, d.w, p.stride_w, shift_x)});
      }
    }
  });
}

// Column entry (n, r, l), r = (c*kH + i)*kW + j and l = oy*oW + ox, lives at
// cols[n*sample_stride + r*row_stride + l] and holds
// x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw] (zero outside the input).
template <typename T>
void im2col(const T* x, int64_t samples, const ConvDims& d, const Conv2dParams& p, T* cols,
            int64_t sample_stride, int64_t row_stride) {
  for_each_tap(samples, d, p, [&](const Tap& t) {
    const T* plane = x + (t.n * d.c + t.c) * d.in_area();
    T* row = cols + t.n * sample_stride + t.row * row_stride;
    std::fill(row, row + t.ys.begin * d.ow, T(0));
    std::fill(row + t.ys.end * d.ow, row + d.oh * d.ow, T(0));
    for (int64_t oy = t.ys.begin; oy < t.ys.end; ++oy) {
      const T* src = plane + (oy * p.stride_h + t.shift_y) * d.w;
      T* dst = row + oy * d.ow;
      std::fill(dst, dst + t.xs.begin, T(0));
      std::fill(dst + t.xs.end, dst + d.ow, T(0));
      if (p.stride_w == 1) {
        std::copy(src + t.xs.begin + t.shift_x, src + t.xs.end + t.shift_x, dst + t.xs.begin);
      } else {
        for (int64_t ox = t.xs.begin; ox < t.xs.end; ++ox) {
          dst[ox] = src[ox * p.stride_w + t.shift_x];
        }
      }
    }
  });
}

// The adjoint of im2col (columns laid out [n][r][l]): each input element
// (zeroed at the plane's first tap) sums the column entries that were read
// from it. One thread owns one (n, c) plane, so the accumulation needs no
// atomics.
template <typename T>
void col2im(const T* cols, int64_t samples, const ConvDims& d, const Conv2dParams& p, T* x) {
  const int64_t row_stride = d.out_area(), sample_stride = d.rows() * row_stride;
  for_each_tap(samples, d, p, [&](const Tap& t) {
    T* plane = x + (t.n * d.c + t.c) * d.in_area();
    if (t.index == 0) std::fill(plane, plane + d.in_area(), T(0));
    const T* row = cols + t.n * sample_stride + t.row * row_stride;
    for (int64_t oy = t.ys.begin; oy < t.ys.end; ++oy) {
      const T* src = row + oy * d.ow;
      T* dst = plane + (oy * p.stride_h + t.shift_y) * d.w;
      for (int64_t ox = t.xs.begin; ox < t.xs.end; ++ox) {
        dst[ox * p.stride_w + t.shift_x] += src[ox];
      }
    }
  });
}

template <typename T>
void add_bias(const T* bias, const ConvDims& d, T* out) {
  const int64_t planes = d.n * d.o, area = d.out_area();
  parallel_for(planes, planes * area >= 2 * kParallelGrain, [&](int64_t r) {
    const T b = bias[r % d.o];
    T* row = out + r * area;
    for (int64_t l = 0; l < area; ++l) row[l] += b;
  });
}

void im2col_conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
                   const Tensor& out) {
  const ConvDims d = dims_of(x.shape(), w.shape(), out.shape(), p.groups);
  const int64_t groups = p.groups, og = d.group_out(), k = d.group_rows(), l = d.out_area();
  const Tensor w_mat = alias(w, {groups, og, k});
  // Output rows per group: out[n] viewed as [groups, O/groups, oH*oW].
  auto out_rows = [&](int64_t n0, int64_t samples) {
    return alias(out, {samples, groups, og, l}, n0 * d.o * l);
  };
  if (is_pointwise(d, p)) {
    matmul(w_mat, alias(x, {d.n, groups, k, l}), out_rows(0, d.n));
  } else if (d.n > 0) {
    const int64_t chunk = chunk_size(d, x.element_size());
    const Tensor cols = Tensor::empty({chunk, groups, k, l}, x.dtype(), x.device());
    for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
      const int64_t samples = std::min(chunk, d.n - n0);
      visit_floating(x.dtype(), "conv2d", [&]<typename T>() {
        im2col(static_cast<const T*>(x.data_ptr()) + n0 * d.c * d.in_area(), samples, d, p,
               static_cast<T*>(cols.data_ptr()), d.rows() * l, l);
      });
      matmul(w_mat, alias(cols, {samples, groups, k, l}), out_rows(n0, samples));
    }
  }
  if (bias.defined()) {
    visit_floating(out.dtype(), "conv2d", [&]<typename T>() {
      add_bias(static_cast<const T*>(bias.data_ptr()), d, static_cast<T*>(out.data_ptr()));
    });
  }
}

void im2col_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                           const Tensor& grad_input) {
  const ConvDims d = dims_of(grad_input.shape(), w.shape(), gy.shape(), p.groups);
  const int64_t groups = p.groups, og = d.group_out(), k = d.group_rows(), l = d.out_area();
  const Tensor w_t = transposed(alias(w, {groups, og, k}));  // [groups, K, O/groups]
  auto gy_rows = [&](int64_t n0, int64_t samples) {
    return alias(gy, {samples, groups, og, l}, n0 * d.o * l);
  };
  if (is_pointwise(d, p)) {
    matmul(w_t, gy_rows(0, d.n), alias(grad_input, {d.n, groups, k, l}));
    return;
  }
  if (d.n == 0) return;
  const int64_t chunk = chunk_size(d, gy.element_size());
  const Tensor cols = Tensor::empty({chunk, groups, k, l}, gy.dtype(), gy.device());
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t samples = std::min(chunk, d.n - n0);
    matmul(w_t, gy_rows(n0, samples), alias(cols, {samples, groups, k, l}));
    visit_floating(gy.dtype(), "conv2d_backward_input", [&]<typename T>() {
      col2im(static_cast<const T*>(cols.data_ptr()), samples, d, p,
             static_cast<T*>(grad_input.data_ptr()) + n0 * d.c * d.in_area());
    });
  }
}

void im2col_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                            const Tensor& grad_weight) {
  const ConvDims d = dims_of(x.shape(), grad_weight.shape(), gy.shape(), p.groups);
  const int64_t groups = p.groups, og = d.group_out(), k = d.group_rows(), l = d.out_area();
  const Tensor gw = alias(grad_weight, {groups, og, k});
  if (d.n == 0) {
    elementwise_kernels.fill(grad_weight, 0.0);
    return;
  }
  // Columns laid out [r][n][l] and grad_out regrouped as [o][n][l] make the
  // sum over the samples of a chunk the inner dim of a single GEMM per group.
  const int64_t chunk = chunk_size(d, x.element_size());
  const Tensor cols = Tensor::empty({d.rows() * chunk * l}, x.dtype(), x.device());
  const Tensor gy_by_channel = Tensor::empty({d.o * chunk * l}, gy.dtype(), gy.device());
  Tensor partial;  // a later chunk's contribution, added to the first's
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t samples = std::min(chunk, d.n - n0), m = samples * l;
    visit_floating(x.dtype(), "conv2d_backward_weight", [&]<typename T>() {
      im2col(static_cast<const T*>(x.data_ptr()) + n0 * d.c * d.in_area(), samples, d, p,
             static_cast<T*>(cols.data_ptr()), l, m);
    });
    elementwise_kernels.copy(alias(gy, {d.o, samples, l}, {l, d.o * l, 1}, n0 * d.o * l),
                             alias(gy_by_channel, {d.o, samples, l}));
    Tensor target = gw;
    if (n0 > 0) {
      if (!partial.defined()) partial = Tensor::empty(gw.shape(), gw.dtype(), gw.device());
      target = partial;
    }
    matmul(alias(gy_by_channel, {groups, og, m}), transposed(alias(cols, {groups, k, m})), target);
    if (n0 > 0) elementwise_kernels.binary(BinaryOp::Add, gw, partial, gw);
  }
}

// The three passes, and which operand (x, w, y) each one writes.
enum class Pass : int64_t { Forward, BackwardData, BackwardWeights };
enum Operand : size_t { kX, kW, kY };
constexpr std::array<Operand, 3> kWritten{kY, kX, kW};

#ifdef REMAT_WITH_ONEDNN

using dnnl::memory;

// oneDNN's view of one convolution: the dims of its operands (a grouped
// weight as [groups, O/groups, C/groups, kH, kW], the same bytes), and its
// parameters (oneDNN counts dilation from 0).
struct OnednnConv {
  memory::data_type type;
  memory::dims x, w, y, bias, strides, dilates, pad_l, pad_r;

  OnednnConv(const ConvDims& d, const Conv2dParams& p, memory::data_type t)
      : type(t),
        x{d.n, d.c, d.h, d.w},
        w(d.groups > 1 ? memory::dims{d.groups, d.group_out(), d.group_in(), d.kh, d.kw}
                       : memory::dims{d.o, d.c, d.kh, d.kw}),
        y{d.n, d.o, d.oh, d.ow},
        bias{d.o},
        strides{p.stride_h, p.stride_w},
        dilates{p.dilation_h - 1, p.dilation_w - 1},
        pad_l{p.pad_h, p.pad_w},
        pad_r{p.pad_h, p.pad_w} {}

  // remat's layout: contiguous NCHW, OIHW / GOIHW.
  static memory::desc plain(const memory::dims& dims, memory::data_type t) {
    static constexpr std::array tags{memory::format_tag::a, memory::format_tag::ab,
                                     memory::format_tag::abc, memory::format_tag::abcd,
                                     memory::format_tag::abcde};
    return {dims, t, tags[dims.size() - 1]};
  }
  // The primitive chooses its layout (blocked for the JIT kernels); the
  // caller reorders to and from remat's.
  memory::desc any(const memory::dims& dims) const { return {dims, type, memory::format_tag::any}; }

  dnnl::convolution_forward::primitive_desc forward(bool with_bias) const {
    using F = dnnl::convolution_forward;
    const auto prop = dnnl::prop_kind::forward_training;
    const auto algo = dnnl::algorithm::convolution_direct;
    const F::desc desc =
        with_bias ? F::desc(prop, algo, any(x), any(w), plain(bias, type), any(y), strides, dilates,
                            pad_l, pad_r)
                  : F::desc(prop, algo, any(x), any(w), any(y), strides, dilates, pad_l, pad_r);
    return {desc, onednn::user_scratchpad(), onednn::engine(), /*allow_empty=*/true};
  }
};

// A created pass: its primitive, the layouts it reads and writes its x, w and
// y in, and the argument ids it takes them as. Empty where oneDNN refuses.
struct ConvStep {
  onednn::Step step;
  std::array<memory::desc, 3> layout;
  std::array<int, 3> arg;
};

template <typename PrimitiveDesc, typename Primitive>
ConvStep conv_step(const PrimitiveDesc& pd, std::array<memory::desc, 3> layout,
                   std::array<int, 3> arg) {
  const std::string implementation = pd.impl_info_str();
  if (onednn::is_reference(implementation)) return {};
  return {{Primitive(pd), pd.scratchpad_desc(), implementation}, std::move(layout), arg};
}

// A backward pass of primitive P (both take the same descriptor arguments),
// hinted by the forward's; layouts(pd) lists the x, w, y layouts it chose.
template <typename P, typename Layouts>
ConvStep backward_step(const OnednnConv& c, const dnnl::convolution_forward::primitive_desc& fwd,
                       Layouts&& layouts, std::array<int, 3> arg) {
  const typename P::primitive_desc pd(
      typename P::desc(dnnl::algorithm::convolution_direct, c.any(c.x), c.any(c.w), c.any(c.y),
                       c.strides, c.dilates, c.pad_l, c.pad_r),
      onednn::user_scratchpad(), onednn::engine(), fwd, /*allow_empty=*/true);
  if (!pd) return {};
  return conv_step<typename P::primitive_desc, P>(pd, layouts(pd), arg);
}

ConvStep make_step(Pass pass, const OnednnConv& c, bool with_bias) {
  const dnnl::convolution_forward::primitive_desc fwd = c.forward(with_bias);
  if (!fwd) return {};
  switch (pass) {
    case Pass::Forward:
      return conv_step<decltype(fwd), dnnl::convolution_forward>(
          fwd, {fwd.src_desc(), fwd.weights_desc(), fwd.dst_desc()},
          {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST});
    case Pass::BackwardData:
      return backward_step<dnnl::convolution_backward_data>(
          c, fwd,
          [](const auto& pd) {
            return std::array{pd.diff_src_desc(), pd.weights_desc(), pd.diff_dst_desc()};
          },
          {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST});
    case Pass::BackwardWeights:
      return backward_step<dnnl::convolution_backward_weights>(
          c, fwd,
          [](const auto& pd) {
            return std::array{pd.src_desc(), pd.diff_weights_desc(), pd.diff_dst_desc()};
          },
          {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST});
  }
  return {};
}

// Runs one pass through oneDNN on remat's contiguous x, w and y (bias for
// the forward): operands whose layout the primitive does not read as they
// are go through reordered copies (blocks of remat's allocator), and the
// written one is reordered back. False, having written nothing, where
// oneDNN is not built for the dtype or refuses the problem.
bool onednn_pass(Pass pass, const char* op, const ConvDims& d, const Conv2dParams& p,
                 std::array<const Tensor*, 3> operands, const Tensor& bias) {
  onednn::start_call();
  const DType dtype = operands[kX]->dtype();
  const memory::data_type type = onednn::data_type(dtype);
  if (type == memory::data_type::undef || d.n == 0) return false;
  return onednn::guarded(
      [&] {
        return fmt::format(
            "{}: {} x {}, weight {}, stride {}x{}, padding {}x{}, dilation {}x{}, "
            "groups {}, {}",
            op, shape_str(operands[kY]->shape()), shape_str(operands[kX]->shape()),
            shape_str(operands[kW]->shape()), p.stride_h, p.stride_w, p.pad_h, p.pad_w,
            p.dilation_h, p.dilation_w, p.groups, dtype);
      },
      [&] {
        static std::array<onednn::Cache<ConvStep>, 3> caches;
        const OnednnConv c(d, p, type);
        const bool with_bias = pass == Pass::Forward && bias.defined();
        const onednn::Cache<ConvStep>::Key key{static_cast<int64_t>(type),
                                               d.n,
                                               d.c,
                                               d.h,
                                               d.w,
                                               d.o,
                                               d.kh,
                                               d.kw,
                                               p.stride_h,
                                               p.stride_w,
                                               p.pad_h,
                                               p.pad_w,
                                               p.dilation_h,
                                               p.dilation_w,
                                               p.groups,
                                               with_bias};
        const ConvStep s = caches[static_cast<size_t>(pass)].get(
            key, [&] { return make_step(pass, c, with_bias); });
        if (!s.step.primitive) return false;
        const std::array dims{c.x, c.w, c.y};
        const Operand written = kWritten[static_cast<size_t>(pass)];
        std::vector<remat::memory::Allocation> keep;
        std::array<memory, 3> user, inner;
        std::unordered_map<int, memory> args;
        for (size_t i = 0; i < 3; ++i) {
          user[i] = onednn::wrap(OnednnConv::plain(dims[i], type), operands[i]->data_ptr());
          inner[i] = onednn::in_layout(user[i], s.layout[i], i != written, keep);
          args.emplace(s.arg[i], inner[i]);
        }
        if (with_bias) {
          args.emplace(DNNL_ARG_BIAS,
                       onednn::wrap(OnednnConv::plain(c.bias, type), bias.data_ptr()));
        }
        onednn::execute(s.step, std::move(args));
        onednn::reorder_into(inner[written], user[written]);
        return true;
      });
}

#else

bool onednn_pass(Pass, const char*, const ConvDims&, const Conv2dParams&,
                 std::array<const Tensor*, 3>, const Tensor&) {
  return false;
}

#endif

// A float32 copy of a 16-bit tensor (undefined stays undefined).
Tensor widened(const Tensor& t) {
  if (!t.defined()) return t;
  Tensor wide = Tensor::empty(t.shape(), kFloat32, t.device());
  elementwise_kernels.copy(t, wide);
  return wide;
}

// One pass on x, w and y (in the pass's roles; bias for the forward):
// oneDNN where it serves, else im2col(x, w, y, bias), 16-bit operands as
// float32 copies and the written one rounded once.
template <typename Im2col>
void run_pass(Pass pass, const char* op, const Conv2dParams& p, std::array<const Tensor*, 3> xwy,
              const Tensor& bias, Im2col&& im2col) {
  check_contiguous(op, {*xwy[kX], *xwy[kW], *xwy[kY], bias});
  const ConvDims d = dims_of(xwy[kX]->shape(), xwy[kW]->shape(), xwy[kY]->shape(), p.groups);
  if (onednn_pass(pass, op, d, p, xwy, bias)) return;
  const size_t written = kWritten[static_cast<size_t>(pass)];
  const Tensor& out = *xwy[written];
  if (!is_reduced_float(out.dtype())) return im2col(*xwy[kX], *xwy[kW], *xwy[kY], bias);
  std::array<Tensor, 3> wide;
  for (size_t i = 0; i < 3; ++i) {
    wide[i] = i == written ? Tensor::empty(out.shape(), kFloat32, out.device()) : widened(*xwy[i]);
  }
  im2col(wide[kX], wide[kW], wide[kY], widened(bias));
  elementwise_kernels.copy(wide[written], out);
}

void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
            const Tensor& out) {
  run_pass(Pass::Forward, "conv2d", p, {&x, &w, &out}, bias,
           [&](const Tensor& x_, const Tensor& w_, const Tensor& y_, const Tensor& b_) {
             im2col_conv2d(x_, w_, b_, p, y_);
           });
}

void conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                           const Tensor& grad_input) {
  run_pass(Pass::BackwardData, "conv2d_backward_input", p, {&grad_input, &w, &gy}, Tensor(),
           [&](const Tensor& gx, const Tensor& w_, const Tensor& gy_, const Tensor&) {
             im2col_backward_input(gy_, w_, p, gx);
           });
}

void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                            const Tensor& grad_weight) {
  run_pass(Pass::BackwardWeights, "conv2d_backward_weight", p, {&x, &grad_weight, &gy}, Tensor(),
           [&](const Tensor& x_, const Tensor& gw, const Tensor& gy_, const Tensor&) {
             im2col_backward_weight(gy_, x_, p, gw);
           });
}

}  // namespace

const ConvKernels conv_kernels{conv2d, conv2d_backward_input, conv2d_backward_weight};

}  // namespace remat::kernels::cpu
