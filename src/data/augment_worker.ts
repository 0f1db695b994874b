/**
 * The input pipeline's worker: holds a dataset's bytes and makes augmented, normalized f32
 * batches on request, in parallel with the training step on the main thread.
 *
 * Messages in: `{ type: "init", images, dims, opts, seed }`, then `{ type: "batch", id, epoch,
 * index, indices, augment }`. Out: `{ id, x }` (x transferred) or `{ id, error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { augmentInto, type AugmentOptions, batchRng, type ImageDims } from "./augment.ts";

let images: Uint8Array | undefined, dims: ImageDims | undefined;
let opts: AugmentOptions | undefined, seed = 0;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  if (m.type === "init") {
    ({ images, dims, opts, seed } = m);
    return;
  }
  try {
    const px = dims!.height * dims!.width * dims!.channels;
    const x = new Float32Array(m.indices.length * px);
    const rng = m.augment ? batchRng(seed, m.epoch, m.index) : null;
    augmentInto(x, images!, m.indices, dims!, opts!, rng);
    self.postMessage({ id: m.id, x }, [x.buffer]);
  } catch (err) {
    self.postMessage({ id: m.id, error: String((err as Error)?.message ?? err) });
  }
};
