#!/usr/bin/env python3
"""PyTorch on the GPU, the peer of bench/gpu/conv_int8_bench.ts: the same ResNet-50 layer shapes
and MobileNetV2 depthwise layers at batch 128, convolution forward + backward (input and weight gradients) with cuDNN in FP32
(TF32 off), TF32, FP16 and BF16, channels_last. Prints one JSON object on stdout:
{"device": ..., "torch": ..., "rows": [{"layer", "dtype", "ms_fwd", "ms_fwd_bwd", "tflops_fwd"}]}.
Timing: CUDA events, median of `--trials` runs of `--reps` iterations after a warm-up.
Exits 0 with {"skipped": reason} when torch or a GPU is missing.
"""
import argparse
import json
import statistics
import sys


def layers(n):
    out = [("stem 7x7/2 3->64 224", dict(n=n, h=224, c=3, k=64, r=7, stride=2, pad=3))]
    for c, hw in [(64, 56), (128, 28), (256, 14), (512, 7)]:
        out.append((f"3x3 {c}->{c} {hw}", dict(n=n, h=hw, c=c, k=c, r=3, stride=1, pad=1)))
        out.append((f"1x1 {4 * c}->{c} {hw}", dict(n=n, h=hw, c=4 * c, k=c, r=1, stride=1, pad=0)))
        out.append((f"1x1 {c}->{4 * c} {hw}", dict(n=n, h=hw, c=c, k=4 * c, r=1, stride=1, pad=0)))
    # the first block of stages 2-4 (v1.5): its 3x3 conv at stride 2, the 1x1 stride-2 projection
    for c, hw in [(128, 56), (256, 28), (512, 14)]:
        out.append((f"3x3/2 {c}->{c} {hw}", dict(n=n, h=hw, c=c, k=c, r=3, stride=2, pad=1)))
        out.append((f"1x1/2 {2 * c}->{4 * c} {hw}",
                    dict(n=n, h=hw, c=2 * c, k=4 * c, r=1, stride=2, pad=0)))
    # MobileNetV2's depthwise 3x3 layers (224 x 224 input, expanded channels)
    for c, hw, st in [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1),
                      (384, 14, 1), (576, 14, 2), (960, 7, 1)]:
        out.append((f"dw3x3{'/2' if st == 2 else ''} {c} {hw}",
                    dict(n=n, h=hw, c=c, k=c, r=3, stride=st, pad=1, groups=c)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"skipped": f"torch not importable: {e}"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch sees no CUDA device"}))
        return 0
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    rows = []

    def timed(fn):
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(args.trials):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(args.reps):
                fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b) / args.reps)
        return statistics.median(ts)

    for name, L in layers(args.batch):
        for label, dtype, tf32 in [("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                   ("fp16", torch.float16, False), ("bf16", torch.bfloat16, False)]:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            x = torch.randn(L["n"], L["c"], L["h"], L["h"], device=dev, dtype=dtype)
            x = x.to(memory_format=torch.channels_last).requires_grad_(True)
            groups = L.get("groups", 1)
            conv = torch.nn.Conv2d(L["c"], L["k"], L["r"], stride=L["stride"], padding=L["pad"],
                                   groups=groups, bias=False).to(device=dev, dtype=dtype,
                                                  memory_format=torch.channels_last)
            with torch.no_grad():
                y0 = conv(x)
            gy = torch.randn_like(y0)

            def fwd():
                with torch.no_grad():
                    conv(x)

            def fwd_bwd():
                y = conv(x)
                y.backward(gy)

            ms_f = timed(fwd)
            ms_fb = timed(fwd_bwd)
            p = y0.shape[2]
            flops = 2 * L["n"] * p * p * L["k"] * (L["c"] // groups) * L["r"] * L["r"]
            rows.append(dict(layer=name, dtype=label, ms_fwd=ms_f, ms_fwd_bwd=ms_fb,
                             tflops_fwd=flops / (ms_f * 1e-3) / 1e12))
            print(f"{name:24s} {label}: fwd {ms_f:.3f} ms, fwd+bwd {ms_fb:.3f} ms", file=sys.stderr)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "batch": args.batch, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
