/**
 * `deno task experiment`: trains one model, dataset and seed under each quantization preset
 * (fp32, int8-naive, ui8, daint8 by default) with the same schedule, and prints and writes one
 * table (Markdown and JSON): final test accuracy, delta to fp32, training images/s, and per layer
 * the share of bell-shaped vs inverted-T gradient channels seen by the MCS classifier.
 *
 * Takes every `deno task train` flag (except --quant, --resume, --stop-after) plus
 * `--presets a,b,c` and `--out DIR` (default runs/experiment-<model>-<dataset>-s<seed>).
 *
 * @module
 */
import { QUANT_NAMES } from "../quant/config.ts";
import { checkOutDir, makeOutDir } from "../train/outdir.ts";
import { Progress } from "../train/progress.ts";
import { train, type TrainResult } from "../train/trainer.ts";
import { list, runCommand, UsageError } from "./args.ts";
import { HELP, loadRunData, parseTrainArgs, type TrainArgs } from "./train.ts";
import { makeInput } from "./zoo_data.ts";

/** One row of the experiment table. */
export interface ExperimentRow {
  preset: string;
  testAcc: number;
  /** Percentage points relative to fp32 (NaN without an fp32 row). */
  deltaToFp32: number;
  imagesPerSecond: number;
  /** Share of the training time the step waited for data (decode, augmentation, batching). */
  dataWaitShare: number;
  /** Layer name -> share of bell-shaped channels (INT8 layers only). */
  bellShare: Record<string, number>;
  fp32Layers: string[];
}

/**
 * Renders the rows as Markdown: one table of accuracy, delta and speed per preset (with the mean
 * bell share over its INT8 layers), then one table of the bell share per layer (rows) and preset
 * (columns), which stays readable for deep models.
 */
export function markdownTable(rows: ExperimentRow[], title: string): string {
  const layers = [...new Set(rows.flatMap((r) => Object.keys(r.bellShare)))];
  const pct = (v: number | undefined) =>
    v !== undefined && Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "-";
  const mean = (r: ExperimentRow) => {
    const v = Object.values(r.bellShare).filter(Number.isFinite);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
  };
  const lines = [
    `### ${title}`,
    "",
    "| preset | test acc | delta to fp32 (points) | train img/s | waiting for data | bell-shaped dY channels (mean over INT8 layers) |",
    "|---|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    const d = Number.isFinite(r.deltaToFp32)
      ? `${r.deltaToFp32 >= 0 ? "+" : ""}${r.deltaToFp32.toFixed(2)}`
      : "-";
    lines.push(
      `| ${r.preset} | ${(100 * r.testAcc).toFixed(2)}% | ${d} | ${
        r.imagesPerSecond.toFixed(0)
      } | ${pct(r.dataWaitShare)} | ${pct(mean(r))} |`,
    );
  }
  const int8 = rows.filter((r) => Object.keys(r.bellShare).length > 0);
  if (layers.length > 0) {
    lines.push("", `| layer | ${int8.map((r) => `bell-shaped share, ${r.preset}`).join(" | ")} |`);
    lines.push(`|---|${int8.map(() => "---:").join("|")}|`);
    for (const l of layers) {
      lines.push(`| ${l} | ${int8.map((r) => pct(r.bellShare[l])).join(" | ")} |`);
    }
  }
  const kept = int8.find((r) => r.fp32Layers.length > 0)?.fp32Layers;
  lines.push("");
  lines.push(
    "Bell-shaped share = the fraction of dY channels the MCS classifier called bell-shaped " +
      "(P(|g| > sigma) > lambda) over every classification of the run; the rest are inverted-T." +
      (kept ? ` Kept in FP32 by every INT8 preset: ${kept.join(", ")}.` : ""),
  );
  return lines.join("\n");
}

/** Parses the experiment's flags: the training ones plus --presets. */
export function parseExperimentArgs(args: string[]): TrainArgs & { presets: string[] } {
  const a = parseTrainArgs(args, { presets: { type: "string" } });
  if (a.resume || a.stopAfter) {
    throw new UsageError("--resume and --stop-after do not apply to experiments");
  }
  const presets = list(a.extra.presets as string | undefined) ?? [...QUANT_NAMES];
  for (const p of presets) {
    if (!QUANT_NAMES.includes(p)) {
      throw new UsageError(`--presets: unknown preset "${p}", expected ${QUANT_NAMES.join(", ")}`);
    }
  }
  const c = a.config;
  const out = args.some((s) => s.startsWith("--out"))
    ? a.out
    : `runs/experiment-${c.model}-${c.dataset}-s${c.seed}`;
  return { ...a, out, presets };
}

/** Runs the experiment; returns the exit status. */
export function main(args: string[]): Promise<number> {
  const help = `deno task experiment [train flags] [--presets ${QUANT_NAMES.join(",")}]\n\n${HELP}`;
  return runCommand(args, parseExperimentArgs, help, async (a) => {
    const c = a.config, out = a.out;
    const [trainSet, testSet] = await loadRunData(a);
    for (const p of a.presets) {
      await checkOutDir(`${out}/${p}`, { overwrite: a.overwrite, canResume: false });
    }
    await makeOutDir(out);
    const rows: ExperimentRow[] = [];
    for (const preset of a.presets) {
      console.log(`\n== ${preset} ==`);
      const input = makeInput(a, trainSet);
      const r: TrainResult = await train(
        { ...c, quant: preset, quantSet: preset === c.quant ? c.quantSet : undefined },
        trainSet,
        testSet,
        {
          backend: a.backend,
          threads: a.threads,
          out: `${out}/${preset}`,
          overwrite: a.overwrite,
          progress: new Progress({ itemsPerStep: c.batchSize }),
          input,
          init: a.init,
        },
      ).finally(() => input?.close());
      const seconds = r.epochs.reduce((s, e) => s + e.seconds, 0);
      const images = r.epochs.reduce((s, e) => s + e.imagesPerSecond * e.seconds, 0);
      rows.push({
        preset,
        testAcc: r.testAcc,
        deltaToFp32: NaN,
        imagesPerSecond: images / seconds,
        dataWaitShare: r.epochs.reduce((s, e) => s + e.dataWaitSeconds, 0) / seconds,
        bellShare: await r.quantizer.bellShares(),
        fp32Layers: [...r.quantizer.fp32Layers],
      });
      r.model.dispose();
    }
    const base = rows.find((r) => r.preset === "fp32");
    for (const r of rows) if (base) r.deltaToFp32 = 100 * (r.testAcc - base.testAcc);
    const data = c.dataset === "folder" && a.dataDir ? `${a.dataDir} (image folder)` : c.dataset;
    const title = `${c.model} on ${data}, ${c.epochs} epoch(s), batch ${c.batchSize}, ` +
      `lr ${c.lr} ${c.schedule}, seed ${c.seed}` +
      (a.limit ? `, ${a.limit} training images` : "") +
      (a.testLimit ? `, ${a.testLimit} test images` : "");
    const md = markdownTable(rows, title);
    console.log(`\n${md}\n`);
    await Deno.writeTextFile(`${out}/results.md`, md + "\n");
    await Deno.writeTextFile(
      `${out}/results.json`,
      JSON.stringify({ config: c, limit: a.limit ?? null, rows }, null, 2) + "\n",
    );
    console.log(`wrote ${out}/results.md and ${out}/results.json`);
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
