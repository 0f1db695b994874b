/**
 * `deno bench`: on the cpu backend, side by side in one run,
 * - training-step time of LeNet-5 and ResNet-20 (batch 64, 28x28x1) under fp32 and daint8
 *   (images/s = 64 / time), and
 * - the conv kernels on ResNet-20's 3x3 layer shapes: fp32 vs INT8 for fprop, dgrad and wgrad
 *   (the INT8 time includes no quantization: the GEMM and its im2col/epilogue only).
 * Every timed op is first checked against a reference (the training step's loss is finite and
 * the INT8 conv equals the fp32 conv of the dequantized operands).
 * For the comparison with PyTorch run `deno task bench:report`.
 */
import { ScaleLayout } from "../src/backend/backend.ts";
import { getBackend } from "../src/backend/registry.ts";
import { convShape } from "../src/ops/conv.ts";
import { Tensor } from "../src/tensor.ts";
import { makeStep } from "./step.ts";
import { convLayers, int8ConvFixture } from "./conv_fixture.ts";

const backend = getBackend("cpu");
const BATCH = 64;

for (const model of ["lenet5", "resnet20"]) {
  for (const quant of ["fp32", "daint8"]) {
    const runner = makeStep(backend, model, BATCH, quant);
    runner.step();
    const first = await runner.loss();
    if (!Number.isFinite(first)) throw new Error(`${model} ${quant}: the step gives loss ${first}`);
    Deno.bench({
      name: `${model} ${quant} train step, batch ${BATCH}`,
      group: `${model} train step`,
      baseline: quant === "fp32",
      n: model === "lenet5" ? 50 : 10,
      warmup: 2,
      fn: () => {
        runner.step();
      },
    });
  }
}

for (const l of convLayers(BATCH)) {
  const s = convShape("bench", l.x, l.k, 3, { stride: l.stride, padding: 1 });
  const f = int8ConvFixture(backend, s);
  const gop = (2 * s.n * s.p * s.q * s.k * 9 * s.c) / 1e9;
  const x = Tensor.full(backend, l.x, 0.5);
  const w = Tensor.full(backend, [l.k, 3, 3, l.x[3]], 0.01);
  const y = Tensor.full(backend, [s.n, s.p, s.q, s.k], 0);
  const runs = [
    ["fprop", "fp32", () => backend.conv2d(y, x, w, null, s)],
    [
      "fprop",
      "int8",
      () => backend.conv2dI8(f.y, f.xq, f.wq, null, f.sx, f.sw, ScaleLayout.tensor, s),
    ],
    ["dgrad", "fp32", () => backend.conv2dDgrad(x, y, w, s)],
    ["dgrad", "int8", () => backend.conv2dDgradI8(f.dx, f.dyq, f.wq, f.sdy, f.sw, s)],
    ["wgrad", "fp32", () => backend.conv2dWgrad(w, x, y, s)],
    [
      "wgrad",
      "int8",
      () => backend.conv2dWgradI8(f.dw, f.xq, f.dyq, f.sx, f.sdyC, ScaleLayout.inner, s),
    ],
  ] as const;
  for (const [pass, kind, fn] of runs) {
    Deno.bench({
      name: `conv ${pass} ${kind} ${l.name} (${gop.toFixed(3)} G mult-adds x2)`,
      group: `conv ${pass} ${l.name}`,
      baseline: kind === "fp32",
      n: 20,
      fn,
    });
  }
}
