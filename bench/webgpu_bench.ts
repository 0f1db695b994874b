/**
 * The WebGPU backend on whatever adapter is present (`deno task bench:webgpu [batch]`), side by
 * side in one run:
 * - the conv kernels on ResNet-20's 3x3 layer shapes: fp32 vs INT8 (dot4I8Packed) for fprop,
 *   dgrad and wgrad, each INT8 result first checked against the cpu backend's;
 * - MobileNetV2's depthwise 3x3 layers (the direct depthwise kernels), fp32 vs INT8 alike (batch
 *   2 on a software adapter, where one ImageNet-sized layer takes tens of ms);
 * - the ResNet-20 training step (28x28x1 inputs) under fp32 and daint8.
 * Times include waiting for the device (one mapped read after the timed work). On a software
 * adapter (Mesa's lavapipe) the numbers only show that the path works: they say nothing about a
 * GPU. This is a script, not a `deno bench` file: a software adapter would make `deno task
 * bench` take minutes.
 *
 * @module
 */
import { type Backend, ScaleLayout } from "../src/backend/backend.ts";
import { getBackend } from "../src/backend/registry.ts";
import { WebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { Rng } from "../src/data/rng.ts";
import { convShape } from "../src/ops/conv.ts";
import { Tensor } from "../src/tensor.ts";
import { convLayers, depthwiseName, MOBILENET_V2_DEPTHWISE } from "./conv_fixture.ts";
import { makeStep } from "./step.ts";

const gpu = await WebGpuBackend.open({ allowSoftware: true });
const software = gpu.software;
const batch = Number(Deno.args[0] ?? (software ? 8 : 64));
const reps = software ? 2 : 20;
console.log(`${gpu.info()}; batch ${batch}, ${reps} timed runs each`);
if (software) {
  console.log(
    "software adapter: these numbers only show the path works (noisy, shared CPU cores)",
  );
}

const done = Tensor.full(gpu, [1], 0);
/** Mean ms of `f` over `reps` runs, after one warm-up, including the device's completion. */
async function time(f: () => void): Promise<number> {
  f();
  await done.read();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) f();
  await done.read();
  return (performance.now() - t0) / reps;
}

const i8 = (rng: Rng, n: number) => Int8Array.from({ length: n }, () => rng.int(255) - 127);

async function int8MatchesCpu(
  s: ReturnType<typeof convShape>,
  xa: Int8Array,
  wa: Int8Array,
): Promise<number> {
  const out: Float32Array[] = [];
  for (const b of [getBackend("cpu"), gpu] as Backend[]) {
    using x = Tensor.from(b, xa, [s.n, s.h, s.w, s.c], "i8");
    using w = Tensor.from(b, wa, [s.k, s.r, s.s, s.c / s.groups], "i8");
    using sx = Tensor.from(b, Float32Array.of(0.01), [1], "f32");
    using sw = Tensor.from(b, Float32Array.of(0.002), [1], "f32");
    using y = Tensor.empty(b, [s.n, s.p, s.q, s.k]);
    b.conv2dI8(y, x, w, null, sx, sw, ScaleLayout.tensor, s);
    out.push(await y.read() as Float32Array);
  }
  let err = 0;
  for (let i = 0; i < out[0]!.length; i++) err = Math.max(err, Math.abs(out[0]![i]! - out[1]![i]!));
  return err;
}

const layers = [
  ...convLayers(batch).map((l) => ({
    name: l.name,
    s: convShape("bench", l.x, l.k, l.r, { stride: l.stride, padding: l.pad }),
  })),
  ...MOBILENET_V2_DEPTHWISE.map(([c, hw, st]) => ({
    name: depthwiseName(c, hw, st),
    s: convShape("bench", [software ? 2 : batch, hw, hw, c], c, 3, {
      stride: st,
      padding: 1,
      groups: c,
    }),
  })),
];
console.log("\n| layer | pass | fp32 ms | int8 ms | int8 GOP/s | int8 / fp32 speed |");
console.log("| --- | --- | ---: | ---: | ---: | ---: |");
for (const { name, s } of layers) {
  const rng = new Rng(7);
  const cg = s.c / s.groups;
  const nx = s.n * s.h * s.w * s.c, nw = s.k * s.r * s.s * cg, ny = s.n * s.p * s.q * s.k;
  const xa = i8(rng, nx), wa = i8(rng, nw), dya = i8(rng, ny);
  const err = await int8MatchesCpu(s, xa, wa);
  if (!(err <= 1e-3)) throw new Error(`${name}: int8 fprop differs from cpu by ${err}`);
  const xq = Tensor.from(gpu, xa, [s.n, s.h, s.w, s.c], "i8");
  const wq = Tensor.from(gpu, wa, [s.k, s.r, s.s, cg], "i8");
  const dyq = Tensor.from(gpu, dya, [s.n, s.p, s.q, s.k], "i8");
  const sc = Tensor.full(gpu, [s.k], 0.01);
  const x = Tensor.full(gpu, [s.n, s.h, s.w, s.c], 0.5);
  const w = Tensor.full(gpu, [s.k, s.r, s.s, cg], 0.01);
  const y = Tensor.full(gpu, [s.n, s.p, s.q, s.k], 0);
  const gop = (2 * s.n * s.p * s.q * s.k * s.r * s.s * cg) / 1e9;
  const passes: [string, () => void, () => void][] = [
    [
      "fprop",
      () => gpu.conv2d(y, x, w, null, s),
      () => gpu.conv2dI8(y, xq, wq, null, sc, sc, ScaleLayout.tensor, s),
    ],
    [
      "dgrad",
      () => gpu.conv2dDgrad(x, y, w, s),
      () => gpu.conv2dDgradI8(x, dyq, wq, sc, sc, s),
    ],
    [
      "wgrad",
      () => gpu.conv2dWgrad(w, x, y, s),
      () => gpu.conv2dWgradI8(w, xq, dyq, sc, sc, ScaleLayout.inner, s),
    ],
  ];
  for (const [pass, fp32, int8] of passes) {
    const tf = await time(fp32), ti = await time(int8);
    console.log(
      `| ${name} | ${pass} | ${tf.toFixed(2)} | ${ti.toFixed(2)} | ${
        (gop / ti * 1e3).toFixed(2)
      } | ${(tf / ti).toFixed(2)}x |`,
    );
  }
  for (const t of [xq, wq, dyq, sc, x, w, y]) t.dispose();
}

console.log("\n| ResNet-20 train step | ms / step | images / s | vs fp32 |");
console.log("| --- | ---: | ---: | ---: |");
let base = 0;
for (const quant of ["fp32", "daint8"]) {
  const r = makeStep(gpu, "resnet20", batch, quant);
  await r.step();
  const first = await r.loss();
  if (!Number.isFinite(first)) throw new Error(`resnet20 ${quant}: the step gives loss ${first}`);
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await r.step();
  const loss = await r.loss();
  const ms = (performance.now() - t0) / reps;
  if (!Number.isFinite(loss)) throw new Error(`resnet20 ${quant}: loss ${loss}`);
  if (quant === "fp32") base = ms;
  console.log(
    `| ${quant} | ${ms.toFixed(1)} | ${(batch / ms * 1e3).toFixed(1)} | ${
      (base / ms).toFixed(2)
    }x |`,
  );
  r.dispose();
}
gpu.close();
