"""PyTorch's side of bench_ops' BM_Conv2dStep, BM_GemmBf16 and BM_GemmFloat32:
conv2d forward and backward (input and weight gradients, no bias) on the
resnet preset's float32 layers at batch 32, bfloat16 matmul on the long-seq
preset's Linear shapes and float32 matmul on the wide and deep-mlp presets'
ones, in the forms a Linear runs (x @ W^T, dy @ W, dy^T @ x). Prints the
median time of each with bench_ops' GFLOPS convention.

    python benchmarks/pytorch/bench_conv_gemm.py --threads 2
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# C -> O channels, k x k kernel, stride, size x size input, padding k // 2.
CONVS = [(3, 64, 3, 1, 32), (64, 64, 3, 1, 32), (64, 128, 3, 2, 32), (64, 128, 1, 2, 32),
         (128, 128, 3, 1, 16)]
# m, k, n, a transposed, b transposed (as bench_ops' BM_GemmBf16 arguments).
GEMMS = [(4096, 512, 512, 0, 1), (4096, 512, 512, 0, 0), (512, 4096, 512, 1, 0),
         (4096, 512, 2048, 0, 1), (4096, 2048, 512, 0, 0), (2048, 4096, 512, 1, 0),
         (4096, 2048, 512, 0, 1), (4096, 512, 2048, 0, 0), (512, 4096, 2048, 1, 0)]
# The same for float32 (BM_GemmFloat32): the wide preset's MLP, the deep MLP.
GEMMS_F32 = [(2048, 1024, 4096, 0, 1), (2048, 4096, 1024, 0, 0), (4096, 2048, 1024, 1, 0),
             (2048, 4096, 1024, 0, 1), (2048, 1024, 4096, 0, 0), (1024, 2048, 4096, 1, 0),
             (64, 1024, 1024, 0, 1), (64, 1024, 1024, 0, 0), (1024, 64, 1024, 1, 0)]


def median_ms(fn, seconds):
    fn()  # warm-up: oneDNN creates its primitives
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--seconds", type=float, default=1.0, help="time per benchmark")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    batch = 32
    for c, o, k, stride, size in CONVS:
        x = torch.randn(batch, c, size, size, requires_grad=True)
        w = torch.randn(o, c, k, k, requires_grad=True)
        out = (size + 2 * (k // 2) - k) // stride + 1

        def step():
            F.conv2d(x, w, None, stride, k // 2).sum().backward()
            x.grad = None
            w.grad = None

        ms = median_ms(step, args.seconds)
        flops = 3 * 2 * batch * o * out * out * c * k * k
        print(f"conv {c}->{o} {k}x{k} s{stride} {size}x{size}: {ms:8.2f} ms "
              f"{flops / ms / 1e6:8.1f} GFLOPS")
    with torch.no_grad():
        for dtype, shapes in ((torch.bfloat16, GEMMS), (torch.float32, GEMMS_F32)):
            name = str(dtype).removeprefix("torch.")
            for m, k, n, ta, tb in shapes:
                a = (torch.randn(k, m).t() if ta else torch.randn(m, k)).to(dtype)
                b = (torch.randn(n, k).t() if tb else torch.randn(k, n)).to(dtype)
                ms = median_ms(lambda: torch.matmul(a, b), args.seconds)
                print(f"gemm {name} m={m} k={k} n={n} ta={ta} tb={tb}: {ms:8.2f} ms "
                      f"{2 * m * n * k / ms / 1e6:8.1f} GFLOPS")


if __name__ == "__main__":
    main()
