/**
 * Training-step throughput on a GPU backend: ResNet-20 (CIFAR, 3x32x32) and ResNet-50 (ImageNet,
 * 3x224x224) at batch 128, one full step (forward, loss, backward with the quantizers' device-side
 * decisions, SGD) under fp32, int8-naive and daint8, on synthetic seeded batches rotated over 3
 * sets. The peer is bench/peers/torch_gpu_step.py (PyTorch FP32 and BF16 autocast,
 * channels_last); bench/gpu/ratios.ts puts them side by side.
 *
 * Timing: `warmup` steps, then `trials` rounds; in each round every preset in turn enqueues `reps`
 * steps and synchronizes once (the host never waits inside a step), so a change of the card's
 * state hits every preset alike. Median ms per step. Before timing, each preset's first steps
 * must have a finite loss and no blocking sync inside the step (`profile.syncs == 0`); a failure
 * is listed and the exit status is 1.
 *
 * `deno run -A bench/gpu/step_bench.ts [--backend cuda|webgpu|cpu] [--json out.json] [--quick]
 * [--models resnet20,resnet50] [--batch 128]`: `--quick` (tiny inputs and batches, few steps) is
 * the dry run for a machine without a GPU (`--backend cpu`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Backend } from "../../src/backend/backend.ts";
import { openBackend } from "../../src/backend/registry.ts";
import { median } from "../../test/gpu/harness.ts";
import { makeStep, type StepRunner } from "../step.ts";

/** One measured (model, preset). */
export interface StepBenchRow {
  model: string;
  preset: string;
  batch: number;
  /** "CxHxW". */
  input: string;
  ms: number;
  min_ms: number;
  images_per_s: number;
  speedup_vs_fp32: number;
  /** Mean loss over the timed steps (synthetic labels: about ln 10 and falling). */
  loss: number;
  /** Native calls / dispatches of one step, and blocking syncs inside it (must be 0). */
  calls: number;
  syncs: number;
}

/** The models, their inputs and batches; `quick` shrinks them for a dry run on the cpu. */
export function stepModels(quick: boolean, batch: number) {
  return {
    resnet20: { channels: 3, size: 32, batch: quick ? 8 : batch },
    resnet50: { channels: 3, size: quick ? 32 : 224, batch: quick ? 2 : batch },
  } as const;
}

/** The presets timed, fp32 first (the speedups' base). */
export const STEP_PRESETS = ["fp32", "int8-naive", "daint8"] as const;

/** Times every preset of `model` interleaved; returns the rows and any validation failures. */
export async function benchModel(
  backend: Backend,
  model: string,
  input: { channels: number; size: number; batch: number },
  opts: { warmup: number; trials: number; reps: number },
): Promise<{ rows: StepBenchRow[]; failures: string[] }> {
  const failures: string[] = [];
  const runners: StepRunner[] = [];
  try {
    for (const p of STEP_PRESETS) {
      runners.push(makeStep(backend, model, input.batch, p, input, "", 3));
    }
    // validation: finite loss, one stream of device work per step
    for (const [i, r] of runners.entries()) {
      for (let s = 0; s < opts.warmup; s++) await r.step();
      const loss = await r.loss();
      const syncs = r.trainStep.profile!.syncs;
      if (!Number.isFinite(loss)) failures.push(`${model} ${STEP_PRESETS[i]}: loss ${loss}`);
      if (syncs !== 0) {
        failures.push(`${model} ${STEP_PRESETS[i]}: ${syncs} blocking syncs inside the step`);
      }
    }
    const times: number[][] = runners.map(() => []);
    for (let t = 0; t < opts.trials; t++) {
      for (const [i, r] of runners.entries()) {
        const t0 = performance.now();
        for (let k = 0; k < opts.reps; k++) r.enqueue();
        await backend.synchronize();
        times[i]!.push((performance.now() - t0) / opts.reps);
      }
    }
    const base = median(times[0]!);
    const rows: StepBenchRow[] = [];
    for (const [i, r] of runners.entries()) {
      const ms = median(times[i]!);
      const p = r.trainStep.profile!;
      rows.push({
        model,
        preset: STEP_PRESETS[i]!,
        batch: input.batch,
        input: `${input.channels}x${input.size}x${input.size}`,
        ms,
        min_ms: Math.min(...times[i]!),
        images_per_s: input.batch * 1000 / ms,
        speedup_vs_fp32: base / ms,
        loss: await r.loss(),
        calls: p.calls,
        syncs: p.syncs,
      });
    }
    return { rows, failures };
  } finally {
    for (const r of runners) r.dispose();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      backend: { type: "string", default: "cuda" },
      json: { type: "string" },
      quick: { type: "boolean", default: false },
      models: { type: "string", default: "resnet20,resnet50" },
      batch: { type: "string", default: "128" },
    },
    strict: true,
  });
  const quick = values.quick!;
  const all = stepModels(quick, Number(values.batch));
  const names = values.models!.split(",").filter((m) => m !== "");
  for (const m of names) {
    if (!(m in all)) throw new RangeError(`--models: unknown "${m}" (${Object.keys(all)})`);
  }
  let backend: Backend;
  try {
    backend = await openBackend(values.backend!);
  } catch (e) {
    const reason = `backend ${values.backend} did not open: ${(e as Error).message}`;
    console.log(`bench/gpu/step_bench: skipped: ${reason}`);
    if (values.json) {
      Deno.writeTextFileSync(values.json, JSON.stringify({ skipped: reason }) + "\n");
    }
    Deno.exit(0);
  }
  console.log(backend.info());
  const opts = quick ? { warmup: 2, trials: 2, reps: 1 } : { warmup: 2, trials: 3, reps: 3 };
  const rows: StepBenchRow[] = [];
  const failures: string[] = [];
  // written after every model, so a fault in a later one keeps what was measured
  const write = () => {
    if (!values.json) return;
    Deno.writeTextFileSync(
      values.json,
      JSON.stringify({ backend: values.backend, device: backend.info(), rows, failures }, null, 1) +
        "\n",
    );
  };
  for (const m of names) {
    let r: Awaited<ReturnType<typeof benchModel>>;
    try {
      r = await benchModel(backend, m, all[m as keyof typeof all], opts);
    } catch (e) {
      failures.push(`${m}: ${(e as Error).message.split("\n")[0]}`);
      console.log(`${m}: FAILED: ${(e as Error).message}`);
      write();
      continue;
    }
    rows.push(...r.rows);
    failures.push(...r.failures);
    write();
    for (const row of r.rows) {
      console.log(
        `${row.model.padEnd(9)} ${row.preset.padEnd(10)} batch ${row.batch} ${row.input}: ` +
          `${row.ms.toFixed(2)} ms/step, ${row.images_per_s.toFixed(0)} img/s, ` +
          `${row.speedup_vs_fp32.toFixed(2)}x fp32, loss ${row.loss.toFixed(3)}, ` +
          `${row.calls} calls, ${row.syncs} syncs`,
      );
    }
  }
  if (failures.length > 0) {
    console.log(`validation FAILED:\n  ${failures.join("\n  ")}`);
    Deno.exit(1);
  }
}
