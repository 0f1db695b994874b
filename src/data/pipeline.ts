/**
 * The input pipeline for training: batches in the loader's (seeded, resumable) order, augmented
 * (random crop with padding, horizontal flip) and normalized per channel into f32 on a worker
 * thread while the main thread runs the previous step. `waitMs` accumulates the time the step
 * loop waited for data.
 *
 * @module
 */
import type { ImageDataset } from "./datasets.ts";
import type { DataLoader } from "./loader.ts";
import { augmentInto, type AugmentOptions, batchRng, channelMeanStd } from "./augment.ts";

/** A batch of network input, already normalized. */
export interface FloatBatch {
  /** f32 images [size, h, w, c]. */
  x: Float32Array;
  /** Labels [size]. */
  labels: Int32Array;
  /** Images in the batch. */
  size: number;
  /** Index of the batch in its epoch. */
  index: number;
}

/** Options of {@linkcode InputPipeline}. */
export interface PipelineOptions {
  /** Random crop (padding 4) and horizontal flip on training batches (default true). */
  augment?: boolean;
  /** Crop padding (default 4). */
  padding?: number;
  /** Seed of the augmentation choices. */
  seed: number;
  /** Batches made ahead on the worker (default 2; 0 makes them on the main thread). */
  prefetch?: number;
}

/** Training input: augmentation, per-channel normalization, a prefetching worker. */
export class InputPipeline {
  /** The normalization and augmentation settings. */
  readonly opts: AugmentOptions;
  /** Whether training batches are augmented. */
  readonly augment: boolean;
  /** Milliseconds the consumer waited for batches since the last `takeWait()`. */
  waitMs = 0;
  readonly #ds: ImageDataset;
  readonly #seed: number;
  readonly #prefetch: number;
  #worker: Worker | undefined;
  #next = 0;
  readonly #pending = new Map<number, (m: { x?: Float32Array; error?: string }) => void>();

  /** Normalization statistics come from `train` (per channel). */
  constructor(train: ImageDataset, opts: PipelineOptions) {
    const { mean, std } = channelMeanStd(train.images, train.channels);
    this.augment = opts.augment ?? true;
    this.opts = { padding: opts.padding ?? 4, flip: true, mean, std };
    this.#ds = train;
    this.#seed = opts.seed;
    this.#prefetch = opts.prefetch ?? 2;
  }

  #startWorker(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL("./augment_worker.ts", import.meta.url).href, { type: "module" });
    const ds = this.#ds;
    w.postMessage({
      type: "init",
      images: ds.images,
      dims: { height: ds.height, width: ds.width, channels: ds.channels },
      opts: this.opts,
      seed: this.#seed,
    });
    w.onmessage = (e: MessageEvent) => {
      const done = this.#pending.get(e.data.id);
      this.#pending.delete(e.data.id);
      done?.(e.data);
    };
    return this.#worker = w;
  }

  #request(epoch: number, b: { indices: Int32Array; index: number }): Promise<Float32Array> {
    const w = this.#startWorker();
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, (m) => {
        if (m.x) resolve(m.x);
        else reject(new Error(`Input pipeline worker failed: ${m.error}`));
      });
      w.postMessage({
        type: "batch",
        id,
        epoch,
        index: b.index,
        indices: b.indices.slice(),
        augment: this.augment,
      });
    });
  }

  /** One training epoch in `loader`'s order, `prefetch` batches ahead. */
  async *epoch(loader: DataLoader, epoch: number): AsyncGenerator<FloatBatch, void> {
    const ds = this.#ds;
    const px = ds.height * ds.width * ds.channels;
    const queue: { x: Promise<Float32Array> | Float32Array; labels: Int32Array; index: number }[] =
      [];
    const it = loader.indexBatches();
    const pull = (): boolean => {
      const r = it.next();
      if (r.done) return false;
      const labels = new Int32Array(r.value.size);
      for (let k = 0; k < r.value.size; k++) labels[k] = ds.labels[r.value.indices[k]!]!;
      let x: Promise<Float32Array> | Float32Array;
      if (this.#prefetch > 0) x = this.#request(epoch, r.value);
      else {
        x = new Float32Array(r.value.size * px);
        const rng = this.augment ? batchRng(this.#seed, epoch, r.value.index) : null;
        augmentInto(x, ds.images, r.value.indices, ds, this.opts, rng);
      }
      queue.push({ x, labels, index: r.value.index });
      return true;
    };
    for (let i = 0; i < Math.max(1, this.#prefetch); i++) if (!pull()) break;
    while (queue.length > 0) {
      const head = queue.shift()!;
      const t0 = performance.now();
      const x = await head.x;
      this.waitMs += performance.now() - t0;
      pull();
      yield { x, labels: head.labels, size: head.labels.length, index: head.index };
    }
  }

  /** `ds` in order, normalized with the training statistics, not augmented. */
  *evalBatches(ds: ImageDataset, batchSize: number): Generator<FloatBatch, void> {
    const px = ds.height * ds.width * ds.channels;
    for (let index = 0, start = 0; start < ds.n; index++, start += batchSize) {
      const size = Math.min(batchSize, ds.n - start);
      const idx = Int32Array.from({ length: size }, (_, k) => start + k);
      const x = new Float32Array(size * px);
      augmentInto(x, ds.images, idx, ds, this.opts, null);
      yield { x, labels: ds.labels.subarray(start, start + size), size, index };
    }
  }

  /** The wait time since the last call, in milliseconds; resets it. */
  takeWait(): number {
    const w = this.waitMs;
    this.waitMs = 0;
    return w;
  }

  /** Stops the worker. */
  close(): void {
    this.#worker?.terminate();
    this.#worker = undefined;
    for (const done of this.#pending.values()) done({ error: "the pipeline was closed" });
    this.#pending.clear();
  }
}
