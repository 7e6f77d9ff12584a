// REMAT_CPU_CLONES marks a loop kernel to be compiled three times, for
// AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and baseline x86-64, the loader
// picking the clone the CPU runs (an ifunc). The library builds for baseline
// x86-64, so without it a loop runs 4 float lanes wide (SSE2) on every CPU.
// GCC contracts a * b + c into an FMA in the wider clones, so a clone's last
// bit may differ from the baseline's; each machine runs one clone throughout.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define REMAT_CPU_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define REMAT_CPU_CLONES
#endif
