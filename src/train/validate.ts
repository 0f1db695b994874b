/**
 * Checks that keep a run from going silently wrong: the data sets agree with each other and with
 * the batch size before training starts, a diverged model is stopped before it is checkpointed,
 * and a checkpoint is checked in full (finite tensors, metadata in range, same run identity)
 * before `--resume` uses it.
 *
 * @module
 */
import type { ImageDataset } from "../data/datasets.ts";
import { Rng } from "../data/rng.ts";
import type { Tensor } from "../tensor.ts";
import type { LoadedCheckpoint } from "./checkpoint.ts";

/** The first non-finite element of an array and how many there are. */
export interface NonFinite {
  /** Number of NaN or infinite elements. */
  count: number;
  /** Index of the first one. */
  index: number;
  /** Its value (NaN, Infinity or -Infinity). */
  value: number;
}

/**
 * Finds non-finite elements of `data`; undefined when every element is finite.
 *
 * @example
 * ```ts
 * import { findNonFinite } from "./validate.ts";
 * console.log(findNonFinite(Float32Array.of(1, NaN, Infinity))); // { count: 2, index: 1, value: NaN }
 * ```
 */
export function findNonFinite(data: ArrayLike<number>): NonFinite | undefined {
  let count = 0, index = -1, value = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is 0 for finite numbers and NaN for NaN and infinities.
    if (v - v !== 0) {
      if (count === 0) {
        index = i;
        value = v;
      }
      count++;
    }
  }
  return count === 0 ? undefined : { count, index, value };
}

/** "holds 3 of 150 values that are not finite (the first, at index 0, is NaN)" */
export function describeNonFinite(bad: NonFinite, length: number): string {
  return `holds ${bad.count} of ${length} values that are not finite (the first, at index ` +
    `${bad.index}, is ${bad.value})`;
}

/**
 * Checks the two splits of a run before any training: both non-empty, with the same image
 * geometry and classes. Throws a RangeError (empty split) or TypeError (mismatch).
 */
export function checkDatasets(train: ImageDataset, test: ImageDataset): void {
  for (const ds of [train, test]) {
    if (ds.n === 0) {
      throw new RangeError(
        `Cannot train: the ${ds === train ? "training" : "test"} set "${ds.name}" has no images`,
      );
    }
  }
  const geom = (d: ImageDataset) => `${d.height}x${d.width}x${d.channels}`;
  if (geom(train) !== geom(test)) {
    throw new TypeError(
      `Cannot train: test images "${test.name}" are ${geom(test)} (height x width x ` +
        `channels), training images "${train.name}" are ${geom(train)}`,
    );
  }
  if (train.classes !== test.classes) {
    throw new TypeError(
      `Cannot train: the test set "${test.name}" has ${test.classes} classes, the training ` +
        `set "${train.name}" has ${train.classes}`,
    );
  }
}

/** Refuses a batch size larger than the training set (it would allocate for nothing). */
export function checkBatchSize(batchSize: number, train: ImageDataset): void {
  if (batchSize > train.n) {
    throw new RangeError(
      `Cannot train: batch size ${batchSize} is larger than the ${train.n} training images ` +
        `of "${train.name}" (use a batch size of at most ${train.n})`,
    );
  }
}

/**
 * Stops a diverged run before it writes a checkpoint: throws a RangeError naming the first model
 * or optimizer tensor that holds NaN or infinite values, or, when they are all finite but so
 * large that the model's outputs overflow, the non-finite test loss.
 */
export async function checkFiniteState(
  tensors: readonly [string, Tensor][],
  epoch: number,
  step: number,
  lr: number,
  testLoss = 0,
): Promise<void> {
  const diverged = `Training diverged in epoch ${epoch} (step ${step})`;
  const hint = `no checkpoint was written for this epoch (try a lower --lr than ${lr})`;
  for (const [name, t] of tensors) {
    const data = (await t.read()) as Float32Array; // a step-edge read, once per epoch
    const bad = findNonFinite(data);
    if (bad) {
      throw new RangeError(
        `${diverged}: tensor "${name}" ${describeNonFinite(bad, data.length)}; ${hint}`,
      );
    }
  }
  if (!Number.isFinite(testLoss)) {
    throw new RangeError(`${diverged}: the test loss is ${testLoss}; ${hint}`);
  }
}

