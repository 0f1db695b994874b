/**
 * A thin harness over the raw C ABI (ffi/symbols.ts) for comparing the cuda library against the
 * cpu reference, op by op: one context per library, buffers uploaded from the same host arrays,
 * results downloaded and compared. It uses only `loadLibrary` (ffi/library.ts), so it does not
 * depend on the TypeScript backend layer.
 *
 * `cudaAvailable()` says whether a cuda library and a device answer; GPU tests use it as
 * `Deno.test({ ignore: !gpu.ok })` and print `gpu.reason` when they skip.
 *
 * @module
 */
import { defaultLibraryPath, loadLibrary, type NativeLibrary } from "../../ffi/library.ts";

/** One library with one context. */
export class Lib {
  readonly lib: NativeLibrary;
  readonly ctx: bigint;
  readonly #bufs = new Set<bigint>();

  constructor(name: string) {
    this.lib = loadLibrary(name);
    const out = new BigUint64Array(1);
    this.lib.check(this.lib.symbols.d8_context_create(new Uint8Array(out.buffer), 0));
    this.ctx = out[0]!;
  }

  /** The library's symbols. */
  get s(): NativeLibrary["symbols"] {
    return this.lib.symbols;
  }

  /** Throws with the library's message unless status is 0. */
  check(status: number): void {
    this.lib.check(status);
  }

  /** A buffer of `bytes` bytes, filled from `init` when given. */
  buf(bytes: number, init?: ArrayBufferView): bigint {
    const out = new BigUint64Array(1);
    this.check(
      this.s.d8_buffer_alloc(new Uint8Array(out.buffer), this.ctx, BigInt(Math.max(bytes, 4))),
    );
    const b = out[0]!;
    this.#bufs.add(b);
    if (init) {
      const u8 = new Uint8Array(init.buffer, init.byteOffset, init.byteLength);
      this.check(this.s.d8_buffer_upload(b, 0n, u8, BigInt(u8.byteLength)));
    }
    return b;
  }

  /** Downloads `bytes` bytes of b. */
  get(b: bigint, bytes: number): Uint8Array {
    const out = new Uint8Array(bytes);
    this.check(this.s.d8_buffer_download(out, b, 0n, BigInt(bytes)));
    return out;
  }
  f32(b: bigint, n: number): Float32Array {
    return new Float32Array(this.get(b, 4 * n).buffer);
  }
  i32(b: bigint, n: number): Int32Array {
    return new Int32Array(this.get(b, 4 * n).buffer);
  }
  i8(b: bigint, n: number): Int8Array {
    return new Int8Array(this.get(b, n).buffer);
  }

  /** The library's last error message on this thread. */
  lastError(): string {
    const text = new Uint8Array(1024);
    const len = this.s.d8_last_error_copy(text, text.length);
    return new TextDecoder().decode(text.subarray(0, Math.min(len, text.length - 1)));
  }

