// Process-wide switches for reduced-precision math on the GPU, the same two
// PyTorch has (torch.backends.cuda.matmul.allow_tf32 and
// torch.backends.cudnn.allow_tf32), with the same defaults.
//
// TF32 runs float32 products on tensor cores with 10 mantissa bits per input
// (accumulating in float32): several times faster, with a relative error near
// 1e-3 instead of 1e-6. Only float32 math is affected; float64, bfloat16 and
// float16 are not. The switches are read when a kernel is launched, so a
// change applies to the next op; they are atomic and may be flipped from any
// thread. CPU kernels ignore them.
#pragma once

namespace remat {

// float32 matmul (cuBLAS) may use TF32. Off by default, like PyTorch since
// 1.12: matmul results then match float32 math up to rounding.
void set_matmul_allow_tf32(bool allow);
bool matmul_allow_tf32();

// float32 cuDNN convolutions may use TF32. On by default, like PyTorch.
void set_cudnn_allow_tf32(bool allow);
bool cudnn_allow_tf32();

}  // namespace remat
