/**
 * CIFAR-10 in its official binary format (`cifar-10-batches-bin`): `data_batch_1.bin` ..
 * `data_batch_5.bin` (training) and `test_batch.bin`, each a run of 3073-byte records: one label
 * byte, then 1024 red, 1024 green and 1024 blue bytes of a 32x32 image (row-major). Images are
 * returned NHWC.
 *
 * @module
 */
import { join } from "node:path";
import type { ImageDataset } from "./datasets.ts";

const SIDE = 32, PLANE = SIDE * SIDE, RECORD = 1 + 3 * PLANE, CLASSES = 10;
const TRAIN_FILES = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`);
const TEST_FILES = ["test_batch.bin"];

/** The class names of CIFAR-10, by label index. */
export const CIFAR10_CLASSES: readonly string[] = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Decodes CIFAR-10 binary records into a dataset. Throws a TypeError when the byte count is not
 * a whole number of 3073-byte records and a RangeError for a label outside 0..9, naming `source`
 * and the record.
 */
export function decodeCifar10(bytes: Uint8Array, source: string, name: string): ImageDataset {
  if (bytes.length % RECORD !== 0) {
    throw new TypeError(
      `Cannot read CIFAR-10 file "${source}": ${bytes.length} bytes are not a whole number of ` +
        `${RECORD}-byte records`,
    );
  }
  const n = bytes.length / RECORD;
  const images = new Uint8Array(n * 3 * PLANE), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const rec = i * RECORD, label = bytes[rec]!;
    if (label >= CLASSES) {
      throw new RangeError(
        `Cannot read CIFAR-10 file "${source}": record ${i} has label ${label}, outside 0..9`,
      );
    }
    labels[i] = label;
    const out = i * 3 * PLANE;
    for (let p = 0; p < PLANE; p++) {
      images[out + 3 * p] = bytes[rec + 1 + p]!;
      images[out + 3 * p + 1] = bytes[rec + 1 + PLANE + p]!;
      images[out + 3 * p + 2] = bytes[rec + 1 + 2 * PLANE + p]!;
    }
  }
  return { images, labels, n, height: SIDE, width: SIDE, channels: 3, classes: CLASSES, name };
}

/**
 * Loads one split of CIFAR-10 from `dir` (or its `cifar-10-batches-bin` subfolder): the five
 * training batches, or the test batch; `limit` keeps the first images.
 *
 * @throws {Error} If a file is missing.
 * @throws {TypeError} If a file's size is not a whole number of records.
 * @throws {RangeError} If a label is outside 0..9.
 */
export async function loadCifar10(
  dir: string,
  split: "train" | "test",
  opts: { limit?: number } = {},
): Promise<ImageDataset> {
  const sub = join(dir, "cifar-10-batches-bin");
  const base = await exists(join(sub, TEST_FILES[0]!)) ? sub : dir;
  const files = split === "train" ? TRAIN_FILES : TEST_FILES;
  const parts: ImageDataset[] = [];
  let total = 0;
  for (const f of files) {
    if (opts.limit !== undefined && total >= opts.limit) break;
    const path = join(base, f);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (cause) {
      throw new Error(
        `Cannot read CIFAR-10 file "${path}": ${(cause as Error).message}. Point --data-dir at ` +
          "the folder holding data_batch_1.bin .. data_batch_5.bin and test_batch.bin",
        { cause },
      );
    }
    const part = decodeCifar10(bytes, path, `cifar10-${split}`);
    parts.push(part);
    total += part.n;
  }
  const n = opts.limit === undefined ? total : Math.min(total, opts.limit);
  const images = new Uint8Array(n * 3 * PLANE), labels = new Int32Array(n);
  let at = 0;
  for (const p of parts) {
    const take = Math.min(p.n, n - at);
    images.set(p.images.subarray(0, take * 3 * PLANE), at * 3 * PLANE);
    labels.set(p.labels.subarray(0, take), at);
    at += take;
  }
  return {
    images,
    labels,
    n,
    height: SIDE,
    width: SIDE,
    channels: 3,
    classes: CLASSES,
    name: `cifar10-${split}`,
  };
}
