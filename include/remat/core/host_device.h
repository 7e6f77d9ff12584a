// Marks the scalar functions that CPU and CUDA code share (the 16-bit float
// conversions in remat/core/dtype.h, kernels/philox.h, kernels/scalar_math.h):
// compiled for both sides under nvcc, plain C++ otherwise.
#pragma once

#if defined(__CUDACC__)
#define REMAT_HOST_DEVICE __host__ __device__
#else
#define REMAT_HOST_DEVICE
#endif

// A scalar formula the CPU's `omp simd` loops call per element: always
// inlined there, since a call per element would stop them vectorising.
#if defined(__CUDACC__)
#define REMAT_SCALAR REMAT_HOST_DEVICE inline
#else
#define REMAT_SCALAR [[gnu::always_inline]] inline
#endif
