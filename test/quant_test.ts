/**
 * INT8 kernels and quantizers on the cpu backend: quantization exactness and error bounds, the
 * integer GEMMs against float GEMMs of the dequantized operands (every int8 kernel variant the
 * CPU has), per-channel scales on the right dimension, overflow-safe wgrad, channel statistics
 * and the MCS classifier, the EMA, knob validation, and INT8 training end to end.
 */
import assert from "node:assert/strict";
import { INT8_KERNELS, ScaleLayout } from "../src/backend/backend.ts";
import { Rng } from "../src/data/rng.ts";
import { convShape } from "../src/ops/conv.ts";
import { PRESETS, quantConfig } from "../src/quant/config.ts";
import { Int8Gemm } from "../src/quant/int8_gemm.ts";
import { ModelQuantizer } from "../src/quant/quantizer.ts";
import { createModel } from "../src/models/registry.ts";
import {
  classifyChannel,
  fitInvertedT,
  gaussian,
  laplaceFromSigma,
  optimalClip,
} from "../src/quant/solve.ts";
import { Tape } from "../src/autograd/tape.ts";
import { runChildTests } from "./helpers/child_tests.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, cpu } from "./helpers/check_op.ts";
import { convDgradRef, convRef, convWgradRef } from "./helpers/reference.ts";

const backend = cpu();

function i8(data: Int8Array, shape: number[]): Tensor {
  return Tensor.from(backend, data, shape, "i8");
}
function f32(data: Float32Array | number[], shape: number[]): Tensor {
  return Tensor.from(backend, Float32Array.from(data), shape, "f32");
}

/** int8 values in [-127, 127] from the rng. */
function randomI8(rng: Rng, n: number): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(255) - 127;
  return a;
}

// avx-vnni runs here emulated (AVX2 in place of its one vpdpbusd) where the CPU lacks AVX-VNNI, so
// its +128 offset, packing and epilogue are checked on every AVX2 machine; amx likewise (its chunk
// walk with the AVX2 vpdpbusd emulation in place of the tiles) where the CPU or OS has no AMX.
Deno.env.set("D8_CPU_INT8_EMULATE_AVXVNNI", "1");
Deno.env.set("D8_CPU_INT8_EMULATE_AMX", "1");

/** The variants this CPU can run (others answer "unsupported"). */
function variants(): string[] {
  const ok: string[] = [];
  for (const v of INT8_KERNELS.slice(1)) {
    try {
      backend.setInt8Kernel(v);
      ok.push(v);
    } catch { /* not on this CPU */ }
  }
  backend.setInt8Kernel("auto");
  return ok;
}
const VARIANTS = variants();
console.log(`int8 kernels on this CPU: ${VARIANTS.join(", ")} (auto: ${backend.int8KernelName()})`);

Deno.test("quantizeI8() maps grid values to their exact levels and keeps nearest error within half a step", () => {
  const s = 2.54, n = 1000;
  const rng = new Rng(1);
  const grid = Float32Array.from({ length: 255 }, (_, i) => ((i - 127) * s) / 127);
  const x = new Float32Array(n).map(() => (2 * rng.next() - 1) * 3); // beyond the clip too
  for (const [data, exact] of [[grid, true], [x, false]] as const) {
    using xt = f32(data, [data.length]);
    using clip = f32([s], [1]);
    using q = Tensor.empty(backend, [data.length], "i8");
    using back = Tensor.empty(backend, [data.length], "f32");
    backend.quantizeI8(q, xt, data.length, 1, clip, ScaleLayout.tensor, false, 0);
    backend.dequantizeI8(back, q, data.length, 1, clip, ScaleLayout.tensor);
    const qs = q.toArray() as Int8Array, d = back.toFloat32();
    for (let i = 0; i < data.length; i++) {
      assert.ok(qs[i]! >= -127 && qs[i]! <= 127, `q=${qs[i]} out of range`);
      const clipped = Math.max(-s, Math.min(s, data[i]!));
      if (exact) {
        assert.equal(qs[i], i - 127, `grid value ${data[i]} got level ${qs[i]}`);
        assert.ok(
          Math.abs(d[i]! - data[i]!) <= 2e-7 * s,
          `grid value ${data[i]} came back ${d[i]}`,
        );
      } else assert.ok(Math.abs(d[i]! - clipped) <= s / 254 + 1e-6, `error at ${data[i]}: ${d[i]}`);
    }
  }
});

