/**
 * Training checkpoints in the safetensors format (readable by PyTorch's `safetensors`):
 * `model.<name>` for parameters and buffers (f32; weights OHWI), `optim.<name>.momentum_buffer`,
 * `rng.data` (the data loader's generator state, u32), and metadata strings for the run (format,
 * model, dataset, epoch, step, the training configuration). Written atomically: a temporary
 * file, fsync, then rename, so an interrupted write leaves the previous checkpoint intact.
 *
 * @module
 */
import {
  readSafetensors,
  type Safetensors,
  type Tensor as StTensor,
  writeSafetensorsAtomic,
} from "../io/safetensors.ts";
import type { Tensor } from "../tensor.ts";
import { describeNonFinite, findNonFinite } from "./validate.ts";

/** The format tag in every checkpoint's metadata. */
export const CHECKPOINT_FORMAT = "daint8-checkpoint-v1";

/** Run-level facts stored with the tensors. */
export interface CheckpointMeta {
  /** Model name from `MODELS` (`lenet5`, `resnet20`); resume refuses a different model. */
  model: string;
  /** Dataset the run trains on (`mnist`, `fashion-mnist`). */
  dataset: string;
  /** Epochs completed. */
  epoch: number;
  /** Optimizer steps taken. */
  step: number;
  /** The training configuration, as JSON. */
  config: string;
}

/** What a checkpoint holds, as tensors on a backend (to save) or host arrays (loaded). */
export interface CheckpointContents {
  /** Run facts stored as the safetensors metadata. */
  meta: CheckpointMeta;
  /** Named tensors: `model.*`, `optim.*`. */
  tensors: [string, Tensor][];
  /** RNG states by name (u32 words). */
  rng: Record<string, number[]>;
  /** Host-side u32 state (quantizer state words), by name. */
  host?: [string, { shape: number[]; data: Uint32Array }][];
}

/**
 * Writes a checkpoint atomically to `path`. Refuses (RangeError, nothing written, the previous
 * checkpoint kept) when a tensor holds NaN or infinite values: a diverged run never replaces a
 * good checkpoint. Quantizer state words (U32) are validated by the quantizer when restored.
 */
export async function saveCheckpoint(path: string, c: CheckpointContents): Promise<void> {
  const out: Record<string, StTensor> = {};
  for (const [name, t] of c.tensors) {
    const data = new Float32Array(t.size);
    await t.backend.read(data, t); // a step-edge read: every backend has it
    out[name] = { dtype: "F32", shape: [...t.shape], data };
  }
  for (const [name, t] of c.host ?? []) out[name] = { dtype: "U32", shape: t.shape, data: t.data };
  for (const [name, t] of Object.entries(out)) {
    if (t.dtype !== "F32") continue; // quantizer state words are validated by their owner
    const bad = findNonFinite(t.data as Float32Array);
    if (bad) {
      throw new RangeError(
        `Cannot save checkpoint "${path}": tensor "${name}" ` +
          `${describeNonFinite(bad, t.data.length)}; the previous checkpoint is left as it was`,
      );
    }
  }
  for (const [name, state] of Object.entries(c.rng)) {
    out[`rng.${name}`] = { dtype: "U32", shape: [state.length], data: Uint32Array.from(state) };
  }
  await writeSafetensorsAtomic(path, out, {
    format: CHECKPOINT_FORMAT,
    model: c.meta.model,
    dataset: c.meta.dataset,
    epoch: String(c.meta.epoch),
    step: String(c.meta.step),
    config: c.meta.config,
  });
}

/** A checkpoint read back: metadata, float tensors by name and RNG states. */
export interface LoadedCheckpoint {
  /** Run facts from the metadata (`readCheckpoint` checks that epoch and step are integers). */
  meta: CheckpointMeta;
  /** Quantizer state words (U32 tensors `quant.*.state`) by name. */
  words: Map<string, Uint32Array>;
  /** Every F32 tensor by name (`model.*`, `optim.*`) as host arrays. */
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  /** RNG states by name without the `rng.` prefix (u32 words), e.g. `data`. */
  rng: Record<string, number[]>;
}

