/**
 * `deno task train`: trains a model from the command line. With no flags: LeNet-5 on MNIST for
 * one epoch on the cpu backend. `--help` lists every flag.
 *
 * @module
 */
import {
  BACKENDS,
  COMMON_OPTIONS,
  int,
  MAX_THREADS,
  num,
  oneOf,
  parseFlags,
  parseQuantSet,
  runCommand,
  TRAIN_DATASETS,
  UsageError,
} from "./args.ts";

export { UsageError };
import {
  dataDirHint,
  defaultDataDir,
  type ImageDataset,
  type KnownDataset,
  loadMnistLike,
} from "../data/datasets.ts";
import { AUX_MODELS, MODELS } from "../models/registry.ts";
import { QUANT_NAMES } from "../quant/config.ts";
import { type ScheduleKind, SCHEDULES } from "../optim/schedule.ts";
import { Progress } from "../train/progress.ts";
import { checkBatchSize, checkDatasets } from "../train/validate.ts";
import { type RunProfile, train, type TrainConfig } from "../train/trainer.ts";
import { type Backend, isCpuBackend } from "../backend/backend.ts";
import { openAutoBackend, openBackend as openNamed } from "../backend/registry.ts";
import { checkOutDir, CHECKPOINT_FILE } from "../train/outdir.ts";
import { loadRgbData, makeInput } from "./zoo_data.ts";

export const HELP = `daint8 train: train a CNN (NHWC, native backend through FFI)

Usage: deno task train [flags]

  --model NAME          ${Object.keys(MODELS).join(" | ")} (default lenet5)
  --dataset NAME        ${TRAIN_DATASETS.join(" | ")} (default mnist)
  --data-dir DIR        folder with the IDX files (default: the dataset's package); cifar10:
                        data_batch_1.bin .. test_batch.bin (or $DAINT8_CIFAR10_DIR); folder:
                        train/ and test/ (or val/), one folder of JPEG/PNG images per class
                        (decoded once into DIR/.daint8-cache)
  --no-augment          cifar10 / folder: no random crop (padding 4) and flip (on by default;
                        per-channel normalization stays)
  --init FILE           start from weights: torchvision-named safetensors or a checkpoint
  --aux-logits          inception_v3: build the auxiliary classifier and add 0.4 x its loss
                        (inputs of 299 pixels and up; torchvision's AuxLogits names)
  --epochs N            epochs (default 1)
  --batch-size N        mini-batch size (default 64)
  --lr X                peak learning rate (default 0.05)
  --momentum X          SGD momentum (default 0.9)
  --nesterov            Nesterov momentum
  --weight-decay X      L2 weight decay (default 5e-4)
  --schedule NAME       ${SCHEDULES.join(" | ")} (default cosine)
  --warmup X            linear warm-up epochs (default 0)
  --seed N              seed for weights and data order (default 0)
  --backend NAME        cpu | cuda | webgpu | auto (default cpu); auto says why it passed
                        over each GPU backend
  --profile             print what one training step costs: native calls, blocking syncs,
                        bytes up and down, saved-activation bytes (and the step-edge reads)
  --threads N           cpu worker threads, 0 = all cores (default 0, at most ${MAX_THREADS})
  --quant NAME          ${QUANT_NAMES.join(" | ")} (default fp32)
  --quant-set KNOBS     override preset knobs: lambda=0.25,A=0.7 or @knobs.json
                        (repeatable: the flags merge, a later knob wins)
  --out DIR             checkpoint.safetensors and metrics.jsonl go here
                        (default runs/<model>-<dataset>-<quant>-s<seed>); a directory
                        holding another run is refused (use --resume, or --overwrite)
  --overwrite           replace the run that --out holds
  --resume FILE         continue from a checkpoint (its dataset, preset, batch size,
                        seed and step count must match this run's)
  --force-resume        resume despite such differences (printed as a warning)
  --limit N             train on the first N training images (folder: N evenly spaced ones,
                        so every class keeps its share)
  --test-limit N        evaluate on the first N test images (folder: evenly spaced)
  --stop-after N        stop after N epochs in this process (resume later)
  --help                this text
`;

/** Extra flags a command adds to the training ones (`deno task experiment`). */
export type ExtraOptions = Record<string, { type: "string" | "boolean" }>;