Deno.test("quantizeI8() stochastic rounding is unbiased and deterministic for a seed", () => {
  const n = 20000, v = 0.3;
  using xt = f32(new Float32Array(n).fill(v), [n]);
  using clip = f32([1], [1]);
  using q1 = Tensor.empty(backend, [n], "i8");
  using q2 = Tensor.empty(backend, [n], "i8");
  backend.quantizeI8(q1, xt, n, 1, clip, ScaleLayout.tensor, true, 42);
  backend.quantizeI8(q2, xt, n, 1, clip, ScaleLayout.tensor, true, 42);
  const a = q1.toArray() as Int8Array;
  assert.deepEqual(a, q2.toArray());
  const mean = a.reduce((s, x) => s + x, 0) / n / 127;
  assert.ok(Math.abs(mean - v) < 2e-3, `mean ${mean} vs ${v}`);
  assert.ok(new Set(a).size === 2, "two neighbouring levels");
});

for (const stochastic of [false, true]) {
  Deno.test(`quantizeI8Dual() writes the per-tensor and per-channel versions of one dY${stochastic ? " (stochastic)" : ""}`, () => {
    // 300 elements: whole 16-lane steps and a tail; NaN and infinities among them
    const rows = 50, c = 6, rng = new Rng(2);
    const x = new Float32Array(rows * c).map((_, i) => (2 * rng.next() - 1) * (1 + (i % c)));
    x[7] = NaN, x[100] = Infinity, x[201] = -Infinity, x[299] = NaN;
    const clipsC = Float32Array.from({ length: c }, (_, j) => 0.5 + j);
    using xt = f32(x, [rows, c]);
    using ct = f32([4], [1]);
    using cc = f32(clipsC, [c]);
    using qt = Tensor.empty(backend, [rows, c], "i8");
    using qc = Tensor.empty(backend, [rows, c], "i8");
    using rt = Tensor.empty(backend, [rows, c], "i8");
    using rc = Tensor.empty(backend, [rows, c], "i8");
    backend.quantizeI8Dual(qt, qc, xt, rows, c, ct, cc, stochastic, 12345);
    backend.quantizeI8(rt, xt, rows * c, 1, ct, ScaleLayout.tensor, stochastic, 12345);
    backend.quantizeI8(rc, xt, rows, c, cc, ScaleLayout.inner, stochastic, 12345);
    assert.deepEqual(qt.toArray(), rt.toArray());
    assert.deepEqual(qc.toArray(), rc.toArray());
    // Per-inner clips follow the channel: channel j saturates at 0.5 + j; NaN gives 0.
    const q = qc.toArray() as Int8Array;
    for (let i = 0; i < rows * c; i++) {
      const j = i % c;
      const want = Number.isNaN(x[i]!) ? 0 : Math.sign(x[i]!) *
        Math.round(127 * Math.min(Math.abs(x[i]!), clipsC[j]!) / clipsC[j]!);
      assert.ok(Math.abs(q[i]! - want) <= 1, `row ${Math.floor(i / c)} channel ${j}`);
    }
  });
}

for (const variant of VARIANTS) {
  Deno.test(`gemmI8() equals the int32 reference exactly on odd sizes (${variant})`, () => {
    backend.setInt8Kernel(variant as typeof INT8_KERNELS[number]);
    try {
      const rng = new Rng(3);
      for (const [m, n, k] of [[1, 1, 1], [7, 5, 3], [33, 17, 70], [65, 31, 129]]) {
        const a = randomI8(rng, m! * k!), b = randomI8(rng, n! * k!);
        using at = i8(a, [m!, k!]);
        using bt = i8(b, [n!, k!]);
        using ct = Tensor.empty(backend, [m!, n!], "i32");
        backend.gemmI8(ct, at, bt, m!, n!, k!);
        const c = ct.toArray() as Int32Array;
        for (let i = 0; i < m!; i++) {
          for (let j = 0; j < n!; j++) {
            let s = 0;
            for (let l = 0; l < k!; l++) s += a[i * k! + l]! * b[j * k! + l]!;
            assert.equal(c[i * n! + j], s, `c[${i}, ${j}] of ${m}x${n}x${k}`);
          }
        }
      }
    } finally {
      backend.setInt8Kernel("auto");
    }
  });
}

