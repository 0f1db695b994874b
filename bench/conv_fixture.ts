/**
 * ResNet-20's 3x3 conv layer shapes and seeded INT8 operands for them, validated before any
 * timing: the INT8 fprop, dgrad and wgrad must equal the fp32 kernels run on the dequantized
 * operands (to float rounding).
 *
 * @module
 */
import type { Backend, ConvShape } from "../src/backend/backend.ts";
import { ScaleLayout } from "../src/backend/backend.ts";
import { Rng } from "../src/data/rng.ts";
import { Tensor } from "../src/tensor.ts";

/**
 * The INT8 conv layer shapes of the benchmarked models on 28x28 inputs (Fashion-MNIST):
 * ResNet-20's 3x3 pad-1 convs (the three stages' repeated layers and the two stride-2 layers that
 * open stages 2 and 3) and LeNet-5's conv2 (5x5, no padding, 6 input channels: its one INT8
 * conv; conv1 stays fp32 as every model's first layer).
 */
export function convLayers(batch: number) {
  return [
    { name: "stage1 16->16 28x28", x: [batch, 28, 28, 16], k: 16, stride: 1, r: 3, pad: 1 },
    { name: "stage2 32->32 14x14", x: [batch, 14, 14, 32], k: 32, stride: 1, r: 3, pad: 1 },
    { name: "stage3 64->64 7x7", x: [batch, 7, 7, 64], k: 64, stride: 1, r: 3, pad: 1 },
    { name: "stage2 16->32 s2 28x28", x: [batch, 28, 28, 16], k: 32, stride: 2, r: 3, pad: 1 },
    { name: "stage3 32->64 s2 14x14", x: [batch, 14, 14, 32], k: 64, stride: 2, r: 3, pad: 1 },
    { name: "lenet5 conv2 6->16 5x5 14x14", x: [batch, 14, 14, 6], k: 16, stride: 1, r: 5, pad: 0 },
  ] as const;
}

/** One conv layer of a benchmark set: NHWC input, K filters of r x r, stride, padding. */
export interface ConvLayer {
  name: string;
  x: readonly number[];
  k: number;
  stride: number;
  r: number;
  pad: number;
}

/**
 * The wide layers of the zoo's ImageNet models (ResNet-18/34 stages, VGG-style 3x3 stacks, the
 * 1x1 stride-2 shortcut), batch `batch`: dW is wide next to the reduction, the weights are
 * MBs, and the passes that are fixed costs per layer (weight transposes and packing) show.
 */
export function zooConvLayers(batch = 8): ConvLayer[] {
  return [
    { name: `64->64 56x56 b${batch}`, x: [batch, 56, 56, 64], k: 64, stride: 1, r: 3, pad: 1 },
    { name: `128->128 28x28 b${batch}`, x: [batch, 28, 28, 128], k: 128, stride: 1, r: 3, pad: 1 },
    { name: `256->256 14x14 b${batch}`, x: [batch, 14, 14, 256], k: 256, stride: 1, r: 3, pad: 1 },
    { name: `512->512 7x7 b${batch}`, x: [batch, 7, 7, 512], k: 512, stride: 1, r: 3, pad: 1 },
    {
      name: `128->256 s2 28x28 b${batch}`,
      x: [batch, 28, 28, 128],
      k: 256,
      stride: 2,
      r: 3,
      pad: 1,
    },
    {
      name: `256->512 1x1 s2 14x14 b${batch}`,
      x: [batch, 14, 14, 256],
      k: 512,
      stride: 2,
      r: 1,
      pad: 0,
    },
  ];
}

/**
 * MobileNetV2's depthwise 3x3 layers (224 x 224 input, the expanded channels) as [channels,
 * input size, stride]: the GPU benchmarks' depthwise set (bench/gpu/conv_int8_bench.ts,
 * bench/webgpu_bench.ts; bench/peers/torch_gpu.py lists the same).
 */
export const MOBILENET_V2_DEPTHWISE = [
  [32, 112, 1],
  [96, 112, 2],
  [144, 56, 1],
  [144, 56, 2],
  [192, 28, 1],
  [384, 14, 1],
  [576, 14, 2],
  [960, 7, 1],
] as const;

/** A depthwise layer's name in the benchmarks ("dw3x3/2 96 112"). */
export const depthwiseName = (c: number, hw: number, stride: number) =>
  `dw3x3${stride === 2 ? "/2" : ""} ${c} ${hw}`;

