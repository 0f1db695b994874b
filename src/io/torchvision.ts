/**
 * Weights in torchvision's naming and layout: import a PyTorch state dict saved as safetensors
 * (`safetensors.torch.save_file(model.state_dict(), path)`) into the matching model, and export
 * ours the same way so PyTorch loads it with `load_state_dict` (strict).
 *
 * Layouts: PyTorch convolution weights are OIHW, ours OHWI; a linear layer that reads a
 * flattened feature map (VGG's `classifier.0`, AlexNet's `classifier.1`, LeNet-5's `fc1`) has its
 * columns in c-h-w order in PyTorch and h-w-c order here; both are permuted on the way in and
 * out. Batch-norm `num_batches_tracked` counters are skipped on import and written as 0 on
 * export. A daint8 checkpoint (`model.<name>` tensors, OHWI) is accepted as well.
 *
 * @module
 */
import { Conv2d, Linear } from "../nn/layers.ts";
import type { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor.ts";
import { hasTorchFlatten } from "../nn/zoo_layers.ts";
import {
  readSafetensors,
  type Tensor as HostTensor,
  writeSafetensorsAtomic,
} from "./safetensors.ts";

type Kind = { kind: "conv" } | { kind: "flat"; chw: readonly [number, number, number] } | {
  kind: "plain";
};

function kinds(model: Module): Map<string, Kind> {
  const out = new Map<string, Kind>();
  const flat: Readonly<Record<string, readonly [number, number, number]>> = hasTorchFlatten(model)
    ? model.torchFlatten
    : {};
  for (const [name, m] of model.namedModules()) {
    if (m instanceof Conv2d) out.set(`${name}.weight`, { kind: "conv" });
    else if (m instanceof Linear && flat[name]) {
      out.set(`${name}.weight`, { kind: "flat", chw: flat[name]! });
    }
  }
  return out;
}

/** PyTorch's shape for our tensor of `shape` and kind. */
function torchShape(shape: readonly number[], k: Kind | undefined): number[] {
  if (k?.kind === "conv") {
    const [o, h, w, i] = shape as [number, number, number, number];
    return [o, i, h, w];
  }
  return [...shape];
}

/**
 * Calls `f(ours, torch)` with the flat index of each element in our layout and in PyTorch's:
 * conv weights OHWI vs OIHW, the linear layer after a flatten h-w-c vs c-h-w columns.
 */
function forEachIndex(
  shape: readonly number[],
  k: Exclude<Kind, { kind: "plain" }>,
  f: (ours: number, torch: number) => void,
): void {
  if (k.kind === "conv") {
    const [o, h, w, i] = shape as [number, number, number, number];
    for (let a = 0; a < o; a++) {
      for (let b = 0; b < i; b++) {
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            f(
              ((a * h + y) * w + x) * i + b,
              ((a * i + b) * h + y) * w + x,
            );
          }
        }
      }
    }
  } else {
    const [c, h, w] = k.chw, rows = shape[0]!, cols = c * h * w;
    for (let r = 0; r < rows; r++) {
      for (let ch = 0; ch < c; ch++) {
        for (let p = 0; p < h * w; p++) f(r * cols + p * c + ch, r * cols + ch * h * w + p);
      }
    }
  }
}

/** Our data from PyTorch's (OIHW -> OHWI; c-h-w columns -> h-w-c). */
function fromTorch(
  data: Float32Array,
  shape: readonly number[],
  k: Kind | undefined,
): Float32Array {
  if (k?.kind !== "conv" && k?.kind !== "flat") return data;
  const out = new Float32Array(data.length);
  forEachIndex(shape, k, (ours, torch) => out[ours] = data[torch]!);
  return out;
}

/** PyTorch's data from ours (the inverse of `fromTorch`). */
function toTorch(data: Float32Array, shape: readonly number[], k: Kind | undefined): Float32Array {
  if (k?.kind !== "conv" && k?.kind !== "flat") return data;
  const out = new Float32Array(data.length);
  forEachIndex(shape, k, (ours, torch) => out[torch] = data[ours]!);
  return out;
}

function asF32(t: HostTensor): Float32Array | undefined {
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof Float64Array) return Float32Array.from(t.data);
  return undefined;
}

/**
 * Loads `path` into `model`: torchvision names and layouts, or a daint8 checkpoint. Throws a
 * TypeError listing every missing, unexpected and mis-shaped tensor (nothing is loaded then).
 * Tensors of a head the model was built without (`model.optionalStatePrefixes()`, such as
 * Inception v3's `AuxLogits.*` in torchvision's weights) are skipped.
 */
export async function loadTorchvisionWeights(
  model: Module,
  path: string,
  modelName = "the model",
): Promise<void> {
  const { tensors } = await readSafetensors(path);
  const names = Object.keys(tensors);
  const ours = names.some((n) => n.startsWith("model."));
  const file = new Map<string, HostTensor>();
  for (const [n, t] of Object.entries(tensors)) {
    if (ours) {
      if (n.startsWith("model.")) file.set(n.slice(6), t);
    } else if (!n.endsWith("num_batches_tracked")) file.set(n, t);
  }
  const k = kinds(model);
  const missing: string[] = [], shapes: string[] = [], dtypes: string[] = [];
  const ready: [Tensor, Float32Array][] = [];
  for (const [name, t] of model.stateTensors()) {
    const src = file.get(name);
    file.delete(name);
    if (!src) {
      missing.push(name);
      continue;
    }
    const want = ours ? [...t.shape] : torchShape(t.shape, k.get(name));
    if (src.shape.length !== want.length || src.shape.some((d, i) => d !== want[i])) {
      shapes.push(`${name} [${src.shape.join(", ")}] (expected [${want.join(", ")}])`);
      continue;
    }
    const data = asF32(src);
    if (!data) {
      dtypes.push(`${name} (${src.dtype}, expected F32)`);
      continue;
    }
    ready.push([t, ours ? data : fromTorch(data, t.shape, k.get(name))]);
  }
  const skip = model.optionalStatePrefixes();
  const unexpected = [...file.keys()].filter((n) => !skip.some((p) => n.startsWith(p)));
  if (missing.length || unexpected.length || shapes.length || dtypes.length) {
    const parts: string[] = [];
    const list = (what: string, xs: string[]) => {
      if (xs.length) {
        parts.push(
          `${xs.length} ${what}: ${xs.slice(0, 20).join(", ")}${xs.length > 20 ? ", ..." : ""}`,
        );
      }
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("mis-shaped", shapes);
    list("of another dtype", dtypes);
    throw new TypeError(
      `Cannot load weights "${path}" into ${modelName}: ${parts.join("; ")}`,
    );
  }
  for (const [t, data] of ready) t.backend.upload(t, data);
}

/** The model's state in torchvision's names and layouts (plus `num_batches_tracked` = 0). */
export function torchvisionState(model: Module): Record<string, HostTensor> {
  const k = kinds(model);
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of model.stateTensors()) {
    const data = t.toArray() as Float32Array;
    out[name] = {
      dtype: "F32",
      shape: torchShape(t.shape, k.get(name)),
      data: toTorch(data, t.shape, k.get(name)),
    };
    if (name.endsWith(".running_var")) {
      out[`${name.slice(0, -"running_var".length)}num_batches_tracked`] = {
        dtype: "I64",
        shape: [],
        data: new BigInt64Array(1),
      };
    }
  }
  return out;
}

/** Writes the model's weights as a torchvision-named safetensors file (atomically). */
export async function saveTorchvisionWeights(model: Module, path: string): Promise<void> {
  await writeSafetensorsAtomic(path, torchvisionState(model), { format: "pt" });
}