interface I8ConvCase {
  name: string;
  /** cpu threads for the case (default: the backend's); more threads than images makes the
   * ungrouped forward (and the dgrads run as forwards) take the im2col form instead of the
   * implicit GEMM (kernels/cpu/int8_conv.cpp). */
  threads?: number;
  x: [number, number, number, number];
  k: number;
  kernel: [number, number];
  opts: {
    stride?: number | [number, number];
    padding?: number | [number, number];
    groups?: number;
  };
}
const i8Cases: I8ConvCase[] = [
  { name: "3x3 pad 1", x: [2, 6, 5, 16], k: 8, kernel: [3, 3], opts: { padding: 1 } },
  { name: "stride 2, c=3", x: [1, 7, 7, 3], k: 5, kernel: [3, 3], opts: { stride: 2, padding: 1 } },
  { name: "non-square 1x3, c=1", x: [2, 4, 6, 1], k: 4, kernel: [1, 3], opts: { padding: [0, 1] } },
  { name: "groups 2", x: [2, 5, 5, 8], k: 6, kernel: [3, 3], opts: { padding: 1, groups: 2 } },
  { name: "1x1", x: [3, 4, 4, 20], k: 9, kernel: [1, 1], opts: {} },
  // MobileNetV2's depthwise convolutions: groups = channels, one input channel per group.
  {
    name: "depthwise 3x3, stride 2",
    x: [2, 7, 7, 12],
    k: 12,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1, groups: 12 },
  },
  {
    name: "depthwise x2 (k = 2c)",
    x: [1, 5, 5, 6],
    k: 12,
    kernel: [3, 3],
    opts: { padding: 1, groups: 6 },
  },
  // full 8- and 16-column vectors in every pass (the epilogues' unmasked stores), 24 = 16 + 8
  { name: "3x3 16->24", x: [2, 5, 6, 16], k: 24, kernel: [3, 3], opts: { padding: 1 } },
  { name: "3x3 32->16 stride 2", x: [1, 7, 7, 32], k: 16, kernel: [3, 3], opts: { stride: 2 } },
  // strided dgrad by parity classes (even and odd sizes, 1x1 and 3x3, one class without taps)
  {
    name: "3x3 16->24 s2 pad 1",
    x: [2, 8, 8, 16],
    k: 24,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
  },
  {
    name: "3x3 16->8 s2 pad 1 odd",
    x: [1, 7, 5, 16],
    k: 8,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
  },
  { name: "1x1 16->32 s2", x: [2, 6, 7, 16], k: 32, kernel: [1, 1], opts: { stride: 2 } },
  {
    name: "3x3 8->8 stride 3x2",
    x: [1, 9, 8, 8],
    k: 8,
    kernel: [3, 3],
    opts: { stride: [3, 2], padding: 1 },
  },
  // pointwise with a short reduction (M <= 1024: the column-split wgrad), a linear layer's
  // shape on two threads with a partial last panel, and a 1x1 conv
  {
    name: "linear 200->70 batch 300, 2 threads",
    x: [300, 1, 1, 200],
    k: 70,
    kernel: [1, 1],
    opts: {},
    threads: 2,
  },
  { name: "1x1 40->24", x: [2, 6, 7, 40], k: 24, kernel: [1, 1], opts: {} },
  // 5 x 6 = 30-byte window rows (LeNet-5's conv2), with and without padding
  { name: "5x5 6->16 valid", x: [2, 9, 9, 6], k: 16, kernel: [5, 5], opts: {} },
  { name: "5x5 6->8 pad 2", x: [1, 8, 7, 6], k: 8, kernel: [5, 5], opts: { padding: 2 } },
  // one image on two threads: the im2col forms (enough work for two threads: 1.2 M MACs)
  {
    name: "3x3 16->24 one image, 2 threads (im2col)",
    x: [1, 14, 15, 16],
    k: 24,
    kernel: [3, 3],
    opts: { padding: 1 },
    threads: 2,
  },
  {
    name: "3x3 16->32 s2 one image, 2 threads (scatter dgrad)",
    x: [1, 28, 30, 16],
    k: 32,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
    threads: 2,
  },
  {
    name: "5x5 6->16 one image, 2 threads (im2col)",
    x: [1, 30, 30, 6],
    k: 16,
    kernel: [5, 5],
    opts: {},
    threads: 2,
  },
  // stride 1 with K and C multiples of 16: the gather dgrad's 16 x 16 weight transposes
  { name: "3x3 48->32 pad 1", x: [2, 5, 7, 48], k: 32, kernel: [3, 3], opts: { padding: 1 } },
  // the image-quad wgrad with a batch that is not a multiple of 4 (the last quad has three images),
  // several reduction chunks per thread and two B panels
  {
    name: "3x3 16->32 30x30 batch 7, 2 threads (image-quad wgrad, chunks)",
    x: [7, 30, 30, 16],
    k: 32,
    kernel: [3, 3],
    opts: { padding: 1 },
    threads: 2,
  },
  // KD >= 512: the column-split wgrad when forced (D8_CPU_WGRAD=cols below), its panels starting
  // inside a tap at 48 channels, and a last panel cut short; unforced, the image-quad wgrad with
  // the threads splitting the filters (x small next to dW: two panels, the second of 8 columns)
  {
    name: "3x3 64->40 7x7 batch 3, 2 threads (column-split wgrad)",
    x: [3, 7, 7, 64],
    k: 40,
    kernel: [3, 3],
    opts: { padding: 1 },
    threads: 2,
  },
  // ResNet-20's stage-3 layer: the image-quad wgrad split by filters, whole 32-column panels
  // (the vector reduction of each thread's own columns)
  {
    name: "3x3 64->64 7x7 batch 8, 2 threads (image-quad wgrad split by filters)",
    x: [8, 7, 7, 64],
    k: 64,
    kernel: [3, 3],
    opts: { padding: 1 },
    threads: 2,
  },
  // over 1 MB of weights on a 4x4 map: the forward and the gather dgrad take the im2col form
  {
    name: "3x3 256->512 4x4 batch 2, 2 threads (wide weights)",
    x: [2, 4, 4, 256],
    k: 512,
    kernel: [3, 3],
    opts: { padding: 1 },
    threads: 2,
  },
  // ResNet-20's 16->32 stride-2 layer at batch 4: each thread prepares its own copy of the
  // weights (the forward and the dgrad by phase)
  {
    name: "3x3 16->32 s2 28x28 batch 4, 2 threads (weights prepared per thread)",
    x: [4, 28, 28, 16],
    k: 32,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
    threads: 2,
  },
  // prepared weights over 192 KiB (kOwnWeightsBytes in int8_conv.cpp): one copy shared by the
  // threads instead of one each (the forward, the stride-1 gather dgrad, the dgrad by phase)
  {
    name: "3x3 128->192 8x8 batch 2, 2 threads (shared prepared weights)",
    x: [2, 8, 8, 128],
    k: 192,
    kernel: [3, 3],
    opts: { padding: 1 },
    threads: 2,
  },
  {
    name: "3x3 128->192 s2 8x8 batch 2, 2 threads (shared prepared weights, by phase)",
    x: [2, 8, 8, 128],
    k: 192,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
    threads: 2,
  },
  // fully connected layers at a small batch with over 1 MiB of weights: the forward and the
  // pointwise dgrad stream B (packed a run of panels at a time, by rows / by columns), odd sizes
  // (k % 4 tails, partial panels), 5 and 28 rows
  {
    name: "fc 1037->1013 batch 5, 2 threads (weights streamed)",
    x: [5, 1, 1, 1037],
    k: 1013,
    kernel: [1, 1],
    opts: {},
    threads: 2,
  },
  // 16 MiB of dw: the short wgrad's non-temporal stores
  {
    name: "fc 4096->1024 batch 3, 2 threads (dw streamed out)",
    x: [3, 1, 1, 4096],
    k: 1024,
    kernel: [1, 1],
    opts: {},
    threads: 2,
  },
  {
    name: "1x1 1100->960 on 1x7 maps batch 4, 2 threads (weights streamed, 28 rows)",
    x: [4, 1, 7, 1100],
    k: 960,
    kernel: [1, 1],
    opts: {},
    threads: 2,
  },
  {
    name: "5x5 48->24 s2 pad 2, 2 threads (column-split wgrad, panels inside taps)",
    x: [2, 11, 9, 48],
    k: 24,
    kernel: [5, 5],
    opts: { stride: 2, padding: 2 },
    threads: 2,
  },
];

