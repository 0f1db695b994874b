/**
 * Quantization presets and their knobs. Each method (`fp32`, `int8-naive`, `ui8`, `daint8`) is a
 * plain object of documented knobs; a user overrides any knob with `--quant-set k=v,k=v` or a
 * JSON file (`--quant-set @knobs.json`). See ../shared/PAPER.md for the method.
 *
 * @module
 */

/** How the clip of a gradient tensor (or of each of its channels) is chosen. */
export const CLIP_RULES = ["max", "mcs", "mcs-solve", "dsgc"] as const;
/** A clipping rule. */
export type ClipRule = typeof CLIP_RULES[number];

/** Families mcs-solve can model inverted-T channels with. */
export const SHARP_FAMILIES = ["laplace", "inverted-t"] as const;
/** A family for inverted-T channels. */
export type SharpFamily = typeof SHARP_FAMILIES[number];

/** Every knob of the INT8 arithmetic. */
export interface QuantConfig {
  /** Preset name, for logs. */
  name: string;
  /** false: plain FP32 GEMMs (the other knobs are ignored). */
  int8: boolean;
  /** Weight scale granularity in fprop: one per tensor (paper) or per output channel. */
  weightPerChannel: boolean;
  /** wgrad's dY scale: per output channel (GVQ) or one per tensor. */
  gvq: boolean;
  /**
   * dY clipping: `max` (s = max|g|), `mcs` (the paper's classifier: bell channels take the max,
   * inverted-T channels an EMA of the max), `mcs-solve` (each channel's clip minimizes E(s) of
   * its fitted family, src/quant/solve.ts), `dsgc` (UI8's direction-sensitive search).
   */
  clip: ClipRule;
  /** Gradient rounding: stochastic (floor(x + u)) or nearest (half away from zero). */
  stochastic: boolean;
  /** MCS classifier threshold: bell-shaped when P(|g| > sigma) > lambda. */
  lambda: number;
  /** MCS EMA: s_t = (1 - k*A) * s_{t-1} + A * max_t. */
  k: number;
  /** MCS EMA rate A in [0, 1]: the weight of this step's max in the EMA above. */
  A: number;
  /** Magnitude weight of mcs-solve, in units of 1/sigma: f(g) = exp(alpha |g| / sigma). */
  alpha: number;
  /**
   * mcs-solve's family for inverted-T channels: `laplace`, or the piecewise-uniform
   * `inverted-t` fitted to the channel's sigma and max (Laplace where no such fit exists).
   */
  sharpFamily: SharpFamily;
  /** Recompute statistics-based decisions (classes, solves, searches) every this many steps. */
  statsPeriod: number;
  /** Keep the first convolution and the last linear layer in FP32. */
  fp32FirstLast: boolean;
  /**
   * Keep in FP32 every GEMM layer whose reduction per kernel tap is shorter than this: a conv's
   * input channels per group, a linear layer's input features (0 = no such layer: the paper's
   * setting). With few channels the im2col gather and the quantization passes can cost more than
   * the INT8 GEMM saves. Measured on an AVX2 Zen 3 (kernels/cpu/README.md): LeNet-5's conv2 (6
   * input channels, 15 M multiply-adds) runs its INT8 passes at 0.95-1.2x FP32, and its daint8
   * step is at parity with FP32 with or without `minInt8Channels=8`. On Sapphire Rapids
   * (avx512-vnni, 2026-12-03 report) LeNet-5's daint8 step runs 1.07x FP32 with the default and
   * 0.99x with `minInt8Channels=8`. The knob is for layers and CPUs where INT8 does not pay
   * (bench/REPORT.md times LeNet-5 both ways). A depthwise conv has one channel per group, so
   * `minInt8Channels=2` keeps exactly the depthwise convs in FP32: on the Zen 4 guest (AVX-512
   * VNNI) MobileNetV2's daint8 step at 32x32, batch 32, ran 171-176 ms that way against 179-185 ms
   * with every conv in INT8 and 211-213 ms in FP32 (kernels/cpu/README.md: the INT8 depthwise
   * forward issues about 3x the instructions of FP32's there). `deno task report --models
   * mobilenet_v2` times it both ways.
   */
  minInt8Channels: number;
  /** UI8: candidate clip ratios searched between this fraction of max|g| and max|g|. */
  dsgcMinRatio: number;
  /** UI8: number of candidates in the search. */
  dsgcCandidates: number;
  /** UI8 Deviation Counteractive LR scaling: layer lr * max(exp(-beta * d), floor). */
  lrScaling: boolean;
  /**
   * UI8: beta of the LR scaling above; larger shrinks the rate faster as the cosine distance d
   * grows.
   */
  lrScaleBeta: number;
  /** UI8: floor of the LR scale factor, so a layer's rate never drops below this fraction. */
  lrScaleFloor: number;
}

