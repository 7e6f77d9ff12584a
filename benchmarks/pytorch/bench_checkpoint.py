"""PyTorch's numbers for bench_checkpoint: the same MLP, ResNet and
transformer trained under the same checkpoint plans with
torch.utils.checkpoint (use_reentrant=False), written as the same JSON (tool
"pytorch"); benchmarks/pytorch/compare_checkpoint.py joins the two files.

    python3 benchmarks/pytorch/bench_checkpoint.py --preset long-seq --device cuda
    python3 benchmarks/pytorch/bench_checkpoint.py --model mlp --depth 10,20 --plans none,sqrt

With --state-dir (the directory of `bench_checkpoint --save-state`) every
configuration starts from remat's weights and input, so first_loss must agree
with remat's.
"""
import argparse
import functools
import gc
import json
import math
import os
import re
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# The experiments of docs/benchmarks.md, as bench_checkpoint defines them:
# name -> (dtype, [(model, config, plans)]).
MLP_PLANS = ["none", "block", "sqrt"]
PRESETS = {
    "deep-mlp": ("float32", [
        ("mlp", {"depth": 10, "batch": 64, "width": 1024}, MLP_PLANS),
        ("mlp", {"depth": 20, "batch": 64, "width": 1024}, MLP_PLANS),
        ("mlp", {"depth": 40, "batch": 64, "width": 1024},
         ["none", "block", "sqrt", "alternate", "nested"]),
        ("mlp", {"depth": 80, "batch": 64, "width": 1024}, MLP_PLANS),
    ]),
    "resnet": ("float32", [
        ("resnet", {"depth": 8, "batch": 32, "width": 64, "image": 32},
         ["none", "block", "alternate", "sqrt", "nested"]),
    ]),
    "long-seq": ("bfloat16", [
        ("transformer", {"depth": 12, "batch": 1, "seq": 4096, "width": 512, "heads": 4,
                         "activation": "relu", "attention": "math"},
         ["none", "attn", "mlp", "attn+mlp", "alternate", "offload"]),
        ("transformer", {"depth": 12, "batch": 1, "seq": 4096, "width": 512, "heads": 4,
                         "activation": "relu", "attention": "sdpa"},
         ["none", "attn+mlp", "block"]),
    ]),
    "wide": ("float32", [
        ("transformer", {"depth": 20, "batch": 4, "seq": 512, "width": 1024, "heads": 16,
                         "activation": "gelu", "attention": "math"},
         ["none", "every-2", "block", "selective"]),
        ("transformer", {"depth": 20, "batch": 4, "seq": 512, "width": 1024, "heads": 16,
                         "activation": "gelu", "attention": "sdpa"},
         ["none", "block"]),
    ]),
    # remat's offload and compress plans; PyTorch's answer to offload is
    # save_on_cpu (no compression of saved tensors is built in).
    "offload": ("float32", [
        ("mlp", {"depth": 40, "batch": 512, "width": 1024}, ["none", "block", "offload"]),
        ("transformer", {"depth": 8, "batch": 2, "seq": 1024, "width": 512, "heads": 8,
                         "activation": "gelu", "attention": "math"},
         ["none", "block", "offload"]),
    ]),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SUBLAYER_PLANS = ("attn", "mlp", "attn+mlp")


def torch_version():
    major, minor = re.match(r"(\d+)\.(\d+)", torch.__version__).groups()
    return int(major), int(minor)


# The key's attention field: PyTorch's SDPA pairs with remat's fused attention
# (bench_checkpoint --attention fused, both sides' default); math is unnamed,
# as in the keys from before the fused attention existed.
KEY_ATTENTION = {"math": None, "sdpa": "fused"}


def default_attention():
    """SDPA where PyTorch has it (remat's default is the fused attention)."""
    return "sdpa" if torch_version() >= (2, 0) else "math"


def config_key(model, config):
    """The join key with remat: "mlp depth=10 batch=64 width=1024"."""
    fields = []
    for name, value in config.items():
        value = KEY_ATTENTION[value] if name == "attention" else value
        if value is not None:
            fields.append(f"{name}={value}")
    return " ".join([model] + fields)


def state_file_name(model, config):
    """bench_checkpoint --save-state's file for the configuration: the key
    without attention, since both attentions train the same weights."""
    weights = {name: value for name, value in config.items() if name != "attention"}
    return re.sub(r"[ =]", "_", config_key(model, weights)) + ".safetensors"


# ---------------------------------------------------------------- models

class MLPBlock(nn.Sequential):
    def __init__(self, width):
        super().__init__(nn.Linear(width, width), nn.ReLU())


class Attention(nn.Module):
    def __init__(self, width, heads, attention):
        super().__init__()
        self.heads, self.attention = heads, attention
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        batch, seq, width = x.shape

        def split(t):
            return t.view(batch, seq, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        # Causal either way, as remat's benchmark transformer (causal=true in
        # benchmarks/common/workload.cpp).
        if self.attention == "sdpa":
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # The explicit math of remat's math attention: matmul, masked softmax, matmul.
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(width // self.heads)
            future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
            attended = torch.matmul(torch.softmax(scores.masked_fill(future, float("-inf")), -1), v)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, seq, width))


class TransformerBlock(nn.Module):
    """GPT-2 pre-norm causal block without dropout."""

    def __init__(self, width, heads, activation, attention):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = Attention(width, heads, attention)
        self.ln2 = nn.LayerNorm(width, eps=1e-5)
        act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), act, nn.Linear(4 * width, width))

    def attention_residual(self, x):
        return x + self.attn(self.ln1(x))

    def mlp_residual(self, h):
        return h + self.mlp(self.ln2(h))

    def forward(self, x):
        return self.mlp_residual(self.attention_residual(x))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv1 carries the stride."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """CIFAR ResNet: stem, depth/2 blocks at width, depth/2 at 2*width (the
    first with stride 2), average pool, Linear head to 10 classes."""

    def __init__(self, depth, width):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, channels = [], width
        for stage in range(2):
            out = width << stage
            for b in range(depth // 2):
                blocks.append(BasicBlock(channels, out, 2 if stage > 0 and b == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, 10)


class BlockStack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)


# ---------------------------------------------------------------- state files

SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.int16,
                      "I64": np.int64, "I32": np.int32, "BOOL": np.bool_}


def read_safetensors(path):
    """name -> CPU tensor: an 8-byte little-endian header length, a JSON
    header of {name: {dtype, shape, data_offsets}} and the raw little-endian
    data after it (BF16 read as int16 bits, then reinterpreted)."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        kind = SAFETENSORS_DTYPES[entry["dtype"]]
        array = np.frombuffer(body[begin:end], dtype=np.dtype(kind).newbyteorder("<"))
        tensor = torch.from_numpy(array.astype(kind)).reshape(entry["shape"])
        tensors[name] = tensor.view(torch.bfloat16) if entry["dtype"] == "BF16" else tensor
    return tensors


