// Elementwise maps on the GPU (contract: kernels/elementwise.h; formulas:
// kernels/scalar_math.h, in the accumulation type): a flat kernel moving 16
// bytes per load where every operand is contiguous, an indexed one otherwise.
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/contiguous.h"
#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"
#include "kernels/scalar_math.h"

namespace remat::kernels::cuda {
namespace {

constexpr int kUnaryOps = static_cast<int>(UnaryOp::Abs) + 1;
constexpr int kBinaryOps = static_cast<int>(BinaryOp::SigmoidBackward) + 1;

// ---- functors: one output element from the input elements ----

template <UnaryOp kOp, typename D>
struct UnaryFn {
  __device__ D operator()(D x) const { return from_acc<D>(apply_unary<kOp>(to_acc(x))); }
};

template <BinaryOp kOp, typename D>
struct BinaryFn {
  __device__ D operator()(D a, D b) const {
    return from_acc<D>(apply_binary<kOp>(to_acc(a), to_acc(b)));
  }
};

// The scalar is rounded to the compute type first, as the CPU rounds it to T.
template <BinaryOp kOp, typename D>
struct ScalarFn {
  acc_t<D> scalar;
  __device__ D operator()(D a) const { return from_acc<D>(apply_binary<kOp>(to_acc(a), scalar)); }
};

template <typename Dst, typename Src>
struct CastFn {
  __device__ Dst operator()(Src v) const { return convert<Dst>(v); }
};

template <typename D>
struct ConstFn {
  D value;
  __device__ D operator()() const { return value; }
};

// ---- kernels ----

template <typename T>
__global__ void fill_kernel(T* out, int64_t n, T value) {
  REMAT_GRID_STRIDE_LOOP(i, n) { out[i] = value; }
}

// kVec consecutive elements, aligned so that one load or store moves them all.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <int kVec, typename Out, typename Fn, typename... In>
__device__ void apply_pack(const Fn& fn, Pack<Out, kVec>& out, const Pack<In, kVec>... in) {
#pragma unroll
  for (int k = 0; k < kVec; ++k) out.v[k] = fn(in.v[k]...);
}

// Operands all contiguous with out's shape: no index arithmetic; kVec
// elements per load (16 bytes of the widest operand), the tail one each.
template <int kVec, typename Out, typename Fn, typename... In>
__global__ void map_contiguous_kernel(int64_t n, Fn fn, Out* out, const In*... in) {
  const int64_t packs = n / kVec;
  REMAT_GRID_STRIDE_LOOP(p, packs) {
    Pack<Out, kVec> result;
    apply_pack<kVec>(fn, result, reinterpret_cast<const Pack<In, kVec>*>(in)[p]...);
    reinterpret_cast<Pack<Out, kVec>*>(out)[p] = result;
  }
  const int64_t i = packs * kVec + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = fn(in[i]...);
}

template <typename Out, typename Fn, typename... In, size_t... I>
__device__ void apply_at(const int64_t* offsets, std::index_sequence<I...>, const Fn& fn, Out* out,
                         const In*... in) {
  out[offsets[0]] = fn(in[offsets[I + 1]]...);
}

// Any layout: broadcast inputs (stride 0) and strided outputs.
template <typename Out, typename Fn, typename... In>
__global__ void map_strided_kernel(int64_t n, StridedIndexer<1 + sizeof...(In)> ix, Fn fn, Out* out,
                                   const In*... in) {
  REMAT_GRID_STRIDE_LOOP(i, n) {
    int64_t offsets[1 + sizeof...(In)];
    ix.offsets(i, offsets);
    apply_at(offsets, std::index_sequence_for<In...>{}, fn, out, in...);
  }
}

// ---- launch ----

template <typename>
using TensorOf = const Tensor&;

template <typename T>
bool aligned(const void* p, int vec) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * static_cast<size_t>(vec)) == 0;
}

// out = fn(in...) elementwise, each input broadcast to out's shape; Out and
// In are the device scalar types of the tensors.
template <typename Out, typename... In, typename Fn>
void map(Fn fn, const Tensor& out, TensorOf<In>... in) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceScope scope(out);
  const cudaStream_t stream = stream_of(out);
  Out* o = static_cast<Out*>(out.data_ptr());
  constexpr int kVec = static_cast<int>(16 / std::max({sizeof(Out), sizeof(In)...}));
  const bool flat =
      out.is_contiguous() && ((in.is_contiguous() && in.shape() == out.shape()) && ...);
  if (flat && aligned<Out>(o, kVec) && (aligned<In>(in.data_ptr(), kVec) && ...)) {
    map_contiguous_kernel<kVec><<<blocks_for(n / kVec), kThreads, 0, stream>>>(
        n, fn, o, static_cast<const In*>(in.data_ptr())...);
    REMAT_CUDA_LAUNCH_CHECK("map_contiguous_kernel");
  } else {
    constexpr int N = 1 + sizeof...(In);
    const StridedIndexer<N> ix =
        make_indexer<N>(out.shape(), {out.strides(), broadcast_strides(in, out.shape())...});
    map_strided_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        n, ix, fn, o, static_cast<const In*>(in.data_ptr())...);
    REMAT_CUDA_LAUNCH_CHECK("map_strided_kernel");
  }
}

