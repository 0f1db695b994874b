/**
 * Softmax cross-entropy, the classification loss.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";

/** The loss op's outputs: a 1-element loss tensor (for backward) and its host statistics. */
export interface CrossEntropyResult {
  /** [1] f32 on the backend: the mean loss; pass to `tape.backward` with `lossGradSeed`. */
  loss: Tensor;
  /** Reads [mean loss, number of correct predictions] back to the host. */
  read(): { loss: number; correct: number };
}

/**
 * Mean softmax cross-entropy of logits [n, classes] against int32 labels [n].
 */
export function softmaxCrossEntropy(
  tape: Tape,
  logits: Tensor,
  labels: Tensor,
): CrossEntropyResult {
  if (logits.shape.length !== 2) {
    throw new TypeError(
      `Cannot run cross-entropy: logits must be [batch, classes], got [${logits.shape.join(", ")}]`,
    );
  }
  const [n, classes] = logits.shape as [number, number];
  if (labels.dtype !== "i32" || labels.shape.length !== 1 || labels.shape[0] !== n) {
    throw new TypeError(
      `Cannot run cross-entropy: labels must be [${n}] i32, got [${labels.shape.join(", ")}] ` +
        labels.dtype,
    );
  }
  const stats = tape.empty([2]);
  const probs = tape.empty([n, classes]);
  tape.backend.softmaxCrossEntropy(stats, probs, logits, labels, n, classes);
  const loss = tape.own(stats.reshape([2]));
  tape.record([logits], loss, (dloss) => {
    // The seed's first element scales the mean-loss gradient (1 for plain backward).
    const seed = dloss.toFloat32()[0]!;
    const dx = tape.empty(logits.shape);
    tape.backend.softmaxCrossEntropyBackward(dx, probs, labels, n, classes, seed / n);
    return [dx];
  });
  const host = new Float32Array(2);
  return {
    loss,
    read() {
      tape.backend.download(host, stats);
      return { loss: host[0]!, correct: host[1]! };
    },
  };
}
