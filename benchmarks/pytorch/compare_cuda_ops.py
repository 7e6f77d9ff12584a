"""Ratios remat / PyTorch per op from the JSON files of bench_cuda_ops and
benchmarks/pytorch/bench_cuda_ops.py (rates: higher is better, so a ratio
above 1 means remat is faster):

    python3 benchmarks/pytorch/compare_cuda_ops.py bench_cuda_ops.json bench_cuda_ops_torch.json
"""
import json
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ours, theirs = (json.load(open(path)) for path in sys.argv[1:])
    rates = {r["name"]: r for r in theirs["results"]}
    print(f"{ours['device']}: remat vs PyTorch {theirs.get('torch', '')}")
    print(f"{'op':<12} {'remat':>10} {'pytorch':>10} {'ratio':>7}")
    for r in ours["results"]:
        t = rates.get(r["name"])
        if t is None:
            continue
        print(f"{r['name']:<12} {r['rate']:10.1f} {t['rate']:10.1f} {r['rate'] / t['rate']:7.2f}  {r['unit']}")


if __name__ == "__main__":
    main()
