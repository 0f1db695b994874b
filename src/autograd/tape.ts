/**
 * A small tape for reverse-mode differentiation, and the owner of a step's temporaries.
 *
 * Every op takes the tape first: it allocates its outputs through `tape.empty()` (so the tape
 * disposes them at `dispose()`), and, when gradients are enabled and an input requires one,
 * records a backward closure. `backward(loss)` replays the closures in reverse and returns the
 * gradients of the watched leaves (the parameters). In evaluation, a tape with `grad: false`
 * only owns the temporaries.
 *
 * Each backward closure owns what it needs and declares it with `save()` when it is recorded
 * (an INT8 conv keeps its int8 input, not the f32 one; ReLU keeps a bit mask). When backward
 * starts, the tape disposes every forward temporary that no closure saved and nobody `keep()`s,
 * so only the saved activations stay alive through backward (`savedBytes` measures them).
 *
 * @module
 */
import type { Backend, Storage } from "../backend/backend.ts";
import { type DType, Tensor } from "../tensor.ts";

/**
 * Computes the gradients of an op's inputs from the gradient of its output. `needs[i]` says
 * whether input i requires a gradient; return null where it does not. Every returned tensor
 * must be a distinct Tensor object (use `dy.reshape(dy.shape)` to pass a gradient through):
 * the tape takes ownership of each.
 *
 * `into[i]`, where given, is the gradient input i already has from other ops (a residual block's
 * input), owned by the tape and aliased by nothing else: an op that can add its gradient into it
 * in place (a conv's dgrad with `accumulate`) does so and returns that same tensor, which saves
 * the tape a separate `add`. Ops may ignore it and return a new tensor.
 */
