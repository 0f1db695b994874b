/**
 * One full training step (forward, loss, backward, SGD) on synthetic seeded data, shared by the
 * `deno bench` file and the side-by-side report, so both time exactly the same work.
 *
 * @module
 */
import type { Backend } from "../src/backend/backend.ts";
import { Rng } from "../src/data/rng.ts";
import { createModel } from "../src/models/registry.ts";
import type { Module } from "../src/nn/module.ts";
import { Sgd } from "../src/optim/sgd.ts";
import { quantConfig } from "../src/quant/config.ts";
import { ModelQuantizer } from "../src/quant/quantizer.ts";
import { Tensor } from "../src/tensor.ts";
import { TrainStep } from "../src/train/step.ts";

/** A ready-to-run training step and its cleanup. */
export interface StepRunner {
  model: Module;
  /** The shared training step (its `profile` holds the last step's work counters). */
  trainStep: TrainStep;
  /** The synthetic batch: images [batch, size, size, channels] f32 and labels [batch] i32. */
  x: Tensor;
  /** The batch's labels. */
  y: Tensor;
  /** Runs one step and waits for the device (the timed unit). */
  step(): Promise<void>;
  /** Enqueues one step on the next batch without waiting (time several, then synchronize). */
  enqueue(): void;
  /** Mean loss of the steps run since the last call (a step-edge read). */
  loss(): Promise<number>;
  dispose(): void;
}

/**
 * Builds model `name` for [batch, size, size, channels] inputs with 10 classes, trained with
 * quantization preset `quant` and its knob overrides `knobs` (`k=v,k=v`, see quantConfig).
 * `batches` seeded batches are made; `step()` rotates over them, so no batch stays cached.
 */
export function makeStep(
  backend: Backend,
  name: string,
  batch: number,
  quant = "fp32",
  input: { channels: number; size: number } = { channels: 1, size: 28 },
  knobs = "",
  batches = 1,
): StepRunner {
  const rng = new Rng(0);
  const model = createModel(name, { backend, rng }, {
    inChannels: input.channels,
    inputSize: input.size,
    classes: 10,
  });
  const quantizer = new ModelQuantizer(model, quantConfig(quant, knobs), 0);
  const opt = new Sgd(backend, model.namedParameters(), {
    lr: 0.01,
    momentum: 0.9,
    weightDecay: 5e-4,
  });
  const n = batch * input.size * input.size * input.channels;
  const data = Array.from({ length: Math.max(1, batches) }, () => {
    const xs = new Float32Array(n).map(() => rng.normal());
    const ys = new Int32Array(batch).map(() => rng.int(10));
    return [
      Tensor.from(backend, xs, [batch, input.size, input.size, input.channels], "f32"),
      Tensor.from(backend, ys, [batch], "i32"),
    ] as const;
  });
  const [x, y] = data[0]!;
  let next = 0;
  const trainStep = new TrainStep(backend, model, quantizer, opt);
  return {
    model,
    trainStep,
    x,
    y,
    async step() {
      this.enqueue();
      await backend.synchronize();
    },
    enqueue() {
      const [bx, by] = data[next++ % data.length]!;
      trainStep.run(() => [bx, by], 0.01);
    },
    async loss() {
      const t = await trainStep.readLoss();
      trainStep.resetLoss();
      return t.loss;
    },
    dispose() {
      trainStep.dispose();
      for (const [bx, by] of data) {
        bx.dispose();
        by.dispose();
      }
      opt.dispose();
      quantizer.dispose();
      model.dispose();
    },
  };
}