/**
 * Parses CLI arguments into a run; throws UsageError on a bad flag or value. `extra` flags are
 * accepted too and returned raw in `extra`.
 */
export function parseTrainArgs(args: string[], extraOptions: ExtraOptions = {}) {
  const values: Record<string, string | string[] | boolean | undefined> = parseFlags(args, {
    ...COMMON_OPTIONS,
    epochs: { type: "string" },
    momentum: { type: "string" },
    nesterov: { type: "boolean" },
    "weight-decay": { type: "string" },
    schedule: { type: "string" },
    warmup: { type: "string" },
    resume: { type: "string" },
    overwrite: { type: "boolean" },
    "force-resume": { type: "boolean" },
    "test-limit": { type: "string" },
    "stop-after": { type: "string" },
    profile: { type: "boolean" },
    init: { type: "string" },
    "no-augment": { type: "boolean" },
    "aux-logits": { type: "boolean" },
    ...extraOptions,
  });
  const v = values as Record<string, string | undefined> & {
    nesterov?: boolean;
    help?: boolean;
    overwrite?: boolean;
    profile?: boolean;
    "force-resume"?: boolean;
    "quant-set"?: string[];
  };
  const quant = oneOf("quant", v.quant, "fp32", QUANT_NAMES);
  const quantSet = parseQuantSet(quant, v["quant-set"]);
  const config: TrainConfig = {
    model: oneOf("model", v.model, "lenet5", Object.keys(MODELS)),
    dataset: oneOf("dataset", v.dataset, "mnist", TRAIN_DATASETS),
    epochs: int("epochs", v.epochs, 1),
    batchSize: int("batch-size", v["batch-size"], 64),
    lr: num("lr", v.lr, 0.05),
    momentum: num("momentum", v.momentum, 0.9),
    nesterov: v.nesterov ?? false,
    weightDecay: num("weight-decay", v["weight-decay"], 5e-4),
    schedule: oneOf<ScheduleKind>("schedule", v.schedule, "cosine", SCHEDULES),
    warmupEpochs: num("warmup", v.warmup, 0),
    seed: int("seed", v.seed, 0, 0),
    quant,
    ...(quantSet === "" ? {} : { quantSet }),
    ...(values["aux-logits"] ? { auxLogits: true } : {}),
  };
  if (config.auxLogits && !AUX_MODELS.includes(config.model)) {
    throw new UsageError(
      `--aux-logits needs a model with an auxiliary classifier (${AUX_MODELS.join(", ")}), ` +
        `got --model ${config.model}`,
    );
  }
  if (config.lr <= 0) throw new UsageError(`--lr must be positive, got "${v.lr}"`);
  if (config.nesterov && config.momentum === 0) {
    throw new UsageError("--nesterov needs a --momentum above 0");
  }
  if (v.out !== undefined && v.out.trim() === "") {
    throw new UsageError(`--out must name a directory, got "${v.out}"`);
  }
  if (v.resume !== undefined && v.resume.trim() === "") {
    throw new UsageError(`--resume must name a checkpoint file, got "${v.resume}"`);
  }
  if (v["force-resume"] && v.resume === undefined) {
    throw new UsageError("--force-resume needs --resume");
  }
  return {
    help: v.help ?? false,
    config,
    dataDir: v["data-dir"],
    backend: oneOf("backend", v.backend, "cpu", BACKENDS),
    threads: int("threads", v.threads, 0, 0, MAX_THREADS),
    out: v.out ??
      `runs/${config.model}-${config.dataset}-${config.quant}-s${config.seed}`,
    resume: v.resume,
    overwrite: v.overwrite ?? false,
    forceResume: v["force-resume"] ?? false,
    profile: v.profile ?? false,
    init: v.init,
    augment: !(values["no-augment"] ?? false),
    limit: v.limit === undefined ? undefined : int("limit", v.limit, 0),
    testLimit: v["test-limit"] === undefined ? undefined : int("test-limit", v["test-limit"], 0),
    stopAfter: v["stop-after"] === undefined ? undefined : int("stop-after", v["stop-after"], 0),
    extra: Object.fromEntries(Object.keys(extraOptions).map((k) => [k, values[k]])),
  };
}

