"""PNG plots from the outputs of bench_checkpoint and benchmarks/pytorch
(docs/benchmarks.md describes the JSON and the timeline CSV):

    python3 benchmarks/plot_benchmarks.py --remat deep-mlp.json \\
        --pytorch deep-mlp-torch.json --timeline timeline.csv --out docs/img
    python3 benchmarks/plot_benchmarks.py --selftest

Per model key: activation memory against step time, one point per plan, the
budget planner's runs (bench_checkpoint --budgets) joined as a line, its
memory/time frontier, and the eviction mode's runs (--limits) as another (`<preset>-<key slug>-memory-time.png`). For the deep-mlp preset also
activation memory against depth (`deep-mlp-memory-depth.png`) and the step
time overhead at depth 40 (`deep-mlp-time-overhead.png`). Per key of a
timeline CSV: allocated memory through one training step, a panel per plan
(`<key slug>-timeline.png`). From the metrics of an example's --compare
run (`--curves`, e.g. `build/examples/transformer --compare
none,compress-int8 --metrics curves.json`): the training loss of each plan
through the run, as a moving average, and each plan's difference from the
first (`<file stem>-training-curves.png`).
"""
import argparse
import csv
import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

MIB = 2 ** 20
PHASE_COLORS = {"forward": "#cfe2f3", "backward": "#fce5cd", "optimizer": "#d9ead3"}
REPLAY_COLOR = "#e06666"
DEPTH_PLOT_DEPTH = 40  # the deep-mlp depth that runs every plan


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def load_docs(paths):
    """JSON documents with skipped runs dropped."""
    docs = [json.loads(Path(path).read_text()) for path in paths]
    for doc in docs:
        doc["runs"] = [r for r in doc["runs"] if not r.get("skipped")]
    return docs


def runs_by_key(doc):
    """{key: {plan: run}} in file order; a repeated (key, plan) keeps its last run."""
    grouped = defaultdict(dict)
    for run in doc["runs"]:
        grouped[run["key"]][run["plan"]] = run
    return grouped


def matching_pytorch(doc, torch_docs):
    """The PyTorch document of the same preset, device and dtype, if any."""
    same = ("preset", "device", "dtype")
    return next((t for t in torch_docs
                 if all(t.get(f) == doc.get(f) for f in same)), None)


def finish(ax, xlabel, ylabel, title, **legend):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, **legend)
    ax.set_title(title, fontsize=10)


def save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_memory_time(doc, key, plans, torch_plans, out_dir):
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # Lines of runs at fractions of none's activations: the budget planner's
    # frontier and the eviction mode's.
    lines = {}
    for field, style, label in (
            ("budget_fraction", "-D", "remat budget planner (budget: % of none's activations)"),
            ("limit_fraction", "--v", "remat BudgetGuard (limit: % of none's activations)")):
        runs = sorted((r for r in plans.values() if r.get(field) is not None),
                      key=lambda r: r["activation_bytes"])
        if runs:
            lines[field] = (runs, style, label)
    plans = {p: r for p, r in plans.items()
             if r.get("budget_fraction") is None and r.get("limit_fraction") is None}
    for field, (runs, style, _) in lines.items():
        xs = [r["median_step_ms"] for r in runs]
        ys = [r["activation_bytes"] / MIB for r in runs]
        ax.plot(xs, ys, style, color="black", ms=5, lw=1.2, zorder=4)
        for r, x, y in zip(runs, xs, ys):
            ax.annotate(f"{100 * r[field]:.0f}%", (x, y), xytext=(-8, -12),
                        textcoords="offset points", fontsize=8)
    for i, (plan, run) in enumerate(plans.items()):
        color = colors[i % len(colors)]
        x, y = run["median_step_ms"], run["activation_bytes"] / MIB
        ax.scatter(x, y, s=60, color=color, zorder=3)
        ax.annotate(plan, (x, y), xytext=(6, 4), textcoords="offset points",
                    fontsize=9, color=color)
        other = torch_plans.get(plan)
        if other is not None:
            tx, ty = other["median_step_ms"], other["activation_bytes"] / MIB
            ax.scatter(tx, ty, s=60, marker="s", facecolors="white",
                       edgecolors=color, zorder=3)
            ax.plot([x, tx], [y, ty], color=color, lw=0.7, alpha=0.6)
            ax.annotate(plan, (tx, ty), xytext=(6, -10), textcoords="offset points",
                        fontsize=8, color=color, alpha=0.8)
    xs = [r["median_step_ms"] for r in list(plans.values()) + list(torch_plans.values())
          + [r for runs, _, _ in lines.values() for r in runs]]
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # e.g. a fast GPU tool next to a slow one
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)
    handles = [plt.Line2D([], [], ls="", marker="o", color="grey", label="remat")]
    for runs, style, label in lines.values():
        handles.append(plt.Line2D([], [], ls=style[:-1], marker=style[-1], ms=5, color="black",
                                  label=label))
    if torch_plans:
        handles.append(plt.Line2D([], [], ls="", marker="s", mfc="none", color="grey",
                                  label="PyTorch (line joins the same plan)"))
    finish(ax, "median step time (ms)", "activation memory (MiB)",
           f"{key}\n{doc['device']} ({doc.get('device_name', '')}), {doc['dtype']}",
           handles=handles)
    return save(fig, out_dir, f"{doc['preset']}-{slug(key)}-memory-time.png")


