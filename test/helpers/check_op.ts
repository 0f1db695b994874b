/**
 * The one parametrized helper every op test runs through (after tinygrad's helper_test_op):
 * seeded inputs, the native forward against a double-precision reference, and the native
 * backward against central finite differences of that reference. Tolerances are stated per
 * call; a failure prints the max error and the first mismatches with decoded indices.
 *
 * @module
 */
import type { Backend } from "../../src/backend/backend.ts";
import { getBackend } from "../../src/backend/native.ts";
import { Tape } from "../../src/autograd/tape.ts";
import { Rng } from "../../src/data/rng.ts";
import { Tensor } from "../../src/tensor.ts";

/** The cpu backend, shared by the tests of one process. */
export function cpu(): Backend {
  return getBackend("cpu");
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

/**
 * Runs the native forward and backward of `c` and checks both against the reference:
 * forward values directly, gradients of L = sum(y * R) (R random) by central differences.
 */
export function checkOp(c: OpCase): void {
  const backend = cpu();
  const rng = new Rng(c.seed ?? 1);
  const names = Object.keys(c.inputs);
  const host: Record<string, Float64Array> = {};
  for (const name of names) {
    const n = c.inputs[name]!.reduce((a, b) => a * b, 1);
    host[name] = randomArray(rng, n, c.scale?.[name] ?? 1);
  }
  using tape = new Tape(backend);
  const dev: Record<string, Tensor> = {};
  for (const name of names) {
    dev[name] = tape.watch(
      tape.own(Tensor.from(backend, Float32Array.from(host[name]!), c.inputs[name]!, "f32")),
    );
  }
  const y = c.native(tape, dev);
  const yRef = c.reference(host);
  assertClose("forward", y.toFloat32(), yRef, y.shape, c.fwdTol ?? { atol: 1e-5, rtol: 1e-4 });

  const r = randomArray(rng, y.size);
  const seed = tape.own(Tensor.from(backend, Float32Array.from(r), y.shape, "f32"));
  const grads = tape.backward(y, seed);
  const objective = (a: Record<string, Float64Array>) => {
    const out = c.reference(a);
    let s = 0;
    for (let i = 0; i < out.length; i++) s += out[i]! * r[i]!;
    return s;
  };
  for (const name of c.grad ?? names) {
    const g = grads.get(dev[name]!.id);
    if (!g) throw new Error(`no gradient returned for input "${name}"`);
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
    assertClose(
      `gradient of ${name}`,
      g.toFloat32(),
      fd,
      c.inputs[name]!,
      c.gradTol ?? { atol: 2e-4, rtol: 2e-3 },
    );
  }
}