def load_state(model, tensors, path):
    """Copies the file's tensors into the model's parameters and buffers
    (converting the dtype; a scalar may be stored as [1])."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise ValueError(f"{path}: no tensors for {', '.join(missing[:5])}")
    with torch.no_grad():
        for name, target in own.items():
            source = tensors[name]
            if source.numel() != target.numel():
                raise ValueError(f"{path}: '{name}' has shape {list(source.shape)}, "
                                 f"the model's is {list(target.shape)}")
            target.copy_(source.reshape(target.shape).to(target.dtype))


# ---------------------------------------------------------------- workload

def make_optimizer(params):
    """AdamW updating one parameter at a time without temporaries where
    PyTorch can (fused), as remat's adam_update does; else the single-tensor
    loop. The default multi-tensor (foreach) path holds temporaries the size
    of all parameters at once, which would set the peak of checkpointed plans."""
    params = list(params)
    options = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    try:
        return torch.optim.AdamW(params, fused=True, **options), "fused"
    except (TypeError, RuntimeError):  # no `fused` before 2.0; CPU only from 2.4
        return torch.optim.AdamW(params, foreach=False, **options), "single-tensor"


class Workload:
    """One model with its input (and labels), AdamW and the loss."""

    def __init__(self, model_name, config, dtype, device, seed, state_path):
        torch.manual_seed(seed)
        c = config
        self.model_name = model_name
        if model_name == "resnet":
            self.model = ResNet(c["depth"], c["width"])
            self.input = torch.randn(c["batch"], 3, c["image"], c["image"])
            self.labels = torch.randint(0, 10, (c["batch"],))
        else:
            if model_name == "mlp":
                blocks = [MLPBlock(c["width"]) for _ in range(c["depth"])]
                self.input = torch.randn(c["batch"], c["width"])
            else:
                blocks = [TransformerBlock(c["width"], c["heads"], c["activation"], c["attention"])
                          for _ in range(c["depth"])]
                self.input = torch.randn(c["batch"], c["seq"], c["width"])
            self.model = BlockStack(blocks)
            self.labels = None
        self.model.to(dtype=dtype, device=device).train()
        if state_path is not None:
            tensors = read_safetensors(state_path)
            load_state(self.model, tensors, state_path)
            self.input = tensors["input"].reshape(self.input.shape)
            if self.labels is not None:
                self.labels = tensors["labels"].reshape(self.labels.shape)
        self.input = self.input.to(dtype=dtype, device=device)
        if self.labels is not None:
            self.labels = self.labels.to(device)
        self.optimizer, _ = make_optimizer(self.model.parameters())

    def loss(self, plan):
        if self.model_name == "resnet":
            h = run_blocks(list(self.model.blocks), self.model.stem(self.input), plan)
            logits = self.model.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
            return F.cross_entropy(logits, self.labels)
        out = run_blocks(list(self.model.blocks), self.input, plan)
        return torch.mean(out * out)

    def step(self, plan):
        """Forward, backward, AdamW step, zero_grad; returns the loss."""
        loss = self.loss(plan)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as remat's
        return loss.detach()

    def state_tensors(self):
        """What is allocated between steps: parameters, buffers, gradients,
        optimizer state, input and labels."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [t for t in state.values() if torch.is_tensor(t)]
        tensors += [t for t in (self.input, self.labels) if t is not None]
        return tensors