/**
 * A case's int8 operands, scales and double references: the same for every variant, so they are
 * computed once for the case's first variant and reused by the rest (the tests of a file run in
 * the order they are defined; the references were most of this file's time).
 */
function i8CaseData(cc: I8ConvCase) {
  const rng = new Rng(4);
  const g = cc.opts.groups ?? 1;
  const s = convShape("test", cc.x, cc.k, cc.kernel, cc.opts);
  const wShape = [cc.k, cc.kernel[0], cc.kernel[1], cc.x[3] / g];
  const nx = cc.x.reduce((a, b) => a * b, 1), nw = wShape.reduce((a, b) => a * b, 1);
  const ny = s.n * s.p * s.q * s.k;
  const xq = randomI8(rng, nx), wq = randomI8(rng, nw), dyq = randomI8(rng, ny);
  const sx = 0.013, sw = Float32Array.from({ length: cc.k }, (_, j) => 0.002 * (j + 1));
  const sdy = Float32Array.from({ length: cc.k }, (_, j) => 0.001 * (cc.k - j));
  const deq = (q: Int8Array, scale: (i: number) => number) =>
    Float64Array.from(q, (v, i) => v * scale(i));
  const inner = nw / cc.k;
  const xd = deq(xq, () => sx);
  const wdC = deq(wq, (i) => sw[Math.floor(i / inner)]!);
  const wdT = deq(wq, () => sw[0]!);
  const dydC = deq(dyq, (i) => sdy[i % cc.k]!);
  const dydT = deq(dyq, () => sdy[0]!);
  const bias = Float32Array.from({ length: cc.k }, (_, j) => ((j * 7) % 5) * 0.25 - 0.5);
  return {
    s,
    wShape,
    nx,
    xq,
    wq,
    dyq,
    sx,
    sw,
    sdy,
    bias,
    yRef: convRef(xd, wdC, Float64Array.from(bias), s),
    dxRef: convDgradRef(dydT, wdT, s),
    dwRef: convWgradRef(xd, dydC, s),
  };
}
let i8Cached: { cc: I8ConvCase; data: ReturnType<typeof i8CaseData> } | undefined;
function i8CaseCached(cc: I8ConvCase) {
  if (i8Cached?.cc !== cc) i8Cached = { cc, data: i8CaseData(cc) };
  return i8Cached.data;
}

