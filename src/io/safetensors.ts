/**
 * Reading and writing the safetensors format (https://github.com/huggingface/safetensors), as
 * used by PyTorch and Hugging Face for weights and checkpoints.
 *
 * Layout: an 8-byte little-endian unsigned header length `N`; `N` bytes of UTF-8 JSON mapping
 * each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to
 * the start of the data), plus an optional `"__metadata__"` map of strings, padded with spaces
 * to a multiple of 8 bytes; then the tensors' little-endian bytes, with no holes.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";

/** The element types supported, by their safetensors names. */
export type Dtype = "F64" | "F32" | "I64" | "I32" | "I16" | "I8" | "U64" | "U32" | "U16" | "U8";

/** The typed arrays that hold tensor data. */
export type TypedArray =
  | Float64Array
  | Float32Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigUint64Array
  | Uint32Array
  | Uint16Array
  | Uint8Array;

/** A tensor: element type, shape and row-major data (`data.length` = product of `shape`). */
export interface Tensor {
  /** The element type; must match `data`'s array type. */
  dtype: Dtype;
  /** The dimensions; `[]` is a scalar of one element. */
  shape: number[];
  /** The elements, row-major. */
  data: TypedArray;
}

/** The contents of a safetensors file. */
export interface Safetensors {
  /** The tensors by name, in the order of the file's header. */
  tensors: Record<string, Tensor>;
  /** The `__metadata__` strings (empty when absent). */
  metadata: Record<string, string>;
}

type TypedArrayConstructor = {
  new (length: number): TypedArray;
  readonly BYTES_PER_ELEMENT: number;
};

const DTYPES: Readonly<Record<Dtype, TypedArrayConstructor>> = {
  F64: Float64Array,
  F32: Float32Array,
  I64: BigInt64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U64: BigUint64Array,
  U32: Uint32Array,
  U16: Uint16Array,
  U8: Uint8Array,
};

const METADATA_KEY = "__metadata__";
/** The largest header accepted, as in the reference implementation (100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("Cannot use safetensors.ts: this host is big-endian");
}

/** Sets an own property, even one named `__proto__` (plain assignment would set the prototype). */
function define<T>(o: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

function isDtype(value: unknown): value is Dtype {
  return typeof value === "string" && Object.hasOwn(DTYPES, value);
}

function shapeSize(shape: readonly number[]): number {
  let size = 1;
  for (const d of shape) size *= d;
  return size;
}

function isShape(value: unknown): value is number[] {
  return Array.isArray(value) &&
    value.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0);
}

/**
 * Encodes tensors and optional metadata as a safetensors file. Tensors are laid out by
 * decreasing element size (then in the order given), so that each one's offset is a multiple of
 * its element size.
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors(
 *   { "fc.weight": { dtype: "F32", shape: [2, 3], data: new Float32Array(6) } },
 *   { format: "pt" },
 * );
 * ```
 * @throws {TypeError} If a name is empty or reserved, a dtype is unknown or does not match its
 * data's array type, a shape is not a list of non-negative integers, a data length differs from
 * the shape's size, or a metadata value is not a string.
 */
export function encodeSafetensors(
  tensors: Readonly<Record<string, Tensor>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    const what = `Cannot encode tensor "${name}"`;
    if (name === "" || name === METADATA_KEY) {
      throw new TypeError(`${what}: the name is reserved or empty`);
    }
    if (!isDtype(t.dtype)) throw new TypeError(`${what}: unknown dtype "${String(t.dtype)}"`);
    if (!isShape(t.shape)) {
      throw new TypeError(`${what}: shape ${JSON.stringify(t.shape)} is not a list of sizes`);
    }
    const ctor = DTYPES[t.dtype];
    if (!(t.data instanceof ctor)) {
      const got = (t.data as object | undefined)?.constructor?.name ?? String(t.data);
      throw new TypeError(`${what}: dtype ${t.dtype} needs a ${ctor.name}, got ${got}`);
    }
    if (t.data.length !== shapeSize(t.shape)) {
      throw new TypeError(
        `${what}: ${t.data.length} elements do not match shape [${t.shape.join(", ")}]`,
      );
    }
  }
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new TypeError(
          `Cannot encode metadata "${key}": value ${String(value)} is not a string`,
        );
      }
    }
  }
  const ordered = entries
    .map((entry, i) => ({ entry, i }))
    .sort((a, b) =>
      DTYPES[b.entry[1].dtype].BYTES_PER_ELEMENT - DTYPES[a.entry[1].dtype].BYTES_PER_ELEMENT ||
      a.i - b.i
    )
    .map(({ entry }) => entry);

  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const [name, t] of ordered) {
    const end = offset + t.data.byteLength;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let pos = 8 + headerLength;
  for (const [, t] of ordered) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    pos += t.data.byteLength;
  }
  return out;
}

