// Block quantization's argument checks and device dispatch.
#include "ops/quantize.h"

#include "kernels/quantize.h"
#include "ops/dispatch.h"

namespace remat::ops {
namespace {

const kernels::QuantizeKernels& quantize_kernels(const char* op, Device d) {
  return kernels_for(op, d, kernels::cpu::quantize_kernels, REMAT_CUDA_KERNELS(quantize_kernels));
}

std::string meta(const Tensor& t) { return t.defined() ? TensorMeta::of(t).str() : "(undefined)"; }

bool is_format(DType t) { return t == kInt8 || t == kFloat8E4M3 || t == kBFloat16; }

// The operands' shared checks; `values` is the float side (src or dst).
void check_operands(const char* op, const Tensor& values, const Tensor& codes,
                    const Tensor& scales) {
  const std::string all =
      fmt::format("values {}, codes {}, scales {}", meta(values), meta(codes), meta(scales));
  REMAT_CHECK(values.defined() && codes.defined(), "{}: needs defined values and codes ({})", op,
              all);
  REMAT_CHECK(is_floating(values.dtype()),
              "{}: values must be float32, float64, bfloat16 or float16 ({})", op, all);
  REMAT_CHECK(is_format(codes.dtype()), "{}: codes must be int8, float8_e4m3 or bfloat16 ({})", op,
              all);
  REMAT_CHECK(codes.device() == values.device(), "{}: operands on different devices ({})", op, all);
  REMAT_CHECK_SHAPE(values.dim() == 1 && codes.shape() == values.shape(),
                    "{}: values and codes must be 1-d of one size ({})", op, all);
  REMAT_CHECK(values.is_contiguous() && codes.is_contiguous(),
              "{}: values and codes must be contiguous ({})", op, all);
  if (codes.dtype() == kBFloat16) return;  // unscaled: scales unused
  REMAT_CHECK(scales.defined() && scales.dtype() == kFloat32,
              "{}: {} codes need float32 scales ({})", op, codes.dtype(), all);
  REMAT_CHECK(scales.device() == values.device(), "{}: operands on different devices ({})", op,
              all);
  REMAT_CHECK_SHAPE(scales.dim() == 1 && scales.numel() == quant_scale_count(values.numel()),
                    "{}: {} elements take {} scales, 1-d ({})", op, values.numel(),
                    quant_scale_count(values.numel()), all);
  REMAT_CHECK(scales.is_contiguous(), "{}: scales must be contiguous ({})", op, all);
}

}  // namespace

int64_t quant_scale_count(int64_t n) {
  REMAT_CHECK(n >= 0, "quant_scale_count: element count must be >= 0, got {}", n);
  return kernels::quant_block_count(n);
}

void quantize_blocks(const Tensor& src, const Tensor& codes, const Tensor& scales,
                     kernels::QuantZeros zeros) {
  check_operands("quantize_blocks", src, codes, scales);
  quantize_kernels("quantize_blocks", src.device()).quantize_blocks(src, codes, scales, zeros);
  codes.bump_version();
  if (codes.dtype() != kBFloat16) scales.bump_version();
}

void dequantize_blocks(const Tensor& codes, const Tensor& scales, const Tensor& dst) {
  check_operands("dequantize_blocks", dst, codes, scales);
  quantize_kernels("dequantize_blocks", dst.device()).dequantize_blocks(codes, scales, dst);
  dst.bump_version();
}

}  // namespace remat::ops
