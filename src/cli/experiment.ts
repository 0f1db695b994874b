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
import { Progress } from "../train/progress.ts";
import { train, type TrainResult } from "../train/trainer.ts";
import { list, runCommand, UsageError } from "./args.ts";
import { HELP, loadRunData, parseTrainArgs, type TrainArgs } from "./train.ts";

/** One row of the experiment table. */
export interface ExperimentRow {
  preset: string;
  testAcc: number;
  /** Percentage points relative to fp32 (NaN without an fp32 row). */
  deltaToFp32: number;
  imagesPerSecond: number;
  /** Layer name -> share of bell-shaped channels (INT8 layers only). */
  bellShare: Record<string, number>;
  fp32Layers: string[];
}

/** Renders the rows as a Markdown table (one bell-share column per INT8 layer). */
export function markdownTable(rows: ExperimentRow[], title: string): string {
  const layers = [...new Set(rows.flatMap((r) => Object.keys(r.bellShare)))];
  const pct = (v: number) => Number.isFinite(v) ? `${(100 * v).toFixed(0)}%` : "-";
  const head = ["preset", "test acc", "delta to fp32", "img/s", ...layers.map((l) => `bell ${l}`)];
  const lines = [
    `### ${title}`,
    "",
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => i === 0 ? "---" : "---:").join("|")}|`,
  ];
  for (const r of rows) {
    const d = Number.isFinite(r.deltaToFp32)
      ? `${r.deltaToFp32 >= 0 ? "+" : ""}${r.deltaToFp32.toFixed(2)}`
      : "-";
    lines.push(
      `| ${
        [
          r.preset,
          `${(100 * r.testAcc).toFixed(2)}%`,
          d,
          r.imagesPerSecond.toFixed(0),
          ...layers.map((l) => pct(r.bellShare[l] ?? NaN)),
        ].join(" | ")
      } |`,
    );
  }
  const kept = rows.find((r) => r.fp32Layers.length > 0 && r.preset !== "fp32")?.fp32Layers;
  lines.push("");
  lines.push(
    "bell = share of dY channels the MCS classifier called bell-shaped (P(|g| > sigma) > lambda), " +
      "the rest inverted-T; measured in every preset's own run." +
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
    await Deno.mkdir(out, { recursive: true });
    const rows: ExperimentRow[] = [];
    for (const preset of a.presets) {
      console.log(`\n== ${preset} ==`);
      const r: TrainResult = await train(
        { ...c, quant: preset, quantSet: preset === c.quant ? c.quantSet : undefined },
        trainSet,
        testSet,
        {
          backend: a.backend,
          threads: a.threads,
          out: `${out}/${preset}`,
          progress: new Progress({ itemsPerStep: c.batchSize }),
        },
      );
      const seconds = r.epochs.reduce((s, e) => s + e.seconds, 0);
      const images = r.epochs.reduce((s, e) => s + e.imagesPerSecond * e.seconds, 0);
      rows.push({
        preset,
        testAcc: r.testAcc,
        deltaToFp32: NaN,
        imagesPerSecond: images / seconds,
        bellShare: r.quantizer.bellShares(),
        fp32Layers: [...r.quantizer.fp32Layers],
      });
      r.model.dispose();
    }
    const base = rows.find((r) => r.preset === "fp32");
    for (const r of rows) if (base) r.deltaToFp32 = 100 * (r.testAcc - base.testAcc);
    const title = `${c.model} on ${c.dataset}, ${c.epochs} epoch(s), batch ${c.batchSize}, ` +
      `lr ${c.lr} ${c.schedule}, seed ${c.seed}` +
      (a.limit ? `, first ${a.limit} training images` : "");
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
