"""remat against PyTorch per configuration and checkpoint plan, from the JSON
of bench_checkpoint and benchmarks/pytorch/bench_checkpoint.py (ratios are
remat / PyTorch: below 1 means remat is faster or needs less memory):

    python3 benchmarks/pytorch/compare_checkpoint.py bench_checkpoint.json bench_checkpoint_pytorch.json
    python3 benchmarks/pytorch/compare_checkpoint.py --markdown remat.json pytorch.json  # for docs

first_loss agrees only when the PyTorch side ran with --state-dir (remat's
weights and input); a '*' marks a disagreement beyond the dtype's tolerance.
"""
import argparse
import json
import sys

LOSS_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}  # relative
HEADER = ["plan", "remat ms", "pytorch ms", "time", "remat act MiB", "pytorch act MiB",
          "memory", "peak alloc", "remat loss", "pytorch loss"]


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def loss_disagrees(a, b, tolerance):
    if a is None or b is None:
        return False
    return abs(a - b) > tolerance * max(abs(a), abs(b))


def cells(plan, ours, theirs, tolerance):
    """One table row; ours/theirs: the runs (None when that tool has none)."""
    def side(run, field, spec, scale=1.0):
        if run is None:
            return "-"
        if run.get("skipped"):
            return "skipped"
        return fmt(None if run[field] is None else run[field] / scale, spec)

    both = bool(ours and theirs and not ours.get("skipped") and not theirs.get("skipped"))
    time = memory = peak = None
    if both:
        time = ratio(ours["median_step_ms"], theirs["median_step_ms"])
        memory = ratio(ours["activation_bytes"], theirs["activation_bytes"])
        peak = ratio(ours["peak_allocated_bytes"], theirs["peak_allocated_bytes"])
    mark = "*" if both and loss_disagrees(ours["first_loss"], theirs["first_loss"],
                                          tolerance) else ""
    row = [plan, side(ours, "median_step_ms", ".1f"), side(theirs, "median_step_ms", ".1f"),
           fmt(time, ".2f") + ("x" if time is not None else ""),
           side(ours, "activation_bytes", ".1f", 2**20),
           side(theirs, "activation_bytes", ".1f", 2**20),
           fmt(memory, ".2f") + ("x" if memory is not None else ""),
           fmt(peak, ".2f") + ("x" if peak is not None else ""),
           side(ours, "first_loss", ".6g") + mark, side(theirs, "first_loss", ".6g") + mark]
    meets = time is not None and memory is not None and time <= 1.0 and memory <= 1.0
    return row, both, meets


def print_table(rows, markdown):
    if markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [HEADER] + rows) for i in range(len(HEADER))]
    for row in [HEADER] + rows:
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("remat_json")
    p.add_argument("pytorch_json")
    p.add_argument("--markdown", action="store_true", help="GitHub tables (for docs)")
    args = p.parse_args()
    with open(args.remat_json) as f:
        ours = json.load(f)
    with open(args.pytorch_json) as f:
        theirs = json.load(f)
    for field in ("device", "dtype", "threads"):
        if ours.get(field) != theirs.get(field):
            print(f"warning: {field} differs: remat {ours.get(field)}, "
                  f"pytorch {theirs.get(field)}", file=sys.stderr)
    tolerance = LOSS_TOLERANCE.get(ours.get("dtype"), LOSS_TOLERANCE["bfloat16"])

    # Keys and plans in remat's order, then what only PyTorch ran.
    order, runs = [], {}
    for tool, data in (("remat", ours), ("pytorch", theirs)):
        for run in data["runs"]:
            if (run["key"], run["plan"]) not in runs:
                order.append((run["key"], run["plan"]))
                runs[(run["key"], run["plan"])] = {}
            runs[(run["key"], run["plan"])][tool] = run
    keys = list(dict.fromkeys(key for key, _ in order))

    print(f"{ours.get('device_name')} ({ours.get('device')}, {ours.get('dtype')}): "
          f"remat {ours.get('tool_version')} vs PyTorch {theirs.get('tool_version')}"
          + (f", {theirs['optimizer']}" if theirs.get("optimizer") else ""))
    any_mismatch = False
    for key in keys:
        rows, joined, meeting = [], 0, 0
        for k, plan in order:
            if k != key:
                continue
            pair = runs[(k, plan)]
            row, both, meets = cells(plan, pair.get("remat"), pair.get("pytorch"), tolerance)
            rows.append(row)
            joined += both
            meeting += meets
            any_mismatch |= row[-1].endswith("*")
        print()
        print(f"### {key}" if args.markdown else key)
        if args.markdown:
            print()
        print_table(rows, args.markdown)
        if args.markdown:
            print()
        print(f"{meeting} of {joined} plans run by both meet time <= 1.0x and memory <= 1.0x")
    if any_mismatch:
        print(f"\n* first_loss differs by more than {tolerance:g} relative "
              "(expected unless the PyTorch run used --state-dir)")


if __name__ == "__main__":
    main()
