/**
 * The CUDA issue's speed goals as ratios from one `deno task gpu:check` run, side by side:
 *
 * - per ResNet-50 layer and MobileNetV2 depthwise layer (batch 128): INT8 conv forward + backward
 *   (fprop + dgrad + wgrad of the kernel version `auto` picks: the newest one measured) against
 *   cuDNN FP16 channels_last forward + backward (bench/peers/torch_gpu.py); goal at least 1.5x.
 *   The stem has no dgrad in training (its input is the image) but PyTorch's figure includes one:
 *   its ratio flatters INT8. The depthwise layers also against our own fp32 depthwise kernels
 *   (the benchmark's version-0 rows): whether INT8 pays there;
 * - the training steps (bench/gpu/step_bench.ts against bench/peers/torch_gpu_step.py): daint8
 *   against our fp32, PyTorch FP32 and PyTorch BF16 autocast; goals for ResNet-50: at least 3x
 *   PyTorch FP32 and faster than PyTorch BF16 autocast.
 *
 * `deno run -A bench/gpu/ratios.ts DIR` reads DIR/bench_int8.json, torch_gpu.json,
 * bench_step.json and torch_gpu_step.json (a missing or skipped one leaves its ratios out, with
 * the reason) and writes DIR/ratios.json and DIR/ratios.md.
 *
 * @module
 */

/** bench_int8.json (bench/gpu/conv_int8_bench.ts). */
export interface Int8Bench {
  device?: string;
  batch?: number;
  rows?: { layer: string; version: number; op: string; ms: number; tops: number }[];
  skipped?: string;
}
/** torch_gpu.json (bench/peers/torch_gpu.py). */
export interface TorchConvs {
  device?: string;
  rows?: { layer: string; dtype: string; ms_fwd: number; ms_fwd_bwd: number }[];
  skipped?: string;
}
/** bench_step.json (bench/gpu/step_bench.ts). */
export interface StepBench {
  device?: string;
  rows?: { model: string; preset: string; ms: number; batch?: number }[];
  skipped?: string;
}
/** torch_gpu_step.json (bench/peers/torch_gpu_step.py). */
export interface TorchSteps {
  device?: string;
  rows?: { model: string; mode: string; ms: number }[];
  skipped?: string;
}

/** One layer's INT8 forward + backward against cuDNN FP16. */
export interface LayerRatio {
  layer: string;
  version: number;
  int8_ms: number;
  fp16_ms: number;
  /** fp16_ms / int8_ms: above 1 means INT8 is faster. */
  speedup: number;
  /** Our fp32 kernels' fprop + dgrad + wgrad ms over int8_ms, where measured (depthwise). */
  vs_our_fp32: number | null;
  goal_met: boolean;
}

/** One model's daint8 step against the others. */
export interface StepRatio {
  /** bench_step.json's batch, where it says. */
  batch?: number;
  model: string;
  daint8_ms: number;
  vs_our_fp32: number | null;
  vs_torch_fp32: number | null;
  vs_torch_bf16: number | null;
  /** ResNet-50 only: at least 3x PyTorch FP32 and faster than BF16 autocast. */
  goal_met: boolean | null;
}

/** The ratios and why any are missing. */
export interface Ratios {
  /** bench_int8.json's batch, where it says. */
  int8_batch?: number;
  layers: LayerRatio[];
  steps: StepRatio[];
  missing: string[];
}

/** Per-layer and per-step ratios from the four benchmark outputs (any may be absent). */
export function computeRatios(
  int8: Int8Bench | null,
  torchConvs: TorchConvs | null,
  steps: StepBench | null,
  torchSteps: TorchSteps | null,
): Ratios {
  const missing: string[] = [];
  const why = (name: string, v: { skipped?: string; rows?: unknown[] } | null) => {
    if (v === null) missing.push(`${name}: not found`);
    else if (v.skipped) missing.push(`${name}: skipped (${v.skipped})`);
    else if (!v.rows) missing.push(`${name}: no rows`);
    else return true;
    return false;
  };
  const layers: LayerRatio[] = [];
  if (why("bench_int8.json", int8) && why("torch_gpu.json", torchConvs)) {
    for (const layer of [...new Set(int8!.rows!.map((r) => r.layer))]) {
      const rows = int8!.rows!.filter((r) => r.layer === layer);
      const version = Math.max(...rows.map((r) => r.version));
      const sum = (v: number) => rows.filter((r) => r.version === v).reduce((s, r) => s + r.ms, 0);
      const ms = sum(version), fp32 = rows.some((r) => r.version === 0) ? sum(0) : null;
      const fp16 = torchConvs!.rows!.find((r) => r.layer === layer && r.dtype === "fp16");
      if (!fp16) {
        missing.push(`${layer}: no fp16 row in torch_gpu.json`);
        continue;
      }
      const speedup = fp16.ms_fwd_bwd / ms;
      layers.push({
        layer,
        version,
        int8_ms: ms,
        fp16_ms: fp16.ms_fwd_bwd,
        speedup,
        vs_our_fp32: fp32 === null ? null : fp32 / ms,
        goal_met: speedup >= 1.5,
      });
    }
  }
  const out: StepRatio[] = [];
  if (why("bench_step.json", steps)) {
    const haveTorch = why("torch_gpu_step.json", torchSteps);
    for (const model of [...new Set(steps!.rows!.map((r) => r.model))]) {
      const ours = (p: string) => steps!.rows!.find((r) => r.model === model && r.preset === p);
      const torch = (m: string) =>
        haveTorch ? torchSteps!.rows!.find((r) => r.model === model && r.mode === m) : undefined;
      const d = ours("daint8");
      if (!d) continue;
      const ratio = (other: { ms: number } | undefined) => other ? other.ms / d.ms : null;
      const vsF = ratio(torch("fp32")), vsB = ratio(torch("bf16-autocast"));
      out.push({
        model,
        batch: d.batch,
        daint8_ms: d.ms,
        vs_our_fp32: ratio(ours("fp32")),
        vs_torch_fp32: vsF,
        vs_torch_bf16: vsB,
        goal_met: model === "resnet50" && vsF !== null && vsB !== null ? vsF >= 3 && vsB > 1 : null,
      });
    }
  }
  return { int8_batch: int8?.batch, layers, steps: out, missing };
}