const BASE: QuantConfig = {
  name: "fp32",
  int8: false,
  weightPerChannel: false,
  gvq: false,
  clip: "max",
  stochastic: false,
  lambda: 0.3,
  k: 1,
  A: 0.8,
  alpha: 0,
  sharpFamily: "laplace",
  statsPeriod: 1,
  fp32FirstLast: true,
  minInt8Channels: 0,
  dsgcMinRatio: 0.3,
  dsgcCandidates: 15,
  lrScaling: false,
  lrScaleBeta: 20,
  lrScaleFloor: 0.1,
};

/** The four presets. */
export const PRESETS: Readonly<Record<string, Readonly<QuantConfig>>> = {
  fp32: BASE,
  "int8-naive": { ...BASE, name: "int8-naive", int8: true },
  ui8: {
    ...BASE,
    name: "ui8",
    int8: true,
    clip: "dsgc",
    stochastic: true,
    statsPeriod: 100,
    lrScaling: true,
  },
  daint8: { ...BASE, name: "daint8", int8: true, gvq: true, clip: "mcs", stochastic: true },
};

/** Names of the presets. */
export const QUANT_NAMES: readonly string[] = Object.keys(PRESETS);

type Kind = "boolean" | "number" | "integer" | "fraction" | "clip" | "family";
const KNOBS: Record<Exclude<keyof QuantConfig, "name">, Kind> = {
  int8: "boolean",
  weightPerChannel: "boolean",
  gvq: "boolean",
  clip: "clip",
  stochastic: "boolean",
  lambda: "fraction",
  k: "number",
  A: "fraction",
  alpha: "number",
  sharpFamily: "family",
  statsPeriod: "integer",
  fp32FirstLast: "boolean",
  minInt8Channels: "number",
  dsgcMinRatio: "fraction",
  dsgcCandidates: "integer",
  lrScaling: "boolean",
  lrScaleBeta: "number",
  lrScaleFloor: "fraction",
};

function coerce(key: string, kind: Kind, v: unknown): boolean | number | string {
  const bad = (what: string) =>
    new RangeError(`Invalid quantization knob ${key}=${JSON.stringify(v)}: ${what}`);
  switch (kind) {
    case "boolean":
      if (v === true || v === "true" || v === "1") return true;
      if (v === false || v === "false" || v === "0") return false;
      throw bad("expected true or false");
    case "clip":
      if (typeof v === "string" && (CLIP_RULES as readonly string[]).includes(v)) return v;
      throw bad(`expected one of ${CLIP_RULES.join(", ")}`);
    case "family":
      if (typeof v === "string" && (SHARP_FAMILIES as readonly string[]).includes(v)) return v;
      throw bad(`expected one of ${SHARP_FAMILIES.join(", ")}`);
    default: {
      const n = typeof v === "number"
        ? v
        : typeof v === "string" && v.trim() !== ""
        ? Number(v)
        : NaN;
      if (!Number.isFinite(n) || n < 0) throw bad("expected a finite number >= 0");
      if (kind === "integer" && (!Number.isInteger(n) || n < 1)) {
        throw bad("expected an integer >= 1");
      }
      if (kind === "fraction" && n > 1) throw bad("expected a number between 0 and 1");
      return n;
    }
  }
}

/**
 * The preset `name` with `overrides` applied. Overrides come as `k=v,k=v` text, or an object
 * (e.g. parsed from JSON). Unknown names and bad values throw a RangeError naming them.
 *
 * @example
 * ```ts
 * import { quantConfig } from "./config.ts";
 * const q = quantConfig("daint8", "lambda=0.25,A=0.7");
 * console.assert(q.lambda === 0.25 && q.A === 0.7 && q.gvq);
 * ```
 */
export function quantConfig(
  name: string,
  overrides: string | Record<string, unknown> = {},
): QuantConfig {
  const preset = PRESETS[name];
  if (!preset) {
    throw new RangeError(
      `Unknown quantization "${name}": expected one of ${QUANT_NAMES.join(", ")}`,
    );
  }
  const entries: [string, unknown][] = typeof overrides === "string"
    ? overrides.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
      const eq = s.indexOf("=");
      if (eq <= 0) throw new RangeError(`Invalid quantization knob "${s}": expected name=value`);
      return [s.slice(0, eq).trim(), s.slice(eq + 1).trim()];
    })
    : Object.entries(overrides);
  const out: Record<string, unknown> = { ...preset };
  for (const [key, v] of entries) {
    const kind = KNOBS[key as keyof typeof KNOBS];
    if (!kind) {
      throw new RangeError(
        `Unknown quantization knob "${key}": expected one of ${Object.keys(KNOBS).join(", ")}`,
      );
    }
    out[key] = coerce(key, kind, v);
  }
  const q = out as unknown as QuantConfig;
  if (q.k * q.A > 1) {
    throw new RangeError(`Invalid quantization knobs k=${q.k}, A=${q.A}: k*A must be at most 1`);
  }
  return q;
}
