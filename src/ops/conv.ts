/**
 * Convolution and linear ops on the tape: shape checks with clear errors, output allocation,
 * and the backward closure. The arithmetic (fp32 or a quantizer) is a parameter.
 *
 * @module
 */
import type { ConvShape } from "../backend/backend.ts";
import type { Tensor } from "../tensor.ts";
import { Tape } from "../autograd/tape.ts";
import { FP32, type GemmArithmetic, isLinearShape } from "./arithmetic.ts";

/** A pair of sizes (rows, columns) or one size for both. */
export type Pair = number | readonly [number, number];

/** Expands a `Pair` to `[rows, columns]`. */
export function pair(v: Pair): [number, number] {
  return typeof v === "number" ? [v, v] : [v[0], v[1]];
}

/** Convolution options. */
export interface Conv2dOptions {
  /** Step between windows, [rows, columns] or one for both (default 1). */
  stride?: Pair;
  /** Zeros added on each side of the input, [rows, columns] or one for both (default 0). */
  padding?: Pair;
  /**
   * Channel groups (default 1): input and output channels must both be divisible by it; each output
   * channel reads c / groups inputs.
   */
  groups?: number;
}

function expectRank(op: string, what: string, t: Tensor, rank: number, layout: string): void {
  if (t.shape.length !== rank) {
    throw new TypeError(
      `Cannot run ${op}: ${what} must be ${layout}, got shape [${t.shape.join(", ")}]`,
    );
  }
}

function expectF32(op: string, what: string, t: Tensor): void {
  if (t.dtype !== "f32") {
    throw new TypeError(`Cannot run ${op}: ${what} must be f32, got ${t.dtype}`);
  }
}

/**
 * The geometry of a convolution (or pool) of input [n, h, w, c] with a k x r x s kernel.
 * Throws a RangeError naming the problem when the output would be empty or an option is bad.
 */
export function convShape(
  op: string,
  input: readonly number[],
  k: number,
  kernel: Pair,
  opts: Conv2dOptions = {},
): ConvShape {
  const [n, h, w, c] = input as [number, number, number, number];
  const [r, s] = pair(kernel);
  const [strideH, strideW] = pair(opts.stride ?? 1);
  const [padH, padW] = pair(opts.padding ?? 0);
  const groups = opts.groups ?? 1;
  for (
    const [name, v, min] of [
      ["kernel height", r, 1],
      ["kernel width", s, 1],
      ["stride", strideH, 1],
      ["stride", strideW, 1],
      ["padding", padH, 0],
      ["padding", padW, 0],
      ["groups", groups, 1],
    ] as const
  ) {
    if (!Number.isInteger(v) || v < min) {
      throw new RangeError(`Cannot run ${op}: ${name} must be an integer >= ${min}, got ${v}`);
    }
  }
  if (c % groups !== 0 || k % groups !== 0) {
    throw new RangeError(
      `Cannot run ${op}: ${c} input and ${k} output channels are not divisible by ${groups} groups`,
    );
  }
  const p = Math.floor((h + 2 * padH - r) / strideH) + 1;
  const q = Math.floor((w + 2 * padW - s) / strideW) + 1;
  if (p <= 0 || q <= 0) {
    throw new RangeError(
      `Cannot run ${op}: a ${r}x${s} kernel with padding ${padH}x${padW} does not fit a ` +
        `${h}x${w} input`,
    );
  }
  return { n, h, w, c, k, r, s, groups, strideH, strideW, padH, padW, p, q };
}

/**
 * 2-D convolution. x: [n, h, w, c] (NHWC), weight: [k, r, s, c/groups] (OHWI), bias: [k].
 * Returns y: [n, p, q, k].
 */
export function conv2d(
  tape: Tape,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  opts: Conv2dOptions = {},
  arith: GemmArithmetic = FP32,
): Tensor {
  const op = "conv2d";
  expectRank(op, "input", x, 4, "[n, h, w, c]");
  expectRank(op, "weight", weight, 4, "[k, r, s, c/groups]");
  expectF32(op, "input", x);
  expectF32(op, "weight", weight);
  const [k, r, s, cg] = weight.shape as [number, number, number, number];
  const groups = opts.groups ?? 1;
  const c = x.shape[3]!;
  if (c !== cg * groups) {
    throw new TypeError(
      `Cannot run conv2d: input has ${c} channels, weight expects ${cg * groups} ` +
        `(${cg} per group x ${groups} groups)`,
    );
  }
  if (bias !== null && (bias.shape.length !== 1 || bias.shape[0] !== k)) {
    throw new TypeError(
      `Cannot run conv2d: bias must be [${k}], got [${bias.shape.join(", ")}]`,
    );
  }
  const shape = convShape(op, x.shape, k, [r, s], opts);
  return gemmOp(tape, x, weight, bias, shape, [shape.n, shape.p, shape.q, k], arith);
}

/** Fully connected layer. x: [m, k], weight: [n, k], bias: [n]. Returns y: [m, n]. */
export function linear(
  tape: Tape,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  arith: GemmArithmetic = FP32,
): Tensor {
  expectRank("linear", "weight", weight, 2, "[out, in]");
  expectF32("linear", "input", x);
  const [n, k] = weight.shape as [number, number];
  if (x.shape.length !== 2 || x.shape[1] !== k) {
    throw new TypeError(
      `Cannot run linear: input must be [batch, ${k}], got [${x.shape.join(", ")}]`,
    );
  }
  if (bias !== null && (bias.shape.length !== 1 || bias.shape[0] !== n)) {
    throw new TypeError(`Cannot run linear: bias must be [${n}], got [${bias.shape.join(", ")}]`);
  }
  const m = x.shape[0]!;
  const shape: ConvShape = {
    n: m,
    h: 1,
    w: 1,
    c: k,
    k: n,
    r: 1,
    s: 1,
    groups: 1,
    strideH: 1,
    strideW: 1,
    padH: 0,
    padW: 0,
    p: 1,
    q: 1,
  };
  return gemmOp(tape, x, weight, bias, shape, [m, n], arith);
}

function gemmOp(
  tape: Tape,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  shape: ConvShape,
  outShape: number[],
  arith: GemmArithmetic,
): Tensor {
  const y = tape.empty(outShape);
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  if (!tape.needsRecord(inputs)) {
    // No gradient flows through this op (evaluation): nothing to keep for a backward.
    using scratch = new Tape(tape.backend, { grad: false });
    arith.forward(scratch, y, x, weight, bias, shape);
    return y;
  }
  const saved = arith.forward(tape, y, x, weight, bias, shape);
  tape.record(inputs, y, (dy, needs, into) => {
    // x's gradient added in place into the one it has from other ops (conv dgrads only)
    const acc = needs[0] && !isLinearShape(shape) ? into?.[0] ?? null : null;
    const dx = acc ?? (needs[0] ? tape.empty(x.shape) : null);
    const dw = needs[1] ? tape.empty(weight.shape) : null;
    let db: Tensor | null = null;
    arith.backward(tape, saved, dy, dx, dw, shape, acc !== null);
    if (bias !== null && needs[2]) {
      db = tape.empty(bias.shape);
      tape.backend.biasGrad(db, dy, shape.n * shape.p * shape.q, shape.k);
    }
    return [dx, dw, db];
  });
  return y;
}