/** The ratios as Markdown tables. */
export function ratiosMarkdown(r: Ratios, device: string): string {
  const x = (v: number | null) => v === null ? "-" : `${v.toFixed(2)}x`;
  const lines = [`### Speed goals on ${device}`, ""];
  if (r.layers.length > 0) {
    lines.push(
      `| layer${
        r.int8_batch ? `, batch ${r.int8_batch}` : ""
      } | INT8 kernel | INT8 fprop+dgrad+wgrad ms | cuDNN FP16 fwd+bwd ms | INT8 speed-up | goal 1.5x | INT8 vs our fp32 |`,
      "|---|---:|---:|---:|---:|:-:|---:|",
    );
    for (const l of r.layers) {
      lines.push(
        `| ${l.layer} | v${l.version} | ${l.int8_ms.toFixed(3)} | ${l.fp16_ms.toFixed(3)} | ` +
          `${x(l.speedup)} | ${l.goal_met ? "met" : "not met"} | ${x(l.vs_our_fp32)} |`,
      );
    }
    lines.push(
      "",
      "INT8: the three conv kernels alone (the quantize passes are not in this figure; the " +
        "training steps below include everything). The stem's PyTorch figure includes an input " +
        "gradient that training does not need. The depthwise layers (dw3x3) run the dp4a " +
        "depthwise kernels (v2) and, for the last column, our fp32 depthwise kernels.",
      "",
    );
  }
  if (r.steps.length > 0) {
    lines.push(
      "| training step | daint8 ms | vs our fp32 | vs PyTorch FP32 | vs PyTorch BF16 autocast | goal (ResNet-50: 3x FP32, > BF16) |",
      "|---|---:|---:|---:|---:|:-:|",
    );
    for (const s of r.steps) {
      const goal = s.goal_met === null ? "-" : s.goal_met ? "met" : "not met";
      lines.push(
        `| ${s.batch ? `${s.model}, batch ${s.batch}` : s.model} | ${s.daint8_ms.toFixed(2)} | ${
          x(s.vs_our_fp32)
        } | ${x(s.vs_torch_fp32)} | ` +
          `${x(s.vs_torch_bf16)} | ${goal} |`,
      );
    }
    lines.push("");
  }
  for (const m of r.missing) lines.push(`- missing: ${m}`);
  return lines.join("\n") + "\n";
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(Deno.readTextFileSync(path)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Reads the four outputs in `dir`, writes ratios.json and ratios.md there; returns the ratios. */
export function writeRatios(dir: string): { ratios: Ratios; markdown: string } {
  const int8 = readJson<Int8Bench>(`${dir}/bench_int8.json`);
  const ratios = computeRatios(
    int8,
    readJson<TorchConvs>(`${dir}/torch_gpu.json`),
    readJson<StepBench>(`${dir}/bench_step.json`),
    readJson<TorchSteps>(`${dir}/torch_gpu_step.json`),
  );
  const markdown = ratiosMarkdown(ratios, int8?.device ?? "the GPU");
  Deno.writeTextFileSync(`${dir}/ratios.json`, JSON.stringify(ratios, null, 1) + "\n");
  Deno.writeTextFileSync(`${dir}/ratios.md`, markdown);
  return { ratios, markdown };
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: deno run -A bench/gpu/ratios.ts DIR");
    Deno.exit(2);
  }
  console.log(writeRatios(dir).markdown);
}
