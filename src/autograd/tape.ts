/**
 * A small tape for reverse-mode differentiation, and the owner of a step's temporaries.
 *
 * Every op takes the tape first: it allocates its outputs through `tape.empty()` (so the tape
 * disposes them at `dispose()`), and, when gradients are enabled and an input requires one,
 * records a backward closure. `backward(loss)` replays the closures in reverse and returns the
 * gradients of the watched leaves (the parameters). In evaluation, a tape with `grad: false`
 * only owns the temporaries.
 *
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import { type DType, Tensor } from "../tensor.ts";

/**
 * Computes the gradients of an op's inputs from the gradient of its output. `needs[i]` says
 * whether input i requires a gradient; return null where it does not. Every returned tensor
 * must be a distinct Tensor object (use `dy.reshape(dy.shape)` to pass a gradient through):
 * the tape takes ownership of each.
 */
export type BackwardFn = (dy: Tensor, needs: readonly boolean[]) => (Tensor | null)[];

interface Entry {
  inputs: readonly Tensor[];
  output: Tensor;
  backward: BackwardFn;
}

/** Records ops for backward and owns every tensor created through it. */
export class Tape {
  /** Backend on which the tape allocates its tensors. */
  readonly backend: Backend;
  /** Whether ops record backward closures. */
  readonly grad: boolean;
  #entries: Entry[] = [];
  #owned: Tensor[] = [];
  #requires = new Set<number>();
  #leaves = new Set<number>();

  /**
   * A tape allocating on `backend`; `opts.grad` (default true) says whether ops record backward
   * closures. Use `grad: false` for evaluation.
   *
   * @example
   * ```ts ignore
   * using tape = new Tape(backend, { grad: true });
   * ```
   */
  constructor(backend: Backend, opts: { grad?: boolean } = {}) {
    this.backend = backend;
    this.grad = opts.grad ?? true;
  }

  /** A new tensor owned by the tape (disposed with it). */
  empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return this.own(Tensor.empty(this.backend, shape, dtype));
  }

  /** Hands `t` to the tape: it is disposed with the tape. Returns `t`. */
  own(t: Tensor): Tensor {
    this.#owned.push(t);
    return t;
  }

  /** Marks a leaf (a parameter) whose gradient `backward` returns. */
  watch(t: Tensor): Tensor {
    if (this.grad) {
      this.#requires.add(t.id);
      this.#leaves.add(t.id);
    }
    return t;
  }

  /** Whether a gradient flows to `t`. */
  requiresGrad(t: Tensor): boolean {
    return this.#requires.has(t.id);
  }

  /** Records an op whose output depends on `inputs`; a no-op when no input requires grad. */
  record(inputs: readonly Tensor[], output: Tensor, backward: BackwardFn): void {
    if (!this.grad || !inputs.some((t) => this.#requires.has(t.id))) return;
    this.#requires.add(output.id);
    this.#entries.push({ inputs, output, backward });
  }

  /**
   * Back-propagates `seed` (the gradient of `output`; ones when omitted, as for a loss) and
   * returns the gradients of the watched leaves by tensor id. The tape owns the returned tensors.
   */
  backward(output: Tensor, seed?: Tensor): Map<number, Tensor> {
    if (!this.grad) throw new Error("Cannot run backward on a tape created with grad: false");
    if (seed === undefined) {
      seed = this.empty(output.shape);
      this.backend.fill(seed, 1);
    }
    const grads = new Map<number, Tensor>([[output.id, seed]]);
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const e = this.#entries[i]!;
      const dy = grads.get(e.output.id);
      if (dy === undefined) continue;
      const needs = e.inputs.map((t) => this.#requires.has(t.id));
      const dxs = e.backward(dy, needs);
      if (!this.#leaves.has(e.output.id)) grads.delete(e.output.id);
      for (let j = 0; j < e.inputs.length; j++) {
        const g = dxs[j];
        if (!needs[j] || g === null || g === undefined) continue;
        this.own(g);
        const id = e.inputs[j]!.id;
        const prev = grads.get(id);
        if (prev === undefined) {
          grads.set(id, g);
        } else {
          const sum = this.empty(g.shape);
          this.backend.add(sum, prev, g);
          grads.set(id, sum);
        }
      }
    }
    const out = new Map<number, Tensor>();
    for (const [id, g] of grads) if (this.#leaves.has(id)) out.set(id, g);
    return out;
  }

  /** Disposes every tensor the tape owns and forgets the recorded ops. */
  dispose(): void {
    for (const t of this.#owned) t.dispose();
    this.#owned = [];
    this.#entries = [];
    this.#requires.clear();
    this.#leaves.clear();
  }

  /** Calls `dispose()`, so `using tape = new Tape(...)` frees the step's tensors at scope exit. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
