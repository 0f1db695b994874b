/**
 * `deno task analyze`: trains a model for a few steps and, at chosen steps, captures the output
 * gradient dY of chosen layers to show the per-channel gradient distributions the paper's
 * classifier tells apart (bell-shaped vs "inverted-T", P(|g| > sigma) > lambda). Writes
 * `<out>/report.html` (inline SVG histograms with fitted Gaussian and Laplace densities) and
 * `<out>/report.json` (all numbers), and prints a short summary. `--help` lists the flags.
 *
 * dY is read through a delegating `GemmArithmetic` around each chosen layer's arithmetic (FP32 or
 * the quantizer's INT8): its dgrad/wgrad download dY (NHWC, channel last) once per captured step,
 * before the quantizer sees it, then delegate.
 *
 * @module
 */
import {
  BACKENDS,
  COMMON_OPTIONS,
  DATASETS,
  int,
  list,
  oneOf,
  parseFlags,
  parseQuantSet,
  runCommand,
  UsageError,
} from "./args.ts";
import type { Tape } from "../autograd/tape.ts";
import { type Backend, type ConvShape, isCpuBackend } from "../backend/backend.ts";
import { openBackend } from "../backend/registry.ts";
import { dataDirHint, defaultDataDir, type KnownDataset, loadMnistLike } from "../data/datasets.ts";
import { DataLoader } from "../data/loader.ts";
import { createModel, MODELS } from "../models/registry.ts";
import { Conv2d, type GemmLayer, isGemmLayer, Linear } from "../nn/layers.ts";
import type { Module } from "../nn/module.ts";
import type { GemmArithmetic, GemmSaved } from "../ops/arithmetic.ts";
import { Sgd } from "../optim/sgd.ts";
import { QUANT_NAMES, quantConfig } from "../quant/config.ts";
import { Int8Gemm } from "../quant/int8_gemm.ts";
import { ModelQuantizer } from "../quant/quantizer.ts";
import { Tensor } from "../tensor.ts";
import { BatchUploader, pixelStats, runRngs } from "../train/trainer.ts";
import { TrainStep } from "../train/step.ts";
import { analyzeGradient, pickChannels, summarize } from "../report/channels.ts";
import { type AnalyzeReport, type LayerReport, reportHtml } from "../report/html.ts";
import { fmtNum } from "../report/svg.ts";
import { checkDirPath, makeOutDir } from "../train/outdir.ts";

export const HELP = `daint8 analyze: per-channel output-gradient distributions (bell vs inverted-T)

Usage: deno task analyze [flags]

  --model NAME          ${Object.keys(MODELS).join(" | ")} (default lenet5)
  --dataset NAME        ${DATASETS.join(" | ")} (default mnist)
  --data-dir DIR        folder with the IDX files (default: the dataset's package)
  --batch-size N        mini-batch size (default 64)
  --lr X                constant learning rate, SGD momentum 0.9, weight decay 5e-4 (default 0.05)
  --seed N              seed for weights and data order (default 0)
  --limit N             train on the first N training images
  --backend NAME        cpu | cuda | webgpu | auto (default cpu)
  --threads N           cpu worker threads, 0 = all cores (default 0)
  --quant NAME          ${QUANT_NAMES.join(" | ")} (default fp32)
  --quant-set KNOBS     override preset knobs: lambda=0.25 or @knobs.json (lambda is the
                        classifier threshold used here too)
  --layers A,B          conv/linear layers to capture (default: the first INT8-eligible conv,
                        a middle one and the last conv)
  --steps A,B           training steps (from 1) at which dY is captured (default 1,50,200)
  --channels N          channels plotted per layer and step: half the most bell-shaped, half the
                        sharpest by P(|g| > sigma) (default 8)
  --bins N              histogram bins over [-max, max] (default 61)
  --log-y               open the page with log-scale counts (a checkbox switches)
  --out DIR             report.html and report.json go here
                        (default runs/analyze-<model>-<dataset>-<quant>-s<seed>)
  --help                this text
`;

/** A parsed analyze command line. */
export interface AnalyzeArgs {
  help: boolean;
  model: string;
  dataset: KnownDataset;
  dataDir?: string;
  batchSize: number;
  lr: number;
  seed: number;
  limit?: number;
  backend: string;
  threads: number;
  quant: string;
  quantSet: string | Record<string, unknown>;
  /** Undefined: the default choice for the model. */
  layers?: string[];
  steps: number[];
  channels: number;
  bins: number;
  logY: boolean;
  out: string;
}

