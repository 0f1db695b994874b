/**
 * Reader for IDX files of unsigned bytes (the MNIST format), plain or gzip-compressed.
 *
 * An IDX file is a 4-byte magic number `00 00 <type> <ndims>`, `ndims` big-endian unsigned
 * 32-bit dimensions, then the data in row-major order. Only type 0x08 (unsigned byte) is
 * supported, which covers MNIST, Fashion-MNIST, EMNIST and KMNIST.
 *
 * @module
 */
import { gunzipSync } from "node:zlib";

/** An IDX array of unsigned bytes: its dimensions and its data in row-major order. */
export interface IdxArray {
  /** The dimensions, outermost first, e.g. `[60000, 28, 28]` for MNIST training images. */
  dims: number[];
  /** The elements in row-major order; `data.length` is the product of `dims`. */
  data: Uint8Array;
}

const IDX_TYPE_NAMES: Readonly<Record<number, string>> = {
  0x09: "signed byte",
  0x0b: "short",
  0x0c: "int",
  0x0d: "float",
  0x0e: "double",
};

function hex32(bytes: Uint8Array): string {
  let s = "0x";
  for (let i = 0; i < 4; i++) s += (bytes[i] ?? 0).toString(16).padStart(2, "0").toUpperCase();
  return s;
}

/** Returns true if `bytes` starts with the gzip magic bytes 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Parses an IDX file of unsigned bytes held in memory, decompressing it first if it is gzipped
 * (detected by the magic bytes 1f 8b). The returned data is a copy that does not alias `bytes`.
 *
 * @param bytes The file's contents.
 * @param nameForErrors The file name quoted in error messages.
 * @example
 * ```ts
 * import { parseIdx } from "./idx.ts";
 * const bytes = new Uint8Array([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]);
 * const { dims, data } = parseIdx(bytes, "example");
 * // dims: [2, 3], data: Uint8Array [1, 2, 3, 4, 5, 6]
 * ```
 * @throws {TypeError} If the gzip stream is corrupted, the magic number is not that of an IDX
 * file of unsigned bytes, or the data length does not match the dimensions.
 * @throws {RangeError} If the number of dimensions is outside 1..4.
 */
export function parseIdx(bytes: Uint8Array, nameForErrors: string): IdxArray {
  const what = `Cannot read IDX file "${nameForErrors}"`;
  let raw = bytes;
  if (isGzip(bytes)) {
    try {
      const buffer = gunzipSync(bytes); // a Node Buffer: view it as a plain Uint8Array
      raw = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    } catch (cause) {
      const msg = cause instanceof Error ? cause.message : String(cause);
      throw new TypeError(`${what}: the gzip data is corrupted (${msg})`, { cause });
    }
  }
  if (raw.length < 4) {
    throw new TypeError(
      `${what}: the file is ${raw.length} bytes, too short for the 4-byte IDX magic number`,
    );
  }
  if (raw[0] !== 0 || raw[1] !== 0 || raw[2] !== 0x08) {
    const typeName = raw[0] === 0 && raw[1] === 0 ? IDX_TYPE_NAMES[raw[2] ?? 0] : undefined;
    const detail = typeName === undefined ? "" : ` (it holds ${typeName}s)`;
    throw new TypeError(
      `${what}: magic number ${hex32(raw)} is not an IDX file of unsigned bytes${detail}`,
    );
  }
  const ndims = raw[3] ?? 0;
  if (ndims < 1 || ndims > 4) {
    throw new RangeError(`${what}: ${ndims} dimensions is outside the supported range 1..4`);
  }
  const headerBytes = 4 + 4 * ndims;
  if (raw.length < headerBytes) {
    throw new TypeError(
      `${what}: the file is truncated, expected a ${headerBytes}-byte header for ${ndims} ` +
        `dimensions, found ${raw.length} bytes`,
    );
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const dims: number[] = [];
  let expected = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    expected *= d;
  }
  const actual = raw.length - headerBytes;
  if (actual < expected) {
    throw new TypeError(
      `${what}: the file is truncated, expected ${expected} data bytes for dimensions ` +
        `[${dims.join(", ")}], found ${actual}`,
    );
  }
  if (actual > expected) {
    throw new TypeError(
      `${what}: expected ${expected} data bytes for dimensions [${dims.join(", ")}], ` +
        `found ${actual} (${actual - expected} trailing bytes)`,
    );
  }
  // A decompressed buffer is ours alone, so a view of it is enough; otherwise copy.
  const data = raw === bytes
    ? raw.slice(headerBytes)
    : raw.subarray(headerBytes, headerBytes + expected);
  return { dims, data };
}

/**
 * Reads an IDX file of unsigned bytes from disk, plain or gzipped.
 *
 * @param path The file's path.
 * @example
 * ```ts
 * import { readIdx } from "./idx.ts";
 * const path = await Deno.makeTempFile({ suffix: ".idx" });
 * await Deno.writeFile(path, Uint8Array.of(0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 9)); // 3 labels
 * const labels = await readIdx(path);
 * console.assert(labels.dims.join() === "3" && labels.data[2] === 9);
 * await Deno.remove(path);
 * ```
 * @throws {Error} If the file is missing or cannot be read.
 * @throws {TypeError | RangeError} As {@linkcode parseIdx} does, for a malformed file.
 */
export async function readIdx(path: string): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new Error(`Cannot read IDX file "${path}": the file is missing`, { cause });
    }
    const msg = cause instanceof Error ? cause.message : String(cause);
    throw new Error(`Cannot read IDX file "${path}": ${msg}`, { cause });
  }
  return parseIdx(bytes, path);
}
