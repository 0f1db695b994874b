/**
 * Softmax cross-entropy, the classification loss.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";

/** The loss op's outputs: a loss tensor (for backward) and its host statistics. */
export interface CrossEntropyResult {
  /**
   * [2] f32 on the backend: [mean loss, correct predictions]; pass it to `tape.backward` (the
   * gradient seed's first element scales the mean loss, on the device).
   */
  loss: Tensor;
  /** Reads [mean loss, number of correct predictions] to the host (at a step edge). */
  read(): Promise<{ loss: number; correct: number }>;
  /** The same read, blocking (a device sync; tests and tools, never inside a training step). */
  readSync(): { loss: number; correct: number };
}

/**
 * Mean softmax cross-entropy of logits [n, classes] against int32 labels [n]. `accum` (f32 [4],
 * optional) accumulates [sum of losses, correct, rows, batches] on the device, so a trainer reads
 * its statistics only at step edges.
 */
export function softmaxCrossEntropy(
  tape: Tape,
  logits: Tensor,
  labels: Tensor,
  accum: Tensor | null = null,
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
  if (accum !== null && (accum.dtype !== "f32" || accum.size < 4)) {
    throw new TypeError(`Cannot run cross-entropy: accum must be f32 [4], got ${accum}`);
  }
  const stats = tape.keep(tape.empty([2]));
  const probs = tape.empty([n, classes]);
  tape.backend.softmaxCrossEntropy(stats, probs, accum, logits, labels, n, classes);
  if (tape.needsRecord([logits])) {
    tape.save(probs);
    tape.save(labels);
  }
  tape.record([logits], stats, (dloss) => {
    // The seed's first element scales the mean-loss gradient on the device (no read-back).
    const dx = tape.empty(logits.shape);
    tape.backend.softmaxCrossEntropyBackward(dx, probs, labels, dloss, n, classes, 1 / n);
    return [dx];
  });
  const host = new Float32Array(2);
  const result = () => ({ loss: host[0]!, correct: host[1]! });
  return {
    loss: stats,
    async read() {
      await tape.backend.read(host, stats);
      return result();
    },
    readSync() {
      if (!tape.backend.readSync) {
        throw new TypeError(`The ${tape.backend.name} backend has no blocking reads: use read()`);
      }
      tape.backend.readSync(host, stats);
      return result();
    },
  };
}
