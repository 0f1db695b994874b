/**
 * The Kolmogorov-Smirnov distance between a sample's empirical CDF and a continuous CDF,
 * computed exactly from the sorted sample.
 *
 * @module
 */

/**
 * sup_x |F_n(x) - F(x)| for a sample sorted ascending and a continuous CDF `cdf`:
 * the supremum is reached at a sample point, from one side or the other, so it is
 * max_i max(i/n - F(x_i), F(x_i) - (i-1)/n) (i from 1). Ties are handled exactly: at a value
 * repeated from position i to j the two one-sided gaps are j/n - F and F - (i-1)/n, which are
 * among the terms. Returns NaN for an empty sample.
 *
 * @example
 * ```ts
 * import { ksDistanceSorted } from "./ks.ts";
 * const d = ksDistanceSorted([0.1, 0.4, 0.7], (x) => Math.min(Math.max(x, 0), 1));
 * if (Math.abs(d - 0.3) > 1e-12) throw new Error(`got ${d}`);
 * ```
 * @throws {RangeError} If the sample is not sorted ascending.
 */
export function ksDistanceSorted(
  sorted: ArrayLike<number>,
  cdf: (x: number) => number,
): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  let d = 0;
  let prev = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = sorted[i]!;
    if (!(x >= prev)) {
      throw new RangeError(
        `Cannot compute a KS distance: the sample is not sorted ascending at index ${i} ` +
          `(${prev} then ${x})`,
      );
    }
    prev = x;
    const f = cdf(x);
    const above = (i + 1) / n - f;
    const below = f - i / n;
    if (above > d) d = above;
    if (below > d) d = below;
  }
  return d;
}

/**
 * The KS distance of an unsorted sample to `cdf` (sorts a float64 copy).
 *
 * @example
 * ```ts
 * import { ksDistance } from "./ks.ts";
 * const d = ksDistance([0.7, 0.1, 0.4], (x) => Math.min(Math.max(x, 0), 1)); // 0.3
 * ```
 */
export function ksDistance(sample: ArrayLike<number>, cdf: (x: number) => number): number {
  return ksDistanceSorted(Float64Array.from(sample).sort(), cdf);
}
