/**
 * Shape-preserving ops on the tape: ReLU, elementwise add (residual connections), channel
 * concat, flatten.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";

function sameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new TypeError(
      `Cannot run ${op}: shapes [${a.shape.join(", ")}] and [${b.shape.join(", ")}] differ`,
    );
  }
}

/** y = max(x, 0); backward keeps a bit mask of x > 0 (1/32 of y's bytes), not y. */
export function relu(tape: Tape, x: Tensor): Tensor {
  const y = tape.empty(x.shape);
  if (!tape.needsRecord([x])) {
    tape.backend.relu(y, x);
    return y;
  }
  const mask = tape.save(tape.empty([Math.ceil(x.size / 8)], "u8"));
  tape.backend.reluMask(y, mask, x);
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.reluMaskBackward(dx, dy, mask);
    return [dx];
  });
  return y;
}

/** y = a + b (same shapes). */
export function add(tape: Tape, a: Tensor, b: Tensor): Tensor {
  sameShape("add", a, b);
  const y = tape.empty(a.shape);
  tape.backend.add(y, a, b);
  tape.record([a, b], y, (dy) => [dy.reshape(a.shape), dy.reshape(b.shape)]);
  return y;
}

/** Concatenates two NHWC tensors along channels: [n,h,w,ca] + [n,h,w,cb] -> [n,h,w,ca+cb]. */
export function concatChannels(tape: Tape, a: Tensor, b: Tensor): Tensor {
  const lead = a.shape.slice(0, -1);
  if (
    a.shape.length !== b.shape.length || lead.some((d, i) => d !== b.shape[i])
  ) {
    throw new TypeError(
      `Cannot run concat: shapes [${a.shape.join(", ")}] and [${b.shape.join(", ")}] differ ` +
        `outside the channel dimension`,
    );
  }
  const ca = a.shape.at(-1)!, cb = b.shape.at(-1)!;
  const rows = a.size / ca;
  const y = tape.empty([...lead, ca + cb]);
  tape.backend.concatChannels(y, a, b, rows, ca, cb);
  tape.record([a, b], y, (dy) => {
    const da = tape.empty(a.shape), db = tape.empty(b.shape);
    tape.backend.splitChannels(da, db, dy, rows, ca, cb);
    return [da, db];
  });
  return y;
}

/** [n, ...] -> [n, prod(...)]: a view, no copy (NHWC order is kept, so h, w, c flatten). */
export function flatten(tape: Tape, x: Tensor): Tensor {
  const n = x.shape[0]!;
  const y = tape.own(x.reshape([n, x.size / n]));
  tape.record([x], y, (dy) => [dy.reshape(x.shape)]);
  return y;
}