/** Parses CLI arguments; throws UsageError on a bad flag or value. */
export function parseAnalyzeArgs(args: string[]): AnalyzeArgs {
  const v = parseFlags(args, {
    ...COMMON_OPTIONS,
    layers: { type: "string" },
    steps: { type: "string" },
    channels: { type: "string" },
    bins: { type: "string" },
    "log-y": { type: "boolean" },
  });
  const quant = oneOf("quant", v.quant, "fp32", QUANT_NAMES);
  const quantSet = parseQuantSet(quant, v["quant-set"]);
  const lr = v.lr === undefined ? 0.05 : Number(v.lr);
  if (!Number.isFinite(lr) || lr <= 0 || v.lr?.trim() === "") {
    throw new UsageError(`--lr must be a positive number, got "${v.lr}"`);
  }
  const steps = (list(v.steps) ?? ["1", "50", "200"]).map((s) => int("steps", s, 0));
  if (steps.length === 0) throw new UsageError(`--steps needs at least one step, got "${v.steps}"`);
  const layers = list(v.layers);
  if (layers !== undefined && layers.length === 0) {
    throw new UsageError(`--layers needs at least one layer name, got "${v.layers}"`);
  }
  const model = oneOf("model", v.model, "lenet5", Object.keys(MODELS));
  const dataset = oneOf("dataset", v.dataset, "mnist", DATASETS);
  const seed = int("seed", v.seed, 0, 0);
  return {
    help: v.help ?? false,
    model,
    dataset,
    dataDir: v["data-dir"],
    batchSize: int("batch-size", v["batch-size"], 64),
    lr,
    seed,
    limit: v.limit === undefined ? undefined : int("limit", v.limit, 1),
    backend: oneOf("backend", v.backend, "cpu", BACKENDS),
    threads: int("threads", v.threads, 0, 0),
    quant,
    quantSet,
    layers,
    steps: [...new Set(steps)].sort((a, b) => a - b),
    channels: int("channels", v.channels, 8),
    bins: int("bins", v.bins, 61),
    logY: v["log-y"] ?? false,
    out: v.out ?? `runs/analyze-${model}-${dataset}-${quant}-s${seed}`,
  };
}

/**
 * Wraps a layer's arithmetic: when armed, backward copies dY into a device buffer (no read inside
 * the step), and `collect()` reads it at the step edge.
 */
export class CaptureArithmetic implements GemmArithmetic {
  readonly inner: GemmArithmetic;
  /** Capture dY on the next backward. */
  armed = false;
  /** The last captured dY (host copy) and its shape; null when none. */
  captured: { data: Float32Array; shape: number[] } | null = null;
  #copy: Tensor | null = null;

  constructor(inner: GemmArithmetic) {
    this.inner = inner;
  }

  get name(): string {
    return this.inner.name;
  }

  forward(
    tape: Tape,
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    s: ConvShape,
  ): GemmSaved {
    return this.inner.forward(tape, y, x, w, bias, s);
  }