/** What `checkResume` compares the checkpoint against. */
export interface ResumeTarget {
  /** Model name of this run. */
  model: string;
  /** Dataset name of this run. */
  dataset: string;
  /** Quantization preset of this run. */
  quant: string;
  /** Batch size of this run. */
  batchSize: number;
  /** Seed of this run. */
  seed: number;
  /** Total epochs of this run. */
  epochs: number;
  /** Optimizer steps per epoch of this run (batches of the training set). */
  stepsPerEpoch: number;
}

/**
 * Checks a loaded checkpoint before `--resume` uses any of it: every `model.*` and `optim.*`
 * tensor finite, epoch an integer in [0, epochs], step equal to epoch x steps per epoch, and the
 * run's identity (dataset, preset, batch size, seed) the same as this run's. With `force`, a
 * different identity or step count is a warning (passed to `warn`) instead of an error. Throws a
 * RangeError (values) or TypeError (identity) naming the checkpoint.
 */
export function checkResume(
  path: string,
  ck: LoadedCheckpoint,
  run: ResumeTarget,
  opts: { force?: boolean; warn?: (line: string) => void } = {},
): void {
  const what = `Cannot resume from "${path}"`;
  for (const [name, t] of ck.tensors) {
    if (!name.startsWith("model.") && !name.startsWith("optim.")) continue;
    const bad = findNonFinite(t.data);
    if (bad) {
      throw new RangeError(`${what}: tensor "${name}" ${describeNonFinite(bad, t.data.length)}`);
    }
  }
  const data = ck.rng.data;
  if (!data) throw new TypeError(`${what}: it has no rng.data state`);
  try {
    Rng.fromState(data);
  } catch (cause) {
    throw new TypeError(`${what}: its rng.data state is invalid (${(cause as Error).message})`, {
      cause,
    });
  }
  const { epoch, step } = ck.meta;
  if (epoch > run.epochs) {
    throw new RangeError(
      `${what}: it has completed ${epoch} epochs, more than this run's ${run.epochs} ` +
        `(raise --epochs to continue it)`,
    );
  }
  const mismatches: string[] = [];
  let saved: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(ck.meta.config);
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) saved = parsed;
    else throw new TypeError("not an object");
  } catch (cause) {
    throw new TypeError(
      `${what}: its "config" metadata is not a JSON object (${(cause as Error).message})`,
      { cause },
    );
  }
  const compare: [string, string, unknown, unknown][] = [
    ["dataset", "--dataset", ck.meta.dataset, run.dataset],
    ["quant", "--quant", saved.quant, run.quant],
    ["batchSize", "--batch-size", saved.batchSize, run.batchSize],
    ["seed", "--seed", saved.seed, run.seed],
  ];
  for (const [, flag, was, now] of compare) {
    if (was !== now) {
      mismatches.push(`${flag} ${JSON.stringify(was ?? null)} there, ${JSON.stringify(now)} now`);
    }
  }
  if (step !== epoch * run.stepsPerEpoch) {
    mismatches.push(
      `step ${step} there, but ${epoch} epoch(s) of ${run.stepsPerEpoch} steps make ` +
        `${epoch * run.stepsPerEpoch} now (another --limit or --batch-size?)`,
    );
  }
  if (mismatches.length === 0) return;
  const list = mismatches.join("; ");
  if (!opts.force) {
    throw new TypeError(
      `${what}: it was saved by a different run (${list}); pass --force-resume to continue ` +
        `it anyway`,
    );
  }
  opts.warn?.(`warning: resuming "${path}" despite differences (${list})`);
}
