#!/usr/bin/env python3
"""PyTorch training-step peer of bench/gpu/step_bench.ts: ResNet-20 (CIFAR, 3x32x32) and ResNet-50
(torchvision's v1.5 layout, 3x224x224) at batch 128, 10 classes, one full step (forward,
cross-entropy, backward, SGD momentum 0.9 and weight decay 5e-4) on synthetic seeded batches,
channels_last, in FP32 (TF32 off), TF32 and BF16 autocast.

Timing: CUDA events around `--reps` steps, median of `--trials`, after `--warmup` steps (on the
cpu, for a dry run, the wall clock). Prints one JSON object on stdout:
{"device", "torch", "rows": [{"model", "mode", "batch", "input", "ms", "images_per_s"}]}, or
{"skipped": reason} (exit 0) when torch or the requested CUDA device is missing.

    python3 bench/peers/torch_gpu_step.py [--device cuda|cpu] [--quick] [--models resnet20,resnet50]

The ResNet-50 is defined here (the same layers, names and parameter count as torchvision's
resnet50, 23,528,522 parameters at 10 classes) so the peer needs no torchvision.
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - environment dependent
    print(json.dumps({"skipped": f"torch not importable: {e}"}))
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_cpu import ResNet20  # noqa: E402  (the same ResNet-20 as the cpu peer)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for i, (width, n) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
            for j in range(n):
                blocks.append(Bottleneck(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = 4 * width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layers(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", default="resnet20,resnet50")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny inputs and batches: a dry run")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch sees no CUDA device"}))
        return 0
    if args.quick:
        args.warmup, args.reps, args.trials = 1, 1, 2
    torch.backends.cudnn.benchmark = True
    sizes = {"resnet20": (32, 8 if args.quick else args.batch),
             "resnet50": (32 if args.quick else 224, 2 if args.quick else args.batch)}
    modes = [("fp32", False, None), ("tf32", True, None), ("bf16-autocast", False, torch.bfloat16)]
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        size, batch = sizes[name]
        for mode, tf32, amp in modes:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.manual_seed(0)
            model = (ResNet20(3) if name == "resnet20" else ResNet50()).to(dev)
            model = model.to(memory_format=torch.channels_last).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            g = torch.Generator().manual_seed(1)
            data = [(torch.randn(batch, 3, size, size, generator=g).to(dev).contiguous(
                memory_format=torch.channels_last),
                torch.randint(0, 10, (batch,), generator=g).to(dev)) for _ in range(3)]
            step_no = [0]

            def step():
                x, y = data[step_no[0] % 3]
                step_no[0] += 1
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                return loss

            for _ in range(args.warmup):
                step()
            times = []
            for _ in range(args.trials):
                if cuda:
                    torch.cuda.synchronize()
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    for _ in range(args.reps):
                        loss = step()
                    b.record()
                    torch.cuda.synchronize()
                    times.append(a.elapsed_time(b) / args.reps)
                else:
                    t0 = time.perf_counter()
                    for _ in range(args.reps):
                        loss = step()
                    times.append((time.perf_counter() - t0) * 1000 / args.reps)
            ms = statistics.median(times)
            rows.append(dict(model=name, mode=mode, batch=batch, input=f"3x{size}x{size}", ms=ms,
                             images_per_s=batch * 1000 / ms, loss=float(loss)))
            print(f"{name} {mode}: {ms:.2f} ms/step, {batch * 1000 / ms:.0f} img/s",
                  file=sys.stderr)
            del model, opt, data
            if cuda:
                torch.cuda.empty_cache()
    print(json.dumps({"device": torch.cuda.get_device_name(dev) if cuda else "cpu",
                      "torch": torch.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
