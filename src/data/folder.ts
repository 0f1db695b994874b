/**
 * Image folders in torchvision's ImageFolder layout: `<root>/<split>/<class>/<image>`, classes
 * in sorted order as label indices, JPEG and PNG images (decoded in pure TypeScript with the npm
 * packages jpeg-js, BSD-3-Clause, and pngjs, MIT), all of one size, returned as RGB NHWC bytes.
 *
 * Decoding happens once: the pixels and labels go to `<cacheDir>/<split>.safetensors` beside
 * `<split>.manifest.json` (the class names, every file with its label, and a fingerprint of the
 * listing: names, sizes and modification times). Later loads read the cache when the folder's
 * fingerprint still matches, and decode again (rewriting the cache) when anything changed. Both
 * files are written to a temporary name and renamed, so a failed decode leaves no half-written
 * cache.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
// Inline npm: specifiers, as everywhere a module may be imported by URL (an importing project
// does not see this repository's import map); type-only, so nothing is fetched at run time.
// deno-lint-ignore no-import-prefix
import type jpegModule from "npm:jpeg-js@0.4.4";
// deno-lint-ignore no-import-prefix
import type { PNG as PngClass } from "npm:pngjs@7.0.0";
import { readSafetensors, writeSafetensorsAtomic } from "../io/safetensors.ts";
import type { ImageDataset } from "./datasets.ts";

/** Options of {@linkcode loadImageFolder}. */
export interface ImageFolderOptions {
  /**
   * Keep `limit` images, evenly spaced over the class-then-file-name order so that every class
   * keeps its share (the cache always holds the whole folder).
   */
  limit?: number;
  /** Where the decoded cache goes (default `<root>/.daint8-cache`). */
  cacheDir?: string;
  /** Called with progress lines (decoding, cache hits); silent when absent. */
  log?: (line: string) => void;
}

const IMAGE_EXT = /\.(jpe?g|png)$/i;

interface Listing {
  classes: string[];
  files: { path: string; label: number }[];
  fingerprint: string;
}

async function listFolder(dir: string): Promise<Listing> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (cause) {
    throw new Error(`Cannot read image folder "${dir}": ${(cause as Error).message}`, { cause });
  }
  const classes = entries.filter((e) => e.isDirectory && !e.name.startsWith(".")).map((e) => e.name)
    .sort();
  if (classes.length === 0) {
    throw new TypeError(`Image folder "${dir}" has no class folders (expected <class>/<image>)`);
  }
  const files: Listing["files"] = [];
  const parts: string[] = [];
  for (const [label, cls] of classes.entries()) {
    const cdir = join(dir, cls);
    const names = (await Array.fromAsync(Deno.readDir(cdir)))
      .filter((e) => e.isFile && IMAGE_EXT.test(e.name)).map((e) => e.name).sort();
    if (names.length === 0) {
      throw new TypeError(`Class folder "${cdir}" holds no JPEG or PNG images`);
    }
    for (const name of names) {
      const path = join(cdir, name);
      const st = await Deno.stat(path);
      files.push({ path, label });
      parts.push(`${cls}/${name}:${st.size}:${st.mtime?.getTime() ?? 0}`);
    }
  }
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(parts.join("\n")));
  const fingerprint = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  return { classes, files, fingerprint };
}

/** The pure-TypeScript image decoders (npm jpeg-js, pngjs). */
export interface ImageDecoders {
  /** jpeg-js's default export. */
  jpeg: typeof jpegModule;
  /** pngjs's PNG class. */
  PNG: typeof PngClass;
}

// Specifiers kept out of the static import graph: a user who imports mod.ts by URL and never
// reads an image folder does not fetch these packages.
const JPEG_SPEC = "npm:jpeg-js@0.4.4";
const PNG_SPEC = "npm:pngjs@7.0.0";
let decoders: ImageDecoders | undefined;

/** Loads the image decoders on first use. */
export async function loadDecoders(): Promise<ImageDecoders> {
  if (!decoders) {
    const [j, p] = await Promise.all([import(JPEG_SPEC), import(PNG_SPEC)]);
    decoders = { jpeg: j.default ?? j, PNG: p.PNG };
  }
  return decoders;
}

/**
 * Decodes a JPEG or PNG into RGB bytes with `dec` (from `loadDecoders`); throws an Error naming
 * `path` if it cannot.
 */
export function decodeImage(
  dec: ImageDecoders,
  bytes: Uint8Array,
  path: string,
): { width: number; height: number; rgb: Uint8Array } {
  const { jpeg, PNG } = dec;
  let rgba: Uint8Array, width: number, height: number;
  try {
    if (/\.png$/i.test(path)) {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      ({ width, height } = png);
      rgba = new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength);
    } else {
      // A JPEG ends with the EOI marker FF D9; jpeg-js decodes some truncated files silently.
      let end = bytes.length;
      while (end > 2 && bytes[end - 1] === 0) end--;
      if (end < 4 || bytes[end - 2] !== 0xff || bytes[end - 1] !== 0xd9) {
        throw new Error("the file is truncated (no end-of-image marker)");
      }
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
      ({ width, height } = img);
      rgba = img.data;
    }
  } catch (cause) {
    throw new Error(`Cannot decode image "${path}": ${(cause as Error).message}`, { cause });
  }
  if (!(width > 0 && height > 0) || rgba.length < width * height * 4) {
    throw new Error(`Cannot decode image "${path}": no pixels`);
  }
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    rgb[j] = rgba[i]!;
    rgb[j + 1] = rgba[i + 1]!;
    rgb[j + 2] = rgba[i + 2]!;
  }
  return { width, height, rgb };
}

