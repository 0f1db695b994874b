/**
 * Reader for IDX files of unsigned bytes (the MNIST format), plain or gzip-compressed.
 *
 * An IDX file is a 4-byte magic number `00 00 <type> <ndims>`, `ndims` big-endian unsigned
 * 32-bit dimensions, then the data in row-major order. Only type 0x08 (unsigned byte) is
 * supported, which covers MNIST, Fashion-MNIST, EMNIST and KMNIST.
 *
 * @module
 */
import { constants as zlibConstants, gunzipSync } from "node:zlib";

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

/** The most data bytes an IDX file may hold by default (1 GiB; MNIST's largest file has 47 MB). */
export const MAX_IDX_BYTES = 2 ** 30;

interface IdxHeader {
  dims: number[];
  headerBytes: number;
  expected: number;
}

/**
 * Reads the IDX header at the start of `raw`: undefined when `raw` is too short to hold it
 * (the caller decides whether that is truncation). Throws on a bad magic number, a bad number of
 * dimensions or dimensions needing more than `maxBytes` data bytes.
 */
function readHeader(raw: Uint8Array, what: string, maxBytes: number): IdxHeader | undefined {
  if (raw.length < 4) return undefined;
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
  if (raw.length < headerBytes) return undefined;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const dims: number[] = [];
  let expected = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    expected *= d;
  }
  if (expected > maxBytes) {
    throw new RangeError(
      `${what}: dimensions [${dims.join(", ")}] need ${expected} data bytes, more than the ` +
        `limit of ${maxBytes}`,
    );
  }
  return { dims, headerBytes, expected };
}

function checkMaxBytes(maxBytes: number): void {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(
      `Cannot read IDX data: maxBytes ${maxBytes} is not a non-negative integer`,
    );
  }
}

/**
 * Decompresses gzip data, never producing more than `limit` bytes: the IDX header is read from
 * a decompressed prefix first and checked against `maxBytes`, so a small file that expands to
 * gigabytes is refused after a few kilobytes.
 */
function gunzipIdx(bytes: Uint8Array, what: string, maxBytes: number): Uint8Array {
  let limit = 4 + 4 * 4 + maxBytes;
  let promised = false;
  try {
    // Deflate expands at most ~1032:1, so 1 KiB of input is at most ~1 MiB of output.
    const prefix = gunzipSync(bytes.subarray(0, 1024), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
    const header = readHeader(
      new Uint8Array(prefix.buffer, prefix.byteOffset, prefix.length),
      what,
      maxBytes,
    );
    if (header) {
      limit = header.headerBytes + header.expected;
      promised = true;
    }
  } catch (e) {
    if (!(e instanceof Error) || e.message.startsWith(what)) throw e;
    // a corrupted prefix: the full decompression below reports it
  }
  try {
    // One byte more than allowed tells "too long" from "exactly right".
    const buffer = gunzipSync(bytes, { maxOutputLength: limit + 1 });
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } catch (cause) {
    if ((cause as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new RangeError(
        `${what}: the gzip data expands to more than the ${limit} bytes ` +
          (promised ? "its IDX header promises" : `allowed (limit ${maxBytes} data bytes)`),
        { cause },
      );
    }
    const msg = cause instanceof Error ? cause.message : String(cause);
    throw new TypeError(`${what}: the gzip data is corrupted (${msg})`, { cause });
  }
}

/**
 * Parses an IDX file of unsigned bytes held in memory, decompressing it first if it is gzipped
 * (detected by the magic bytes 1f 8b). The returned data is a copy that does not alias `bytes`.
 *
 * @param bytes The file's contents.
 * @param nameForErrors The file name quoted in error messages.
 * @param opts `maxBytes`: the most data bytes accepted (default {@linkcode MAX_IDX_BYTES}). A
 * header whose dimensions need more is refused before anything is decompressed or allocated, and
 * gzip data that expands beyond what the header promises is cut off there.
 * @example
 * ```ts
 * import { parseIdx } from "./idx.ts";
 * const bytes = new Uint8Array([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]);
 * const { dims, data } = parseIdx(bytes, "example");
 * // dims: [2, 3], data: Uint8Array [1, 2, 3, 4, 5, 6]
 * ```
 * @throws {TypeError} If the gzip stream is corrupted, the magic number is not that of an IDX
 * file of unsigned bytes, or the data length does not match the dimensions.
 * @throws {RangeError} If the number of dimensions is outside 1..4, or the data would exceed
 * `maxBytes`.
 */
export function parseIdx(
  bytes: Uint8Array,
  nameForErrors: string,
  opts: { maxBytes?: number } = {},
): IdxArray {
  const what = `Cannot read IDX file "${nameForErrors}"`;
  const maxBytes = opts.maxBytes ?? MAX_IDX_BYTES;
  checkMaxBytes(maxBytes);
  const raw = isGzip(bytes) ? gunzipIdx(bytes, what, maxBytes) : bytes;
  if (raw.length < 4) {
    throw new TypeError(
      `${what}: the file is ${raw.length} bytes, too short for the 4-byte IDX magic number`,
    );
  }
  const header = readHeader(raw, what, maxBytes);
  if (header === undefined) {
    const headerBytes = 4 + 4 * (raw[3] ?? 0);
    throw new TypeError(
      `${what}: the file is truncated, expected a ${headerBytes}-byte header for ${raw[3]} ` +
        `dimensions, found ${raw.length} bytes`,
    );
  }
  const { dims, headerBytes, expected } = header;
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
 * Reads an IDX file of unsigned bytes from disk, plain or gzipped. A file larger than
 * `maxBytes` plus the largest header is refused before it is read.
 *
 * @param path The file's path.
 * @param opts `maxBytes`: the most data bytes accepted (default {@linkcode MAX_IDX_BYTES}).
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
export async function readIdx(path: string, opts: { maxBytes?: number } = {}): Promise<IdxArray> {
  const maxBytes = opts.maxBytes ?? MAX_IDX_BYTES;
  checkMaxBytes(maxBytes);
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (info.isFile && info.size > maxBytes + 4 + 4 * 4) {
      throw new RangeError(
        `Cannot read IDX file "${path}": the file is ${info.size} bytes, more than the limit ` +
          `of ${maxBytes} data bytes`,
      );
    }
    bytes = await Deno.readFile(path);
  } catch (cause) {
    if (cause instanceof RangeError) throw cause;
    if (cause instanceof Deno.errors.NotFound) {
      throw new Error(`Cannot read IDX file "${path}": the file is missing`, { cause });
    }
    const msg = cause instanceof Error ? cause.message : String(cause);
    throw new Error(`Cannot read IDX file "${path}": ${msg}`, { cause });
  }
  return parseIdx(bytes, path, opts);
}
