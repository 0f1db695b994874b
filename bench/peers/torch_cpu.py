#!/usr/bin/python3
"""PyTorch CPU peer benchmark for daint8.

Measures training throughput (images/s) of one full training step
(forward, cross-entropy loss, backward, SGD step with momentum 0.9 and
weight decay 5e-4) on synthetic, seeded data, for the same LeNet-5 and
ResNet-20 definitions that daint8 benchmarks.

Needs Debian's python3-torch (run with /usr/bin/python3, not a pyenv python):
    /usr/bin/python3 bench/peers/torch_cpu.py --json
"""

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - environment dependent
    sys.stderr.write(
        "torch_cpu.py: PyTorch not importable; install it with "
        "`apt-get install python3-torch` and run with /usr/bin/python3\n"
    )
    sys.exit(3)

NUM_CLASSES = 10


# ---------------------------------------------------------------- models


class LeNet5(nn.Module):
    """Conv(c,6,5,pad2) ReLU MaxPool2 Conv(6,16,5) ReLU MaxPool2 Flatten
    Linear(400,120) ReLU Linear(120,84) ReLU Linear(84,10).
    (400 = 16*5*5 for 28x28 input; computed from the input size otherwise.)"""

    def __init__(self, in_ch=1, h=28, w=28, num_classes=NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        fh = ((h + 4 - 4) // 2 - 4) // 2
        fw = ((w + 4 - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * fh * fw, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (He et al. 2016): conv3x3(c,16) BN ReLU;
    3 stages x 3 BasicBlocks (16, 32, 64 ch; stride 2 at the first block of
    stages 2 and 3; 1x1 conv stride 2 + BN projection shortcut when the shape
    changes); global average pool; Linear(64,10). Convs without bias."""

    def __init__(self, in_ch=1, num_classes=NUM_CLASSES):
        super().__init__()
        self.conv1 = conv3x3(in_ch, 16)
        self.bn1 = nn.BatchNorm2d(16)
        layers = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(3):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, cout, stride))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: 1x1 reduce, 3x3 at the stride, 1x1 expand x4, each with
    BN; 1x1 conv + BN shortcut when the shape changes."""
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ZooResNet(nn.Module):
    """torchvision's ResNet-18/34/50 as src/models/resnet_imagenet.ts builds them: a 7x7 stem
    (stride 2 and a 3x3 stride-2 max pool; for inputs of 64 pixels or less the CIFAR stem, stride 1
    and no max pool), four stages of 64/128/256/512 planes (stride 2 at the first block of stages
    2-4), global average pool, Linear(., 10)."""

    def __init__(self, blocks, bottleneck, in_ch, size, num_classes=NUM_CLASSES):
        super().__init__()
        cifar = size <= 64
        self.conv1 = nn.Conv2d(in_ch, 64, 7, stride=1 if cifar else 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1)
        block = Bottleneck if bottleneck else BasicBlock
        layers, cin = [], 64
        for i, n in enumerate(blocks):
            planes = 64 << i
            for b in range(n):
                stride = 2 if (b == 0 and i > 0) else 1
                layers.append(block(cin, planes, stride))
                cin = planes * (4 if bottleneck else 1)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


ZOO_RESNETS = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
               "resnet50": ((3, 4, 6, 3), True)}
# The models this peer builds (bench/cases.ts PEER_MODELS lists the same).
MODELS = ["lenet5", "resnet20", *ZOO_RESNETS]


def build(model, c, h, w):
    if model == "lenet5":
        return LeNet5(c, h, w)
    if model == "resnet20":
        return ResNet20(c)
    if model in ZOO_RESNETS:
        blocks, bottleneck = ZOO_RESNETS[model]
        return ZooResNet(blocks, bottleneck, c, min(h, w))
    raise ValueError(f"torch_cpu.py builds {', '.join(MODELS)}, not {model}")


# ------------------------------------------------------------- benchmark


def parse_input(s):
    try:
        c, h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("--input must look like CxHxW, e.g. 1x28x28")
    return c, h, w


def synthetic_batches(n, batch, c, h, w, seed, channels_last):
    """n batches of uint8-like images normalized to ~[-1, 1] plus labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        raw = torch.randint(0, 256, (batch, c, h, w), generator=g, dtype=torch.uint8)
        x = (raw.float() / 255.0 - 0.5) / 0.5
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, NUM_CLASSES, (batch,), generator=g, dtype=torch.long)
        out.append((x, y))
    return out


def make_step(model_name, args, channels_last):
    """One training step of `model_name` as a function of the step index (inputs rotate over 4
    seeded batches), plus a function that returns the last loss. Batch and input: args'."""
    c, h, w = args.input
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    model = build(model_name, c, h, w).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    data = [(x.to(dev), y.to(dev))
            for x, y in synthetic_batches(4, args.batch_size, c, h, w, args.seed, channels_last)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    last = [None]

    def step(i):
        x, y = data[i % len(data)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sync()  # the step's kernels have finished when the timer stops
        last[0] = loss

    for i in range(args.warmup):
        step(i)
    return step, lambda: float(last[0].item())


def step_row(model_name, args, channels_last, times, total):
    """The JSON row of one model and layout from its step times (s) and total wall time (s)."""
    dev = torch.device(args.device)
    med = statistics.median(times)
    n = len(times)
    return {
        "peer": "pytorch-" + dev.type,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": model_name,
        "input": "x".join(str(v) for v in args.input),
        "batch": args.batch_size,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "steps": n,
        "images_per_s": args.batch_size / med,  # from the median step time
        "ms_per_step": med * 1e3,  # median
        "ms_per_step_mean": total / n * 1e3,
        "images_per_s_total": args.batch_size * n / total,
    }


def bench_one(model_name, args, channels_last):
    step, loss = make_step(model_name, args, channels_last)
    steps = args.steps if args.steps is not None else (30 if model_name == "lenet5" else 10)
    times = []
    t_start = time.perf_counter()
    i = 0
    while True:
        t0 = clock()
        step(i)
        times.append(clock() - t0)
        i += 1
        if args.seconds is not None:
            if time.perf_counter() - t_start >= args.seconds:
                break
        elif i >= steps:
            break
    total = time.perf_counter() - t_start
    row = step_row(model_name, args, channels_last, times, total)
    row["final_loss"] = loss()
    return row


# The conv shapes of bench/conv_fixture.ts convLayers() (ResNet-20's 3x3 layers, LeNet-5's conv2):
# (name, C, H, W, K, stride, kernel, padding); no bias.
CONV_LAYERS = [
    ("stage1 16->16 28x28", 16, 28, 28, 16, 1, 3, 1),
    ("stage2 32->32 14x14", 32, 14, 14, 32, 1, 3, 1),
    ("stage3 64->64 7x7", 64, 7, 7, 64, 1, 3, 1),
    ("stage2 16->32 s2 28x28", 16, 28, 28, 32, 2, 3, 1),
    ("stage3 32->64 s2 14x14", 32, 14, 14, 64, 2, 3, 1),
    ("lenet5 conv2 6->16 5x5 14x14", 6, 14, 14, 16, 1, 5, 0),
]


def clock():
    """Seconds: wall clock, or with --cpu-time this process's CPU time (meaningful with
    --threads 1 on a machine shared with other jobs, like `deno task report --timer cpu`)."""
    return time.process_time() if CPU_TIME else time.perf_counter()


CPU_TIME = False


SHAPE_KEYS = ("n", "c", "h", "w", "k", "stride", "r", "pad")


def conv_shape(layer, args, shape=None):
    """(batch, C, H, W, K, stride, kernel, padding) of a conv layer: `shape` when given (a dict of
    SHAPE_KEYS, what bench/report.ts sends for any layer set: bench/conv_fixture.ts ConvLayer),
    else CONV_LAYERS' `layer` at --batch-size."""
    if shape is not None:
        if not isinstance(shape, dict):
            raise ValueError(f"conv shape of {layer!r}: an object expected, got {shape!r}")
        missing = [key for key in SHAPE_KEYS if key not in shape]
        if missing:
            raise ValueError(f"conv shape of {layer!r} lacks {', '.join(missing)}")
        vals = [shape[key] for key in SHAPE_KEYS]
        if any(not isinstance(v, int) or isinstance(v, bool) for v in vals):
            raise ValueError(f"conv shape of {layer!r}: integers expected, got {shape!r}")
        n, c, h, w, k, stride, ks, pad = vals
        if min(n, c, h, w, k, stride, ks) < 1 or pad < 0 or h + 2 * pad < ks or w + 2 * pad < ks:
            raise ValueError(f"conv shape of {layer!r} is not a valid conv: {shape!r}")
        return n, c, h, w, k, stride, ks, pad
    rows = [r for r in CONV_LAYERS if r[0] == layer]
    if not rows:
        raise ValueError(f"unknown conv layer {layer!r}")
    _, c, h, w, k, stride, ks, pad = rows[0]
    return args.batch_size, c, h, w, k, stride, ks, pad


def make_conv(layer, pass_name, args, cl, shape=None):
    """The conv pass `pass_name` (fprop: F.conv2d, dgrad: torch.nn.grad.conv2d_input, wgrad:
    torch.nn.grad.conv2d_weight) of a layer (conv_shape) as a function of the call index (inputs
    rotate over 3 seeded sets), warmed up; and the pass's multiply-adds and batch."""
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n, c, h, w, k, stride, ks, pad = conv_shape(layer, args, shape)
    p, q = (h + 2 * pad - ks) // stride + 1, (w + 2 * pad - ks) // stride + 1
    fmt = torch.channels_last if cl else torch.contiguous_format
    g = torch.Generator().manual_seed(args.seed)
    sets = []
    for _ in range(3):
        x = torch.randn(n, c, h, w, generator=g).to(dev, memory_format=fmt)
        wt = torch.randn(k, c, ks, ks, generator=g).to(dev, memory_format=fmt)
        dy = torch.randn(n, k, p, q, generator=g).to(dev, memory_format=fmt)
        sets.append((x, wt, dy))
    passes = {
        "fprop": lambda x, wt, dy: F.conv2d(x, wt, None, stride, pad),
        "dgrad": lambda x, wt, dy: torch.nn.grad.conv2d_input(x.shape, wt, dy, stride, pad),
        "wgrad": lambda x, wt, dy: torch.nn.grad.conv2d_weight(x, wt.shape, dy, stride, pad),
    }
    if pass_name not in passes:
        raise ValueError(f"unknown conv pass {pass_name!r}")
    fn = passes[pass_name]

    def run(i):
        with torch.no_grad():
            fn(*sets[i % 3])
            sync()

    for i in range(args.warmup):
        run(i)
    return run, n * p * q * k * ks * ks * c, n


def timed(run, seconds, at_least=5):
    """Times (s) of calls run(0), run(1), ... until `seconds` have passed (at least `at_least`)."""
    times = []
    t_end = time.perf_counter() + seconds
    i = 0
    while i < at_least or time.perf_counter() < t_end:
        t0 = clock()
        run(i)
        times.append(clock() - t0)
        i += 1
    return times


def conv_row(layer, pass_name, args, cl, times, macs, batch):
    dev = torch.device(args.device)
    return {
        "peer": "pytorch-" + dev.type, "torch": torch.__version__, "layer": layer,
        "pass": pass_name, "channels_last": cl, "batch": batch,
        "threads": torch.get_num_threads(), "ms": statistics.median(times) * 1e3, "macs": macs,
    }


def bench_convs(args):
    """Median time of each conv pass on ResNet-20's shapes. One JSON line per layer, pass and
    layout."""
    layouts = [False, True] if args.both_layouts else [args.channels_last]
    for layer in (r[0] for r in CONV_LAYERS):
        for cl in layouts:
            for pname in ("fprop", "dgrad", "wgrad"):
                run, macs, n = make_conv(layer, pname, args, cl)
                times = timed(run, args.seconds or 1.0)
                print(json.dumps(conv_row(layer, pname, args, cl, times, macs, n)), flush=True)


def serve(args):
    """Timing on request, so a caller can interleave these measurements with its own (paired
    rounds on a shared machine, where the speed drifts over seconds). Reads one JSON request per
    stdin line and answers one JSON line each:
      {"model": "resnet20", "channels_last": true, "seconds": 0.5}   training steps
      (optional "batch": 16, "input": "3x32x32": that step's batch and CxHxW input)
      {"layer": "stage1 16->16 28x28", "pass": "fprop", "channels_last": false, "seconds": 0.5}
      (optional "shape": {"n": 8, "c": 64, "h": 56, "w": 56, "k": 64, "stride": 1, "r": 3,
      "pad": 1}: any layer, named by the caller; without it, a layer of CONV_LAYERS)
    The answer is the row --json prints plus "times_ms", every call's time; a bad request gets
    {"error": message}. Models and conv inputs are built once per key. EOF ends the process."""
    cache = {}
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cl = bool(req.get("channels_last", False))
            seconds = float(req.get("seconds", 0.5))
            if "model" in req:
                # a request may name its own batch and input ("CxHxW"), else the process's
                margs = argparse.Namespace(**vars(args))
                margs.batch_size = int(req.get("batch", args.batch_size))
                if "input" in req:
                    margs.input = parse_input(req["input"])
                key = ("model", req["model"], cl, margs.batch_size, margs.input)
                if key not in cache:
                    cache[key] = make_step(req["model"], margs, cl)
                step, _ = cache[key]
                t0 = time.perf_counter()
                times = timed(step, seconds, at_least=3)
                row = step_row(req["model"], margs, cl, times, time.perf_counter() - t0)
            else:
                shape = req.get("shape")
                key = ("conv", req["layer"], req["pass"], cl, conv_shape(req["layer"], args, shape))
                if key not in cache:
                    cache[key] = make_conv(req["layer"], req["pass"], args, cl, shape)
                run, macs, n = cache[key]
                times = timed(run, seconds)
                row = conv_row(req["layer"], req["pass"], args, cl, times, macs, n)
            row["times_ms"] = [t * 1e3 for t in times]
        except Exception as e:  # answered, so the caller can report the reason and go on
            row = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(row), flush=True)


def steady_allocator():
    """Puts glibc's malloc where a training process has it after its first step. It starts by
    serving every block over 128 KB with a fresh mmap, page faults and all, and raises that
    threshold (to at most 32 MB) only once such a block is freed; a training step frees dozens, a
    lone conv pass none. Timed from a fresh process, PyTorch's stage-1 dgrad (a 3.2 MB output per
    call) ran 3.3-3.7 ms a call for as long as it was timed, and 1.15 ms after one ResNet-20 step
    had run in the same process: an earlier report read our fp32 dgrads 2.2-3.0x PyTorch's from
    that state. Setting the thresholds that glibc converges to (mmap 32 MB, trim 64 MB) measures
    every pass in the steady state. No-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):
        pass


def main():
    p = argparse.ArgumentParser(description="PyTorch CPU training-throughput peer benchmark")
    p.add_argument("--model", choices=[*MODELS, "all"], default="all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warmup", type=int, default=5, help="warmup steps (default 5)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=None,
                   help="measured steps (default 30 for lenet5, 10 for resnet20)")
    g.add_argument("--seconds", type=float, default=None,
                   help="time budget per model for measured steps (at least 1 step)")
    p.add_argument("--input", type=parse_input, default=(1, 28, 28),
                   help="CxHxW input shape (default 1x28x28; e.g. 3x32x32 for CIFAR)")
    p.add_argument("--channels-last", action="store_true",
                   help="use torch.channels_last (NHWC) memory format")
    p.add_argument("--both-layouts", action="store_true",
                   help="run each model in both NCHW and channels_last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-time", action="store_true",
                   help="time each step / pass by process CPU time (use with --threads 1)")
    p.add_argument("--convs", action="store_true",
                   help="time ResNet-20's 3x3 conv passes instead of training steps (JSON lines)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda (a GPU peer; exits 4 when torch has no CUDA device)")
    p.add_argument("--json", action="store_true", help="one JSON line per model/layout")
    p.add_argument("--serve", action="store_true",
                   help="answer timing requests read from stdin (JSON lines; see serve())")
    args = p.parse_args()

    torch.set_num_threads(max(1, args.threads))
    if args.device == "cpu":
        steady_allocator()
    global CPU_TIME
    CPU_TIME = args.cpu_time
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.stderr.write("torch_cpu.py: torch has no CUDA device here (torch.cuda.is_available() "
                         "is False)\n")
        sys.exit(4)
    if args.serve:
        serve(args)
        return
    if args.convs:
        bench_convs(args)
        return
    models = ["lenet5", "resnet20"] if args.model == "all" else [args.model]
    layouts = [False, True] if args.both_layouts else [args.channels_last]

    results = []
    for m in models:
        for cl in layouts:
            r = bench_one(m, args, cl)
            results.append(r)
            if args.json:
                print(json.dumps(r), flush=True)

    if not args.json:
        print(f"pytorch-cpu torch {torch.__version__}, threads {torch.get_num_threads()}, "
              f"batch {args.batch_size}, input {results[0]['input']}")
        hdr = f"{'model':<10} {'layout':<8} {'steps':>5} {'ms/step(med)':>13} {'img/s(med)':>11} {'img/s(total)':>13}"
        print(hdr)
        print("-" * len(hdr))
        for r in results:
            print(f"{r['model']:<10} {'NHWC' if r['channels_last'] else 'NCHW':<8} {r['steps']:>5} "
                  f"{r['ms_per_step']:>13.2f} {r['images_per_s']:>11.1f} {r['images_per_s_total']:>13.1f}")


if __name__ == "__main__":
    main()
