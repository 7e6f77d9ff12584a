"""PyTorch's side of bench_ops' BM_AttentionCausalStep: causal self-attention
of the long-seq preset's shape (1 x 4 heads x 4096 tokens x 128, bfloat16),
forward and backward through F.scaled_dot_product_attention (PyTorch >= 2.0;
on the CPU its flash-attention kernel) and through the explicit math
(matmul, masked softmax, matmul). Prints the median step time and GFLOPS
with bench_ops' convention: 2 forward and 4 backward [T, T, E] products,
2 flops a multiply-add, halved by causality.

    python benchmarks/pytorch/bench_attention.py --threads 2 [--json out.json]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def math_attention(q, k, v):
    t = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    hidden = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return torch.matmul(torch.softmax(scores.masked_fill(hidden, float("-inf")), -1), v)


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    shape = (1, args.heads, args.tokens, args.head_dim)
    q, k, v = (torch.randn(shape, device=args.device).to(dtype).requires_grad_() for _ in range(3))
    flops = 6 * 2 * args.heads * args.tokens ** 2 * args.head_dim / 2
    impls = {"math": math_attention}
    if hasattr(F, "scaled_dot_product_attention"):
        impls["sdpa"] = sdpa
    results = {"torch": torch.__version__, "shape": list(shape), "dtype": args.dtype,
               "threads": torch.get_num_threads(), "runs": {}}
    for name, fn in impls.items():
        times = []
        for _ in range(args.repeats + 1):  # the first is warm-up
            for t in (q, k, v):
                t.grad = None
            if args.device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(q, k, v).sum().backward()
            if args.device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        median = statistics.median(times[1:])
        results["runs"][name] = {"median_ms": median * 1e3, "gflops": flops / median * 1e-9}
        print(f"{name:5s} {median * 1e3:9.1f} ms  {flops / median * 1e-9:7.1f} GFLOPS")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
