/**
 * Ops the model zoo adds to the core set: ReLU6 (MobileNetV2), dropout (a seeded mask times the
 * input) and adaptive average pooling (VGG, AlexNet, Inception's classifier), each on the tape.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import type { Rng } from "../data/rng.ts";

/** y = min(max(x, 0), 6). */
export function relu6(tape: Tape, x: Tensor): Tensor {
  const y = tape.empty(x.shape);
  tape.backend.relu6(y, x);
  if (tape.needsRecord([x])) tape.save(y); // backward reads the output (0 < y < 6)
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.relu6Backward(dx, dy, y);
    return [dx];
  });
  return y;
}

/**
 * Inverted dropout: each element is zeroed with probability `p` (drawn from `rng`, so a run is
 * reproducible) and the others are scaled by 1 / (1 - p). Throws a RangeError unless 0 <= p < 1.
 */
export function dropout(tape: Tape, x: Tensor, p: number, rng: Rng): Tensor {
  if (!(p >= 0 && p < 1)) {
    throw new RangeError(`Cannot run dropout: probability must be in [0, 1), got ${p}`);
  }
  if (p === 0) return x;
  const keep = 1 / (1 - p);
  const host = new Float32Array(x.size);
  for (let i = 0; i < host.length; i++) host[i] = rng.next() < p ? 0 : keep;
  const mask = tape.empty(x.shape);
  tape.backend.upload(mask, host);
  const y = tape.empty(x.shape);
  tape.backend.mul(y, x, mask);
  if (tape.needsRecord([x])) tape.save(mask);
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.mul(dx, dy, mask);
    return [dx];
  });
  return y;
}

/**
 * Adaptive average pooling [n, h, w, c] -> [n, p, q, c] with PyTorch's windows (rows floor(i h /
 * p) to ceil((i + 1) h / p), columns likewise); outputs larger than the input repeat pixels.
 */
export function adaptiveAvgPool2d(tape: Tape, x: Tensor, size: readonly [number, number]): Tensor {
  if (x.shape.length !== 4) {
    throw new TypeError(
      `Cannot run adaptive average pool: input must be [n, h, w, c], got [${x.shape.join(", ")}]`,
    );
  }
  const [p, q] = size;
  if (!Number.isInteger(p) || !Number.isInteger(q) || p < 1 || q < 1) {
    throw new RangeError(
      `Cannot run adaptive average pool: output size must be positive integers, got ${p}x${q}`,
    );
  }
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const y = tape.empty([n, p, q, c]);
  tape.backend.adaptiveAvgPool(y, x, n, h, w, c);
  tape.record([x], y, (dy) => {
    const dx = tape.empty(x.shape);
    tape.backend.adaptiveAvgPoolBackward(dx, dy, n, h, w, c);
    return [dx];
  });
  return y;
}
