/**
 * Per-channel analysis of an output gradient dY (the paper's Figure 1 for our models): for each
 * channel its statistics, the MCS classifier's verdict, and how close it is to a fitted Gaussian
 * and a fitted Laplace distribution (Kolmogorov-Smirnov distance).
 *
 * Definitions (all in float64):
 * - sigma: population standard deviation about the channel's mean, and share = P(|g| > sigma),
 *   exactly as the kernels' channel statistics that the quantizer classifies with
 *   (kernels/daint8.h, d8_channel_stats_f32); verdict = classifyChannel(share, lambda).
 * - Gaussian fit: mean = sample mean, sigma = the sample's population std (maximum likelihood).
 * - Laplace fit: location = sample median, scale b = mean |g - median| (maximum likelihood; not
 *   std/sqrt 2, which the tails would inflate).
 * - KS distances are exact sup-distances between the empirical CDF and the fitted CDF.
 *
 * @module
 */
import { type ChannelShape, classifyChannel } from "../quant/solve.ts";
import { gaussianCdf, type GaussianFit, laplaceCdf, type LaplaceFit } from "./dist.ts";
import { type Histogram, symmetricHistogram } from "./histogram.ts";
import { ksDistanceSorted } from "./ks.ts";

/** Everything measured on one channel. */
export interface ChannelAnalysis {
  channel: number;
  /** Number of values (rows of dY: n * p * q). */
  n: number;
  mean: number;
  sigma: number;
  /** max |g|. */
  max: number;
  /** P(|g| > sigma). */
  share: number;
  verdict: ChannelShape;
  /** Share of exact zeros (e.g. masked by a ReLU right after the layer). */
  zeros: number;
  /** Excess kurtosis (0 Gaussian, 3 Laplace). */
  kurtosis: number;
  gaussian: GaussianFit;
  laplace: LaplaceFit;
  /** KS distance to the fitted Gaussian and Laplace; NaN for a constant channel. */
  ksGaussian: number;
  ksLaplace: number;
  /** The family with the smaller KS distance (null for a constant channel). */
  better: "gaussian" | "laplace" | null;
  /** Histogram over [-max, max]. */
  histogram: Histogram;
}

/** Summary of one layer at one step. */
export interface LayerSummary {
  channels: number;
  bellChannels: number;
  /** bellChannels / channels. */
  bellShare: number;
  /** Means over the non-constant channels. */
  meanKsGaussian: number;
  meanKsLaplace: number;
  /** Channels where the Laplace fits better (smaller KS). */
  laplaceBetter: number;
  /** Mean share of exact zeros per channel (a point mass at 0 dominates both KS distances). */
  meanZeros: number;
  /** Mean KS to each family over the bell and over the inverted-T channels. */
  meanKsGaussianBell: number;
  meanKsLaplaceBell: number;
  meanKsGaussianSharp: number;
  meanKsLaplaceSharp: number;
}

/** Options of {@linkcode analyzeChannel}. */
export interface ChannelOptions {
  /** Histogram bins. */
  bins: number;
  /** Classifier threshold (bell when share > lambda). */
  lambda: number;
}

/**
 * Analyzes one channel's values (any order; the array is sorted in place).
 *
 * @example
 * ```ts
 * import { analyzeChannel } from "./channels.ts";
 * const a = analyzeChannel(Float64Array.of(-1, 0, 1, 2), 0, { bins: 4, lambda: 0.3 });
 * ```
 */
