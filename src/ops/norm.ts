/**
 * Batch normalization over the channel (last) dimension of an NHWC tensor.
 *
 * @module
 */
import type { BatchNormState } from "../backend/backend.ts";
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { add, relu } from "./elementwise.ts";
import { relu6 } from "./zoo.ts";

/** Batch-norm options (PyTorch's defaults). */
export interface BatchNormOptions {
  /** Use batch statistics and update the running ones (training), else the running ones. */
  training: boolean;
  /**
   * Weight of the batch statistics in running = (1 - momentum) * running + momentum * batch
   * (default 0.1).
   */
  momentum?: number;
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
}

// The channel count of x [..., c] after checking every state tensor is [c].
function channelsOf(x: Tensor, state: BatchNormState): number {
  const c = x.shape.at(-1)!;
  for (const [name, t] of Object.entries(state)) {
    if (t.shape.length !== 1 || t.shape[0] !== c) {
      throw new TypeError(
        `Cannot run batch norm: input has ${c} channels, ${name} is [${t.shape.join(", ")}]`,
      );
    }
  }
  return c;
}

function checkTrainRows(m: number): void {
  if (m < 2) {
    throw new RangeError(
      `Cannot run batch norm in training mode on ${m} value per channel: need at least 2`,
    );
  }
}

/** y = gamma * (x - mean) / sqrt(var + eps) + beta over the last dimension. */
export function batchNorm(
  tape: Tape,
  x: Tensor,
  state: BatchNormState,
  opts: BatchNormOptions,
): Tensor {
  const c = channelsOf(x, state);
  const m = x.size / c;
  const eps = opts.eps ?? 1e-5;
  const y = tape.empty(x.shape);
  if (!opts.training) {
    tape.backend.batchNormInfer(y, x, state, m, c, eps);
    tape.record([x, state.gamma, state.beta], y, () => {
      throw new Error("Cannot differentiate batch norm in inference mode: call model.train()");
    });
    return y;
  }
  checkTrainRows(m);
  const mean = tape.empty([c]), invStd = tape.empty([c]);
  tape.backend.batchNormTrain(y, mean, invStd, x, state, m, c, opts.momentum ?? 0.1, eps);
  // Backward needs the f32 input itself (x - mean), not a quantized copy.
  if (tape.needsRecord([x, state.gamma, state.beta])) {
    tape.save(x);
    tape.save(mean);
    tape.save(invStd);
  }
  tape.record([x, state.gamma, state.beta], y, (dy) => {
    const dx = tape.empty(x.shape), dg = tape.empty([c]), db = tape.empty([c]);
    tape.backend.batchNormBackward(dx, dg, db, dy, x, state.gamma, mean, invStd, m, c);
    return [dx, dg, db];
  });
  return y;
}

/**
 * relu(batchNorm(x) + residual) (residual optional: relu(batchNorm(x))), the conv -> bn -> relu
 * and residual-block tails of ResNets; with `activation` "relu6" min(max(., 0), 6) instead
 * (MobileNetV2's conv -> bn -> ReLU6). In training mode one fused backend op each way: the
 * normalized values, the sum and the activation are never written out separately, and backward
 * reads the activation's bit mask instead of a masked copy of dy. In evaluation mode the plain ops.
 */
export function batchNormRelu(
  tape: Tape,
  x: Tensor,
  state: BatchNormState,
  opts: BatchNormOptions,
  residual: Tensor | null = null,
  activation: "relu" | "relu6" = "relu",
): Tensor {
  const c = channelsOf(x, state);
  if (
    residual && (residual.shape.length !== x.shape.length ||
      residual.shape.some((d, i) => d !== x.shape[i]))
  ) {
    throw new TypeError(
      `Cannot run batch norm + residual: shapes [${x.shape.join(", ")}] and ` +
        `[${residual.shape.join(", ")}] differ`,
    );
  }
  if (!opts.training) {
    const y = batchNorm(tape, x, state, opts);
    const v = residual ? add(tape, y, residual) : y;
    return activation === "relu6" ? relu6(tape, v) : relu(tape, v);
  }
  const m = x.size / c;
  checkTrainRows(m);
  const y = tape.empty(x.shape);
  const mask = tape.empty([Math.ceil(x.size / 8)], "u8");
  const mean = tape.empty([c]), invStd = tape.empty([c]);
  tape.backend.batchNormReluTrain(
    y,
    mask,
    mean,
    invStd,
    x,
    residual,
    state,
    m,
    c,
    opts.momentum ?? 0.1,
    opts.eps ?? 1e-5,
    activation === "relu6" ? 6 : 0,
  );
  const inputs = residual ? [x, state.gamma, state.beta, residual] : [x, state.gamma, state.beta];
  if (tape.needsRecord(inputs)) {
    tape.save(x);
    tape.save(mask);
    tape.save(mean);
    tape.save(invStd);
  }
  tape.record(inputs, y, (dy, needs) => {
    const dx = tape.empty(x.shape), dg = tape.empty([c]), db = tape.empty([c]);
    const dres = residual && needs[3] ? tape.empty(x.shape) : null;
    tape.backend.batchNormReluBackward(
      dx,
      dres,
      dg,
      db,
      dy,
      mask,
      x,
      state.gamma,
      mean,
      invStd,
      m,
      c,
    );
    return [dx, dg, db, dres];
  });
  return y;
}
