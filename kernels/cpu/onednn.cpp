// oneDNN matrix products (contract: kernels/cpu/onednn.h). oneDNN keeps its
// own cache of primitives keyed by their descriptors, so creating one per
// call costs a lookup after the first call of a shape.
#include "kernels/cpu/onednn.h"

#ifdef REMAT_WITH_ONEDNN

#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

#include "remat/core/error.h"
#include "remat/memory/memory.h"

namespace remat::kernels::cpu {
namespace {

using dnnl::memory;

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

Runtime& runtime() {
  static Runtime r;
  return r;
}

memory::desc matrix(memory::data_type type, int64_t rows, int64_t cols, int64_t row_stride,
                    int64_t col_stride) {
  return {memory::dims{rows, cols}, type, memory::dims{row_stride, col_stride}};
}

}  // namespace

bool onednn_gemm(DType dtype, int64_t m, int64_t n, int64_t k, const OnednnMatrix& a,
                 const OnednnMatrix& b, const void* bias, void* c) {
  if (dtype != kFloat32 && dtype != kBFloat16) return false;
  const auto type = dtype == kFloat32 ? memory::data_type::f32 : memory::data_type::bf16;
  try {
    Runtime& rt = runtime();
    const memory::desc a_desc = matrix(type, m, k, a.row_stride, a.col_stride);
    const memory::desc b_desc = matrix(type, k, n, b.row_stride, b.col_stride);
    const memory::desc c_desc = matrix(type, m, n, n, 1);
    const memory::desc bias_desc = bias ? matrix(type, 1, n, n, 1) : memory::desc();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_desc, b_desc, bias_desc, c_desc),
                                          attr, rt.engine, /*allow_empty=*/true);
    if (!pd) return false;
    // The scratch (oneDNN's packed tiles) as a block of remat's allocator.
    const memory::desc scratch_desc = pd.scratchpad_desc();
    const remat::memory::Allocation scratch_block =
        remat::memory::allocate(kCPU, static_cast<int64_t>(scratch_desc.get_size()));
    memory a_mem(a_desc, rt.engine, const_cast<void*>(a.data));
    memory b_mem(b_desc, rt.engine, const_cast<void*>(b.data));
    memory c_mem(c_desc, rt.engine, c);
    memory scratch(scratch_desc, rt.engine, scratch_block.get());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, a_mem},
                                         {DNNL_ARG_WEIGHTS, b_mem},
                                         {DNNL_ARG_DST, c_mem},
                                         {DNNL_ARG_SCRATCHPAD, scratch}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(bias_desc, rt.engine, const_cast<void*>(bias)));
    dnnl::matmul(pd).execute(rt.stream, args);
    rt.stream.wait();
    return true;
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("matmul: oneDNN {} [{}, {}] @ [{}, {}]: {} (status {})", dtype, m, k, k,
                            n, e.what(), static_cast<int>(e.status)));
  }
}

}  // namespace remat::kernels::cpu

#else

namespace remat::kernels::cpu {

bool onednn_gemm(DType, int64_t, int64_t, int64_t, const OnednnMatrix&, const OnednnMatrix&,
                 const void*, void*) {
  return false;
}

}  // namespace remat::kernels::cpu

#endif
