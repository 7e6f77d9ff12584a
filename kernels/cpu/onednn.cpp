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

memory::desc bf16_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  return {memory::dims{rows, cols}, memory::data_type::bf16, memory::dims{row_stride, col_stride}};
}

}  // namespace

bool onednn_bf16_gemm(int64_t m, int64_t n, int64_t k, const OnednnMatrix& a, const OnednnMatrix& b,
                      const void* bias, int64_t bias_stride, void* c) {
  try {
    Runtime& rt = runtime();
    const memory::desc a_desc = bf16_matrix(m, k, a.row_stride, a.col_stride);
    const memory::desc b_desc = bf16_matrix(k, n, b.row_stride, b.col_stride);
    const memory::desc c_desc = bf16_matrix(m, n, n, 1);
    const memory::desc bias_desc =
        bias ? bf16_matrix(1, n, n * bias_stride, bias_stride) : memory::desc();
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
    throw Error(fmt::format("matmul: oneDNN bfloat16 [{}, {}] @ [{}, {}]: {} (status {})", m, k, k,
                            n, e.what(), static_cast<int>(e.status)));
  }
}

}  // namespace remat::kernels::cpu

#else

namespace remat::kernels::cpu {

bool onednn_bf16_gemm(int64_t, int64_t, int64_t, const OnednnMatrix&, const OnednnMatrix&,
                      const void*, int64_t, void*) {
  return false;
}

}  // namespace remat::kernels::cpu

#endif