# ---------------------------------------------------------------- plans

def sequence(fns):
    def run(x):
        for fn in fns:
            x = fn(x)
        return x
    return run


def group_sizes(blocks, groups):
    """Consecutive near-equal groups, the larger first (as remat splits them)."""
    return [blocks // groups + (g < blocks % groups) for g in range(groups)]


def groups_of(blocks, sizes):
    out, begin = [], 0
    for size in sizes:
        out.append(blocks[begin:begin + size])
        begin += size
    return out


def saving_matmuls():
    """selective: keep the outputs of the matmuls, recompute the rest."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
    aten = torch.ops.aten
    saved = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.matmul.default}

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in saved else CheckpointPolicy.PREFER_RECOMPUTE

    return functools.partial(create_selective_checkpoint_contexts, policy)


def segment(fn, x, **kwargs):
    return checkpoint(fn, x, use_reentrant=False, **kwargs)


def run_blocks(blocks, x, plan):
    """Runs the blocks on x with the plan's segments (docs/checkpointing.md)."""
    count = len(blocks)
    sqrt_groups = max(1, round(math.sqrt(count)))
    if plan == "none":
        return sequence(blocks)(x)
    if plan == "block":
        return sequence([functools.partial(segment, b) for b in blocks])(x)
    if plan == "selective":
        context_fn = saving_matmuls()
        return sequence([functools.partial(segment, b, context_fn=context_fn) for b in blocks])(x)
    if plan == "alternate":
        return sequence([functools.partial(segment, b) if i % 2 == 0 else b
                         for i, b in enumerate(blocks)])(x)
    if plan.startswith("every-"):
        n = int(plan[len("every-"):])
        groups = [blocks[i:i + n] for i in range(0, count, n)]
        return sequence([functools.partial(segment, sequence(g)) for g in groups])(x)
    if plan == "sqrt":
        groups = groups_of(blocks, group_sizes(count, sqrt_groups))
        return sequence([functools.partial(segment, sequence(g)) for g in groups])(x)
    if plan == "nested":
        groups = groups_of(blocks, group_sizes(count, sqrt_groups))
        return sequence([functools.partial(segment, sequence([functools.partial(segment, b)
                                                              for b in g]))
                         for g in groups])(x)
    if plan in SUBLAYER_PLANS:
        for b in blocks:
            x = segment(b.attention_residual, x) if plan != "mlp" else b.attention_residual(x)
            x = segment(b.mlp_residual, x) if plan != "attn" else b.mlp_residual(x)
        return x
    if plan == "offload":
        # Every tensor the blocks save goes to (pinned, on CUDA) host memory as
        # it is saved and comes back when backward unpacks it: PyTorch's
        # documented activation offload. Unlike remat's, it also copies saved
        # parameters, and nothing is prefetched ahead of need.
        with torch.autograd.graph.save_on_cpu(pin_memory=x.is_cuda):
            return sequence(blocks)(x)
    raise ValueError(f"unknown plan '{plan}'")


def check_plan(plan, model):
    """Raises ValueError for a plan that is no plan (for this model)."""
    every = re.fullmatch(r"every-(\d+)", plan)
    if plan in SUBLAYER_PLANS:
        if model != "transformer":
            raise ValueError(f"plan '{plan}' checkpoints transformer sublayers; the {model} has none")
    elif not (plan in ("none", "block", "alternate", "sqrt", "selective", "nested", "offload")
              or (every and int(every.group(1)) >= 1)):
        raise ValueError(f"unknown plan '{plan}' (none, block, every-N, alternate, sqrt, "
                         "selective, nested, offload; transformer also attn, mlp, attn+mlp)")


def skip_reason(plan, config):
    """Why this PyTorch cannot run the plan (or the configuration), else None."""
    if config.get("attention") == "sdpa" and torch_version() < (2, 0):
        return f"F.scaled_dot_product_attention needs PyTorch >= 2.0 (this is {torch.__version__})"
    if plan == "selective" and not hasattr(torch.utils.checkpoint,
                                           "create_selective_checkpoint_contexts"):
        return f"selective checkpointing needs PyTorch >= 2.4 (this is {torch.__version__})"
    if plan == "nested" and torch_version() < (2, 1):
        # Before 2.1 a non-reentrant segment's closure holds its inputs and the
        # outer segment saves no tensor of its own, so it never replays: the
        # run would be plan "block" under another name.
        return f"non-reentrant nesting needs PyTorch >= 2.1 (this is {torch.__version__})"
    return None


# The numbers of a run, in the order of the JSON; all null for a skipped run.
RUN_NUMBERS = ("step_ms", "median_step_ms", "time_ratio", "state_bytes", "peak_allocated_bytes",
               "activation_bytes", "memory_ratio", "peak_reserved_bytes", "replayed_ops",
               "raw_allocs_per_step", "first_loss", "predicted_activation_bytes")


# ---------------------------------------------------------------- measurement

def tensor_bytes(tensors):
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in tensors if t.numel()}
    return sum(unique.values())


