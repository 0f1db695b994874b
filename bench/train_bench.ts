/**
 * `deno bench -P` (permissions from deno.json) or `deno task bench`: for every backend of the
 * registry that opens here (the others are named with the reason they were skipped),
 * - one group per model: a training step under every preset (and the model's documented knob
 *   rows), fp32 the baseline, so Deno prints each preset's speedup over fp32. The models are
 *   LeNet-5 and ResNet-20 (batch 64, 28x28x1), or those DAINT8_BENCH_MODELS lists (any of
 *   src/models/registry.ts, each at bench/cases.ts modelInput's batch and input);
 * - one group per ResNet-20 3x3 layer shape and pass: fp32 (baseline) vs each int8 variant the
 *   device can run (the INT8 time covers the GEMM, its im2col and epilogue, no quantization).
 * Every case is validated first (finite loss; INT8 conv = fp32 conv of the dequantized
 * operands), rotates over several input sets and waits for the device in its timed function
 * (bench/cases.ts). For the side-by-side report with PyTorch run `deno task report`.
 */
import { isCpuBackend } from "../src/backend/backend.ts";
import {
  backends,
  convCases,
  int8Variants,
  modelInput,
  MODELS,
  presets,
  stepCase,
  zooModels,
} from "./cases.ts";

const listed = Deno.env.get("DAINT8_BENCH_MODELS");
const models = listed === undefined ? [...MODELS] : zooModels(listed, "DAINT8_BENCH_MODELS");

for (const { name, backend: b, reason } of await backends()) {
  if (!b) {
    console.error(`bench: skipping backend ${name}: ${reason}`);
    continue;
  }
  for (const model of models) {
    const { batch, channels, size } = modelInput(model);
    for (const p of presets(model)) {
      const c = await stepCase(b, model, p);
      Deno.bench({
        name: `${name} ${model} ${p.label}`,
        group: `${name} ${model} train step (batch ${batch}, ${size}x${size}x${channels})`,
        baseline: p.label === "fp32",
        n: model === "lenet5" ? 40 : 6,
        warmup: 2,
        fn: c.run,
      });
    }
  }
  const { cases } = convCases(b);
  const variants = int8Variants(b);
  for (const c of cases) {
    const group = `${name} conv ${c.layer} ${c.pass}`;
    Deno.bench({ name: `${group} fp32`, group, baseline: true, n: 10, warmup: 1, fn: c.fp32 });
    for (const v of variants) {
      const fn = isCpuBackend(b)
        ? async () => {
          b.setInt8Kernel(v as Parameters<typeof b.setInt8Kernel>[0]);
          await c.int8();
          b.setInt8Kernel("auto");
        }
        : c.int8;
      Deno.bench({
        name: `${group} int8 ${v}`,
        group,
        n: v === "portable" ? 3 : 10,
        warmup: 1,
        fn,
      });
    }
  }
}
