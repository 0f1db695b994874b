/**
 * The training loop: data, model, loss, backward, SGD, evaluation, JSONL metrics, progress and
 * checkpoints (`--resume` continues bit-identically: model, optimizer and data-order RNG are all
 * in the checkpoint, and the learning rate is a pure function of the step).
 *
 * @module
 */
import { type Backend, type BackendCounters, isCpuBackend } from "../backend/backend.ts";
import { getBackend } from "../backend/registry.ts";
import { Tape } from "../autograd/tape.ts";
import { DataLoader } from "../data/loader.ts";
import type { FloatBatch, InputPipeline } from "../data/pipeline.ts";
import { loadTorchvisionWeights } from "../io/torchvision.ts";
import type { ImageDataset } from "../data/datasets.ts";
import { Rng } from "../data/rng.ts";
import { createModel } from "../models/registry.ts";
import type { Module } from "../nn/module.ts";
import { Dropout } from "../nn/zoo_layers.ts";
import { softmaxCrossEntropy } from "../ops/loss.ts";
import { makeSchedule, type ScheduleKind } from "../optim/schedule.ts";
import { Sgd } from "../optim/sgd.ts";
import { quantConfig } from "../quant/config.ts";
import { ModelQuantizer } from "../quant/quantizer.ts";
import { Tensor } from "../tensor.ts";
import { readCheckpoint, restoreTensors, saveCheckpoint } from "./checkpoint.ts";
import type { MetricsLog, MetricValue } from "./metrics.ts";
import { openOutDir } from "./outdir.ts";
import { checkBatchSize, checkDatasets, checkFiniteState, checkResume } from "./validate.ts";
import type { Progress } from "./progress.ts";
import { type StepProfile, TrainStep } from "./step.ts";

/** Everything that defines a training run. */
export interface TrainConfig {
  /** Model name from `MODELS` (`lenet5`, `resnet20`). */
  model: string;
  /**
   * Dataset name (`mnist`, `fashion-mnist`), recorded in checkpoints; the data sets themselves are
   * passed to `train`.
   */
  dataset: string;
  /** Total epochs of the run (a positive integer), resumed epochs included. */
  epochs: number;
  /** Images per optimizer step (a positive integer); the last batch of an epoch may be smaller. */
  batchSize: number;
  /** Peak learning rate of the schedule. */
  lr: number;
  /** SGD momentum factor (0 = plain SGD). */
  momentum: number;
  /** SGD L2 penalty coefficient. */
  weightDecay: number;
  /** Use Nesterov momentum (needs momentum > 0). */
  nesterov: boolean;
  /** Learning-rate schedule over all steps of the run: `constant`, `step` or `cosine`. */
  schedule: ScheduleKind;
  /** Linear warm-up length in epochs (fractions allowed). */
  warmupEpochs: number;
  /** Seed of weight initialization, data order and stochastic rounding. */
  seed: number;
  /** Quantization preset (`fp32`, `int8-naive`, `ui8`, `daint8`). */
  quant: string;
  /** Knob overrides of the preset: `k=v,k=v` or an object (src/quant/config.ts). */
  quantSet?: string | Record<string, unknown>;
  /**
   * Build the model's auxiliary classifier and add its weighted loss (Inception v3's
   * `AuxLogits`, weight 0.4); absent = off.
   */
  auxLogits?: boolean;
}

/** Where and how a run executes (not part of the run's identity). */
export interface RunOptions {
  /** Backend to train on, or its name for `getBackend` (`cpu`, `cuda`, `auto`). */
  backend: Backend | string;
  /** Worker threads (cpu); 0 = all cores. */
  threads?: number;
  /** Output folder for checkpoint.safetensors and metrics.jsonl; none = nothing written. */
  out?: string;
  /** Checkpoint to continue from. */
  resume?: string;
  /** Replace a run that `out` already holds (default: refuse, src/train/outdir.ts). */
  overwrite?: boolean;
  /** Resume even if the checkpoint's dataset, preset, batch size, seed or step differ (warns). */
  forceResume?: boolean;
  /** Progress display; none = silent. */
  progress?: Progress;
  /** Print lines (epoch summaries); default console.log. */
  print?: (line: string) => void;
  /** Write a step record to the metrics log every this many steps (default 50). */
  logEvery?: number;
  /** Stop after this many epochs in this process (simulates an interruption); default all. */
  stopAfterEpochs?: number;
  /** Seconds between progress reads of the device's loss totals (default 0.25). */
  progressSeconds?: number;
  /**
   * Input pipeline (augmentation, per-channel normalization, prefetch worker; src/data/
   * pipeline.ts); none = the loader's bytes normalized with one mean / std on the backend.
   */
  input?: InputPipeline;
  /** A torchvision-named safetensors file to start from (src/io/torchvision.ts). */
  init?: string;
}