def event_start(event):
    """A kineto event's start time, for ordering: PyTorch 2.x has start_ns()
    where 1.13 has start_us()."""
    return event.start_ns() if hasattr(event, "start_ns") else event.start_us()


def profiled_cpu_peak(step):
    """CPU peak of step() above what was allocated before it, and how many
    allocations it made. PyTorch's CPU allocator keeps no statistics, but with
    profile_memory the profiler records every allocation (+bytes) and free
    (-bytes) of the c10 CPU allocator in order; their running sum is the
    allocated bytes relative to the step's start, its maximum the peak. Frees
    of blocks allocated before profiling started are not reported (the
    allocator's size table is filled only while profiling), so the caller makes
    sure only persistent state predates the step. Memory oneDNN allocates on
    its own (convolution scratch) is not seen. `--self-check` validates this
    against tensors of known size."""
    gc.collect()
    with torch.autograd.profiler.profile(profile_memory=True, use_kineto=True) as prof:
        step()
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((event_start(e), i, e.nbytes())
                    for i, e in enumerate(prof.kineto_results.events())
                    if e.name() == "[memory]" and e.device_type() == cpu)
    running = peak = allocations = 0
    for _, _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
        allocations += nbytes > 0
    return peak, allocations


def measure(args, model_name, config, plan, dtype, device):
    """One run: a fresh model, warm-up steps, timed steps; on the CPU one more
    (profiled, untimed) step for the peak."""
    state_path = None
    if args.state_dir:
        candidate = os.path.join(args.state_dir, state_file_name(model_name, config))
        if os.path.isfile(candidate):
            state_path = candidate
    work = Workload(model_name, config, dtype, device, args.seed, state_path)
    cuda = device.type == "cuda"
    step_ms, first_loss = [], None
    state_bytes = peak_allocated = peak_reserved = raw_allocs = 0
    segments_before = 0
    for step in range(args.warmup + args.steps):
        timed = step >= args.warmup
        if cuda:
            torch.cuda.synchronize()
            if step == args.warmup:
                segments_before = torch.cuda.memory_stats()["segment.all.allocated"]
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = work.step(plan)
        if cuda:
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) * 1e3
        if step == 0:
            first_loss = loss.double().item()
        del loss
        if not timed:
            continue
        step_ms.append(ms)
        if cuda:
            state_bytes = before
            peak_allocated = max(peak_allocated, torch.cuda.max_memory_allocated())
            peak_reserved = max(peak_reserved, torch.cuda.max_memory_reserved())
    if cuda:
        raw_allocs = (torch.cuda.memory_stats()["segment.all.allocated"] - segments_before) / args.steps
    else:
        # The CPU allocator is malloc itself: every allocation is a raw one.
        state_bytes = tensor_bytes(work.state_tensors())
        activation, raw_allocs = profiled_cpu_peak(lambda: work.step(plan))
        peak_allocated, peak_reserved = state_bytes + activation, None
    return {"step_ms": step_ms, "median_step_ms": sorted(step_ms)[len(step_ms) // 2],
            "state_bytes": state_bytes, "peak_allocated_bytes": peak_allocated,
            "activation_bytes": peak_allocated - state_bytes,
            "peak_reserved_bytes": peak_reserved, "raw_allocs_per_step": raw_allocs,
            "first_loss": first_loss, "state_file": state_path}


def self_check():
    """Validates profiled_cpu_peak: a step holding a known 64 MiB more must
    peak 64 MiB higher, and a bare 64 MiB allocation must peak at exactly 64
    MiB. Returns the process exit status."""
    size = 64 << 20
    work = Workload("mlp", {"depth": 4, "batch": 64, "width": 512}, torch.float32,
                    torch.device("cpu"), 0, None)
    work.step("none")  # creates the optimizer state

    def step_holding_extra():
        extra = torch.ones(size, dtype=torch.uint8)
        work.step("none")
        del extra

    bare, _ = profiled_cpu_peak(lambda: torch.ones(size, dtype=torch.uint8))
    plain, _ = profiled_cpu_peak(lambda: work.step("none"))
    extra, _ = profiled_cpu_peak(step_holding_extra)
    # MLP sanity: the plain step keeps depth ReLU outputs of batch x width.
    relu_outputs = 4 * 64 * 512 * 4
    print(f"bare 64 MiB tensor: peak {bare / 2**20:.3f} MiB")
    print(f"mlp step: peak {plain / 2**20:.3f} MiB ({relu_outputs / 2**20:.3f} MiB of ReLU outputs)")
    print(f"mlp step holding 64 MiB more: peak {extra / 2**20:.3f} MiB "
          f"(+{(extra - plain) / 2**20:.3f} MiB)")
    ok = bare == size and abs(extra - plain - size) <= size // 1000 and plain >= relu_outputs
    print("self-check", "passed" if ok else "FAILED")
    return 0 if ok else 1


# ---------------------------------------------------------------- main

def cpuinfo_field(key):
    """The value of /proc/cpuinfo's first `key` line (the first CPU's); None
    where there is none."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpuinfo_field('model name') or 'cpu'} ({torch.get_num_threads()} threads)"


def cpu_features():
    """This CPU's vector features among those that pick kernels, as remat's
    bench_checkpoint records them (the dev machines differ by session)."""
    present = set((cpuinfo_field("flags") or "").split())
    return [name for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
            if name in present]


def sweeps_of(args):
    """[(model, config, plans)] and the dtype name."""
    if args.preset:
        dtype, sweeps = PRESETS[args.preset]
        return sweeps, args.dtype or dtype
    plans = args.plans.split(",")
    sweeps = []
    for depth in args.depth:
        for batch in args.batch:
            for seq in args.seq if args.model == "transformer" else [None]:
                config = {"depth": depth, "batch": batch}
                if args.model == "transformer":
                    config.update(seq=seq, width=args.width, heads=args.heads,
                                  activation=args.activation,
                                  attention=args.attention or default_attention())
                else:
                    config["width"] = args.width
                if args.model == "resnet":
                    config["image"] = args.image
                sweeps.append((args.model, config, plans))
    return sweeps, args.dtype or "float32"


def validate(parser, model, config):
    c = config
    if min(c["depth"], c["batch"], c["width"]) < 1:
        parser.error("--depth, --batch and --width must be positive")
    if model == "transformer" and (c["seq"] < 1 or c["width"] % c["heads"]):
        parser.error(f"--seq must be positive and --width ({c['width']}) a multiple of "
                     f"--heads ({c['heads']})")
    if model == "resnet" and (c["depth"] % 2 or c["image"] < 2):
        parser.error("the resnet needs an even --depth and --image >= 2")


def int_list(text):
    return [int(v) for v in text.split(",")]


def mib(n):
    return n / 2**20


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named experiment of docs/benchmarks.md (overrides the model flags)")
    p.add_argument("--model", default="transformer", choices=["mlp", "resnet", "transformer"])
    p.add_argument("--depth", type=int_list, default=[16], help="blocks (a comma list sweeps)")
    p.add_argument("--batch", type=int_list, default=[4], help="samples per step (a comma list sweeps)")
    p.add_argument("--seq", type=int_list, default=[256],
                   help="transformer: tokens per sample (a comma list sweeps)")
    p.add_argument("--width", type=int, default=256,
                   help="mlp: hidden size; resnet: first stage's channels; transformer: d_model")
    p.add_argument("--heads", type=int, default=4, help="transformer: attention heads")
    p.add_argument("--activation", default="gelu", choices=["gelu", "relu"])
    p.add_argument("--image", type=int, default=32, help="resnet: input height and width")
    p.add_argument("--attention", default=None, choices=["math", "sdpa"],
                   help="transformer: F.scaled_dot_product_attention (keyed as remat's "
                        "--attention fused, both sides' default; PyTorch >= 2.0) or the explicit "
                        "math (remat's --attention math; the default on PyTorch 1.x)")
    p.add_argument("--plans", default="none,block,selective,sqrt,every-2,nested",
                   help="comma-separated plans: none, block, every-N, alternate, sqrt, selective, "
                        "nested; transformer also attn, mlp, attn+mlp")
    p.add_argument("--dtype", choices=sorted(DTYPES),
                   help="default: the preset's, else float32")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run (the median is reported)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and input")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--state-dir",
                   help="directory of `bench_checkpoint --save-state`: start each configuration "
                        "from remat's weights and input where its file exists")
    p.add_argument("--json", default="bench_checkpoint_pytorch.json", help="JSON output")
    p.add_argument("--self-check", action="store_true",
                   help="validate the CPU peak measurement against known allocations and exit")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.self_check:
        raise SystemExit(self_check())
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be positive and --warmup not negative")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device")
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    sweeps, dtype_name = sweeps_of(args)
    dtype = DTYPES[dtype_name]
    _, optimizer_impl = make_optimizer([torch.zeros(1, dtype=dtype, device=device,
                                                    requires_grad=True)])

    for model, config, plans in sweeps:  # all errors before the first run
        validate(p, model, config)
        for plan in plans:
            try:
                check_plan(plan, model)
            except ValueError as e:
                p.error(str(e))

    runs = []
    for model, config, plans in sweeps:
        key = config_key(model, config)
        print(f"{key}, {device}, {dtype_name}: median of {args.steps} steps after "
              f"{args.warmup} warm-up")
        print(f"  {'plan':<10} {'step ms':>10} {'time':>7} {'activations':>14} {'memory':>7} "
              f"{'peak alloc':>12} {'peak reserved':>13} {'first loss':>12}")
        none = None
        for plan in plans:
            run = {"model": model, "config": config, "key": key, "plan": plan,
                   **dict.fromkeys(RUN_NUMBERS)}
            runs.append(run)
            skipped = skip_reason(plan, config)
            if skipped:
                run["skipped"] = skipped
                print(f"  {plan:<10} skipped: {skipped}")
                continue
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            run.update(measure(args, model, config, plan, dtype, device))
            if plan == "none":
                none = run
            time_ratio = run["median_step_ms"] / none["median_step_ms"] if none else 1.0
            memory = (100.0 * run["activation_bytes"] / none["activation_bytes"]
                      if none and none["activation_bytes"] else 100.0)
            reserved = ("-" if run["peak_reserved_bytes"] is None
                        else f"{mib(run['peak_reserved_bytes']):9.1f} MiB")
            print(f"  {plan:<10} {run['median_step_ms']:10.1f} {time_ratio:6.2f}x "
                  f"{mib(run['activation_bytes']):10.1f} MiB {memory:6.1f}% "
                  f"{mib(run['peak_allocated_bytes']):8.1f} MiB {reserved:>13} "
                  f"{run['first_loss']:12.6g}")

    for run in runs:
        none = next((r for r in runs if r["key"] == run["key"] and r["plan"] == "none"
                     and not r.get("skipped")), None)
        if none and not run.get("skipped"):
            run["time_ratio"] = run["median_step_ms"] / none["median_step_ms"]
            if none["activation_bytes"]:
                run["memory_ratio"] = run["activation_bytes"] / none["activation_bytes"]
    out = {"tool": "pytorch", "tool_version": torch.__version__,
           "device": "cuda:0" if device.type == "cuda" else "cpu",
           "device_name": device_name(device), "cpu_features": cpu_features(),
           "threads": torch.get_num_threads(),
           "dtype": dtype_name, "preset": args.preset or "custom",
           "warmup": args.warmup, "steps": args.steps,
           "optimizer": f"AdamW ({optimizer_impl})",
           "runs": runs}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
