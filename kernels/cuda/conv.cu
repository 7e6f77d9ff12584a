// 2-d convolution on the GPU through cuDNN (contract: kernels/conv.h).
#include <algorithm>
#include <array>
#include <climits>
#include <string>

#include "kernels/contiguous.h"
#include "kernels/conv.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/handles.cuh"
#include "remat/core/math_mode.h"

namespace remat::kernels::cuda {
namespace {

// out[n, o, :, :] += bias[o] over a contiguous [N, O, oH, oW] output.
template <typename D>
__global__ void add_bias_kernel(D* out, const D* bias, int64_t n, int64_t channels, int64_t area) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    out[i] = from_acc<D>(to_acc(out[i]) + to_acc(bias[(i / area) % channels]));
  }
}

// A cuDNN descriptor owned by one launcher, destroyed however the launcher
// leaves (a throwing check included).
template <typename Desc, cudnnStatus_t (*Create)(Desc*), cudnnStatus_t (*Destroy)(Desc)>
class Descriptor {
 public:
  Descriptor() { REMAT_CUDNN_CHECK(Create(&desc_)); }
  // Destroying a valid descriptor cannot fail in a way the caller could handle.
  ~Descriptor() { static_cast<void>(Destroy(desc_)); }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  Desc get() const { return desc_; }

 private:
  Desc desc_ = nullptr;
};

using TensorDesc = Descriptor<cudnnTensorDescriptor_t, &cudnnCreateTensorDescriptor,
                              &cudnnDestroyTensorDescriptor>;
using FilterDesc = Descriptor<cudnnFilterDescriptor_t, &cudnnCreateFilterDescriptor,
                              &cudnnDestroyFilterDescriptor>;
using ConvDesc = Descriptor<cudnnConvolutionDescriptor_t, &cudnnCreateConvolutionDescriptor,
                            &cudnnDestroyConvolutionDescriptor>;

constexpr float kOneF = 1, kZeroF = 0;
constexpr double kOneD = 1, kZeroD = 0;

// Everything one cuDNN convolution call needs, for an input [N, C, H, W], a
// weight [O, C/groups, kH, kW] and an output [N, O, oH, oW] of one dtype:
// the handle of `on`'s device (bound to its current stream) and descriptors.
class Convolution {
 public:
  Convolution(const char* op, const Tensor& on, const Shape& input, const Shape& weight,
              const Shape& output, const Conv2dParams& p, DType dtype)
      : op_(op),
        input_(input),
        weight_(weight),
        output_(output),
        dtype_(dtype),
        device_(on.device()),
        handle_(cudnn_handle(on)),
        // PyTorch's rule: float32 uses TF32 tensor cores only when allowed,
        // and cuDNN's default math allows them, so the opt-out is FMA math.
        fma_only_(dtype == kFloat32 && !cudnn_allow_tf32()) {
    const cudnnDataType_t type = data_type();
    set_tensor(x_, input_, type);
    set_tensor(y_, output_, type);
    REMAT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_.get(), type, CUDNN_TENSOR_NCHW,
                                                 to_int(weight_[0]), to_int(weight_[1]),
                                                 to_int(weight_[2]), to_int(weight_[3])));
    // 16-bit data accumulates in float, float64 in double.
    const cudnnDataType_t compute = dtype == kFloat64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    REMAT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        conv_.get(), to_int(p.pad_h), to_int(p.pad_w), to_int(p.stride_h), to_int(p.stride_w),
        to_int(p.dilation_h), to_int(p.dilation_w), CUDNN_CROSS_CORRELATION, compute));
    REMAT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_.get(), to_int(p.groups)));
    REMAT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_.get(), math_type()));
  }

  cudnnHandle_t handle() const { return handle_; }
  cudnnTensorDescriptor_t x() const { return x_.get(); }
  cudnnTensorDescriptor_t y() const { return y_.get(); }
  cudnnFilterDescriptor_t w() const { return w_.get(); }
  cudnnConvolutionDescriptor_t conv() const { return conv_.get(); }
  // alpha = 1 and beta = 0 in the scaling type cuDNN reads: double for float64.
  const void* one() const { return dtype_ == kFloat64 ? static_cast<const void*>(&kOneD) : &kOneF; }
  const void* zero() const {
    return dtype_ == kFloat64 ? static_cast<const void*>(&kZeroD) : &kZeroF;
  }
  // Whether an algorithm ranked under `math` keeps to the requested precision.
  bool allows(cudnnMathType_t math) const { return !fma_only_ || math == CUDNN_FMA_MATH; }

  std::string describe() const {
    return fmt::format("input {}, weight {}, output {}, {} on {}", shape_str(input_),
                       shape_str(weight_), shape_str(output_), dtype_, device_);
  }
  const char* op() const { return op_; }

 private:
  // cuDNN's legacy descriptors take int sizes and index tensors with ints.
  int to_int(int64_t v) const {
    REMAT_CHECK(v <= INT_MAX, "{}: size {} exceeds cuDNN's int range ({})", op_, v, describe());
    return static_cast<int>(v);
  }

  void set_tensor(const TensorDesc& desc, const Shape& s, cudnnDataType_t type) const {
    REMAT_CHECK(numel_of(s) <= INT_MAX,
                "{}: cuDNN convolutions take tensors of at most 2^31-1 elements ({})", op_,
                describe());
    REMAT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(desc.get(), CUDNN_TENSOR_NCHW, type, to_int(s[0]),
                                                 to_int(s[1]), to_int(s[2]), to_int(s[3])));
  }

  cudnnDataType_t data_type() const {
    switch (dtype_) {
      case kFloat32: return CUDNN_DATA_FLOAT;
      case kFloat64: return CUDNN_DATA_DOUBLE;
      case kBFloat16: return CUDNN_DATA_BFLOAT16;
      case kFloat16: return CUDNN_DATA_HALF;
      default: throw Error(fmt::format("{}: no CUDA kernel for dtype {}", op_, dtype_));
    }
  }

  cudnnMathType_t math_type() const {
    if (dtype_ == kBFloat16 || dtype_ == kFloat16) return CUDNN_TENSOR_OP_MATH;
    return fma_only_ ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
  }

  const char* op_;
  Shape input_, weight_, output_;
  DType dtype_;
  Device device_;
  cudnnHandle_t handle_;
  bool fma_only_;
  TensorDesc x_, y_;
  FilterDesc w_;
  ConvDesc conv_;
};

