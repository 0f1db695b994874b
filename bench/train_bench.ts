/**
 * `deno bench`: training-step time of LeNet-5 and ResNet-20 (batch 64) and the fp32 conv
 * kernels on ResNet-20's layer shapes, on the cpu backend. Images/s = 64 / time per step.
 * For the side-by-side comparison with PyTorch run `deno task bench:report`.
 */
import { getBackend } from "../src/backend/native.ts";
import { convShape } from "../src/ops/conv.ts";
import { Tensor } from "../src/tensor.ts";
import { makeStep } from "./step.ts";

const backend = getBackend("cpu");
const BATCH = 64;

for (const model of ["lenet5", "resnet20"]) {
  const runner = makeStep(backend, model, BATCH);
  const first = runner.step();
  if (!Number.isFinite(first)) throw new Error(`${model}: the training step gives loss ${first}`);
  Deno.bench({
    name: `${model} train step, batch ${BATCH}, fp32`,
    group: "train step",
    n: model === "lenet5" ? 50 : 10,
    warmup: 2,
    fn: () => {
      runner.step();
    },
  });
}

// ResNet-20 conv layers (Fashion-MNIST 28x28 input: 28, 14, 7 spatial), batch 64.
const layers = [
  { name: "stage1 3x3 16->16 28x28", x: [BATCH, 28, 28, 16], k: 16, stride: 1 },
  { name: "stage2 3x3 32->32 14x14", x: [BATCH, 14, 14, 32], k: 32, stride: 1 },
  { name: "stage3 3x3 64->64 7x7", x: [BATCH, 7, 7, 64], k: 64, stride: 1 },
] as const;
for (const l of layers) {
  const s = convShape("bench", l.x, l.k, 3, { stride: l.stride, padding: 1 });
  const x = Tensor.full(backend, l.x, 0.5);
  const w = Tensor.full(backend, [l.k, 3, 3, l.x[3]], 0.01);
  const y = Tensor.full(backend, [s.n, s.p, s.q, s.k], 0);
  const gflop = (2 * s.n * s.p * s.q * s.k * 9 * s.c) / 1e9;
  for (
    const [pass, fn] of [
      ["fprop", () => backend.conv2d(y, x, w, null, s)],
      ["dgrad", () => backend.conv2dDgrad(x, y, w, s)],
      ["wgrad", () => backend.conv2dWgrad(w, x, y, s)],
    ] as const
  ) {
    Deno.bench({
      name: `conv ${pass} ${l.name} (${gflop.toFixed(3)} GFLOP)`,
      group: `conv ${l.name}`,
      n: 20,
      fn,
    });
  }
}
