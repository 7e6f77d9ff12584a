"""PyTorch's per-op host overhead on the CPU, for the host cases of bench_ops:
a + b on 8 floats without grad, acc * b recorded by autograd (the chain cut
every 64 ops, as in bench_ops), and one forward and backward step of the tiny
MLP block (layer_norm, two linears around a GELU, the residual add, the sum;
16 dims, batch 4). Medians of --repeats runs, one thread, as bench_ops runs
with OMP_NUM_THREADS=1:

    python3 benchmarks/pytorch/bench_overhead.py --json bench_overhead_torch.json
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def median_seconds_per_call(body, calls, repeats):
    body(calls // 10)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        body(calls)
        times.append((time.perf_counter() - start) / calls)
    times.sort()
    return times[len(times) // 2]


def add_no_grad(calls):
    a, b = torch.ones(8), torch.ones(8)
    for _ in range(calls):
        a + b


def mul_recorded(calls):
    b = torch.ones(8, requires_grad=True)
    acc = torch.ones(8)
    for i in range(calls):
        acc = acc * b
        if i % 64 == 63:
            acc = torch.ones(8)


def mlp_block_step(calls):
    dim, batch = 16, 4

    def param(*shape):
        return torch.ones(*shape, requires_grad=True)

    ln_w, ln_b, w1, b1, w2, b2 = param(dim), param(dim), param(dim, dim), param(dim), \
        param(dim, dim), param(dim)
    x = torch.ones(batch, dim)
    for _ in range(calls):
        h = F.layer_norm(x, (dim,), ln_w, ln_b)
        # remat's matmul(a, w, bias) is a @ w + bias: the same as addmm.
        h = torch.addmm(b2, F.gelu(torch.addmm(b1, h, w1)), w2)
        (x + h).sum().backward()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default="bench_overhead_torch.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {
        "framework": "pytorch",
        "version": torch.__version__,
        "cases": {
            "add_tiny_no_grad_us": median_seconds_per_call(add_no_grad, args.calls, args.repeats),
            "mul_tiny_recorded_us": median_seconds_per_call(mul_recorded, args.calls,
                                                            args.repeats),
            "mlp_block_tiny_step_us": median_seconds_per_call(mlp_block_step, args.calls // 10,
                                                              args.repeats),
        },
    }
    for key in results["cases"]:
        results["cases"][key] *= 1e6
    for key, us in results["cases"].items():
        print(f"{key}: {us:.2f}")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
