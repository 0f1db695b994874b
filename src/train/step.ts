/**
 * One training step, shared by the trainer, `analyze` and the benchmarks: forward, loss,
 * backward (with the quantizers' device-side decisions), SGD, as one stream of device work with
 * no read to the host inside it. The loss, the correct count and the divergence flag accumulate
 * in device buffers; callers read them at step edges (`readLoss`, `readNonFinite`) only as often
 * as their log needs. Each step's work counters (`profile`) come from the backend's counters.
 *
 * @module
 */
import type { Backend, BackendCounters } from "../backend/backend.ts";
import { Tape } from "../autograd/tape.ts";
import type { Module } from "../nn/module.ts";
import { softmaxCrossEntropy } from "../ops/loss.ts";
import type { Sgd } from "../optim/sgd.ts";
import type { ModelQuantizer } from "../quant/quantizer.ts";
import { Tensor } from "../tensor.ts";

/** What one step cost: device calls, syncs, copies and the activations kept for backward. */
export interface StepProfile extends BackendCounters {
  /** Bytes of forward activations saved for backward (tape.savedBytes). */
  savedBytes: number;
}

/** The loss statistics accumulated on the device since the last `resetLoss`. */
export interface LossTotals {
  /** Mean loss per image. */
  loss: number;
  /** Images classified correctly. */
  correct: number;
  /** Images seen. */
  images: number;
  /** Steps (batches) seen. */
  steps: number;
}

/**
 * A model whose training-mode forward also leaves auxiliary logits to train on (Inception v3's
 * `AuxLogits`): the step adds `auxWeight` times their cross-entropy to the loss.
 */
export interface AuxiliaryHead {
  /** The last training forward's auxiliary logits [n, classes], or null. */
  readonly lastAux: Tensor | null;
  /** Weight of their cross-entropy in the differentiated loss. */
  readonly auxWeight: number;
}

function auxiliaryHead(m: Module): AuxiliaryHead | null {
  return "lastAux" in m && "auxWeight" in m ? m as unknown as AuxiliaryHead : null;
}

/** Builds a step's inputs on its tape: [x f32 NHWC, labels i32]. */
export type StepInput = (tape: Tape) => [Tensor, Tensor];

/** A training step over a model, its quantizers and its optimizer. */
export class TrainStep {
  /** The backend everything runs on. */
  readonly backend: Backend;
  readonly #model: Module;
  readonly #quantizer: ModelQuantizer;
  readonly #opt: Sgd;
  readonly #params: readonly [string, Tensor][];
  readonly #accum: Tensor;
  readonly #nonfinite: Tensor;
  /** The work counters of the last `run`. */
  profile: StepProfile | null = null;

  /**
   * A step for `model` trained by `opt`, with `quantizer` attached (its layers may be empty).
   *
   * @example
   * ```ts
   * import { getBackend } from "../backend/registry.ts";
   * import { Rng } from "../data/rng.ts";
   * import { lenet5 } from "../models/lenet.ts";
   * import { Sgd } from "../optim/sgd.ts";
   * import { quantConfig } from "../quant/config.ts";
   * import { ModelQuantizer } from "../quant/quantizer.ts";
   * import { Tensor } from "../tensor.ts";
   * import { TrainStep } from "./step.ts";
   * const backend = getBackend("cpu");
   * const model = lenet5({ backend, rng: new Rng(0) });
   * const q = new ModelQuantizer(model, quantConfig("daint8"), 0);
   * const opt = new Sgd(backend, model.namedParameters(), { lr: 0.01 });
   * const step = new TrainStep(backend, model, q, opt);
   * step.run((tape) => [
   *   tape.own(Tensor.full(backend, [2, 28, 28, 1], 0.5)),
   *   tape.own(Tensor.from(backend, Int32Array.of(3, 7), [2], "i32")),
   * ], 0.01);
   * console.assert(step.profile!.syncs === 0);
   * console.assert((await step.readLoss()).images === 2);
   * step.dispose();
   * opt.dispose();
   * q.dispose();
   * model.dispose();
   * ```
   */
  constructor(backend: Backend, model: Module, quantizer: ModelQuantizer, opt: Sgd) {
    this.backend = backend;
    this.#model = model;
    this.#quantizer = quantizer;
    this.#opt = opt;
    this.#params = model.namedParameters();
    this.#accum = Tensor.full(backend, [4], 0);
    this.#nonfinite = Tensor.empty(backend, [1], "i32");
    backend.fill(this.#nonfinite, 0); // 0.0f and the integer 0 share their bits
  }

  /**
   * Enqueues one step at learning rate `lr` on the batch `input` builds. Nothing in it waits for
   * the device.
   */
  run(input: StepInput, lr: number): void {
    const before = this.backend.counters();
    this.#opt.lr = lr;
    using tape = new Tape(this.backend);
    for (const [, p] of this.#params) tape.watch(p);
    const [x, y] = input(tape);
    const ce = softmaxCrossEntropy(tape, this.#model.forward(tape, x), y, this.#accum);
    // An auxiliary head's cross-entropy joins the differentiated loss with its weight (in the
    // seed); the reported loss and accuracy stay the main head's.
    const head = auxiliaryHead(this.#model);
    const extra: [Tensor, Tensor][] = [];
    if (head?.lastAux) {
      const aux = softmaxCrossEntropy(tape, head.lastAux, y);
      const seed = tape.empty(aux.loss.shape);
      this.backend.fill(seed, head.auxWeight);
      extra.push([aux.loss, seed]);
    }
    const grads = tape.backward(ce.loss, undefined, extra);
    this.#opt.step(grads, this.#quantizer.lrScales(), this.#nonfinite);
    const after = this.backend.counters();
    this.profile = {
      calls: after.calls - before.calls,
      syncs: after.syncs - before.syncs,
      reads: after.reads - before.reads,
      bytesUp: after.bytesUp - before.bytesUp,
      bytesDown: after.bytesDown - before.bytesDown,
      savedBytes: tape.savedBytes,
    };
  }

  /** Work at the step edge after `run`: UI8's lagged read of its search results. */
  async afterStep(): Promise<void> {
    await this.#quantizer.syncLrScales();
  }

  /** The loss totals since the last `resetLoss` (a step-edge read). */
  async readLoss(): Promise<LossTotals> {
    const a = new Float32Array(4);
    await this.backend.read(a, this.#accum);
    return { loss: a[2]! > 0 ? a[0]! / a[2]! : NaN, correct: a[1]!, images: a[2]!, steps: a[3]! };
  }

  /** Starts new loss totals (enqueued: no wait). */
  resetLoss(): void {
    this.backend.fill(this.#accum, 0);
  }

  /** Whether a gradient or a weight has been NaN or infinite since construction (a step-edge read). */
  async readNonFinite(): Promise<boolean> {
    const f = new Int32Array(1);
    await this.backend.read(f, this.#nonfinite);
    return f[0] !== 0;
  }

  /** Frees the step's device buffers (not the model, quantizer or optimizer). */
  dispose(): void {
    this.#accum.dispose();
    this.#nonfinite.dispose();
  }
}