/**
 * Decodes a safetensors file held in memory. Each tensor's data is a freshly allocated, aligned
 * copy that does not alias `bytes`.
 *
 * @param bytes The file's contents.
 * @param nameForErrors The file name quoted in error messages.
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors({ b: { dtype: "I32", shape: [2], data: new Int32Array([1, 2]) } });
 * const { tensors } = decodeSafetensors(bytes, "example.safetensors");
 * console.log(tensors.b?.data); // Int32Array [1, 2]
 * ```
 * @throws {TypeError} If the header length exceeds the file, the header is not valid JSON,
 * an entry is malformed (unknown dtype, bad shape, size not matching the shape), or the offsets
 * fall outside the data, overlap, or leave holes.
 */
export function decodeSafetensors(bytes: Uint8Array, nameForErrors: string): Safetensors {
  const what = `Cannot read safetensors file "${nameForErrors}"`;
  if (bytes.length < 8) {
    throw new TypeError(
      `${what}: the file is ${bytes.length} bytes, shorter than the 8-byte header`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(bytes.length - 8)) {
    throw new TypeError(
      `${what}: header length ${headerLength} exceeds the ${bytes.length - 8} bytes after it`,
    );
  }
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new TypeError(`${what}: header length ${headerLength} exceeds ${MAX_HEADER_BYTES}`);
  }
  const headerEnd = 8 + Number(headerLength);
  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, headerEnd));
    header = JSON.parse(text);
  } catch (cause) {
    const msg = cause instanceof Error ? cause.message : String(cause);
    throw new TypeError(`${what}: the header is not valid JSON (${msg})`, { cause });
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new TypeError(`${what}: the header is not a JSON object`);
  }
  const dataLength = bytes.length - headerEnd;

  const metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  const tensors: Record<string, Tensor> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        throw new TypeError(`${what}: "${METADATA_KEY}" is not an object of strings`);
      }
      for (const [key, value] of Object.entries(entry)) {
        if (typeof value !== "string") {
          throw new TypeError(
            `${what}: metadata "${key}" is ${JSON.stringify(value)}, not a string`,
          );
        }
        define(metadata, key, value);
      }
      continue;
    }
    const where = `${what}: tensor "${name}"`;
    if (typeof entry !== "object" || entry === null) {
      throw new TypeError(`${where} is not described by an object`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (!isDtype(dtype)) throw new TypeError(`${where} has unknown dtype ${JSON.stringify(dtype)}`);
    if (!isShape(shape)) {
      throw new TypeError(`${where} has shape ${JSON.stringify(shape)}, not a list of sizes`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new TypeError(
        `${where} has data_offsets ${JSON.stringify(offsets)}, not [begin, end] integers`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataLength) {
      throw new TypeError(
        `${where} has data_offsets [${begin}, ${end}] outside the ${dataLength}-byte data`,
      );
    }
    const ctor = DTYPES[dtype];
    const expected = shapeSize(shape) * ctor.BYTES_PER_ELEMENT;
    if (end - begin !== expected) {
      throw new TypeError(
        `${where} has ${end - begin} bytes, but shape [${shape.join(", ")}] of ${dtype} needs ` +
          `${expected}`,
      );
    }
    const data = new ctor(shapeSize(shape));
    new Uint8Array(data.buffer).set(bytes.subarray(headerEnd + begin, headerEnd + end));
    define(tensors, name, { dtype, shape, data });
    spans.push({ name, begin, end });
  }

  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous = "";
  for (const span of spans) {
    if (span.begin < covered) {
      throw new TypeError(
        `${what}: tensor "${span.name}" overlaps tensor "${previous}" (data_offsets ` +
          `[${span.begin}, ${span.end}] start before ${covered})`,
      );
    }
    if (span.begin > covered) {
      throw new TypeError(
        `${what}: bytes ${covered}..${span.begin} of the data belong to no tensor ` +
          `(before tensor "${span.name}")`,
      );
    }
    covered = span.end;
    previous = span.name;
  }
  if (covered !== dataLength) {
    throw new TypeError(
      `${what}: the data is ${dataLength} bytes, but the tensors cover only ${covered}`,
    );
  }
  return { tensors, metadata };
}

/**
 * Reads a safetensors file.
 *
 * @example
 * ```ts
 * import { readSafetensors, writeSafetensorsAtomic } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensorsAtomic(path, { w: { dtype: "F32", shape: [2], data: Float32Array.of(1, 2) } });
 * const { tensors } = await readSafetensors(path);
 * console.assert(tensors.w!.shape.join() === "2");
 * await Deno.remove(path);
 * ```
 * @throws {Error} If the file is missing or cannot be read.
 * @throws {TypeError} As {@linkcode decodeSafetensors} does, for a malformed file.
 */
export async function readSafetensors(path: string): Promise<Safetensors> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new Error(`Cannot read safetensors file "${path}": the file is missing`, { cause });
    }
    const msg = cause instanceof Error ? cause.message : String(cause);
    throw new Error(`Cannot read safetensors file "${path}": ${msg}`, { cause });
  }
  return decodeSafetensors(bytes, path);
}