/** Per-epoch results. */
export interface EpochResult {
  /** Epoch number, counting from 1. */
  epoch: number;
  /**
   * Mean cross-entropy over the epoch's training images (with the weights as they were at each
   * step).
   */
  trainLoss: number;
  /** Share of training images classified correctly during the epoch, in [0, 1]. */
  trainAcc: number;
  /** Mean cross-entropy on the test set after the epoch (evaluation mode). */
  testLoss: number;
  /** Test accuracy after the epoch, in [0, 1]. */
  testAcc: number;
  /** Training throughput of the epoch, evaluation excluded. */
  imagesPerSecond: number;
  /** Wall-clock seconds of the epoch's training, evaluation excluded. */
  seconds: number;
  /**
   * Of `seconds`, the time the step loop waited for the input pipeline's next batch (0 without an
   * input pipeline: in-memory datasets are batched on the spot).
   */
  dataWaitSeconds: number;
}

/** What `train` returns. The model stays alive: dispose it when done. */
export interface TrainResult {
  /** The trained model, in training mode; the caller disposes it. */
  model: Module;
  /** The model's quantizers (an empty list of layers for fp32). */
  quantizer: ModelQuantizer;
  /** The backend the run used (opened by name when `RunOptions.backend` was a string). */
  backend: Backend;
  /** Results of the epochs this call ran (after a resume, only the new ones). */
  epochs: EpochResult[];
  /** Final test accuracy in [0, 1]. */
  testAcc: number;
  /** What the training steps of this call cost (null when none ran). */
  profile: RunProfile | null;
}

/** Work per training step: inside the step, and over the whole loop with its step-edge reads. */
export interface RunProfile {
  /** Training steps measured. */
  steps: number;
  /** The last step's own counters (calls, syncs, copies, saved activations): nothing waits. */
  step: StepProfile;
  /**
   * Per step over the training loops (evaluation and checkpoints excluded): the step plus the
   * lagged reads at its edges (progress display, logs, UI8's search results).
   */
  perStep: BackendCounters;
}

/**
 * The run's random streams from one seed: weight initialization and data order draw from
 * independent xoshiro streams (2^64 draws apart), so neither shifts when the other changes.
 */
export function runRngs(seed: number): { init: Rng; data: Rng } {
  const root = new Rng(seed);
  const init = root.split();
  return { init, data: root.split() };
}

/** Mean and standard deviation of a dataset's pixels in [0, 1] (for input normalization). */
export function pixelStats(ds: ImageDataset): { mean: number; std: number } {
  let s = 0, s2 = 0;
  const px = ds.images;
  for (let i = 0; i < px.length; i++) {
    const v = px[i]!;
    s += v;
    s2 += v * v;
  }
  const mean = s / px.length / 255;
  const variance = s2 / px.length / 65025 - mean * mean;
  return { mean, std: Math.sqrt(Math.max(variance, 1e-12)) };
}

