/**
 * Mini-batch iteration over an {@linkcode ImageDataset}, reshuffled every epoch by a seeded
 * {@linkcode Rng}.
 *
 * @module
 */
import type { ImageDataset } from "./datasets.ts";
import type { Rng } from "./rng.ts";

/** One mini-batch. Its arrays are reused by the next batch: copy what you keep. */
export interface Batch {
  /** The pixels, `[size, height, width, channels]` (NHWC). */
  images: Uint8Array;
  /** The labels, `[size]`. */
  labels: Int32Array;
  /** The number of samples in this batch (the last batch of an epoch may be smaller). */
  size: number;
  /** The batch's index within its epoch, from 0. */
  index: number;
}

/** Options of {@linkcode DataLoader}. */
export interface DataLoaderOptions {
  /** The number of samples per batch. */
  batchSize: number;
  /** Whether to visit the samples in a fresh random order each epoch. */
  shuffle: boolean;
  /** The generator that draws each epoch's order (used only when `shuffle` is true). */
  rng: Rng;
  /** Whether to skip the last batch of an epoch when it is smaller than `batchSize`. */
  dropLast?: boolean;
}

/**
 * Splits a dataset into mini-batches, epoch after epoch.
 *
 * With `shuffle`, each call to {@linkcode DataLoader.batches} draws a new permutation of all
 * samples from the loader's `rng` when iteration starts, and nothing else draws from it there:
 * the epoch's order depends only on the rng's state at that moment, so storing
 * `rng.state()` before an epoch is enough to replay it.
 *
 * The yielded arrays are preallocated and reused from batch to batch.
 *
 * @example
 * ```ts
 * import { DataLoader } from "./loader.ts";
 * import { Rng } from "./rng.ts";
 * const ds = {
 *   images: new Uint8Array(10 * 4), labels: new Int32Array(10),
 *   n: 10, height: 2, width: 2, channels: 1, classes: 10, name: "tiny",
 * };
 * const loader = new DataLoader(ds, { batchSize: 4, shuffle: true, rng: new Rng(0) });
 * for (const batch of loader.batches()) {
 *   console.log(batch.size); // 4, 4, 2
 * }
 * ```
 */
export class DataLoader {
  /** The dataset iterated over. */
  readonly dataset: ImageDataset;
  /** The number of samples per (full) batch. */
  readonly batchSize: number;
  /** Whether each epoch is visited in a fresh random order. */
  readonly shuffle: boolean;
  /** Whether a last, smaller batch is skipped. */
  readonly dropLast: boolean;
  /** The generator that draws each epoch's order. */
  readonly rng: Rng;
  readonly #images: Uint8Array;
  readonly #labels: Int32Array;
  readonly #sampleBytes: number;

  /**
   * Creates a loader over `dataset`; nothing is drawn from `opts.rng` until iteration starts.
   *
   * @throws {RangeError} If `batchSize` is not a positive integer.
   * @throws {TypeError} If the dataset's arrays do not match its `n` and image shape.
   */
  constructor(dataset: ImageDataset, opts: DataLoaderOptions) {
    const { batchSize, shuffle, rng, dropLast = false } = opts;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`Cannot create DataLoader: batch size ${batchSize} is not positive`);
    }
    const sampleBytes = dataset.height * dataset.width * dataset.channels;
    if (dataset.images.length !== dataset.n * sampleBytes) {
      throw new TypeError(
        `Cannot create DataLoader for "${dataset.name}": ${dataset.images.length} image bytes ` +
          `do not match [${dataset.n}, ${dataset.height}, ${dataset.width}, ${dataset.channels}]`,
      );
    }
    if (dataset.labels.length !== dataset.n) {
      throw new TypeError(
        `Cannot create DataLoader for "${dataset.name}": ${dataset.labels.length} labels ` +
          `for ${dataset.n} images`,
      );
    }
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.shuffle = shuffle;
    this.dropLast = dropLast;
    this.rng = rng;
    this.#sampleBytes = sampleBytes;
    this.#images = new Uint8Array(batchSize * sampleBytes);
    this.#labels = new Int32Array(batchSize);
  }

  /** The number of batches each epoch yields. */
  get batchesPerEpoch(): number {
    const { n } = this.dataset;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /**
   * Yields one epoch's batches as sample indices (`indices` is reused: copy what you keep),
   * drawing the order exactly as {@linkcode DataLoader.batches} does, so the two are
   * interchangeable for resume.
   */
  *indexBatches(): Generator<{ indices: Int32Array; size: number; index: number }, void> {
    const n = this.dataset.n;
    const order = this.shuffle ? this.rng.permutation(n) : undefined;
    const count = this.batchesPerEpoch;
    const buf = new Int32Array(this.batchSize);
    for (let index = 0; index < count; index++) {
      const start = index * this.batchSize;
      const size = Math.min(this.batchSize, n - start);
      for (let k = 0; k < size; k++) buf[k] = order === undefined ? start + k : order[start + k]!;
      yield { indices: buf.subarray(0, size), size, index };
    }
  }

  /**
   * Yields one epoch's batches. With `shuffle`, the epoch's order is drawn from `rng` when
   * iteration starts (on the first `next()`), not when this method is called.
   *
   * @param _epoch The epoch number, for the caller's bookkeeping; the order depends on the rng's
   * state only.
   */
  *batches(_epoch?: number): Generator<Batch, void, undefined> {
    const { images, labels, n } = this.dataset;
    const bytes = this.#sampleBytes;
    const order = this.shuffle ? this.rng.permutation(n) : undefined;
    const count = this.batchesPerEpoch;
    for (let index = 0; index < count; index++) {
      const start = index * this.batchSize;
      const size = Math.min(this.batchSize, n - start);
      if (order === undefined) {
        this.#images.set(images.subarray(start * bytes, (start + size) * bytes));
        this.#labels.set(labels.subarray(start, start + size));
      } else {
        for (let k = 0; k < size; k++) {
          const src = order[start + k] ?? 0;
          this.#images.set(images.subarray(src * bytes, (src + 1) * bytes), k * bytes);
          this.#labels[k] = labels[src] ?? 0;
        }
      }
      yield {
        images: size === this.batchSize ? this.#images : this.#images.subarray(0, size * bytes),
        labels: size === this.batchSize ? this.#labels : this.#labels.subarray(0, size),
        size,
        index,
      };
    }
  }
}