for (const cc of i8Cases) {
  for (const variant of VARIANTS) {
    Deno.test(`int8 conv fprop/dgrad/wgrad equal float convs of the dequantized operands: ${cc.name} (${variant})`, () => {
      backend.setInt8Kernel(variant as typeof INT8_KERNELS[number]);
      if (cc.threads) backend.setThreads(cc.threads);
      const { s, wShape, nx, xq, wq, dyq, sx, sw, sdy, bias, yRef, dxRef, dwRef } = i8CaseCached(
        cc,
      );
      using x = i8(xq, [...cc.x]);
      using w = i8(wq, wShape);
      using dy = i8(dyq, [s.n, s.p, s.q, s.k]);
      using sxT = f32([sx], [1]);
      using swC = f32(sw, [cc.k]);
      using sdyC = f32(sdy, [cc.k]);
      using y = Tensor.empty(backend, [s.n, s.p, s.q, s.k], "f32");
      using dx = Tensor.empty(backend, [...cc.x], "f32");
      using dw = Tensor.empty(backend, wShape, "f32");
      const tol = { atol: 1e-5, rtol: 1e-5 };
      // fprop with per-output-channel weight scales (each output channel k gets sw[k]) and a bias
      using biasT = f32(bias, [cc.k]);
      backend.conv2dI8(y, x, w, biasT, sxT, swC, ScaleLayout.outer, s);
      assertClose("fprop", y.toFloat32(), yRef, y.shape, tol);
      // dgrad, per tensor.
      backend.conv2dDgradI8(dx, dy, w, sdyC, swC, s);
      assertClose("dgrad", dx.toFloat32(), dxRef, dx.shape, tol);
      // accumulate: dx += the gradient, on top of values already there
      const base = Float32Array.from({ length: nx }, (_, i) => ((i * 37) % 11) - 5);
      using dxAcc = f32(base, [...cc.x]);
      backend.conv2dDgradI8(dxAcc, dy, w, sdyC, swC, s, true);
      const accRef = dxRef.map((v, i) => v + base[i]!);
      assertClose("dgrad, accumulating", dxAcc.toFloat32(), accRef, dx.shape, tol);
      // wgrad with per-output-channel dY scales (GVQ): row k of dW gets sdy[k].
      backend.conv2dWgradI8(dw, x, dy, sxT, sdyC, ScaleLayout.inner, s);
      assertClose("wgrad", dw.toFloat32(), dwRef, dw.shape, tol);
      backend.setInt8Kernel("auto");
      if (cc.threads) backend.setThreads(0);
    });
  }
}