async function decodeAll(listing: Listing, log?: (l: string) => void) {
  const n = listing.files.length;
  let images: Uint8Array | undefined, height = 0, width = 0, first = "";
  const labels = new Int32Array(n);
  const t0 = performance.now();
  const dec = await loadDecoders();
  for (const [i, f] of listing.files.entries()) {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(f.path);
    } catch (cause) {
      throw new Error(`Cannot read image "${f.path}": ${(cause as Error).message}`, { cause });
    }
    const img = decodeImage(dec, bytes, f.path);
    if (images === undefined) {
      ({ height, width } = img);
      first = f.path;
      images = new Uint8Array(n * height * width * 3);
    } else if (img.height !== height || img.width !== width) {
      throw new TypeError(
        `Image "${f.path}" is ${img.width}x${img.height} but "${first}" is ${width}x${height}: ` +
          "every image of a folder dataset must have the same size",
      );
    }
    images.set(img.rgb, i * height * width * 3);
    labels[i] = f.label;
    if (log && (i + 1) % 10000 === 0) log(`decoded ${i + 1}/${n} images`);
  }
  log?.(`decoded ${n} images in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { images: images!, labels, height, width };
}

/** Resolves the split folder: `test` falls back to `val` (and the reverse). */
export async function splitDir(root: string, split: "train" | "test"): Promise<string> {
  const names = split === "train" ? ["train"] : ["test", "val"];
  for (const name of names) {
    try {
      if ((await Deno.stat(join(root, name))).isDirectory) return join(root, name);
    } catch {
      // try the next name
    }
  }
  throw new Error(
    `Cannot find the ${split} split in image folder "${root}": expected ` +
      `${names.map((n) => `"${join(root, n)}"`).join(" or ")}`,
  );
}

/**
 * Loads one split of an image-folder dataset from `root` (`train/`, and `test/` or `val/`),
 * through the decoded cache.
 *
 * @throws {Error} If a folder or image cannot be read or an image cannot be decoded (the path
 * is named).
 * @throws {TypeError} If there are no class folders, a class folder holds no images, or the
 * images differ in size.
 */
export async function loadImageFolder(
  root: string,
  split: "train" | "test",
  opts: ImageFolderOptions = {},
): Promise<ImageDataset> {
  const dir = await splitDir(root, split);
  const listing = await listFolder(dir);
  const cacheDir = opts.cacheDir ?? join(root, ".daint8-cache");
  const cachePath = join(cacheDir, `${split}.safetensors`);
  const manifestPath = join(cacheDir, `${split}.manifest.json`);
  let data: { images: Uint8Array; labels: Int32Array; height: number; width: number } | undefined;
  try {
    const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
    if (manifest.fingerprint === listing.fingerprint) {
      const st = await readSafetensors(cachePath);
      if (st.metadata.fingerprint === listing.fingerprint) {
        const im = st.tensors.images!, lb = st.tensors.labels!;
        data = {
          images: im.data as Uint8Array,
          labels: lb.data as Int32Array,
          height: im.shape[1]!,
          width: im.shape[2]!,
        };
        opts.log?.(`read ${lb.shape[0]} decoded images from ${cachePath}`);
      }
    }
  } catch {
    // no cache, or an unreadable one: decode
  }
  if (data === undefined) {
    opts.log?.(`decoding ${listing.files.length} images of ${dir} (once; cached in ${cacheDir})`);
    data = await decodeAll(listing, opts.log);
    const n = listing.files.length;
    try {
      await Deno.mkdir(cacheDir, { recursive: true });
      await writeSafetensorsAtomic(cachePath, {
        images: { dtype: "U8", shape: [n, data.height, data.width, 3], data: data.images },
        labels: { dtype: "I32", shape: [n], data: data.labels },
      }, { fingerprint: listing.fingerprint });
      const manifest = JSON.stringify({
        fingerprint: listing.fingerprint,
        classes: listing.classes,
        files: listing.files.map((f) => [f.path.slice(dir.length + 1), f.label]),
      });
      const tmp = `${manifestPath}.tmp-${Deno.pid}`;
      await Deno.writeTextFile(tmp, manifest);
      await Deno.rename(tmp, manifestPath);
    } catch (e) {
      console.warn(
        `warning: cannot write the image cache in "${cacheDir}": ${(e as Error).message}`,
      );
    }
  }
  const total = listing.files.length;
  const n = opts.limit === undefined ? total : Math.min(total, opts.limit);
  const px = data.height * data.width * 3;
  // The order is class by class: every (total / n)-th image keeps all classes.
  let images = data.images, labels = data.labels;
  if (n < total) {
    images = new Uint8Array(n * px);
    labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const src = Math.floor(i * total / n);
      images.set(data.images.subarray(src * px, (src + 1) * px), i * px);
      labels[i] = data.labels[src]!;
    }
  }
  return {
    images,
    labels,
    n,
    height: data.height,
    width: data.width,
    channels: 3,
    classes: listing.classes.length,
    name: `${root.replace(/\/+$/, "").split("/").pop()}-${split}`,
  };
}
