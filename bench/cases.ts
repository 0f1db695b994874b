/**
 * What `deno bench` (train_bench.ts) and `deno task report` (report.ts) time, defined once:
 * the backends present, the training-step cases per model and preset, and the conv-kernel cases
 * per ResNet-20 layer shape and pass. Every case is validated before it is timed, rotates over
 * several input sets (so no set stays cached between iterations) and waits for the device
 * inside its timed function.
 *
 * @module
 */
import type { Backend } from "../src/backend/backend.ts";
import { INT8_KERNELS, isCpuBackend, ScaleLayout } from "../src/backend/backend.ts";
import { BACKEND_NAMES, openBackend } from "../src/backend/registry.ts";
import { convShape } from "../src/ops/conv.ts";
import { Tensor } from "../src/tensor.ts";
import {
  type ConvLayer,
  convLayers,
  type Int8ConvFixture,
  int8ConvFixture,
} from "./conv_fixture.ts";
import { makeStep } from "./step.ts";

/** A backend of the registry: opened, or the reason it could not be. */
export interface BackendEntry {
  name: string;
  backend: Backend | null;
  reason: string | null;
}

/**
 * Every backend of src/backend/registry.ts except `auto`, opened when possible. A software
 * WebGPU adapter (Mesa's lavapipe: the CPU pretending to be a GPU) is skipped unless `software`
 * is set (`DAINT8_BENCH_SOFTWARE_GPU=1`): its timings only show that the path works.
 */
export async function backends(
  software = Deno.env.get("DAINT8_BENCH_SOFTWARE_GPU") === "1",
): Promise<BackendEntry[]> {
  const out: BackendEntry[] = [];
  for (const name of BACKEND_NAMES.filter((n) => n !== "auto")) {
    try {
      const backend = await openBackend(name);
      if ((backend as { software?: boolean }).software && !software) {
        out.push({
          name,
          backend: null,
          reason:
            `software adapter (${backend.info()}): set DAINT8_BENCH_SOFTWARE_GPU=1 to time it`,
        });
        continue;
      }
      out.push({ name, backend, reason: null });
    } catch (e) {
      out.push({ name, backend: null, reason: (e as Error).message.split("\n")[0]! });
    }
  }
  return out;
}

/** The int8 variants `b` can run (cpu: each one its CPU has; other backends: their own). */
export function int8Variants(b: Backend): string[] {
  if (!isCpuBackend(b)) return ["device"];
  const ok: string[] = [];
  for (const v of INT8_KERNELS.slice(1)) {
    try {
      b.setInt8Kernel(v);
      ok.push(v);
    } catch { /* not on this CPU */ }
  }
  b.setInt8Kernel("auto");
  return ok;
}

/** The models timed, batch 64, 28x28x1 inputs. */
export const MODELS = ["lenet5", "resnet20"] as const;
/** Training batch. */
export const BATCH = 64;
/** Input sets each case rotates over. */
export const ROTATE = 3;

/** One preset of one model: `fp32` first (the baseline). */
export interface Preset {
  label: string;
  quant: string;
  knobs: string;
}

/** The presets timed for `model`; LeNet-5 also with minInt8Channels=8 (README: the knob). */
export function presets(model: string): Preset[] {
  const out: Preset[] = ["fp32", "int8-naive", "ui8", "daint8"].map((q) => ({
    label: q,
    quant: q,
    knobs: "",
  }));
  if (model === "lenet5") {
    out.push({ label: "daint8 minInt8Channels=8", quant: "daint8", knobs: "minInt8Channels=8" });
  }
  return out;
}

/** A training step over ROTATE seeded batches, checked (finite loss) before it is timed. */
export async function stepCase(
  b: Backend,
  model: string,
  p: Preset,
): Promise<{ run: () => Promise<void>; dispose: () => void }> {
  const r = makeStep(b, model, BATCH, p.quant, undefined, p.knobs, ROTATE);
  await r.step();
  const loss = await r.loss();
  if (!Number.isFinite(loss)) {
    throw new Error(`${model} ${p.label} on ${b.name}: the training step gives loss ${loss}`);
  }
  return { run: () => r.step(), dispose: () => r.dispose() };
}

/** One conv pass of one layer shape (convLayers): fp32 and one int8 variant, same operands. */
export interface ConvCase {
  layer: string;
  pass: "fprop" | "dgrad" | "wgrad";
  /** Multiply-adds of the pass. */
  macs: number;
  fp32: () => Promise<void>;
  int8: () => Promise<void>;
}

/**
 * The conv cases of every layer shape on `b` (fixtures validated here, ROTATE sets each):
 * ResNet-20's and LeNet-5's unless `layers` says otherwise.
 */
export function convCases(
  b: Backend,
  layers: readonly ConvLayer[] = convLayers(BATCH),
): { cases: ConvCase[]; dispose: () => void } {
  const cases: ConvCase[] = [];
  const all: Int8ConvFixture[] = [];
  for (const l of layers) {
    const s = convShape("bench", l.x, l.k, l.r, { stride: l.stride, padding: l.pad });
    const fs = Array.from({ length: ROTATE }, (_, i) => int8ConvFixture(b, s, 11 + i));
    all.push(...fs);
    if (isCpuBackend(b)) {
      // every int8 variant timed is validated too (the fixtures above used `auto`)
      for (const v of int8Variants(b)) {
        b.setInt8Kernel(v as Parameters<typeof b.setInt8Kernel>[0]);
        for (const t of Object.values(int8ConvFixture(b, s, 11))) {
          if (t instanceof Tensor) t.dispose();
        }
      }
      b.setInt8Kernel("auto");
    }
    const macs = s.n * s.p * s.q * s.k * s.r * s.s * s.c;
    let i = 0, j = 0, k = 0, u = 0, v = 0, w = 0;
    const pick = (n: number) => fs[n % fs.length]!;
    const sync = () => b.synchronize();
    cases.push(
      {
        layer: l.name,
        pass: "fprop",
        macs,
        fp32: async () => {
          const f = pick(i++);
          b.conv2d(f.yf, f.xf, f.wf, null, s);
          await sync();
        },
        int8: async () => {
          const f = pick(u++);
          b.conv2dI8(f.y, f.xq, f.wq, null, f.sx, f.sw, ScaleLayout.tensor, s);
          await sync();
        },
      },
      {
        layer: l.name,
        pass: "dgrad",
        macs,
        fp32: async () => {
          const f = pick(j++);
          b.conv2dDgrad(f.dxf, f.dyf, f.wf, s);
          await sync();
        },
        int8: async () => {
          const f = pick(v++);
          b.conv2dDgradI8(f.dx, f.dyq, f.wq, f.sdy, f.sw, s);
          await sync();
        },
      },
      {
        layer: l.name,
        pass: "wgrad",
        macs,
        fp32: async () => {
          const f = pick(k++);
          b.conv2dWgrad(f.dwf, f.xf, f.dyf, s);
          await sync();
        },
        int8: async () => {
          const f = pick(w++);
          b.conv2dWgradI8(f.dw, f.xq, f.dyq, f.sx, f.sdyC, ScaleLayout.inner, s);
          await sync();
        },
      },
    );
  }
  const dispose = () => {
    for (const f of all) {
      for (const t of Object.values(f)) if (t instanceof Tensor) t.dispose();
    }
  };
  return { cases, dispose };
}
