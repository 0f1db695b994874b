/**
 * The training step on the cuda backend (the TypeScript models, quantizers and optimizer over the
 * cuda library), against the cpu backend: a daint8 LeNet-5 run's losses, and a step that encodes
 * its work with no blocking sync or read (`deno task test:gpu`; on the CPU emulation in `deno task
 * test:cuda-emu`; skipped with a printed reason without a cuda library or device).
 */
import assert from "node:assert/strict";
import type { Backend } from "../../src/backend/backend.ts";
import { openBackend } from "../../src/backend/registry.ts";
import { makeStep } from "../../bench/step.ts";
import { cudaForTests } from "./harness.ts";

const gpu = cudaForTests();

async function losses(b: Backend, quant: string, steps: number): Promise<number[]> {
  const r = makeStep(b, "lenet5", 8, quant);
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    await r.step();
    out.push(await r.loss());
  }
  r.dispose();
  return out;
}

for (const quant of ["fp32", "daint8"]) {
  Deno.test({
    name: `cuda: a ${quant} LeNet-5 training run follows the cpu run's loss`,
    ignore: !gpu.ok,
    fn: async () => {
      // (the registry's shared instances: not closed here)
      const cpu = await openBackend("cpu"), cuda = await openBackend("cuda");
      const want = await losses(cpu, quant, 6), got = await losses(cuda, quant, 6);
      for (let s = 0; s < want.length; s++) {
        assert.ok(
          // f32 sums in other orders (the cuda reductions, the cpu's blocked loops)
          Math.abs(got[s]! - want[s]!) <= 2e-3 * Math.abs(want[s]!),
          `step ${s}: cuda loss ${got[s]} vs cpu ${want[s]} (all: ${got} vs ${want})`,
        );
      }
    },
  });
}

Deno.test({
  name: "cuda: a daint8 step enqueues its work without blocking syncs or reads",
  ignore: !gpu.ok,
  fn: async () => {
    const r = makeStep(await openBackend("cuda"), "lenet5", 4, "daint8");
    r.trainStep.run(() => [r.x, r.y], 0.01);
    const p = r.trainStep.profile!;
    assert.equal(p.syncs, 0);
    assert.equal(p.reads, 0);
    assert.ok(p.calls > 20, `${p.calls} native calls`);
    assert.ok(Number.isFinite(await r.loss()));
    r.dispose();
  },
});