// The three directions of a convolution, each as cuDNN's algorithm query,
// workspace query and call. run(a, b, out) takes the operands in cuDNN's order.
struct Forward {  // y = conv(x, w)
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  using Algo = cudnnConvolutionFwdAlgo_t;
  static constexpr int kAlgos = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;

  static cudnnStatus_t rank(const Convolution& c, int* count, Perf* perfs) {
    return cudnnGetConvolutionForwardAlgorithm_v7(c.handle(), c.x(), c.w(), c.conv(), c.y(), kAlgos,
                                                  count, perfs);
  }
  static cudnnStatus_t workspace_size(const Convolution& c, Algo algo, size_t* bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(c.handle(), c.x(), c.w(), c.conv(), c.y(), algo,
                                                   bytes);
  }
  static cudnnStatus_t run(const Convolution& c, Algo algo, void* ws, size_t bytes, const void* x,
                           const void* w, void* y) {
    return cudnnConvolutionForward(c.handle(), c.one(), c.x(), x, c.w(), w, c.conv(), algo, ws,
                                   bytes, c.zero(), c.y(), y);
  }
};

struct BackwardData {  // dx = conv^T(w, dy)
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  static constexpr int kAlgos = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;

  static cudnnStatus_t rank(const Convolution& c, int* count, Perf* perfs) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(c.handle(), c.w(), c.y(), c.conv(), c.x(),
                                                       kAlgos, count, perfs);
  }
  static cudnnStatus_t workspace_size(const Convolution& c, Algo algo, size_t* bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(c.handle(), c.w(), c.y(), c.conv(), c.x(),
                                                        algo, bytes);
  }
  static cudnnStatus_t run(const Convolution& c, Algo algo, void* ws, size_t bytes, const void* w,
                           const void* dy, void* dx) {
    return cudnnConvolutionBackwardData(c.handle(), c.one(), c.w(), w, c.y(), dy, c.conv(), algo,
                                        ws, bytes, c.zero(), c.x(), dx);
  }
};

struct BackwardFilter {  // dw = sum over the batch of dy correlated with x
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  static constexpr int kAlgos = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;

  static cudnnStatus_t rank(const Convolution& c, int* count, Perf* perfs) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(c.handle(), c.x(), c.y(), c.conv(), c.w(),
                                                         kAlgos, count, perfs);
  }
  static cudnnStatus_t workspace_size(const Convolution& c, Algo algo, size_t* bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(c.handle(), c.x(), c.y(), c.conv(), c.w(),
                                                          algo, bytes);
  }
  static cudnnStatus_t run(const Convolution& c, Algo algo, void* ws, size_t bytes, const void* x,
                           const void* dy, void* dw) {
    return cudnnConvolutionBackwardFilter(c.handle(), c.one(), c.x(), x, c.y(), dy, c.conv(), algo,
                                          ws, bytes, c.zero(), c.w(), dw);
  }
};

