/**
 * Fixed-width histograms for the gradient report.
 *
 * @module
 */

/** Counts of `bins` equal bins over [lo, hi]; values outside are counted apart. */
export interface Histogram {
  lo: number;
  hi: number;
  counts: number[];
  /** Values below lo (never in `counts`). */
  below: number;
  /** Values above hi (never in `counts`). */
  above: number;
}

/**
 * Histogram of `values` over [lo, hi] in `bins` equal bins, each closed on the left and open on
 * the right except the last, which includes hi. NaN values count as neither in nor out.
 *
 * @example
 * ```ts
 * import { histogram } from "./histogram.ts";
 * const h = histogram([-1, 0, 0.5, 1], 4, -1, 1);
 * // h.counts = [1, 0, 1, 2]
 * ```
 * @throws {RangeError} If bins is not a positive integer or the range is empty or not finite.
 */
export function histogram(
  values: ArrayLike<number>,
  bins: number,
  lo: number,
  hi: number,
): Histogram {
  if (!Number.isInteger(bins) || bins < 1) {
    throw new RangeError(`Cannot build a histogram: bins must be a positive integer, got ${bins}`);
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(hi > lo)) {
    throw new RangeError(`Cannot build a histogram: range [${lo}, ${hi}] is empty or not finite`);
  }
  const counts = new Array<number>(bins).fill(0);
  let below = 0, above = 0;
  const k = bins / (hi - lo);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < lo) below++;
    else if (v > hi) above++;
    else if (v <= hi) counts[Math.min(bins - 1, Math.floor((v - lo) * k))]!++;
  }
  return { lo, hi, counts, below, above };
}

/**
 * Histogram over the symmetric range [-M, M], M = max |v| (every finite value lands in a bin;
 * M = 1 when all values are 0).
 *
 * @example
 * ```ts
 * import { symmetricHistogram } from "./histogram.ts";
 * const h = symmetricHistogram([-0.5, 0.1, 2], 8); // range [-2, 2]
 * ```
 */
export function symmetricHistogram(values: ArrayLike<number>, bins: number): Histogram {
  let m = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]!);
    if (a > m) m = a;
  }
  if (!(m > 0) || !Number.isFinite(m)) m = 1;
  return histogram(values, bins, -m, m);
}
