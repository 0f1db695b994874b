/**
 * The one parametrized helper every op test runs through (after tinygrad's helper_test_op):
 * seeded inputs, the native forward against a double-precision reference, and the native
 * backward against central finite differences of that reference. Tolerances are stated per
 * call; a failure prints the max error and the first mismatches with decoded indices.
 *
 * Every backend reuses the same cases: `checkOp(case, backend)` runs the op on `backend` and, when
 * that is not the reference cpu backend, also on cpu, and checks the device against both the
 * float64 reference and the cpu result. Reads are asynchronous, so WebGPU can run them too.
 *
 * @module
 */
import { type Backend, type CpuBackend, isCpuBackend } from "../../src/backend/backend.ts";
import { getBackend } from "../../src/backend/registry.ts";
import { Tape } from "../../src/autograd/tape.ts";
import { Rng } from "../../src/data/rng.ts";
import { Tensor } from "../../src/tensor.ts";

/** The cpu backend, shared by the tests of one process: the reference for every backend. */
export function cpu(): CpuBackend {
  const b = getBackend("cpu");
  if (!isCpuBackend(b)) throw new Error("the cpu backend lacks its cpu knobs");
  return b;
}

/** Formats flat index `i` of `shape` as `[a, b, c]`. */
export function decodeIndex(i: number, shape: readonly number[]): string {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(i % shape[d]!);
    i = Math.floor(i / shape[d]!);
  }
  return `[${idx.join(", ")}]`;
}

/**
 * Throws unless |actual - expected| <= atol + rtol * |expected| everywhere, listing the worst
 * error and the first five mismatches.
 */
export function assertClose(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  shape: readonly number[],
  tol: { atol: number; rtol: number },
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} values, expected ${expected.length}`);
  }
  let worst = 0, worstAt = -1;
  const bad: string[] = [];
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    const err = Math.abs(a - e);
    const lim = tol.atol + tol.rtol * Math.abs(e);
    if (!(err <= lim)) {
      if (bad.length < 5) bad.push(`${decodeIndex(i, shape)}: got ${a}, expected ${e}`);
      if (!(err <= worst)) {
        worst = err;
        worstAt = i;
      }
    }
  }
  if (bad.length > 0) {
    throw new Error(
      `${what} [${shape.join(", ")}] differs (atol ${tol.atol}, rtol ${tol.rtol}); max error ` +
        `${worst} at ${decodeIndex(worstAt, shape)}; first mismatches:\n  ${bad.join("\n  ")}`,
    );
  }
}

/** A seeded array of `n` values from U(-1, 1), rounded to float32. */
export function randomArray(rng: Rng, n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.fround((2 * rng.next() - 1) * scale);
  return a;
}

/** One op test case. */
export interface OpCase {
  /** Input shapes by name, in the order the functions take them. */
  inputs: Record<string, number[]>;
  /** Inputs that get a gradient check (default: all). */
  grad?: string[];
  /** Value scale per input (default 1). */
  scale?: Record<string, number>;
  /** The native op on the tape. */
  native: (tape: Tape, t: Record<string, Tensor>) => Tensor;
  /** The double-precision reference on the same values. */
  reference: (a: Record<string, Float64Array>) => Float64Array;
  seed?: number;
  /** Forward tolerance (default atol 1e-5, rtol 1e-4). */
  fwdTol?: { atol: number; rtol: number };
  /** Gradient tolerance (default atol 2e-4, rtol 2e-3). */
  gradTol?: { atol: number; rtol: number };
}

/** Forward output and input gradients of one run of a case on one backend. */
interface OpRun {
  y: Float32Array;
  shape: readonly number[];
  grads: Map<string, Float32Array>;
}

async function runCase(
  c: OpCase,
  backend: Backend,
  host: Record<string, Float64Array>,
  r: (n: number) => Float64Array,
): Promise<OpRun> {
  const names = Object.keys(c.inputs);
  using tape = new Tape(backend);
  const dev: Record<string, Tensor> = {};
  for (const name of names) {
    dev[name] = tape.watch(
      tape.own(Tensor.from(backend, Float32Array.from(host[name]!), c.inputs[name]!, "f32")),
    );
  }
  const out = tape.keep(c.native(tape, dev));
  const seed = tape.own(Tensor.from(backend, Float32Array.from(r(out.size)), out.shape, "f32"));
  const g = tape.backward(out, seed);
  const grads = new Map<string, Float32Array>();
  for (const name of c.grad ?? names) {
    const t = g.get(dev[name]!.id);
    if (!t) throw new Error(`no gradient returned for input "${name}" on ${backend.name}`);
    grads.set(name, (await t.read()) as Float32Array);
  }
  return { y: (await out.read()) as Float32Array, shape: out.shape, grads };
}

/**
 * Runs the forward and backward of `c` on `backend` (default: cpu) and checks both against the
 * reference: forward values directly, gradients of L = sum(y * R) (R random) by central
 * differences. On any other backend the results must also match the cpu backend's.
 */
export async function checkOp(c: OpCase, backend: Backend = cpu()): Promise<void> {
  const rng = new Rng(c.seed ?? 1);
  const names = Object.keys(c.inputs);
  const host: Record<string, Float64Array> = {};
  for (const name of names) {
    const n = c.inputs[name]!.reduce((a, b) => a * b, 1);
    host[name] = randomArray(rng, n, c.scale?.[name] ?? 1);
  }
  let r: Float64Array | null = null;
  const seedOf = (n: number) => r ??= randomArray(rng, n);
  const got = await runCase(c, backend, host, seedOf);
  const fwdTol = c.fwdTol ?? { atol: 1e-5, rtol: 1e-4 };
  const gradTol = c.gradTol ?? { atol: 2e-4, rtol: 2e-3 };
  const on = backend === cpu() ? "" : ` on ${backend.name}`;
  assertClose(`forward${on}`, got.y, c.reference(host), got.shape, fwdTol);
  const objective = (a: Record<string, Float64Array>) => {
    const out = c.reference(a);
    let s = 0;
    for (let i = 0; i < out.length; i++) s += out[i]! * r![i]!;
    return s;
  };
  for (const name of c.grad ?? names) {
    const x = host[name]!;
    const fd = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const orig = x[i]!;
      const h = 1e-6 * Math.max(1, Math.abs(orig));
      x[i] = orig + h;
      const up = objective(host);
      x[i] = orig - h;
      const down = objective(host);
      x[i] = orig;
      fd[i] = (up - down) / (2 * h);
    }
    assertClose(`gradient of ${name}${on}`, got.grads.get(name)!, fd, c.inputs[name]!, gradTol);
  }
  if (on !== "") {
    const ref = await runCase(c, cpu(), host, seedOf);
    assertClose(`forward${on} vs cpu`, got.y, ref.y, got.shape, fwdTol);
    for (const [name, g] of got.grads) {
      const want = ref.grads.get(name)!;
      assertClose(`gradient of ${name}${on} vs cpu`, g, want, c.inputs[name]!, gradTol);
    }
  }
}