export function analyzeChannel(
  values: Float64Array,
  channel: number,
  opts: ChannelOptions,
): ChannelAnalysis {
  const n = values.length;
  if (n === 0) throw new RangeError(`Cannot analyze channel ${channel}: it has no values`);
  let s1 = 0, max = 0, zeros = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    s1 += v;
    const a = Math.abs(v);
    if (a > max) max = a;
    if (v === 0) zeros++;
  }
  const mean = s1 / n;
  let m2 = 0, m4 = 0;
  for (let i = 0; i < n; i++) {
    const d = values[i]! - mean;
    const d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= n;
  m4 /= n;
  const sigma = Math.sqrt(m2);
  let above = 0;
  for (let i = 0; i < n; i++) if (Math.abs(values[i]!) > sigma) above++;
  const share = above / n;
  const histogram = symmetricHistogram(values, opts.bins);

  values.sort();
  const median = n % 2 === 1 ? values[(n - 1) >> 1]! : 0.5 * (values[n / 2 - 1]! + values[n / 2]!);
  let mad = 0;
  for (let i = 0; i < n; i++) mad += Math.abs(values[i]! - median);
  const b = mad / n;
  const gaussian: GaussianFit = { mean, sigma };
  const laplace: LaplaceFit = { median, b };
  const constant = !(sigma > 0) || !(b > 0);
  const ksGaussian = constant ? NaN : ksDistanceSorted(values, (x) => gaussianCdf(gaussian, x));
  const ksLaplace = constant ? NaN : ksDistanceSorted(values, (x) => laplaceCdf(laplace, x));
  return {
    channel,
    n,
    mean,
    sigma,
    max,
    share,
    verdict: classifyChannel(share, opts.lambda),
    zeros: zeros / n,
    kurtosis: m2 > 0 ? m4 / (m2 * m2) - 3 : NaN,
    gaussian,
    laplace,
    ksGaussian,
    ksLaplace,
    better: constant ? null : ksLaplace < ksGaussian ? "laplace" : "gaussian",
    histogram,
  };
}

/**
 * Analyzes every channel of a gradient stored channel-last (NHWC dY [n, p, q, k], or [rows, k]).
 *
 * @example
 * ```ts
 * import { analyzeGradient } from "./channels.ts";
 * const dy = Float32Array.of(1, -1, 2, 0, -3, 1); // 3 rows, 2 channels
 * const a = analyzeGradient(dy, 2, { bins: 8, lambda: 0.3 });
 * ```
 */
export function analyzeGradient(
  dy: ArrayLike<number>,
  channels: number,
  opts: ChannelOptions,
): ChannelAnalysis[] {
  if (!Number.isInteger(channels) || channels < 1 || dy.length % channels !== 0) {
    throw new RangeError(
      `Cannot analyze a gradient of ${dy.length} values as ${channels} channels`,
    );
  }
  const rows = dy.length / channels;
  const out: ChannelAnalysis[] = [];
  const col = new Float64Array(rows);
  for (let c = 0; c < channels; c++) {
    for (let r = 0; r < rows; r++) col[r] = dy[r * channels + c]!;
    out.push(analyzeChannel(col, c, opts));
  }
  return out;
}

function meanOf(xs: number[]): number {
  const f = xs.filter((x) => Number.isFinite(x));
  return f.length === 0 ? NaN : f.reduce((a, v) => a + v, 0) / f.length;
}

/** Bell share and mean KS distances of a layer's channels. */
export function summarize(chs: readonly ChannelAnalysis[]): LayerSummary {
  const bell = chs.filter((c) => c.verdict === "bell");
  const sharp = chs.filter((c) => c.verdict !== "bell");
  return {
    channels: chs.length,
    bellChannels: bell.length,
    bellShare: chs.length === 0 ? NaN : bell.length / chs.length,
    meanKsGaussian: meanOf(chs.map((c) => c.ksGaussian)),
    meanKsLaplace: meanOf(chs.map((c) => c.ksLaplace)),
    laplaceBetter: chs.filter((c) => c.better === "laplace").length,
    meanZeros: meanOf(chs.map((c) => c.zeros)),
    meanKsGaussianBell: meanOf(bell.map((c) => c.ksGaussian)),
    meanKsLaplaceBell: meanOf(bell.map((c) => c.ksLaplace)),
    meanKsGaussianSharp: meanOf(sharp.map((c) => c.ksGaussian)),
    meanKsLaplaceSharp: meanOf(sharp.map((c) => c.ksLaplace)),
  };
}

/**
 * The channels to plot: the `count/2` (rounded up) with the highest share P(|g| > sigma) (most
 * bell-shaped) and the rest with the lowest share (sharpest), without overlap; all channels
 * when there are at most `count`. Each list is ordered from the extreme inwards.
 */
export function pickChannels(
  chs: readonly ChannelAnalysis[],
  count: number,
): { bell: number[]; sharp: number[] } {
  const order = [...chs].sort((a, b) => b.share - a.share || a.channel - b.channel);
  const n = Math.min(count, order.length);
  const nb = Math.ceil(n / 2);
  const bell = order.slice(0, nb).map((c) => c.channel);
  const sharp = order.slice(order.length - (n - nb)).reverse().map((c) => c.channel);
  return { bell, sharp };
}
