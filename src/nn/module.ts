/**
 * The module tree: named children, parameters (trained) and buffers (state such as batch-norm
 * running statistics). Names are dotted paths as in PyTorch (`layer1.0.conv1.weight`), so
 * checkpoints map one to one to torchvision-style models.
 *
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import type { Rng } from "../data/rng.ts";
import { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";

/** What a layer needs to create its parameters. */
export interface InitContext {
  /** Backend on which the parameters and buffers are created. */
  backend: Backend;
  /** Seeded generator for weight initialization. */
  rng: Rng;
  /**
   * Create the weights as zeros without drawing random values (batch-norm state keeps its
   * defaults): for counting parameters or before loading weights. Default false.
   */
  zeros?: boolean;
}

/** A tensor of `shape` filled from U(-bound, bound) with `rng`. */
export function uniformTensor(init: InitContext, shape: number[], bound: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  if (init.zeros) return Tensor.from(init.backend, data, shape, "f32");
  for (let i = 0; i < n; i++) data[i] = (2 * init.rng.next() - 1) * bound;
  return Tensor.from(init.backend, data, shape, "f32");
}

/** A tensor of `shape` filled from N(0, std^2) with `rng`. */
export function normalTensor(init: InitContext, shape: number[], std: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  if (init.zeros) return Tensor.from(init.backend, data, shape, "f32");
  for (let i = 0; i < n; i++) data[i] = init.rng.normal(0, std);
  return Tensor.from(init.backend, data, shape, "f32");
}

/** Base class of layers and models. */
export abstract class Module {
  /** Training mode (batch statistics in batch norm) or evaluation mode. */
  training = true;
  #children: [string, Module][] = [];
  #params = new Map<string, Tensor>();
  #buffers = new Map<string, Tensor>();

  /** Computes the output for `x`, recording on `tape`. */
  abstract forward(tape: Tape, x: Tensor): Tensor;

  /** Registers a named child module; returns it. */
  protected child<M extends Module>(name: string, module: M): M {
    this.#children.push([name, module]);
    return module;
  }

  /** Registers a named parameter; returns it. */
  protected param(name: string, t: Tensor): Tensor {
    this.#params.set(name, t);
    return t;
  }

  /** Registers a named buffer (non-trained state saved in checkpoints); returns it. */
  protected buffer(name: string, t: Tensor): Tensor {
    this.#buffers.set(name, t);
    return t;
  }

  /** Direct children with their names. */
  children(): readonly [string, Module][] {
    return this.#children;
  }

  /** Every module of the tree with its dotted name ("" for this one), depth first. */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, m] of this.#children) {
      out.push(...m.namedModules(prefix === "" ? name : `${prefix}.${name}`));
    }
    return out;
  }

  /** Every parameter with its dotted name, in registration order. */
  namedParameters(): [string, Tensor][] {
    return this.#collect((m) => m.#params);
  }

  /** Every buffer with its dotted name. */
  namedBuffers(): [string, Tensor][] {
    return this.#collect((m) => m.#buffers);
  }

  /** Parameters and buffers: everything a checkpoint stores for the model. */
  stateTensors(): [string, Tensor][] {
    return [...this.namedParameters(), ...this.namedBuffers()];
  }

  #collect(pick: (m: Module) => Map<string, Tensor>): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, t] of pick(m)) out.push([prefix === "" ? name : `${prefix}.${name}`, t]);
    }
    return out;
  }

  /**
   * Name prefixes of state a weights file may hold that this model does without (an optional
   * head that was not built, such as Inception v3's `AuxLogits.` when `auxLogits` is off): the
   * loader skips those tensors instead of calling them unexpected, as torchvision does.
   */
  optionalStatePrefixes(): string[] {
    return [];
  }

  /** Number of trained scalars. */
  parameterCount(): number {
    return this.namedParameters().reduce((a, [, t]) => a + t.size, 0);
  }

  /** Sets training mode on the whole tree. */
  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }

  /** Sets evaluation mode on the whole tree. */
  eval(): this {
    return this.train(false);
  }

  /** Frees every parameter and buffer of the tree. */
  dispose(): void {
    for (const [, t] of this.stateTensors()) t.dispose();
  }
}