  backward(
    tape: Tape,
    saved: GemmSaved,
    dy: Tensor,
    dx: Tensor | null,
    dw: Tensor | null,
    s: ConvShape,
    accumulateDx = false,
  ): void {
    if (this.armed) {
      this.#copy?.dispose();
      this.#copy = Tensor.empty(tape.backend, dy.shape);
      tape.backend.copy(this.#copy, dy);
      this.armed = false;
    }
    this.inner.backward(tape, saved, dy, dx, dw, s, accumulateDx);
  }

  /** Reads the dY copied by the last armed backward into `captured` (a step-edge read). */
  async collect(): Promise<void> {
    const t = this.#copy;
    if (!t) return;
    this.#copy = null;
    const data = new Float32Array(t.size);
    await t.backend.read(data, t);
    this.captured = { data, shape: [...t.shape] };
    t.dispose();
  }
}

function describe(m: Module): string {
  if (m instanceof Conv2d) {
    const [kh, kw] = m.kernel;
    const st = m.options.stride;
    const stride = Array.isArray(st) ? (st[0] === 1 && st[1] === 1 ? "" : `, stride ${st}`) : (
      st === 1 ? "" : `, stride ${st}`
    );
    return `conv ${kh}x${kw}, ${m.inChannels} -> ${m.outChannels}${stride}`;
  }
  if (m instanceof Linear) return `linear, ${m.inFeatures} -> ${m.outFeatures}`;
  return m.constructor.name;
}

/**
 * The default layers: the first INT8-eligible convolution (the first one when the first layer
 * stays in FP32 is skipped), a middle one and the last one, without repeats.
 */
export function defaultLayers(model: Module, fp32FirstLast: boolean): string[] {
  const gemm = model.namedModules().filter(([, m]) => isGemmLayer(m));
  const convs = gemm.filter(([, m], i) => m instanceof Conv2d && !(fp32FirstLast && i === 0))
    .map(([n]) => n);
  if (convs.length === 0) return gemm.length > 0 ? [gemm.at(-1)![0]] : [];
  const picks = [convs[0]!, convs[Math.floor((convs.length - 1) / 2)]!, convs.at(-1)!];
  return [...new Set(picks)];
}

/** What {@linkcode analyze} returns. */
export interface AnalyzeResult {
  report: AnalyzeReport;
  htmlPath: string;
  jsonPath: string;
}

/**
 * Trains `args.model` up to the last of `args.steps`, capturing and analyzing the chosen layers'
 * dY at each of those steps, and writes the report.
 */
export async function analyze(
  a: AnalyzeArgs,
  print: (line: string) => void = (l) => console.log(l),
): Promise<AnalyzeResult> {
  await checkDirPath(a.out); // before any work: a file or a device is refused at once
  const ds = a.dataset;
  const dir = a.dataDir ?? defaultDataDir(ds);
  if (dir === undefined) throw new Error(`Cannot find the ${ds} data. ${dataDirHint(ds)}`);
  const data = await loadMnistLike(dir, "train", { limit: a.limit, name: ds });
  const qcfg = quantConfig(a.quant, a.quantSet);
  const backend: Backend = await openBackend(a.backend);
  // the default 0 (all cores) is a cpu setting; another backend refuses only an explicit one
  if (a.threads !== undefined && (isCpuBackend(backend) || a.threads !== 0)) {
    if (!isCpuBackend(backend)) {
      throw new UsageError(`--threads applies to the cpu backend, not ${backend.name}`);
    }
    backend.setThreads(a.threads);
  }

  const model = createModel(a.model, { backend, rng: runRngs(a.seed).init }, {
    inChannels: data.channels,
    inputSize: data.height,
    classes: data.classes,
  });
  const opt = new Sgd(backend, model.namedParameters(), {
    lr: a.lr,
    momentum: 0.9,
    weightDecay: 5e-4,
  });
  try {
    const quantizer = new ModelQuantizer(model, qcfg, a.seed);
    const gemm = new Map(
      model.namedModules().filter(([, m]) => isGemmLayer(m)) as [string, Module & GemmLayer][],
    );
    const names = a.layers ?? defaultLayers(model, qcfg.fp32FirstLast);
    for (const n of names) {
      if (!gemm.has(n)) {
        throw new UsageError(
          `--layers: "${n}" is not a conv or linear layer of ${a.model}; expected one of ` +
            [...gemm.keys()].join(", "),
        );
      }
    }
    const captures = names.map((n) => {
      const m = gemm.get(n)!;
      const c = new CaptureArithmetic(m.arithmetic);
      m.arithmetic = c;
      return { name: n, module: m, capture: c };
    });
    const reports: LayerReport[] = captures.map(({ name, module, capture }) => ({
      name,
      description: describe(module),
      int8: capture.inner instanceof Int8Gemm,
      steps: [],
      overall: { bellShare: NaN, meanKsGaussian: NaN, meanKsLaplace: NaN },
    }));

    const trainStep = new TrainStep(backend, model, quantizer, opt);
    const up = new BatchUploader(pixelStats(data));
    const loader = new DataLoader(data, {
      batchSize: a.batchSize,
      shuffle: true,
      rng: runRngs(a.seed).data,
    });
    const want = new Set(a.steps);
    const last = a.steps.at(-1)!;
    print(
      `analyze: ${a.model} on ${ds} (${data.n} images), batch ${a.batchSize}, lr ${a.lr}, ` +
        `${qcfg.name}; layers ${names.join(", ")}; steps ${a.steps.join(", ")}`,
    );
    let step = 0;
    while (step < last) {
      for (const b of loader.batches()) {
        step++;
        const capture = want.has(step);
        for (const c of captures) {
          c.capture.armed = capture;
          c.capture.captured = null;
        }
        trainStep.resetLoss();
        trainStep.run((tape) => up.upload(tape, data, b.images, b.labels, b.size), a.lr);
        await trainStep.afterStep();
        // step edge: the loss of this step, and dY of the armed layers
        const loss = (await trainStep.readLoss()).loss;
        for (const c of captures) await c.capture.collect();
        if (!Number.isFinite(loss)) {
          throw new RangeError(`Training diverged at step ${step}: loss is ${loss}`);
        }
        if (capture) {
          captures.forEach((c, i) => {
            const got = c.capture.captured;
            if (!got) throw new Error(`No output gradient reached layer ${c.name} at step ${step}`);
            const k = got.shape.at(-1)!;
            const channels = analyzeGradient(got.data, k, { bins: a.bins, lambda: qcfg.lambda });
            c.capture.captured = null;
            reports[i]!.steps.push({
              step,
              loss,
              shape: got.shape,
              summary: summarize(channels),
              plotted: pickChannels(channels, a.channels),
              channels,
            });
          });
          print(`  step ${step}: loss ${loss.toFixed(4)}, captured ${names.length} layer(s)`);
        }
        if (step >= last) break;
      }
    }
    for (const r of reports) {
      const all = r.steps.flatMap((s) => s.channels);
      const s = summarize(all);
      r.overall = {
        bellShare: s.bellShare,
        meanKsGaussian: s.meanKsGaussian,
        meanKsLaplace: s.meanKsLaplace,
      };
    }

    const report: AnalyzeReport = {
      version: 1,
      model: a.model,
      dataset: ds,
      quant: qcfg.name,
      lambda: qcfg.lambda,
      batchSize: a.batchSize,
      lr: a.lr,
      seed: a.seed,
      images: data.n,
      bins: a.bins,
      steps: a.steps,
      definitions: {
        sigma: "population standard deviation of the channel about its mean",
        share: "P(|g| > sigma) over the channel's n*p*q values",
        verdict: `bell when share > lambda (${qcfg.lambda}), else inverted-t ` +
          "(src/quant/solve.ts classifyChannel)",
        fits: "Gaussian fit: sample mean and standard deviation. Laplace fit: location = " +
          "sample median, scale b = mean |g - median| (maximum likelihood). KS: exact " +
          "sup |F_n - F| over the sorted sample, both sides.",
        histogram: "equal bins over [-max|g|, +max|g|] of the channel",
      },
      layers: reports,
    };
    await makeOutDir(a.out);
    const jsonPath = `${a.out}/report.json`, htmlPath = `${a.out}/report.html`;
    await Deno.writeTextFile(jsonPath, JSON.stringify(report) + "\n");
    await Deno.writeTextFile(htmlPath, reportHtml(report, a.logY));
    for (const line of summaryLines(report)) print(line);
    print(`report: ${htmlPath}\ndata:   ${jsonPath}`);
    return { report, htmlPath, jsonPath };
  } finally {
    opt.dispose();
    model.dispose();
  }
}

/** The text summary: per layer and step, bell share and mean KS distances. */
export function summaryLines(r: AnalyzeReport): string[] {
  const out: string[] = [];
  const w = Math.max(...r.layers.map((l) => l.name.length), 5);
  out.push(
    `${"layer".padEnd(w)}  step  bell          KS_G    KS_L    Laplace better  zeros`,
  );
  for (const l of r.layers) {
    for (const s of l.steps) {
      const m = s.summary;
      out.push(
        `${l.name.padEnd(w)}  ${String(s.step).padStart(4)}  ` +
          `${`${m.bellChannels}/${m.channels} (${(100 * m.bellShare).toFixed(0)}%)`.padEnd(12)}  ` +
          `${fmtNum(m.meanKsGaussian).padEnd(6)}  ${fmtNum(m.meanKsLaplace).padEnd(6)}  ` +
          `${`${m.laplaceBetter}/${m.channels}`.padEnd(14)}  ${(100 * m.meanZeros).toFixed(0)}%`,
      );
    }
    out.push(
      `${l.name.padEnd(w)}   all  ${`${(100 * l.overall.bellShare).toFixed(0)}%`.padEnd(12)}  ` +
        `${fmtNum(l.overall.meanKsGaussian).padEnd(6)}  ${fmtNum(l.overall.meanKsLaplace)}`,
    );
  }
  return out;
}

/** Runs the CLI; returns the process exit status (0 ok, 1 failure, 2 usage). */
export async function main(
  args: string[],
  print: (line: string) => void = (l) => console.log(l),
): Promise<number> {
  return await runCommand(args, parseAnalyzeArgs, HELP, async (a) => {
    await analyze(a, print);
  }, print);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