/** Turns a host batch into device tensors: normalized f32 images and i32 labels. */
export class BatchUploader {
  readonly #scale: number;
  readonly #shift: number;
  constructor(stats: { mean: number; std: number }) {
    this.#scale = 1 / (255 * stats.std);
    this.#shift = -stats.mean / stats.std;
  }
  upload(
    tape: Tape,
    ds: ImageDataset,
    images: Uint8Array,
    labels: Int32Array,
    n: number,
  ): [Tensor, Tensor] {
    const shape = [n, ds.height, ds.width, ds.channels];
    const raw = tape.empty(shape, "u8");
    tape.backend.upload(raw, images.subarray(0, raw.size));
    const x = tape.empty(shape);
    tape.backend.u8ToF32(x, raw, this.#scale, this.#shift);
    const y = tape.empty([n], "i32");
    tape.backend.upload(y, labels.subarray(0, n));
    return [x, y];
  }
}

/** Uploads a pipeline batch (already normalized f32). */
function uploadFloat(tape: Tape, ds: ImageDataset, b: FloatBatch): [Tensor, Tensor] {
  const x = tape.empty([b.size, ds.height, ds.width, ds.channels]);
  tape.backend.upload(x, b.x);
  const y = tape.empty([b.size], "i32");
  tape.backend.upload(y, b.labels);
  return [x, y];
}

/** Test-set loss and accuracy of `model` in evaluation mode (read once, at the end). */
export async function evaluate(
  model: Module,
  backend: Backend,
  ds: ImageDataset,
  stats: { mean: number; std: number },
  batchSize = 256,
  input?: InputPipeline,
): Promise<{ loss: number; acc: number }> {
  if (ds.n === 0) throw new RangeError("Cannot evaluate on an empty test set");
  const up = new BatchUploader(stats);
  const loader = new DataLoader(ds, { batchSize, shuffle: false, rng: new Rng(0) });
  using accum = Tensor.full(backend, [4], 0);
  model.eval();
  try {
    for (const b of input ? input.evalBatches(ds, batchSize) : loader.batches()) {
      using tape = new Tape(backend, { grad: false });
      const [x, y] = "x" in b
        ? uploadFloat(tape, ds, b)
        : up.upload(tape, ds, b.images, b.labels, b.size);
      softmaxCrossEntropy(tape, model.forward(tape, x), y, accum);
    }
  } finally {
    model.train();
  }
  const a = new Float32Array(4);
  await backend.read(a, accum); // one read at the end
  return { loss: a[0]! / ds.n, acc: a[1]! / ds.n };
}

/** Trains `cfg` on `train`, evaluating on `test` after every epoch. */
export async function train(
  cfg: TrainConfig,
  trainSet: ImageDataset,
  testSet: ImageDataset,
  run: RunOptions,
): Promise<TrainResult> {
  const qcfg = quantConfig(cfg.quant, cfg.quantSet ?? {});
  for (const [name, v] of [["epochs", cfg.epochs], ["batch size", cfg.batchSize]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`${name} must be a positive integer, got ${v}`);
    }
  }
  checkDatasets(trainSet, testSet);
  checkBatchSize(cfg.batchSize, trainSet);
  const backend = typeof run.backend === "string" ? getBackend(run.backend) : run.backend;
  if (run.threads !== undefined) {
    if (!isCpuBackend(backend)) {
      throw new RangeError(`--threads applies to the cpu backend, not ${backend.name}`);
    }
    backend.setThreads(run.threads);
  }
  const print = run.print ?? ((l: string) => console.log(l));
  const rngs = runRngs(cfg.seed);
  const init = { backend, rng: rngs.init };
  const model = createModel(cfg.model, init, {
    inChannels: trainSet.channels,
    inputSize: trainSet.height,
    classes: trainSet.classes,
    ...(cfg.auxLogits ? { auxLogits: true } : {}),
  });
  try {
    if (run.init) await loadTorchvisionWeights(model, run.init, cfg.model);
  } catch (e) {
    model.dispose();
    throw e;
  }
  const quantizer = new ModelQuantizer(model, qcfg, cfg.seed);
  const params = model.namedParameters();
  let opt: Sgd | undefined, step: TrainStep | undefined, log: MetricsLog | undefined;
  const cleanup = () => {
    step?.dispose();
    opt?.dispose();
    quantizer.dispose();
  };
  try {
    opt = new Sgd(backend, params, {
      lr: cfg.lr,
      momentum: cfg.momentum,
      weightDecay: cfg.weightDecay,
      nesterov: cfg.nesterov,
    });
    const sgd = opt;
    const trainStep = step = new TrainStep(backend, model, quantizer, sgd);
    const dataRng = rngs.data;
    // Layers that draw at run time (dropout masks): their generators resume with the run.
    const layerRngs = model.namedModules().flatMap(([name, m]) =>
      m instanceof Dropout ? [[`layer.${name}`, m.rng] as const] : []
    );
    const loader = new DataLoader(trainSet, {
      batchSize: cfg.batchSize,
      shuffle: true,
      rng: dataRng,
      dropLast: false,
    });
    const steps = loader.batchesPerEpoch;
    const schedule = makeSchedule({
      kind: cfg.schedule,
      lr: cfg.lr,
      totalSteps: steps * cfg.epochs,
      warmupSteps: Math.round(cfg.warmupEpochs * steps),
    });
    const stats = pixelStats(trainSet);
    const up = new BatchUploader(stats);
    const stateTensors = (): [string, Tensor][] => [
      ...model.stateTensors().map(([n, t]) => [`model.${n}`, t] as [string, Tensor]),
      ...sgd.stateTensors().map(([n, t]) => [`optim.${n}`, t] as [string, Tensor]),
    ];

    let startEpoch = 0, stepNo = 0;
    if (run.resume) {
      const ck = await readCheckpoint(run.resume);
      if (ck.meta.model !== cfg.model) {
        throw new TypeError(
          `Cannot resume from "${run.resume}": it was saved from model "${ck.meta.model}", ` +
            `this run trains "${cfg.model}"`,
        );
      }
      checkResume(run.resume, ck, { ...cfg, stepsPerEpoch: steps }, {
        force: run.forceResume,
        warn: print,
      });
      restoreTensors(run.resume, ck, stateTensors());
      quantizer.restore((name) => ck.words.get(name), run.resume, ck.meta.step);
      const data = ck.rng.data;
      if (!data) {
        throw new TypeError(`Cannot resume from "${run.resume}": it has no rng.data state`);
      }
      dataRng.setState(data);
      for (const [name, rng] of layerRngs) {
        const st = ck.rng[`${name}`];
        if (!st) {
          throw new TypeError(
            `Cannot resume from "${run.resume}": it has no rng.${name} state (saved by an ` +
              `older daint8: its dropout masks cannot continue)`,
          );
        }
        rng.setState(st);
      }
      startEpoch = ck.meta.epoch;
      stepNo = ck.meta.step;
      print(`resumed from ${run.resume} at epoch ${startEpoch}, step ${stepNo}`);
    }

    const ckptPath = run.out ? `${run.out}/checkpoint.safetensors` : undefined;
    if (run.out) {
      log = await openOutDir(run.out, {
        ...run,
        resumedStep: run.resume ? stepNo : undefined,
        print,
      });
    }
    const logEvery = run.logEvery ?? 50;
    const progressMs = 1000 * (run.progressSeconds ?? 0.25);
    const results: EpochResult[] = [];
    const lastEpoch = Math.min(cfg.epochs, startEpoch + (run.stopAfterEpochs ?? cfg.epochs));
    const diverged = (epoch: number, what: string) =>
      new RangeError(
        `Training diverged in epoch ${epoch + 1} (step ${stepNo}): ${what}; no checkpoint was ` +
          `written for this epoch (try a lower --lr than ${cfg.lr})`,
      );
    const loop: BackendCounters = { calls: 0, syncs: 0, reads: 0, bytesUp: 0, bytesDown: 0 };
    let loopSteps = 0;
    for (let epoch = startEpoch; epoch < lastEpoch; epoch++) {
      const t0 = performance.now();
      const c0 = backend.counters();
      let winStart = t0, winImages = 0, lastRead = t0;
      trainStep.resetLoss();
      for await (const b of run.input ? run.input.epoch(loader, epoch) : loader.batches()) {
        const lr = schedule(stepNo);
        const logNow = log !== undefined && (stepNo + 1) % logEvery === 0;
        quantizer.measureError = logNow;
        trainStep.run(
          (tape) =>
            "x" in b
              ? uploadFloat(tape, trainSet, b)
              : up.upload(tape, trainSet, b.images, b.labels, b.size),
          lr,
        );
        stepNo++;
        winImages += b.size;
        // ---- step edge: lagged reads, only as often as the log and the display need ----
        await trainStep.afterStep();
        const now = performance.now();
        const lastBatch = b.index + 1 === steps;
        if (run.progress && (now - lastRead >= progressMs || lastBatch)) {
          lastRead = now;
          const t = await trainStep.readLoss();
          run.progress.update(b.index + 1, steps, {
            epoch: `${epoch + 1}/${cfg.epochs}`,
            loss: t.loss,
            acc: `${(100 * t.correct / t.images).toFixed(1)}%`,
          });
        }
        if (log && logNow) {
          if (await trainStep.readNonFinite()) {
            throw diverged(epoch, "a weight or gradient is not finite");
          }
          const t = await trainStep.readLoss();
          log.append({
            event: "step",
            epoch: epoch + 1,
            step: stepNo,
            loss: t.loss,
            acc: t.correct / t.images,
            lr,
            images_per_s: winImages / ((now - winStart) / 1000),
            ...(run.input ? { data_wait_ms: run.input.waitMs } : {}), // so far this epoch
            ...(quantizer.layers.length > 0
              ? { quant: (await quantizer.stats()) as unknown as Record<string, MetricValue> }
              : {}),
          });
          winStart = performance.now();
          winImages = 0;
        }
      }
      const totals = await trainStep.readLoss();
      const seconds = (performance.now() - t0) / 1000;
      const c1 = backend.counters();
      for (const k of Object.keys(loop) as (keyof BackendCounters)[]) loop[k] += c1[k] - c0[k];
      loopSteps += totals.steps;
      const dataWait = run.input ? run.input.takeWait() : 0;
      const test = await evaluate(model, backend, testSet, stats, 256, run.input);
      const res: EpochResult = {
        epoch: epoch + 1,
        trainLoss: totals.loss,
        trainAcc: totals.correct / totals.images,
        testLoss: test.loss,
        testAcc: test.acc,
        imagesPerSecond: totals.images / seconds,
        seconds,
        dataWaitSeconds: dataWait / 1000,
      };
      results.push(res);
      const line = `epoch ${res.epoch}/${cfg.epochs}  train loss ${res.trainLoss.toFixed(4)}  ` +
        `acc ${(100 * res.trainAcc).toFixed(2)}%  test loss ${res.testLoss.toFixed(4)}  ` +
        `acc ${(100 * res.testAcc).toFixed(2)}%  ${Math.round(res.imagesPerSecond)} img/s  ` +
        `${seconds.toFixed(1)} s` +
        (run.input ? `  data wait ${(dataWait / 1000).toFixed(1)} s` : "");
      if (run.progress) run.progress.done(line);
      else print(line);
      log?.append({
        event: "epoch",
        epoch: res.epoch,
        step: stepNo,
        train_loss: res.trainLoss,
        train_acc: res.trainAcc,
        test_loss: res.testLoss,
        test_acc: res.testAcc,
        images_per_s: res.imagesPerSecond,
        seconds,
        ...(run.input ? { data_wait_ms: dataWait } : {}),
        ...(quantizer.layers.length > 0 ? { bell_share: await quantizer.bellShares() } : {}),
      });
      // Step edge at the epoch's end: every state tensor finite (naming the first bad one), the
      // device's divergence flag clear, the losses finite; only then the checkpoint.
      await checkFiniteState(stateTensors(), epoch + 1, stepNo, cfg.lr, res.testLoss);
      if (await trainStep.readNonFinite()) throw diverged(epoch, "a gradient was not finite");
      if (!Number.isFinite(totals.loss)) {
        throw diverged(epoch, `the training loss is ${totals.loss}`);
      }
      if (ckptPath) {
        await saveCheckpoint(ckptPath, {
          meta: {
            model: cfg.model,
            dataset: cfg.dataset,
            epoch: epoch + 1,
            step: stepNo,
            config: JSON.stringify(cfg),
          },
          tensors: stateTensors(),
          rng: {
            data: dataRng.state(),
            ...Object.fromEntries(layerRngs.map(([n, r]) => [n, r.state()])),
          },
          host: await quantizer.stateTensors(),
        });
      }
    }
    const testAcc = results.at(-1)?.testAcc ??
      (await evaluate(model, backend, testSet, stats, 256, run.input)).acc;
    const last = trainStep.profile;
    const profile: RunProfile | null = last && loopSteps > 0
      ? {
        steps: loopSteps,
        step: last,
        perStep: Object.fromEntries(
          Object.entries(loop).map(([k, v]) => [k, v / loopSteps]),
        ) as unknown as BackendCounters,
      }
      : null;
    return { model, quantizer, backend, epochs: results, testAcc, profile };
  } catch (e) {
    model.dispose();
    cleanup();
    throw e;
  } finally {
    log?.close();
    step?.dispose();
    opt?.dispose();
  }
}