def plot_memory_depth(doc, torch_doc, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sources = [(doc, "remat", "o", "-")]
    if torch_doc is not None:
        sources.append((torch_doc, "PyTorch", "s", ":"))
    plans = [plan for plan in dict.fromkeys(r["plan"] for r in doc["runs"])  # none, block
             if len({r["config"]["depth"] for r in doc["runs"] if r["plan"] == plan}) > 1]
    for i, plan in enumerate(plans):
        color = colors[i % len(colors)]
        for d, tool, marker, style in sources:
            # The preset runs depth 40 twice for none and block: one point per depth.
            by_depth = {r["config"]["depth"]: r for r in d["runs"] if r["plan"] == plan}
            runs = [by_depth[depth] for depth in sorted(by_depth)]
            if not runs:
                continue
            depths = [r["config"]["depth"] for r in runs]
            ax.plot(depths, [r["activation_bytes"] / MIB for r in runs], style,
                    marker=marker, color=color, label=f"{tool} {plan}",
                    mfc=color if tool == "remat" else "none")
            predicted = [(r["config"]["depth"], r["predicted_activation_bytes"] / MIB)
                         for r in runs if r.get("predicted_activation_bytes") is not None]
            if predicted and tool == "remat":
                ax.plot(*zip(*predicted), "--", color=color, alpha=0.7, lw=1,
                        label=f"predicted {plan}")
    config = doc["runs"][0]["config"]
    finish(ax, "depth (blocks)", "activation memory (MiB)",
           f"deep-mlp: activation memory vs depth (width {config['width']}, "
           f"batch {config['batch']})\n{doc['device']}, {doc['dtype']}")
    return save(fig, out_dir, "deep-mlp-memory-depth.png")


def plot_time_overhead(doc, torch_doc, out_dir):
    def ratios(d):
        return {r["plan"]: r["time_ratio"] for r in d["runs"]
                if r["config"]["depth"] == DEPTH_PLOT_DEPTH and r.get("time_ratio") is not None}

    sources = [("remat", ratios(doc))]
    if torch_doc is not None:
        sources.append(("PyTorch", ratios(torch_doc)))
    plans = list(dict.fromkeys(p for _, r in sources for p in r))
    if not plans:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    bar = 0.8 / len(sources)
    for j, (tool, by_plan) in enumerate(sources):
        xs = [i + (j - (len(sources) - 1) / 2) * bar for i, p in enumerate(plans) if p in by_plan]
        vals = [by_plan[p] for p in plans if p in by_plan]
        bars = ax.bar(xs, vals, bar, label=tool, hatch=None if j == 0 else "//",
                      fill=j == 0, edgecolor="C0" if j == 0 else "C1")
        ax.bar_label(bars, fmt="%.2fx", fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(plans)), plans)
    ax.margins(y=0.12)
    finish(ax, "plan", "step time / step time of plan none",
           f"deep-mlp depth {DEPTH_PLOT_DEPTH}: step time overhead\n"
           f"{doc['device']}, {doc['dtype']}")
    return save(fig, out_dir, "deep-mlp-time-overhead.png")


