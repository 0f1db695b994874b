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
import { MODELS as ZOO } from "../src/models/registry.ts";
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

/** The models timed by default (`deno bench`, `deno task report`), batch 64, 28x28x1 inputs. */
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

/** The models bench/peers/torch_cpu.py builds: the report lists the others' PyTorch peers as
 * skipped, with the reason. */
export const PEER_MODELS: readonly string[] = [
  "lenet5",
  "resnet20",
  "resnet18",
  "resnet34",
  "resnet50",
];

/**
 * `list` (comma-separated model names) checked against src/models/registry.ts: a RangeError names
 * an unknown one, where it came from (`from`) and the names there are.
 */
export function zooModels(list: string, from: string): string[] {
  const models = list.split(",").filter((m) => m !== "");
  for (const m of models) {
    if (!Object.hasOwn(ZOO, m)) {
      throw new RangeError(
        `Unknown model "${m}" in ${from}: expected some of ${Object.keys(ZOO).join(", ")}`,
      );
    }
  }
  return models;
}

/** The batch and input ([batch, size, size, channels]) a model's training step is timed with. */
export interface ModelInput {
  batch: number;
  channels: number;
  size: number;
}

/**
 * The input `model` is timed with: the 28x28x1 CIFAR-style models (LeNet-5, ResNet-20/56) at
 * batch 64; Inception v3 at its smallest input, 75x75x3, batch 8; every other zoo model at
 * CIFAR's 32x32x3 (the CIFAR stems of the ResNets), batch 16, so that a model's rounds take
 * seconds, not minutes, on a 2-core CPU.
 */
export function modelInput(model: string): ModelInput {
  if (model === "lenet5" || model === "resnet20" || model === "resnet56") {
    return { batch: BATCH, channels: 1, size: 28 };
  }
  if (model === "inception_v3") return { batch: 8, channels: 3, size: 75 };
  return { batch: 16, channels: 3, size: 32 };
}

/** PyTorch's CxHxW spelling of a model input (bench/peers/torch_cpu.py --input). */
export const torchInput = (i: ModelInput) => `${i.channels}x${i.size}x${i.size}`;

/**
 * The presets timed for `model`, and the documented knobs where a model has layers too small to
 * gain from INT8: LeNet-5 with minInt8Channels=8 (its 6-channel conv2 in FP32), MobileNetV2 with
 * minInt8Channels=2 (its depthwise convs in FP32; kernels/cpu/README.md measures both).
 */
export function presets(model: string): Preset[] {
  const out: Preset[] = ["fp32", "int8-naive", "ui8", "daint8"].map((q) => ({
    label: q,
    quant: q,
    knobs: "",
  }));
  const knob = model === "lenet5" ? 8 : model === "mobilenet_v2" ? 2 : 0;
  if (knob > 0) {
    out.push({
      label: `daint8 minInt8Channels=${knob}`,
      quant: "daint8",
      knobs: `minInt8Channels=${knob}`,
    });
  }
  return out;
}

/** A training step over ROTATE seeded batches, checked (finite loss) before it is timed. */
export async function stepCase(
  b: Backend,
  model: string,
  p: Preset,
): Promise<{ run: () => Promise<void>; dispose: () => void }> {
  const { batch, channels, size } = modelInput(model);
  const r = makeStep(b, model, batch, p.quant, { channels, size }, p.knobs, ROTATE);
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