// Runs one direction with the first algorithm in cuDNN's heuristic ranking
// whose workspace can be allocated (the caching allocator, memory limit
// included, decides). Deterministic algorithms are tried first: a replayed
// checkpoint segment must reproduce its gradients bit for bit.
template <typename Dir>
void convolve(const Convolution& c, const Tensor& on, const void* a, const void* b, void* out) {
  std::array<typename Dir::Perf, Dir::kAlgos> perfs{};
  int count = 0;
  REMAT_CUDNN_CHECK(Dir::rank(c, &count, perfs.data()));
  const auto end = perfs.begin() + std::clamp(count, 0, Dir::kAlgos);
  std::stable_partition(perfs.begin(), end, [](const typename Dir::Perf& perf) {
    return perf.determinism == CUDNN_DETERMINISTIC;
  });
  bool out_of_memory = false;
  for (auto it = perfs.begin(); it != end; ++it) {
    if (it->status != CUDNN_STATUS_SUCCESS || !c.allows(it->mathType)) continue;
    // cuDNN picks tensor-core kernels from the algorithm and math type together.
    REMAT_CUDNN_CHECK(cudnnSetConvolutionMathType(c.conv(), it->mathType));
    size_t bytes = 0;
    REMAT_CUDNN_CHECK(Dir::workspace_size(c, it->algo, &bytes));
    memory::Allocation scratch;
    try {
      scratch = workspace(on, bytes);
    } catch (const OutOfMemoryError&) {
      out_of_memory = true;  // the next algorithm may need less
      continue;
    }
    REMAT_CUDNN_CHECK(Dir::run(c, it->algo, scratch.get(), bytes, a, b, out));
    return;
  }
  if (out_of_memory) {
    throw OutOfMemoryError(fmt::format("{}: no cuDNN algorithm's workspace fits in memory ({})",
                                       c.op(), c.describe()));
  }
  throw Error(fmt::format("{}: cuDNN has no algorithm for {}", c.op(), c.describe()));
}

// All-zero bits are +0 in every floating dtype.
void zero(const Tensor& t) {
  REMAT_CUDA_CHECK(cudaMemsetAsync(t.data_ptr(), 0, static_cast<size_t>(t.nbytes()), stream_of(t)));
}

void add_bias(const Tensor& b, const Tensor& out) {
  const int64_t n = out.numel();
  visit_floating(out.dtype(), "conv2d", [&]<typename D>() {
    add_bias_kernel<D><<<blocks_for(n), kThreads, 0, stream_of(out)>>>(
        static_cast<D*>(out.data_ptr()), static_cast<const D*>(b.data_ptr()), n, out.shape()[1],
        out.shape()[2] * out.shape()[3]);
  });
  REMAT_CUDA_LAUNCH_CHECK("add_bias_kernel");
}

void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p,
            const Tensor& out) {
  check_contiguous("conv2d", {x, w, bias, out});
  if (out.numel() == 0) return;
  DeviceScope scope(out);
  if (x.numel() == 0) {
    zero(out);  // an empty input plane, padded: every window reads padding only
  } else {
    const Convolution c("conv2d", out, x.shape(), w.shape(), out.shape(), p, out.dtype());
    convolve<Forward>(c, out, x.data_ptr(), w.data_ptr(), out.data_ptr());
  }
  if (bias.defined()) add_bias(bias, out);
}

void conv2d_backward_input(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                           const Tensor& grad_input) {
  check_contiguous("conv2d_backward_input", {gy, w, grad_input});
  if (grad_input.numel() == 0) return;
  DeviceScope scope(grad_input);
  const Convolution c("conv2d_backward_input", grad_input, grad_input.shape(), w.shape(),
                      gy.shape(), p, grad_input.dtype());
  convolve<BackwardData>(c, grad_input, w.data_ptr(), gy.data_ptr(), grad_input.data_ptr());
}

void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                            const Tensor& grad_weight) {
  check_contiguous("conv2d_backward_weight", {gy, x, grad_weight});
  if (grad_weight.numel() == 0) return;
  DeviceScope scope(grad_weight);
  if (x.numel() == 0 || gy.numel() == 0) {
    zero(grad_weight);  // an empty batch (or input plane) contributes nothing
    return;
  }
  const Convolution c("conv2d_backward_weight", grad_weight, x.shape(), grad_weight.shape(),
                      gy.shape(), p, grad_weight.dtype());
  convolve<BackwardFilter>(c, grad_weight, x.data_ptr(), gy.data_ptr(), grad_weight.data_ptr());
}

}  // namespace

const ConvKernels conv_kernels{conv2d, conv2d_backward_input, conv2d_backward_weight};

}  // namespace remat::kernels::cuda