def plot_results(remat_paths, pytorch_paths, out_dir):
    written = []
    torch_docs = load_docs(pytorch_paths)
    for doc in load_docs(remat_paths):
        torch_doc = matching_pytorch(doc, torch_docs)
        torch_by_key = runs_by_key(torch_doc) if torch_doc else {}
        for key, plans in runs_by_key(doc).items():
            written.append(plot_memory_time(doc, key, plans, torch_by_key.get(key, {}), out_dir))
        if doc["preset"] == "deep-mlp" and doc["runs"]:
            written.append(plot_memory_depth(doc, torch_doc, out_dir))
            written.append(plot_time_overhead(doc, torch_doc, out_dir))
    return [path for path in written if path]


def moving_average(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_curves(paths, out_dir, window=50):
    written = []
    for path in paths:
        with open(path) as f:
            runs = json.load(f)
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                          gridspec_kw={"height_ratios": [2, 1]})
        first = moving_average(runs[0]["losses"], window)
        for run in runs:
            smooth = moving_average(run["losses"], window)
            label = f"{run['plan']} (validation {run['val_loss']:.4f})"
            top.plot(range(1, len(smooth) + 1), smooth, label=label, linewidth=1)
            bottom.plot(range(1, len(smooth) + 1), [a - b for a, b in zip(smooth, first)],
                        linewidth=1)
        finish(top, "", "training loss (nats/char)",
               f"training loss, moving average of {window} steps")
        bottom.set_xlabel("step")
        bottom.set_ylabel(f"minus {runs[0]['plan']}")
        bottom.grid(alpha=0.3)
        written.append(save(fig, out_dir, f"{Path(path).stem}-training-curves.png"))
    return written


def phase_of(tag):
    return "replay" if tag.startswith("replay") else tag


def spans(xs, labels):
    """(label, start, end) for each run of equal labels; a run ends where the next starts."""
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            end = xs[i] if i < len(labels) else xs[-1] + (xs[-1] - xs[0]) / max(len(xs), 1)
            out.append((labels[start], xs[start], end))
            start = i
    return out


def plot_timeline(key, plans, x_axis, out_dir):
    height = 2.0 * len(plans) + 1.4  # inches; the top 0.8 hold the title and legend
    fig, axes = plt.subplots(len(plans), 1, figsize=(10, height),
                             sharex=True, sharey=True, squeeze=False)
    fig.subplots_adjust(top=1 - 0.8 / height, bottom=0.6 / height, hspace=0.35,
                        left=0.07, right=0.99)
    for ax, (plan, rows) in zip(axes[:, 0], plans.items()):
        rows.sort(key=lambda r: int(r["index"]))
        if x_axis == "time":
            t0 = float(rows[0]["time_us"])
            xs = [(float(r["time_us"]) - t0) / 1000 for r in rows]
        else:
            xs = [int(r["index"]) for r in rows]
        # Memory above what was allocated when the step began (parameters,
        # gradients, optimizer state, input): the model state would otherwise
        # flatten the activations' ramp in a deep MLP.
        first = rows[0]
        sign = {"Alloc": 1, "Free": -1}.get(first["kind"], 0)
        base = float(first["allocated_after"]) - sign * float(first["bytes"])
        allocated = [(float(r["allocated_after"]) - base) / MIB for r in rows]
        for phase, start, end in spans(xs, [phase_of(r["tag"]) for r in rows]):
            if phase == "replay":
                ax.axvspan(start, end, color=REPLAY_COLOR, alpha=0.35, lw=0)
            elif phase in PHASE_COLORS:
                ax.axvspan(start, end, color=PHASE_COLORS[phase], lw=0)
        ax.plot(xs, allocated, drawstyle="steps-post", color="black", lw=1.1)
        ax.plot(xs, [(float(r["reserved_after"]) - base) / MIB for r in rows],
                drawstyle="steps-post", color="#3d85c6", lw=0.7)
        ooms = [(x, a) for x, a, r in zip(xs, allocated, rows) if r["kind"] == "Oom"]
        if ooms:
            ax.plot(*zip(*ooms), "rx", ms=8)
        ax.set_title(f"{plan}: peak {max(allocated):.1f} MiB above the "
                     f"{base / MIB:.1f} MiB allocated at the step's start",
                     loc="left", fontsize=9)
        ax.set_ylabel("MiB above start")
        ax.set_ylim(bottom=0)
        ax.margins(x=0.005)
    axes[-1, 0].set_xlabel("time in step (ms)" if x_axis == "time" else "allocator event index")
    handles = [Patch(color=c, label=p) for p, c in PHASE_COLORS.items()]
    handles += [Patch(color=REPLAY_COLOR, alpha=0.35, label="replay (in backward)"),
                plt.Line2D([], [], color="black", lw=1.1, label="allocated"),
                plt.Line2D([], [], color="#3d85c6", lw=0.7, label="reserved (same offset)")]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               bbox_to_anchor=(0.5, 1 - 0.3 / height), frameon=False)
    fig.suptitle(f"allocator timeline of one training step: {key}", fontsize=10,
                 y=1 - 0.08 / height)
    return save(fig, out_dir, f"{slug(key)}-timeline.png")


