"""PyTorch's numbers for the ops of bench_cuda_ops, on the same GPU, written
as the same JSON (framework "pytorch"); benchmarks/pytorch/compare_cuda_ops.py
prints the ratios. Run on the GPU machine:

    python3 benchmarks/pytorch/bench_cuda_ops.py --json bench_cuda_ops_torch.json
"""
import argparse
import json
import time

import torch


def median_seconds(call, iters, repeats):
    call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            call()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / iters)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gemm-n", type=int, default=8192)
    p.add_argument("--rows", type=int, default=65536)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--json", default="bench_cuda_ops_torch.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda_ops.py: no CUDA device; nothing measured")
        return
    torch.manual_seed(0)
    dev = torch.device("cuda", 0)
    results = []
    with torch.no_grad():
        n = args.gemm_n
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        s = median_seconds(lambda: torch.matmul(a, b), args.iters, args.repeats)
        results.append(("gemm_bf16", s, 2.0 * n**3, "TFLOP/s"))
        src = torch.randn(256 << 20, device=dev)
        dst = torch.empty_like(src)
        nbytes = src.numel() * 4
        s = median_seconds(lambda: dst.copy_(src), args.iters, args.repeats)
        results.append(("copy", s, 2.0 * nbytes, "GB/s"))
        s = median_seconds(lambda: src + dst, args.iters, args.repeats)
        results.append(("add", s, 3.0 * nbytes, "GB/s"))
        x = torch.randn(args.rows, args.width, device=dev)
        w = torch.ones(args.width, device=dev)
        bias = torch.zeros(args.width, device=dev)
        xbytes = 2.0 * x.numel() * 4
        s = median_seconds(lambda: torch.nn.functional.layer_norm(x, (args.width,), w, bias),
                           args.iters, args.repeats)
        results.append(("layer_norm", s, xbytes, "GB/s"))
        s = median_seconds(lambda: torch.softmax(x, -1), args.iters, args.repeats)
        results.append(("softmax", s, xbytes, "GB/s"))
    # Causal attention forward and backward, as bench_cuda_ops times it.
    shape = (4, 16, 4096, 64)
    q, k, v = (torch.randn(shape, device=dev, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))

    def attention_step():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        for t in (q, k, v):
            t.grad = None
    s = median_seconds(attention_step, args.iters, args.repeats)
    results.append(("attention", s, 6.0 * 2.0 * 4 * 16 * 4096 ** 2 * 64 / 2.0, "TFLOP/s"))
    out = {"framework": "pytorch", "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0), "results": []}
    for name, s, work, unit in results:
        rate = work / s / (1e12 if unit == "TFLOP/s" else 1e9)
        print(f"{name:<12} {s * 1e3:10.3f} ms {rate:8.1f} {unit}")
        out["results"].append({"name": name, "ms": s * 1e3, "rate": rate, "unit": unit})
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
