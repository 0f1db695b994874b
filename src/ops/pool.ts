/**
 * Pooling ops on NHWC tensors: max, average (padding counted, as PyTorch's default) and global
 * average.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { convShape, type Pair } from "./conv.ts";

/** Pooling window options; the stride defaults to the kernel size. */
export interface PoolOptions {
  /** Step between windows, [rows, columns] or one for both (default: the kernel size). */
  stride?: Pair;
  /**
   * Padding on each side, [rows, columns] or one for both (default 0); max pooling skips padded
   * positions, average pooling counts them as zeros.
   */
  padding?: Pair;
}

function poolShape(op: string, x: Tensor, kernel: Pair, opts: PoolOptions) {
  if (x.shape.length !== 4) {
    throw new TypeError(
      `Cannot run ${op}: input must be [n, h, w, c], got [${x.shape.join(", ")}]`,
    );
  }
  const c = x.shape[3]!;
  return convShape(op, x.shape, c, kernel, {
    stride: opts.stride ?? kernel,
    padding: opts.padding ?? 0,
    groups: c,
  });
}

/** Max pooling over r x s windows. */
export function maxPool2d(tape: Tape, x: Tensor, kernel: Pair, opts: PoolOptions = {}): Tensor {
  const s = poolShape("max pool", x, kernel, opts);
  const y = tape.empty([s.n, s.p, s.q, s.c]);
  const argmax = tape.empty(y.shape, "i32");
  tape.backend.maxPool(y, argmax, x, s);
  if (tape.needsRecord([x])) tape.save(argmax);
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.maxPoolBackward(dx, dy, argmax, s);
    return [dx];
  });
  return y;
}

/** Average pooling over r x s windows (padding counts in the divisor). */
export function avgPool2d(tape: Tape, x: Tensor, kernel: Pair, opts: PoolOptions = {}): Tensor {
  const s = poolShape("average pool", x, kernel, opts);
  const y = tape.empty([s.n, s.p, s.q, s.c]);
  tape.backend.avgPool(y, x, s);
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.avgPoolBackward(dx, dy, s);
    return [dx];
  });
  return y;
}

/** Mean over h and w: [n, h, w, c] -> [n, c]. */
export function globalAvgPool(tape: Tape, x: Tensor): Tensor {
  if (x.shape.length !== 4) {
    throw new TypeError(
      `Cannot run global average pool: input must be [n, h, w, c], got [${x.shape.join(", ")}]`,
    );
  }
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const y = tape.empty([n, c]);
  tape.backend.globalAvgPool(y, x, n, h * w, c);
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.globalAvgPoolBackward(dx, dy, n, h * w, c);
    return [dx];
  });
  return y;
}