def plot_timelines(paths, x_axis, out_dir):
    by_key = defaultdict(lambda: defaultdict(list))
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                by_key[row["key"]][row["plan"]].append(row)
    return [plot_timeline(key, plans, x_axis, out_dir) for key, plans in by_key.items()]


def synthetic_doc(tool, speed, extra):
    """A deep-mlp result file with made-up costs (activations grow with depth) and a
    skipped run; `speed` and `extra` make the two tools differ."""
    memory = {"none": 1.0, "block": 0.1, "sqrt": 0.3, "alternate": 0.55, "nested": 0.08}
    time = {"none": 1.0, "block": 1.3, "sqrt": 1.33, "alternate": 1.15, "nested": 1.6}
    runs = []
    for depth in (10, 20, 40, 80):
        for plan in memory if depth == 40 else ("none", "block"):
            config = {"depth": depth, "batch": 64, "width": 1024}
            act = int(depth * MIB / 2 * memory[plan] * extra)
            ms = depth * speed * time[plan] ** extra
            runs.append({
                "model": "mlp", "config": config, "plan": plan,
                "key": "mlp " + " ".join(f"{k}={v}" for k, v in config.items()),
                "step_ms": [ms] * 3, "median_step_ms": ms, "time_ratio": time[plan] ** extra,
                "state_bytes": 10 * MIB, "peak_allocated_bytes": 10 * MIB + act,
                "activation_bytes": act, "memory_ratio": memory[plan],
                "peak_reserved_bytes": 12 * MIB + act, "first_loss": 0.5,
                "replayed_ops": None if tool == "pytorch" else 0,
                "predicted_activation_bytes": None if tool == "pytorch" else int(act * 0.95)})
    if tool == "remat":  # the planner's sweep at depth 40
        base = next(r for r in runs if r["config"]["depth"] == 40 and r["plan"] == "none")
        for fraction in (0.2, 0.5, 1.0):
            runs.append(dict(base, plan=f"budget-{fraction:.0%}", budget_fraction=fraction,
                             budget_bytes=base["state_bytes"] + fraction * base["activation_bytes"],
                             activation_bytes=int(base["activation_bytes"] * fraction * 0.9),
                             median_step_ms=base["median_step_ms"] * (1.3 - 0.3 * fraction)))
            runs.append(dict(base, plan=f"limit-{fraction:.0%}", limit_fraction=fraction,
                             limit_bytes=base["state_bytes"] + fraction * base["activation_bytes"],
                             activation_bytes=int(base["activation_bytes"] * fraction * 0.95),
                             median_step_ms=base["median_step_ms"] * (1.2 - 0.2 * fraction)))
    nulls = {k: None for k in ("step_ms", "median_step_ms", "time_ratio", "activation_bytes")}
    runs.append(dict(runs[-1], plan="selective", skipped="needs PyTorch >= 2.4", **nulls))
    return {"tool": tool, "tool_version": "0.1.0", "device": "cpu",
            "device_name": "synthetic (selftest)", "threads": 1, "dtype": "float32",
            "preset": "deep-mlp", "warmup": 1, "steps": 3, "runs": runs}


