/**
 * Stochastic gradient descent with momentum, Nesterov momentum and weight decay (PyTorch's
 * semantics, dampening 0), stepping on the backend. Momentum buffers are optimizer state,
 * saved in checkpoints.
 *
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import { Tensor } from "../tensor.ts";

/** SGD options. */
export interface SgdOptions {
  /** Learning rate (finite, >= 0). */
  lr: number;
  /** Momentum factor (default 0: plain SGD); dampening is 0. */
  momentum?: number;
  /** L2 penalty added to the gradient as weightDecay * w (default 0). */
  weightDecay?: number;
  /** Nesterov momentum (default false); needs a momentum > 0. */
  nesterov?: boolean;
}

/** SGD over named parameters. */
export class Sgd {
  /** Backend holding the parameters and the momentum buffers. */
  readonly backend: Backend;
  /** Base learning rate of the next `step` (the trainer sets it from the schedule every step). */
  lr: number;
  /** Momentum factor (0 = plain SGD). */
  readonly momentum: number;
  /** L2 penalty coefficient added to each gradient as weightDecay * w. */
  readonly weightDecay: number;
  /** Whether the step uses Nesterov momentum. */
  readonly nesterov: boolean;
  readonly #params: readonly [string, Tensor][];
  readonly #buffers = new Map<string, Tensor>();

  /**
   * An optimizer for `params` (name, tensor) pairs, with one zeroed momentum buffer per
   * parameter. Throws a RangeError when lr, momentum or weight decay is negative or not finite,
   * or when Nesterov is asked without a momentum > 0.
   *
   * @example
   * ```ts
   * import { getBackend } from "../backend/registry.ts";
   * import { Sgd } from "./sgd.ts";
   * import { Tensor } from "../tensor.ts";
   * const backend = getBackend("cpu");
   * const w = Tensor.full(backend, [2], 1);
   * const opt = new Sgd(backend, [["w", w]], { lr: 0.1, momentum: 0.9 });
   * using g = Tensor.full(backend, [2], 1);
   * opt.step(new Map([[w.id, g]]));
   * console.assert(Math.abs(w.toFloat32()[0]! - 0.9) < 1e-6);
   * opt.dispose();
   * w.dispose();
   * ```
   */
  constructor(backend: Backend, params: readonly [string, Tensor][], opts: SgdOptions) {
    for (
      const [name, v, min] of [
        ["learning rate", opts.lr, 0],
        ["momentum", opts.momentum ?? 0, 0],
        ["weight decay", opts.weightDecay ?? 0, 0],
      ] as const
    ) {
      if (!Number.isFinite(v) || v < min) {
        throw new RangeError(`Invalid SGD ${name} ${v}: must be a finite number >= ${min}`);
      }
    }
    if (opts.nesterov && !(opts.momentum! > 0)) {
      throw new RangeError("Nesterov momentum needs a momentum > 0");
    }
    this.backend = backend;
    this.lr = opts.lr;
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
    this.nesterov = opts.nesterov ?? false;
    this.#params = params;
    for (const [name, p] of params) this.#buffers.set(name, Tensor.full(backend, p.shape, 0));
  }

  /**
   * Applies one update; `grads` maps tensor ids (from `tape.backward`) to gradients. `nonfinite`
   * (u32 [1] on the backend) is set to 1 when a gradient or an updated weight is not finite:
   * read it at step edges.
   */
  step(
    grads: ReadonlyMap<number, Tensor>,
    lrScale: ReadonlyMap<string, number> = new Map(),
    nonfinite: Tensor | null = null,
  ): void {
    for (const [name, p] of this.#params) {
      const g = grads.get(p.id);
      if (g === undefined) continue;
      this.backend.sgdStep(p, this.#buffers.get(name)!, g, {
        lr: this.lr * (lrScale.get(name) ?? 1),
        momentum: this.momentum,
        weightDecay: this.weightDecay,
        nesterov: this.nesterov,
      }, nonfinite);
    }
  }

  /** Momentum buffers by parameter name (`<name>.momentum_buffer` in checkpoints). */
  stateTensors(): [string, Tensor][] {
    return [...this.#buffers].map(([name, t]) => [`${name}.momentum_buffer`, t]);
  }

  /** Frees the momentum buffers (not the parameters). */
  dispose(): void {
    for (const t of this.#buffers.values()) t.dispose();
  }
}