// Calls fn(std::integral_constant<Enum, op>{}): one kernel per op, so each
// loop compiles one operation.
template <typename Enum, int kCount, typename Fn>
void specialise(Enum op, Fn&& fn) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((op == static_cast<Enum>(I) ? (fn(std::integral_constant<Enum, static_cast<Enum>(I)>{}), 0)
                                 : 0),
     ...);
  }
  (std::make_integer_sequence<int, kCount>{});
}

void check_operands(const char* what, const Tensor& a, const Tensor& out) {
  REMAT_CHECK(a.dtype() == out.dtype() && a.device() == out.device(),
              "{} on CUDA: operand {} and output {} differ in dtype or device", what,
              TensorMeta::of(a).str(), TensorMeta::of(out).str());
}

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  check_operands("unary", x, out);
  visit_arith(x.dtype(), "unary", [&]<typename D>() {
    specialise<UnaryOp, kUnaryOps>(op, [&](auto k) {
      constexpr UnaryOp kOp = decltype(k)::value;
      if constexpr (std::is_integral_v<D> && !integer_op(kOp)) {
        throw Error(fmt::format("unary op {} on {} tensor", static_cast<int>(kOp), x.dtype()));
      } else {
        map<D, D>(UnaryFn<kOp, D>{}, out, x);
      }
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  check_operands("binary", a, out);
  check_operands("binary", b, out);
  visit_arith(a.dtype(), "binary", [&]<typename D>() {
    specialise<BinaryOp, kBinaryOps>(op, [&](auto k) {
      constexpr BinaryOp kOp = decltype(k)::value;
      if constexpr (std::is_integral_v<D> && !integer_op(kOp)) {
        throw Error(fmt::format("elementwise op {} on integer tensors", static_cast<int>(kOp)));
      } else {
        map<D, D, D>(BinaryFn<kOp, D>{}, out, a, b);
      }
    });
  });
}

void binary_scalar(BinaryOp op, const Tensor& a, double scalar, const Tensor& out) {
  check_operands("binary_scalar", a, out);
  visit_arith(a.dtype(), "binary_scalar", [&]<typename D>() {
    specialise<BinaryOp, kBinaryOps>(op, [&](auto k) {
      constexpr BinaryOp kOp = decltype(k)::value;
      if constexpr (std::is_integral_v<D> && !integer_op(kOp)) {
        throw Error(fmt::format("elementwise op {} on integer tensors", static_cast<int>(kOp)));
      } else {
        // The CPU rounds the scalar to float32 for float32 and 16-bit tensors.
        using A = acc_t<D>;
        map<D, D>(ScalarFn<kOp, D>{static_cast<A>(scalar)}, out, a);
      }
    });
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  REMAT_CHECK(src.device() == dst.device(), "copy on CUDA: {} and {} are on different devices",
              TensorMeta::of(src).str(), TensorMeta::of(dst).str());
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.shape() == dst.shape() && src.is_contiguous() &&
      dst.is_contiguous()) {
    DeviceScope scope(dst);
    REMAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(),
                                     static_cast<size_t>(dst.nbytes()), cudaMemcpyDeviceToDevice,
                                     stream_of(dst)));
    return;
  }
  visit_dtype(dst.dtype(), [&]<typename DstT>() {
    visit_dtype(src.dtype(),
                [&]<typename SrcT>() { map<DstT, SrcT>(CastFn<DstT, SrcT>{}, dst, src); });
  });
}

void fill(const Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceScope scope(out);
  visit_dtype(out.dtype(), [&]<typename T>() {
    const T v = fill_value<T>(value);
    if (out.is_contiguous()) {
      fill_kernel<T>
          <<<blocks_for(n), kThreads, 0, stream_of(out)>>>(static_cast<T*>(out.data_ptr()), n, v);
      REMAT_CUDA_LAUNCH_CHECK("fill_kernel");
    } else {
      map<T>(ConstFn<T>{v}, out);
    }
  });
}

void copy_between_devices(const Tensor& src, const Tensor& dst) {
  check_contiguous("copy_between_devices", {src, dst});
  REMAT_CHECK(src.dtype() == dst.dtype() && src.shape() == dst.shape(),
              "copy from {} to {}: needs tensors of one shape and dtype ({} and {})", src.device(),
              dst.device(), TensorMeta::of(src).str(), TensorMeta::of(dst).str());
  if (src.nbytes() == 0) return;
  // Queued on the device's current stream, behind the kernels that produce
  // src, then waited for: the host side may be pageable memory that is freed
  // or read as soon as this returns. cudaMemcpyDefault: unified addressing
  // tells the direction from the pointers.
  const Tensor& on_device = src.device().is_cuda() ? src : dst;
  DeviceScope scope(on_device);
  const cudaStream_t stream = stream_of(on_device);
  REMAT_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(),
                                   static_cast<size_t>(src.nbytes()), cudaMemcpyDefault, stream));
  REMAT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace

const ElementwiseKernels elementwise_kernels{unary, binary, binary_scalar,
                                             copy,  fill,   copy_between_devices};

}  // namespace remat::kernels::cuda