/** True when process `pid` is alive (Linux `/proc`; elsewhere unknown: false). */
function processAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes the temporary files that earlier, killed writes of `path` left beside it
 * (`${path}.tmp-<pid>-<random>` of a process that is no longer running). Returns their paths.
 * Best effort: a file that cannot be listed or removed is left alone.
 */
export async function removeStaleTemporaries(path: string): Promise<string[]> {
  const dir = dirname(path), prefix = `${basename(path)}.tmp-`;
  const removed: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile || !e.name.startsWith(prefix)) continue;
      const m = /^([0-9]+)-[0-9a-f]{16}$/.exec(e.name.slice(prefix.length));
      if (!m || processAlive(Number(m[1]))) continue;
      try {
        await Deno.remove(join(dir, e.name));
        removed.push(join(dir, e.name));
      } catch {
        // gone already, or not ours to remove
      }
    }
  } catch {
    // the directory cannot be listed: the write below reports the real problem
  }
  return removed;
}

/**
 * Writes a safetensors file atomically: the bytes go to a temporary file beside `path`
 * (`${path}.tmp-<pid>-<random>`), which is flushed to disk, closed and renamed over `path`.
 * Readers see either the old file or the new one, never a partial one; on any failure the
 * temporary file is removed and an existing file at `path` is left untouched. Temporary files
 * of earlier writes of `path` by processes that were killed are removed first.
 *
 * @example
 * ```ts
 * import { writeSafetensorsAtomic } from "./safetensors.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensorsAtomic(
 *   path,
 *   { step: { dtype: "I64", shape: [], data: new BigInt64Array([1000n]) } },
 *   { epoch: "3" },
 * );
 * await Deno.remove(path);
 * ```
 * @throws {TypeError} As {@linkcode encodeSafetensors} does (before anything is written).
 * @throws {Error} If writing, flushing or renaming fails.
 */
export async function writeSafetensorsAtomic(
  path: string,
  tensors: Readonly<Record<string, Tensor>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  await removeStaleTemporaries(path);
  const random = crypto.getRandomValues(new Uint32Array(2));
  const suffix = Array.from(random, (x) => x.toString(16).padStart(8, "0")).join("");
  const tmp = `${path}.tmp-${Deno.pid}-${suffix}`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
    file.close();
    file = undefined;
    await Deno.rename(tmp, path);
  } catch (cause) {
    try {
      file?.close();
    } catch {
      // already closed
    }
    try {
      await Deno.remove(tmp);
    } catch {
      // never created, or already renamed
    }
    const msg = cause instanceof Error ? cause.message : String(cause);
    throw new Error(`Cannot write safetensors file "${path}": ${msg}`, { cause });
  }
  // Make the rename itself durable; not every platform can sync a directory.
  try {
    const dir = await Deno.open(dirname(path), { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  } catch {
    // best effort
  }
}
