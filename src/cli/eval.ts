/**
 * `deno task eval --model M --weights W --dataset D [--data-dir DIR]`: test accuracy and loss of
 * a checkpoint (`model.*` tensors) or a torchvision-named safetensors file. Inputs are normalized
 * as training normalized them (the training set's statistics: per channel for cifar10 / folder,
 * one mean / std for MNIST-like data).
 *
 * @module
 */
import { isCpuBackend } from "../backend/backend.ts";
import { openBackend } from "../backend/registry.ts";
import { Rng } from "../data/rng.ts";
import { InputPipeline } from "../data/pipeline.ts";
import { loadTorchvisionWeights } from "../io/torchvision.ts";
import { createModel, MODELS } from "../models/registry.ts";
import { QUANT_NAMES, quantConfig } from "../quant/config.ts";
import { ModelQuantizer } from "../quant/quantizer.ts";
import { evaluate, pixelStats } from "../train/trainer.ts";
import {
  BACKENDS,
  int,
  oneOf,
  parseFlags,
  runCommand,
  TRAIN_DATASETS,
  UsageError,
} from "./args.ts";
import { loadRunData, type TrainArgs } from "./train.ts";

/** The help text. */
export const EVAL_HELP = `daint8 eval: test accuracy and loss of saved weights

Usage: deno task eval --model NAME --weights FILE [--dataset NAME] [--data-dir DIR]

  --model NAME       ${Object.keys(MODELS).join(" | ")}
  --weights FILE     a checkpoint.safetensors or torchvision-named safetensors weights
  --dataset NAME     ${TRAIN_DATASETS.join(" | ")} (default mnist)
  --data-dir DIR     as for deno task train
  --batch-size N     evaluation batch (default 256)
  --limit N          training images used for the normalization statistics (default all)
  --test-limit N     evaluate on the first N test images
  --quant NAME       ${QUANT_NAMES.join(" | ")} (default fp32): the fprop arithmetic; INT8 presets
                     quantize X and W per tensor by their max, as in training, so a daint8
                     run's own test accuracy is reproduced with --quant daint8
  --backend NAME     ${BACKENDS.join(" | ")} (default cpu)
  --threads N        cpu worker threads, 0 = all cores (default 0)
`;

function parseEvalArgs(args: string[]) {
  const v = parseFlags(args, {
    model: { type: "string" },
    weights: { type: "string" },
    dataset: { type: "string" },
    "data-dir": { type: "string" },
    "batch-size": { type: "string" },
    limit: { type: "string" },
    "test-limit": { type: "string" },
    backend: { type: "string" },
    quant: { type: "string" },
    threads: { type: "string" },
    help: { type: "boolean", short: "h" },
  }) as Record<string, string | undefined> & { help?: boolean };
  if (!v.help && (!v.model || !v.weights)) {
    throw new UsageError("deno task eval needs --model and --weights. Run with --help.");
  }
  return {
    help: v.help ?? false,
    model: v.help ? "" : oneOf("model", v.model, "lenet5", Object.keys(MODELS)),
    weights: v.weights ?? "",
    dataset: oneOf("dataset", v.dataset, "mnist", TRAIN_DATASETS),
    dataDir: v["data-dir"],
    batchSize: int("batch-size", v["batch-size"], 256),
    limit: v.limit === undefined ? undefined : int("limit", v.limit, 1),
    testLimit: v["test-limit"] === undefined ? undefined : int("test-limit", v["test-limit"], 1),
    backend: oneOf("backend", v.backend, "cpu", BACKENDS),
    quant: oneOf("quant", v.quant, "fp32", QUANT_NAMES),
    threads: int("threads", v.threads, 0, 0),
  };
}

/** Runs the CLI; returns the exit status (0 ok, 1 failure, 2 usage). */
export function main(args: string[], print = (l: string) => console.log(l)): Promise<number> {
  return runCommand(args, parseEvalArgs, EVAL_HELP, async (a) => {
    const [trainSet, testSet] = await loadRunData({
      config: { dataset: a.dataset },
      dataDir: a.dataDir,
      limit: a.limit,
      testLimit: a.testLimit,
    } as TrainArgs);
    const backend = await openBackend(a.backend); // webgpu opens asynchronously
    if (isCpuBackend(backend)) backend.setThreads(a.threads);
    const model = createModel(a.model, { backend, rng: new Rng(0), zeros: true }, {
      inChannels: trainSet.channels,
      inputSize: trainSet.height,
      classes: trainSet.classes,
    });
    try {
      await loadTorchvisionWeights(model, a.weights, a.model);
      new ModelQuantizer(model, quantConfig(a.quant), 0);
      const rgb = a.dataset === "cifar10" || a.dataset === "folder";
      const input = rgb ? new InputPipeline(trainSet, { augment: false, seed: 0 }) : undefined;
      const r = await evaluate(model, backend, testSet, pixelStats(trainSet), a.batchSize, input);
      print(
        `${a.model} ${a.weights} on ${a.dataset} (${testSet.n} test images, ${a.quant}): ` +
          `test accuracy ${(100 * r.acc).toFixed(2)}%  test loss ${r.loss.toFixed(4)}`,
      );
    } finally {
      model.dispose();
    }
  }, print);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