export type BackwardFn = (
  dy: Tensor,
  needs: readonly boolean[],
  into?: readonly (Tensor | null)[],
) => (Tensor | null)[];

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
  #saved = new Set<Storage>();
  #kept = new Set<Storage>();
  #savedBytes = 0;

  /**
   * A tape allocating on `backend`; `opts.grad` (default true) says whether ops record backward
   * closures. Use `grad: false` for evaluation.
   *
   * @example
   * ```ts
   * import { getBackend } from "../backend/registry.ts";
   * import { Tape } from "./tape.ts";
   * import { relu } from "../ops/elementwise.ts";
   * import { Tensor } from "../tensor.ts";
   * const backend = getBackend("cpu");
   * using tape = new Tape(backend);
   * const x = tape.watch(tape.own(Tensor.from(backend, Float32Array.of(-1, 2), [2], "f32")));
   * const grads = tape.backward(relu(tape, x));
   * console.assert(grads.get(x.id)!.toFloat32()[1] === 1);
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
      this.#kept.add(t.storage);
    }
    return t;
  }

  /** Whether a gradient flows to `t`. */
  requiresGrad(t: Tensor): boolean {
    return this.#requires.has(t.id);
  }

  /** Whether `record` with these inputs would record (gradients on and one input needs one). */
  needsRecord(inputs: readonly Tensor[]): boolean {
    return this.grad && inputs.some((t) => this.#requires.has(t.id));
  }

  /**
   * Declares that a backward closure reads `t`: it stays alive until the tape is disposed.
   * Returns `t`. A no-op on a tape without gradients.
   */
  save<T extends Tensor>(t: T): T {
    if (this.grad) this.#saved.add(t.storage);
    return t;
  }

  /** Keeps the forward temporary `t` alive through backward (results read after it). */
  keep<T extends Tensor>(t: T): T {
    this.#kept.add(t.storage);
    return t;
  }

  /**
   * Bytes of the tape's own tensors that backward closures saved, as measured when the last
   * `backward` started (parameters and other tensors the tape does not own are not counted).
   */
  get savedBytes(): number {
    return this.#savedBytes;
  }

  /** Disposes the forward temporaries no closure saved; measures the saved bytes. */
  #releaseUnsaved(roots: readonly (Tensor | undefined)[]): void {
    const keep = new Set(this.#saved);
    for (const s of this.#kept) keep.add(s);
    for (const t of roots) if (t) keep.add(t.storage);
    const counted = new Set<Storage>();
    const owned: Tensor[] = [];
    for (const t of this.#owned) {
      if (t.disposed) continue;
      const s = t.storage;
      if (keep.has(s)) {
        owned.push(t);
        if (this.#saved.has(s)) counted.add(s);
      } else t.dispose();
    }
    this.#owned = owned;
    let bytes = 0;
    for (const s of counted) bytes += s.bytes;
    this.#savedBytes = bytes;
  }

  /**
   * Records an op whose output depends on `inputs`; a no-op when no input requires grad. The
   * closure must `save()` every tape tensor it reads besides its `dy`.
   */
  record(inputs: readonly Tensor[], output: Tensor, backward: BackwardFn): void {
    if (!this.needsRecord(inputs)) return;
    this.#requires.add(output.id);
    this.#entries.push({ inputs, output, backward });
  }

  /**
   * Back-propagates `seed` (the gradient of `output`; ones when omitted, as for a loss) and
   * returns the gradients of the watched leaves by tensor id. The tape owns the returned tensors.
   * `extraRoots` are further outputs with their seeds, back-propagated in the same pass (their
   * gradients add up where they meet): an auxiliary loss with its weight in the seed.
   */
  backward(
    output: Tensor,
    seed?: Tensor,
    extraRoots: readonly (readonly [Tensor, Tensor])[] = [],
  ): Map<number, Tensor> {
    if (!this.grad) throw new Error("Cannot run backward on a tape created with grad: false");
    const roots = [output, ...extraRoots.map(([t]) => t)];
    if (new Set(roots.map((t) => t.id)).size !== roots.length) {
      throw new RangeError("Cannot run backward: a root is given twice");
    }
    for (const [t, g] of extraRoots) {
      if (g.shape.length !== t.shape.length || g.shape.some((d, i) => d !== t.shape[i])) {
        throw new RangeError(
          `Cannot run backward: a root of shape [${t.shape.join(", ")}] has a seed of shape ` +
            `[${g.shape.join(", ")}]`,
        );
      }
    }
    this.#releaseUnsaved([output, seed, ...extraRoots.flat()]);
    if (seed === undefined) {
      seed = this.empty(output.shape);
      this.backend.fill(seed, 1);
    }
    const grads = new Map<number, Tensor>([[output.id, seed]]);
    for (const [t, g] of extraRoots) grads.set(t.id, g);
    // The caller's seeds are never written into.
    const seeds = new Set<Storage>([seed.storage, ...extraRoots.map(([, g]) => g.storage)]);
    // A gradient an op may add into: not a seed, not dy, and no other gradient shares its storage.
    const exclusive = (g: Tensor | undefined, dy: Tensor): Tensor | null => {
      if (g === undefined || seeds.has(g.storage) || g.storage === dy.storage) return null;
      let n = 0;
      for (const h of grads.values()) if (h.storage === g.storage) n++;
      return n === 1 ? g : null;
    };
    for (let i = this.#entries.length - 1; i >= 0; i--) {
      const e = this.#entries[i]!;
      const dy = grads.get(e.output.id);
      if (dy === undefined) continue;
      const needs = e.inputs.map((t) => this.#requires.has(t.id));
      const into = e.inputs.map((t, j) => needs[j] ? exclusive(grads.get(t.id), dy) : null);
      const dxs = e.backward(dy, needs, into);
      if (!this.#leaves.has(e.output.id)) grads.delete(e.output.id);
      for (let j = 0; j < e.inputs.length; j++) {
        const g = dxs[j];
        if (!needs[j] || g === null || g === undefined) continue;
        const id = e.inputs[j]!.id;
        const prev = grads.get(id);
        if (g === prev) continue; // added in place into the gradient it already had
        this.own(g);
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
    this.#saved.clear();
    this.#kept.clear();
  }

  /** Calls `dispose()`, so `using tape = new Tape(...)` frees the step's tensors at scope exit. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