def synthetic_timeline(key, plan, blocks, replay):
    """CSV rows of a made-up step: forward keeps 8 MiB per block (4 when checkpointed),
    backward replays each checkpointed block before freeing its buffers."""
    deltas = []  # (MiB, tag)
    for _ in range(blocks):
        deltas += [(4, "forward"), (4, "forward")] + ([(-4, "forward")] if replay else [])
    for _ in range(blocks):
        deltas += [(4, "replay:block")] * 2 if replay else []
        deltas += [(4, "backward")] + [(-4, "backward")] * (4 if replay else 3)
    deltas += [(4, "optimizer"), (-4, "optimizer")] * 3
    allocated = 100
    for index, (delta, tag) in enumerate(deltas):
        allocated += delta
        yield [key, plan, index, index * 7, "Alloc" if delta > 0 else "Free",
               abs(delta) * MIB, allocated * MIB, (allocated + 64) * MIB, tag]


def selftest():
    data, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    paths = {tool: os.path.join(data, f"deep-mlp-{tool}.json") for tool in ("remat", "pytorch")}
    for (tool, path), speed, extra in zip(paths.items(), (2.0, 1.5), (1.0, 1.1)):
        with open(path, "w") as f:
            json.dump(synthetic_doc(tool, speed, extra), f)
    timeline, key = os.path.join(data, "timeline.csv"), "mlp depth=6 batch=64 width=1024"
    with open(timeline, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow("key plan index time_us kind bytes allocated_after "
                        "reserved_after tag".split())
        writer.writerows(synthetic_timeline(key, "none", 6, replay=False))
        writer.writerows(synthetic_timeline(key, "block", 6, replay=True))
    assert all(r["plan"] != "selective" for r in load_docs([paths["remat"]])[0]["runs"])
    written = plot_results([paths["remat"]], [paths["pytorch"]], out)
    written += plot_timelines([timeline], "index", out)
    os.makedirs(os.path.join(out, "time"))
    written += plot_timelines([timeline], "time", os.path.join(out, "time"))
    curves = os.path.join(data, "curves.json")
    with open(curves, "w") as f:
        json.dump([{"plan": plan, "val_loss": 2.0, "losses": [3.0 - 0.001 * i + shift
                                                              for i in range(300)]}
                   for plan, shift in (("none", 0.0), ("compress-int8", 0.01))], f)
    written += plot_curves([curves], out)
    expected = {"curves-training-curves.png","deep-mlp-mlp-depth-40-batch-64-width-1024-memory-time.png",
                "deep-mlp-memory-depth.png", "deep-mlp-time-overhead.png",
                f"{slug(key)}-timeline.png"}
    names = {os.path.basename(p) for p in written}
    assert expected <= names and len(written) == 9, names
    assert all(os.path.getsize(p) > 0 for p in written)
    print(f"selftest passed: {len(written)} PNGs under {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remat", action="append", default=[], metavar="FILE.json")
    parser.add_argument("--pytorch", action="append", default=[], metavar="FILE.json")
    parser.add_argument("--timeline", action="append", default=[], metavar="FILE.csv")
    parser.add_argument("--timeline-x", choices=("index", "time"), default="index")
    parser.add_argument("--curves", action="append", default=[], metavar="FILE.json")
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    if args.selftest:
        return selftest()
    if not args.remat and not args.timeline and not args.curves:
        parser.error("nothing to plot: give --remat, --timeline and/or --curves")
    os.makedirs(args.out, exist_ok=True)
    plot_results(args.remat, args.pytorch, args.out)
    plot_timelines(args.timeline, args.timeline_x, args.out)
    plot_curves(args.curves, args.out)


if __name__ == "__main__":
    main()