Deno.test("conv2dWgradI8() sums a reduction that overflows one int32 (200,000 x 127 x 127)", () => {
  const rows = 200_000; // 200000 * 16129 = 3.2e9 > 2^31 - 1
  const s = convShape("test", [rows, 1, 1, 1], 1, 1, {});
  using x = i8(new Int8Array(rows).fill(127), [rows, 1, 1, 1]);
  using dy = i8(new Int8Array(rows).fill(127), [rows, 1, 1, 1]);
  using one = f32([1], [1]);
  using dw = Tensor.empty(backend, [1, 1, 1, 1], "f32");
  backend.conv2dWgradI8(dw, x, dy, one, one, ScaleLayout.tensor, s);
  const got = dw.toFloat32()[0]!;
  assert.ok(
    Math.abs(got - rows * 16129) / (rows * 16129) < 1e-6,
    `got ${got}, want ${rows * 16129}`,
  );
});

Deno.test("conv2dWgradI8() 3x3 stride 1: per-thread sums past one int32 stay exact", () => {
  // 32 images of 128 x 128, every value 127: a thread's 16 images give 262,144 products of
  // 127 x 127 per tap (4.2e9 > 2^31 - 1), so the chunked wgrad must flush its int32 partials.
  const n = 32, h = 128;
  const s = convShape("test", [n, h, h, 1], 1, 3, { padding: 1 });
  using x = i8(new Int8Array(n * h * h).fill(127), [n, h, h, 1]);
  using dy = i8(new Int8Array(n * h * h).fill(127), [n, h, h, 1]);
  using one = f32([1], [1]);
  using dw = Tensor.empty(backend, [1, 3, 3, 1], "f32");
  backend.setThreads(2);
  try {
    backend.conv2dWgradI8(dw, x, dy, one, one, ScaleLayout.tensor, s);
  } finally {
    backend.setThreads(0);
  }
  const got = dw.toFloat32();
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      // pixels whose tap (r, c) lies inside the image: 128 or 127 per dimension
      const want = n * (r === 1 ? h : h - 1) * (c === 1 ? h : h - 1) * 16129;
      const g = got[r * 3 + c]!;
      assert.ok(Math.abs(g - want) / want < 1e-6, `tap (${r}, ${c}): got ${g}, want ${want}`);
    }
  }
});

for (const c of [16, 48, 7]) {
  Deno.test(`channelStats() matches an f64 reference on ${c} channels (blocks of rows, large means)`, async () => {
    // 1,300 rows: several of the kernel's row blocks and a short last one; channel j has mean
    // 1000 * (j % 3 - 1) (the shifted sums keep its spread) and spread 1 + j / 4.
    const rows = 1300, rng = new Rng(11 + c);
    const x = new Float32Array(rows * c);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < c; j++) x[i * c + j] = 1000 * (j % 3 - 1) + rng.normal(0, 1 + j / 4);
    }
    using xt = f32(x, [rows, c]);
    using out = Tensor.empty(backend, [4, c], "f32");
    backend.channelStats(out, xt, rows, c);
    const st = (await out.read()) as Float32Array;
    for (let j = 0; j < c; j++) {
      let sum = 0, mx = 0;
      for (let i = 0; i < rows; i++) {
        sum += x[i * c + j]!, mx = Math.max(mx, Math.abs(x[i * c + j]!));
      }
      const mean = sum / rows;
      let ss = 0;
      for (let i = 0; i < rows; i++) ss += (x[i * c + j]! - mean) ** 2;
      const sd = Math.sqrt(ss / rows);
      assert.equal(st[j], mx, `max of channel ${j}`);
      assertClose(`std of channel ${j}`, [st[c + j]!], [sd], [1], { atol: 0, rtol: 1e-5 });
      assertClose(`mean of channel ${j}`, [st[3 * c + j]!], [mean], [1], {
        atol: 1e-9,
        rtol: 1e-6,
      });
      // the share counts |x| > the std the kernel wrote (as a float)
      let n = 0;
      for (let i = 0; i < rows; i++) n += Math.abs(x[i * c + j]!) > st[c + j]! ? 1 : 0;
      assert.equal(st[2 * c + j], Math.fround(n / rows), `share of channel ${j}`);
    }
  });
}