/** Metadata counters must be plain decimal integers ("", "1e3", "-5" and "0x10" are refused). */
function metaCount(path: string, md: Record<string, string>, key: "epoch" | "step"): number {
  const raw = md[key];
  const n = Number(raw);
  if (raw === undefined || !/^(0|[1-9][0-9]*)$/.test(raw) || !Number.isSafeInteger(n)) {
    throw new RangeError(
      `Cannot resume from "${path}": its ${key} metadata ${JSON.stringify(raw ?? null)} is ` +
        "not a non-negative integer",
    );
  }
  return n;
}

/** Reads and validates a checkpoint written by `saveCheckpoint`. */
export async function readCheckpoint(path: string): Promise<LoadedCheckpoint> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (cause) {
    throw new Error(`Cannot resume: checkpoint "${path}" does not exist`, { cause });
  }
  if (!info.isFile) throw new TypeError(`Cannot resume: checkpoint "${path}" is not a file`);
  return parseCheckpoint(await readSafetensors(path), path);
}

/**
 * Checks decoded safetensors contents as a daint8 checkpoint: the format tag, integer epoch and
 * step, F32 tensors and U32 RNG states. `path` names it in errors.
 */
export function parseCheckpoint(st: Safetensors, path: string): LoadedCheckpoint {
  const md = st.metadata;
  if (md.format !== CHECKPOINT_FORMAT) {
    throw new TypeError(
      `Cannot resume from "${path}": it is not a daint8 checkpoint (format ` +
        `${JSON.stringify(md.format ?? null)}, expected "${CHECKPOINT_FORMAT}")`,
    );
  }
  const meta: CheckpointMeta = {
    model: md.model ?? "",
    dataset: md.dataset ?? "",
    epoch: metaCount(path, md, "epoch"),
    step: metaCount(path, md, "step"),
    config: md.config ?? "{}",
  };
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const words = new Map<string, Uint32Array>();
  const rng: Record<string, number[]> = {};
  for (const [name, t] of Object.entries(st.tensors)) {
    if (name.startsWith("rng.")) {
      if (t.dtype !== "U32") {
        throw new TypeError(
          `Cannot resume from "${path}": tensor "${name}" is ${t.dtype}, expected U32`,
        );
      }
      rng[name.slice(4)] = Array.from(t.data as Uint32Array);
    } else if (t.dtype === "F32") {
      tensors.set(name, { shape: t.shape, data: t.data as Float32Array });
    } else if (t.dtype === "U32" && name.startsWith("quant.")) {
      words.set(name, t.data as Uint32Array);
    } else {
      throw new TypeError(
        `Cannot resume from "${path}": tensor "${name}" is ${t.dtype}, expected F32`,
      );
    }
  }
  return { meta, tensors, words, rng };
}

/**
 * Copies the checkpoint's tensors into `targets` (same names and shapes, all required). Throws a
 * TypeError naming the first missing or mismatched tensor before anything is written.
 */
export function restoreTensors(
  path: string,
  ckpt: LoadedCheckpoint,
  targets: readonly [string, Tensor][],
): void {
  for (const [name, t] of targets) {
    const src = ckpt.tensors.get(name);
    if (!src) {
      throw new TypeError(
        `Cannot resume from "${path}": it has no tensor "${name}" (saved from model ` +
          `"${ckpt.meta.model}")`,
      );
    }
    if (src.shape.length !== t.shape.length || src.shape.some((d, i) => d !== t.shape[i])) {
      throw new TypeError(
        `Cannot resume from "${path}": tensor "${name}" is [${src.shape.join(", ")}] there, ` +
          `the model has [${t.shape.join(", ")}]`,
      );
    }
  }
  for (const [name, t] of targets) t.backend.upload(t, ckpt.tensors.get(name)!.data);
}