/** The layer sets `deno task report --layers` takes. */
export const LAYER_SETS = {
  resnet20: (batch: number): readonly ConvLayer[] => convLayers(batch),
  zoo: (): readonly ConvLayer[] => zooConvLayers(),
} as const;

/** INT8 operands, scales and outputs of one conv shape, and the fp32 operands they stand for. */
export interface Int8ConvFixture {
  /** x, w and dy dequantized (the fp32 kernels' inputs in the benchmarks). */
  xf: Tensor;
  wf: Tensor;
  dyf: Tensor;
  /** fp32 outputs. */
  yf: Tensor;
  dxf: Tensor;
  dwf: Tensor;
  xq: Tensor;
  wq: Tensor;
  dyq: Tensor;
  sx: Tensor;
  sw: Tensor;
  sdy: Tensor;
  sdyC: Tensor;
  y: Tensor;
  dx: Tensor;
  dw: Tensor;
}

function randomI8(rng: Rng, n: number): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(255) - 127;
  return a;
}

function maxRelError(a: Float32Array, b: Float32Array): number {
  let err = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / Math.max(scale, 1e-30);
}

/**
 * Builds the operands of `s` (seeded by `seed`) and checks the three INT8 kernels against the
 * fp32 ones run on the dequantized operands.
 */
export function int8ConvFixture(backend: Backend, s: ConvShape, seed = 11): Int8ConvFixture {
  const rng = new Rng(seed);
  const xShape = [s.n, s.h, s.w, s.c], wShape = [s.k, s.r, s.s, s.c / s.groups];
  const yShape = [s.n, s.p, s.q, s.k];
  const xa = randomI8(rng, xShape.reduce((a, b) => a * b)),
    wa = randomI8(rng, wShape.reduce((a, b) => a * b)),
    dya = randomI8(rng, yShape.reduce((a, b) => a * b));
  const sdyC = Float32Array.from({ length: s.k }, (_, j) => 1e-3 * (1 + j / s.k));
  const f: Omit<Int8ConvFixture, "xf" | "wf" | "dyf" | "yf" | "dxf" | "dwf"> = {
    xq: Tensor.from(backend, xa, xShape, "i8"),
    wq: Tensor.from(backend, wa, wShape, "i8"),
    dyq: Tensor.from(backend, dya, yShape, "i8"),
    sx: Tensor.from(backend, Float32Array.of(0.01), [1], "f32"),
    sw: Tensor.from(backend, Float32Array.of(0.002), [1], "f32"),
    sdy: Tensor.from(backend, Float32Array.of(0.001), [1], "f32"),
    sdyC: Tensor.from(backend, sdyC, [s.k], "f32"),
    y: Tensor.empty(backend, yShape, "f32"),
    dx: Tensor.empty(backend, xShape, "f32"),
    dw: Tensor.empty(backend, wShape, "f32"),
  };
  // Validate before timing: fp32 kernels on the dequantized operands.
  const deq = (q: Int8Array, shape: number[], scale: (i: number) => number) =>
    Tensor.from(backend, Float32Array.from(q, (v, i) => v * scale(i)), shape, "f32");
  const xf = deq(xa, xShape, () => 0.01), wf = deq(wa, wShape, () => 0.002);
  const dyT = deq(dya, yShape, () => 0.001), dyC = deq(dya, yShape, (i) => sdyC[i % s.k]!);
  const ref = {
    y: Tensor.empty(backend, yShape),
    dx: Tensor.empty(backend, xShape),
    dw: Tensor.empty(backend, wShape),
  };
  backend.conv2d(ref.y, xf, wf, null, s);
  backend.conv2dDgrad(ref.dx, dyT, wf, s);
  backend.conv2dWgrad(ref.dw, xf, dyC, s);
  backend.conv2dI8(f.y, f.xq, f.wq, null, f.sx, f.sw, ScaleLayout.tensor, s);
  backend.conv2dDgradI8(f.dx, f.dyq, f.wq, f.sdy, f.sw, s);
  backend.conv2dWgradI8(f.dw, f.xq, f.dyq, f.sx, f.sdyC, ScaleLayout.inner, s);
  for (const k of ["y", "dx", "dw"] as const) {
    const e = maxRelError(f[k].toFloat32(), ref[k].toFloat32());
    if (!(e < 1e-4)) throw new Error(`INT8 conv ${k} differs from fp32 by ${e} (relative)`);
  }
  dyC.dispose();
  return { ...f, xf, wf, dyf: dyT, yf: ref.y, dxf: ref.dx, dwf: ref.dw };
}