Deno.test("channelStats() and the MCS classifier tell Gaussian from Laplace channels", () => {
  const rows = 40000, c = 4, rng = new Rng(5);
  const x = new Float32Array(rows * c);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < c; j++) {
      // channels 0, 2 Gaussian (std 1, 3); 1, 3 Laplace (std 1, 3): -b ln(U) with a random sign.
      const sd = j < 2 ? 1 : 3;
      x[i * c + j] = j % 2 === 0
        ? rng.normal(0, sd)
        : (rng.next() < 0.5 ? -1 : 1) * -Math.log(1 - rng.next()) * sd / Math.SQRT2;
    }
  }
  using xt = f32(x, [rows, c]);
  using out = Tensor.empty(backend, [4, c], "f32");
  backend.channelStats(out, xt, rows, c);
  const st = out.toFloat32();
  for (let j = 0; j < c; j++) {
    const sd = j < 2 ? 1 : 3, share = st[2 * c + j]!;
    assert.ok(Math.abs(st[c + j]! - sd) < 0.05 * sd, `std of channel ${j}: ${st[c + j]}`);
    assert.ok(Math.abs(st[3 * c + j]!) < 0.05 * sd, `mean of channel ${j}`);
    let mx = 0;
    for (let i = 0; i < rows; i++) mx = Math.max(mx, Math.abs(x[i * c + j]!));
    assert.equal(st[j], mx, `max of channel ${j}`);
    const want = j % 2 === 0 ? "bell" : "inverted-t";
    assert.equal(classifyChannel(share), want, `channel ${j}: share ${share}`);
  }
});

/** Runs layer's forward on x8 and backward on dy (both [rows, 1, 1, c]); returns nothing. */
function runLayer(layer: Int8Gemm, dy: Float32Array, rows: number, c: number): void {
  using tape = new Tape(backend, { grad: false });
  const s = convShape("t", [rows, 1, 1, c], c, 1, {});
  const x = tape.own(Tensor.full(backend, [rows, 1, 1, c], 0.5));
  const w = tape.own(Tensor.full(backend, [c, 1, 1, c], 0.1));
  const y = tape.empty([rows, 1, 1, c]);
  const saved = layer.forward(tape, y, x, w, null, s);
  const dyT = tape.own(f32(dy, [rows, 1, 1, c]));
  layer.backward(tape, saved, dyT, tape.empty([rows, 1, 1, c]), tape.empty([c, 1, 1, c]), s);
}

Deno.test("Int8Gemm follows the MCS EMA s_t = (1 - kA) s_(t-1) + A max_t for inverted-T channels", async () => {
  const cfg = quantConfig("daint8", { stochastic: false, k: 1, A: 0.8 });
  const layer = new Int8Gemm("conv", 1, cfg, 0);
  const rows = 4000, c = 2, rng = new Rng(6);
  let ema = NaN;
  for (let t = 0; t < 4; t++) {
    const scale = [1, 2, 0.5, 1.5][t]!;
    const x = new Float32Array(rows * c);
    let max1 = 0;
    for (let i = 0; i < rows; i++) {
      x[i * c] = rng.normal(0, scale); // bell
      const l = (rng.next() < 0.5 ? -1 : 1) * -Math.log(1 - rng.next()) * scale; // inverted-T
      x[i * c + 1] = l;
      max1 = Math.max(max1, Math.abs(l));
    }
    ema = t === 0 ? max1 : (1 - 0.8) * ema + 0.8 * max1;
    runLayer(layer, x, rows, c);
    const st = (await layer.readState())!;
    const last = (await layer.readStats())!;
    assert.equal(st.step, t + 1);
    assert.equal(st.bell[0], 1, `step ${t}: channel 0 is bell-shaped`);
    assert.equal(st.bell[1], 0, `step ${t}: channel 1 is inverted-T`);
    assert.ok(Math.abs(st.ema[1]! - ema) < 1e-5 * ema, `step ${t}: ema ${st.ema[1]} vs ${ema}`);
    assert.ok(last.clipMax <= last.gradMax + 1e-6);
    assert.ok(last.clipMin <= Math.min(st.ema[1]!, Math.fround(max1)), "inverted-T clip");
  }
  layer.dispose();
});

Deno.test("Int8Gemm mcs-solve clips each channel at the solver's optimum for its sigma and max", async () => {
  for (const sharpFamily of ["laplace", "inverted-t"] as const) {
    const cfg = quantConfig("daint8", {
      clip: "mcs-solve",
      alpha: 1,
      stochastic: false,
      sharpFamily,
    });
    const layer = new Int8Gemm("conv", 1, cfg, 0);
    const rows = 20000, c = 2, rng = new Rng(8);
    const x = new Float32Array(rows * c);
    for (let i = 0; i < rows; i++) {
      x[i * c] = rng.normal(0, 2); // bell
      x[i * c + 1] = (rng.next() < 0.5 ? -1 : 1) * -Math.log(1 - rng.next()) * 0.5; // sharp
    }
    using dy = f32(x, [rows, c]);
    using statsT = Tensor.empty(backend, [4, c], "f32");
    backend.channelStats(statsT, dy, rows, c);
    const st = statsT.toFloat32();
    runLayer(layer, x, rows, c);
    const last = (await layer.readStats())!;
    for (let j = 0; j < c; j++) {
      const sigma = st[c + j]!, max = st[j]!, ratio = max / sigma;
      const family = j === 0
        ? gaussian(1)
        : sharpFamily === "inverted-t"
        ? fitInvertedT(1, ratio)
        : laplaceFromSigma(1);
      const want = Math.min(max, optimalClip(family, { alpha: 1, max: ratio }).s * sigma);
      const got = j === 0 ? last.clipMax : last.clipMin;
      // the device interpolates a table on a 0.125 grid of max/sigma
      assert.ok(
        Math.abs(got - want) < 2e-3 * want,
        `${sharpFamily} channel ${j}: ${got} vs ${want}`,
      );
      assert.ok(got < max, `channel ${j} is clipped below its max ${max}`);
    }
    layer.dispose();
  }
});

