/**
 * Integrity checks of a native library file before it is mapped: a truncated or corrupted
 * shared object would otherwise crash the process with SIGBUS inside `dlopen`, with no message.
 *
 * - `elfProblem` checks the ELF structure: magic, 64-bit little-endian shared object for this
 *   CPU, and that every header table and loadable segment lies inside the file (a truncated file
 *   fails this).
 * - A stamp `<lib>.stamp.json` written next to the library by whoever produced it (the build,
 *   the cache) records its size and SHA-256; `libraryProblem` compares the file with it.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** What the producer of a library file recorded about it (`libdaint8_<backend>.stamp.json`). */
export interface LibraryStamp {
  /** Backend of the library (`cpu`, `cuda`). */
  backend: string;
  /** File size in bytes. */
  size: number;
  /** SHA-256 of the file, lowercase hex. */
  sha256: string;
  /** ABI version (D8_ABI_VERSION) of the sources it was built from. */
  abi: number;
  /** `build` (deno task build), `download` (prebuilt, manifest-checked) or `source` (cache). */
  origin: string;
  /** Producer-specific details (compiler flags, source URL, ...). */
  detail?: unknown;
}

/** The stamp file that belongs to library file `lib`. */
export function stampPath(lib: string): string {
  return `${lib.replace(/\.so$/, "")}.stamp.json`;
}

/** SHA-256 of `bytes`, lowercase hex. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const ELF_MACHINES: Record<string, number> = { x86_64: 62, aarch64: 183 };

/**
 * Why `bytes` is not a loadable 64-bit little-endian ELF shared object for this CPU, or
 * undefined when its headers are sound (every table and segment lies inside the file).
 */
export function elfProblem(bytes: Uint8Array): string | undefined {
  const size = bytes.length;
  if (size < 64) return `it is only ${size} bytes, too short for an ELF header`;
  if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
    return "it is not an ELF file (bad magic number)";
  }
  if (bytes[4] !== 2) return "it is not a 64-bit ELF file";
  if (bytes[5] !== 1) return "it is not a little-endian ELF file";
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = v.getUint16(16, true);
  if (type !== 3) return `it is not a shared object (ELF type ${type})`;
  const machine = v.getUint16(18, true);
  const want = ELF_MACHINES[Deno.build.arch];
  if (want !== undefined && machine !== want) {
    return `it is built for another CPU (ELF machine ${machine}, this ${Deno.build.arch} needs ${want})`;
  }
  const phoff = Number(v.getBigUint64(32, true));
  const shoff = Number(v.getBigUint64(40, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  const shentsize = v.getUint16(58, true);
  const shnum = v.getUint16(60, true);
  const truncated = (need: number, what: string) =>
    `it is truncated: ${size} bytes, but its ${what} ends at byte ${need}`;
  if (phnum === 0) return "it has no program headers";
  if (phoff + phnum * phentsize > size) {
    return truncated(phoff + phnum * phentsize, "program header table");
  }
  if (shoff !== 0 && shoff + shnum * shentsize > size) {
    return truncated(shoff + shnum * shentsize, "section header table");
  }
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== 1) continue; // PT_LOAD only
    const end = Number(v.getBigUint64(at + 8, true)) + Number(v.getBigUint64(at + 32, true));
    if (end > size) return truncated(end, `loadable segment ${i}`);
  }
  return undefined;
}

/** Reads the stamp of `lib`; undefined when there is none or it is not a stamp. */
export function readStamp(lib: string): LibraryStamp | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(stampPath(lib));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    const s = JSON.parse(text) as Partial<LibraryStamp>;
    if (typeof s.sha256 === "string" && typeof s.size === "number") return s as LibraryStamp;
  } catch { /* not JSON: treated as no stamp */ }
  return undefined;
}

/** The stamp describing library bytes `bytes`. */
export function makeStamp(
  bytes: Uint8Array,
  backend: string,
  abi: number,
  origin: string,
  detail?: unknown,
): LibraryStamp {
  return { backend, size: bytes.length, sha256: sha256Hex(bytes), abi, origin, detail };
}

/**
 * Why the library file `lib` must not be loaded, or undefined when it looks sound: its ELF
 * structure, and its size and SHA-256 against its stamp when it has one (`requireStamp`: a
 * missing stamp is a problem too, as in the cache, where every entry is written with one).
 * A missing file reads as "it does not exist".
 */
export function libraryProblem(lib: string, requireStamp = false): string | undefined {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(lib);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "it does not exist";
    throw e;
  }
  const elf = elfProblem(bytes);
  if (elf !== undefined) return elf;
  const stamp = readStamp(lib);
  if (stamp === undefined) {
    return requireStamp ? `its stamp ${stampPath(lib)} is missing` : undefined;
  }
  if (stamp.size !== bytes.length) {
    return `it is ${bytes.length} bytes, but ${stampPath(lib)} records ${stamp.size}`;
  }
  const digest = sha256Hex(bytes);
  if (digest !== stamp.sha256) {
    return `its SHA-256 is ${digest}, but ${stampPath(lib)} records ${stamp.sha256}`;
  }
  return undefined;
}