  /** Frees every buffer made by buf(). */
  freeAll(): void {
    for (const b of this.#bufs) this.check(this.s.d8_buffer_free(b));
    this.#bufs.clear();
  }

  close(): void {
    this.freeAll();
    this.check(this.s.d8_context_destroy(this.ctx));
  }
}

/** Whether the cuda library loads and a device answers, with the reason when not. */
export function cudaAvailable(): { ok: boolean; reason: string } {
  const path = Deno.env.get("DAINT8_CUDA_LIB") ?? defaultLibraryPath("cuda");
  try {
    if (!path || !Deno.statSync(path).isFile) throw new Error("missing");
  } catch {
    return { ok: false, reason: `no cuda library at ${path} (nvcc absent or not built)` };
  }
  try {
    const l = new Lib("cuda");
    l.close();
    return { ok: true, reason: "" };
  } catch (e) {
    return {
      ok: false,
      reason: `cuda library present but no usable device: ${(e as Error).message}`,
    };
  }
}

/**
 * cudaAvailable() for a GPU test file: prints why its tests skip, or, with DAINT8_REQUIRE_CUDA=1
 * (test:cuda-emu, gpu:check's children), throws: a library that does not load is then a failure.
 */
export function cudaForTests(): { ok: boolean; reason: string } {
  const gpu = cudaAvailable();
  if (!gpu.ok && Deno.env.get("DAINT8_REQUIRE_CUDA") === "1") {
    throw new Error(`test/gpu: DAINT8_REQUIRE_CUDA=1 but ${gpu.reason}`);
  }
  if (!gpu.ok) console.log(`test/gpu: skipping the cuda tests: ${gpu.reason}`);
  return gpu;
}

/**
 * Which of the int8 kernel `versions` l's device runs, and the refused ones with the library's
 * reason ("v3: ..."; mma-m16n8k32 needs compute capability 8.0). Leaves the choice on auto.
 */
export function int8Versions(l: Lib, versions: number[]): { ok: number[]; refused: string[] } {
  const ok: number[] = [], refused: string[] = [];
  for (const v of versions) {
    if (l.s.d8_set_int8_kernel(l.ctx, v) === 0) ok.push(v);
    else refused.push(`v${v}: ${l.lastError()}`);
  }
  l.check(l.s.d8_set_int8_kernel(l.ctx, 0));
  return { ok, refused };
}

/** A conv shape as the 16 int32 of d8_conv_shape. */
export interface Conv {
  n: number;
  h: number;
  w: number;
  c: number;
  k: number;
  r: number;
  s: number;
  groups?: number;
  stride?: [number, number];
  pad?: [number, number];
}

/** d8_conv_shape bytes, and the derived sizes. */
/** d8_conv_shape of `c`; flags 1 = D8_CONV_ACCUMULATE (the dgrads add into dx). */
export function convShape(c: Conv, flags = 0): {
  bytes: Uint8Array;
  p: number;
  q: number;
  x: number;
  w: number;
  y: number;
  g: number;
} {
  const g = c.groups ?? 1, [sh, sw] = c.stride ?? [1, 1], [ph, pw] = c.pad ?? [0, 0];
  const p = Math.floor((c.h + 2 * ph - c.r) / sh) + 1,
    q = Math.floor((c.w + 2 * pw - c.s) / sw) + 1;
  const a = new Int32Array([c.n, c.h, c.w, c.c, c.k, c.r, c.s, g, sh, sw, ph, pw, p, q, flags, 0]);
  return {
    bytes: new Uint8Array(a.buffer),
    p,
    q,
    x: c.n * c.h * c.w * c.c,
    w: c.k * c.r * c.s * (c.c / g),
    y: c.n * p * q * c.k,
    g,
  };
}

/** Seeded xorshift32 generator. */
export class Rand {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed >>> 0) || 1;
  }
  u32(): number {
    let x = this.#s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#s = x;
    return x;
  }
  /** U(-1, 1) * scale as float32. */
  f32(n: number, scale = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (this.u32() / 4294967296 * 2 - 1) * scale;
    return a;
  }
  /** int8 in [-127, 127]. */
  i8(n: number): Int8Array {
    const a = new Int8Array(n);
    for (let i = 0; i < n; i++) a[i] = (this.u32() % 255) - 127;
    return a;
  }
}

/** Throws unless |a - e| <= atol + rtol * |e| everywhere (first mismatches in the message). */
export function assertClose(
  what: string,
  a: ArrayLike<number>,
  e: ArrayLike<number>,
  tol: { atol: number; rtol: number },
): void {
  if (a.length !== e.length) throw new Error(`${what}: ${a.length} values, expected ${e.length}`);
  const bad: string[] = [];
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i]! - e[i]!);
    if (!(err <= tol.atol + tol.rtol * Math.abs(e[i]!))) {
      if (bad.length < 5) bad.push(`[${i}]: got ${a[i]}, expected ${e[i]}`);
      if (!(err <= worst)) worst = err;
    }
  }
  if (bad.length > 0) {
    throw new Error(`${what} differs (max error ${worst}):\n  ${bad.join("\n  ")}`);
  }
}

/** Throws unless the two arrays are identical element for element. */
export function assertEqualArrays(what: string, a: ArrayLike<number>, e: ArrayLike<number>): void {
  if (a.length !== e.length) throw new Error(`${what}: ${a.length} values, expected ${e.length}`);
  let n = 0;
  const bad: string[] = [];
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], e[i]) && !(a[i] === e[i])) {
      n++;
      if (bad.length < 5) bad.push(`[${i}]: got ${a[i]}, expected ${e[i]}`);
    }
  }
  if (n > 0) throw new Error(`${what}: ${n} of ${a.length} differ:\n  ${bad.join("\n  ")}`);
}

/** The median of `a` (the upper one of an even count), for the GPU benchmarks' timings. */
export function median(a: readonly number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}