Deno.test("quantConfig() presets differ as documented and bad knobs throw naming them", () => {
  assert.equal(PRESETS["int8-naive"]!.gvq, false);
  assert.equal(PRESETS.daint8!.gvq, true);
  assert.equal(PRESETS.daint8!.clip, "mcs");
  assert.equal(PRESETS.ui8!.clip, "dsgc");
  assert.equal(PRESETS.ui8!.lrScaling, true);
  assert.equal(quantConfig("daint8", "lambda=0.25,A=0.7").A, 0.7);
  assert.equal(quantConfig("daint8", { clip: "mcs-solve", alpha: 2 }).alpha, 2);
  for (
    const [over, pattern] of [
      ["lambda=1.5", /lambda=.*between 0 and 1/],
      ["A=-1", /A=/],
      ["statsPeriod=0", /statsPeriod/],
      ["clip=magic", /clip=.*expected one of max, mcs, mcs-solve, dsgc/],
      ["gvq=maybe", /gvq=.*true or false/],
      ["sharpFamily=cauchy", /sharpFamily=.*expected one of laplace, inverted-t/],
      ["speed=11", /Unknown quantization knob "speed"/],
      ["lambda", /expected name=value/],
      ["k=2,A=0.8", /k\*A must be at most 1/],
    ] as const
  ) {
    assert.throws(
      () => quantConfig("daint8", over),
      (e: Error) => e instanceof RangeError && pattern.test(e.message),
    );
  }
});

Deno.test("minInt8Channels keeps layers with few input channels per tap in FP32", () => {
  const lenet = createModel("lenet5", { backend, rng: new Rng(0) }, {
    inChannels: 1,
    inputSize: 28,
    classes: 10,
  });
  try {
    const all = new ModelQuantizer(lenet, quantConfig("daint8"), 0);
    assert.deepEqual(all.layers.map((l) => l.layer), ["conv2", "fc1", "fc2"]);
    all.dispose();
    // conv2 reduces over 6 channels per tap, fc1 over 400 features, fc2 over 120
    const some = new ModelQuantizer(lenet, quantConfig("daint8", "minInt8Channels=8"), 0);
    assert.deepEqual(some.layers.map((l) => l.layer), ["fc1", "fc2"]);
    assert.deepEqual(some.fp32Layers, ["conv1", "conv2", "fc3"]);
    some.dispose();
    const none = new ModelQuantizer(lenet, quantConfig("daint8", "minInt8Channels=121"), 0);
    assert.deepEqual(none.layers.map((l) => l.layer), ["fc1"]);
    none.dispose();
  } finally {
    lenet.dispose();
  }
});

// The INT8 wgrad has three forms (kernels/cpu/int8_conv.cpp): image quads (x read in place, the
// threads splitting the quads or the filters), or threads splitting dW's columns or the
// reduction's rows over an im2col^T, chosen per shape; D8_CPU_WGRAD (read once per process)
// forces one where the shape allows it. Run the wgrad cases and the int32-overflow case in a
// child process with each forced, so all stay tested.
const forcedWgrad = Deno.env.get("D8_CPU_WGRAD");
for (const form of ["rows", "cols", "quads", "quads-filters"]) {
  Deno.test({
    name: `int8 wgrad cases pass with D8_CPU_WGRAD=${form} (child process)`,
    ignore: forcedWgrad !== undefined, // the child itself
    fn: () =>
      runChildTests({ D8_CPU_WGRAD: form }, "/fprop\\/dgrad\\/wgrad|overflows one int32/", [
        new URL(import.meta.url).pathname,
      ], 40),
  });
}