/** The parsed run of `parseTrainArgs`. */
export type TrainArgs = ReturnType<typeof parseTrainArgs>;

/** Loads the training and test sets a parsed run names (data dir, limits). */
export async function loadRunData(a: TrainArgs): Promise<[ImageDataset, ImageDataset]> {
  if (a.config.dataset === "cifar10" || a.config.dataset === "folder") {
    return await loadRgbData(a.config.dataset, a.dataDir, a.limit, a.testLimit);
  }
  const ds = a.config.dataset as KnownDataset;
  const dir = a.dataDir ?? defaultDataDir(ds);
  if (dir === undefined) throw new Error(`Cannot find the ${ds} data. ${dataDirHint(ds)}`);
  const sets: [ImageDataset, ImageDataset] = [
    await loadMnistLike(dir, "train", { limit: a.limit, name: ds }),
    await loadMnistLike(dir, "test", { limit: a.testLimit, name: ds }),
  ];
  checkDatasets(...sets);
  checkBatchSize(a.config.batchSize, sets[0]);
  return sets;
}

/** Opens the backend a run names; for `auto`, prints why each GPU backend was passed over. */
async function openBackend(name: string): Promise<Backend> {
  if (name !== "auto") return await openNamed(name); // webgpu opens asynchronously
  const { backend, passedOver } = await openAutoBackend();
  for (const p of passedOver) console.log(`backend auto: not ${p.backend}: ${p.reason}`);
  console.log(`backend auto: using ${backend.name}`);
  return backend;
}

const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

/** The `--profile` report of a run. */
export function profileLines(p: RunProfile | null): string[] {
  if (!p) return ["profile: no training step ran"];
  const s = p.step, r = p.perStep;
  return [
    `profile (per training step, ${p.steps} steps):`,
    `  inside the step: ${s.calls} native calls, ${s.syncs} blocking syncs, ${s.reads} reads, ` +
    `${kb(s.bytesUp)} up, ${kb(s.bytesDown)} down`,
    `  saved activations for backward: ${kb(s.savedBytes)}`,
    `  with step-edge reads (progress, logs), averaged: ${r.calls.toFixed(1)} native calls, ` +
    `${r.syncs.toFixed(2)} blocking syncs, ${r.reads.toFixed(2)} reads, ${kb(r.bytesUp)} up, ` +
    `${kb(r.bytesDown)} down`,
  ];
}

/** Runs the CLI; returns the process exit status (0 ok, 1 failure, 2 usage). */
export function main(args: string[]): Promise<number> {
  return runCommand(args, (x) => parseTrainArgs(x), HELP, async (a) => {
    await checkOutDir(a.out, { resume: a.resume, overwrite: a.overwrite });
    const [trainSet, testSet] = await loadRunData(a);
    const backend = await openBackend(a.backend);
    console.log(
      `training ${a.config.model} on ${a.config.dataset} (${trainSet.n} train / ${testSet.n} ` +
        `test images), ${a.config.epochs} epoch(s), batch ${a.config.batchSize}, ` +
        `${a.config.quant}, backend ${backend.name}, out ${a.out}`,
    );
    const input = makeInput(a, trainSet);
    const result = await train(a.config, trainSet, testSet, {
      backend,
      input,
      init: a.init,
      // the default 0 (all cores) is a cpu setting; another backend refuses only an explicit one
      threads: isCpuBackend(backend) || a.threads !== 0 ? a.threads : undefined,
      out: a.out,
      resume: a.resume,
      overwrite: a.overwrite,
      forceResume: a.forceResume,
      progress: new Progress({ itemsPerStep: a.config.batchSize }),
      stopAfterEpochs: a.stopAfter,
    });
    input?.close();
    console.log(`test accuracy: ${(100 * result.testAcc).toFixed(2)}%`);
    if (a.profile) console.log(profileLines(result.profile).join("\n"));
    const ckpt = `${a.out}/${CHECKPOINT_FILE}`;
    const saved = await Deno.stat(ckpt).then((i) => i.isFile, () => false);
    console.log(saved ? `checkpoint: ${ckpt}` : "no checkpoint written (no epoch left to train)");
    result.model.dispose();
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
