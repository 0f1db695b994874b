/**
 * The clipping solver of the Magnitude-aware Clipping Strategy (MCS, see PAPER.md): the
 * magnitude-weighted clipping error of a symmetric gradient distribution, its derivative, and its
 * minimizer, for three families (Gaussian, Laplace, piecewise-uniform "inverted-T").
 *
 * Conventions, all explicit:
 *
 * ```text
 * E(s) = (s/L) * I0(s) + 2 * integral_s^M (g - s) f(g) p(g) dg
 * I0(s) = integral_0^s f(g) p(g) dg,   f(g) = exp(alpha * |g| / sigma)
 * dE/ds = (1/L) * I0(s) + (s/L) f(s) p(s) - 2 * integral_s^M f(g) p(g) dg
 * ```
 *
 * - This is PAPER.md's formula taken literally: the first term (rounding error on (0, s), half a
 *   step (s/L)/2 times the mass of both halves) has no factor 2, the second (clipping error of both
 *   tails) has a factor 2. It reproduces every number in PAPER.md (Gaussian alpha 0: 2.87 sigma;
 *   alpha 4: 3.98 for M = 4, 5.91 for M = 6; Laplace M = 8: 3.90 for alpha 0, 7.96 for alpha 2).
 * - `p` is the full two-sided density evaluated on the positive half (a unit Gaussian has
 *   p(0) = 1/sqrt(2 pi)). It is truncated at M = `max` but not renormalized: dividing by
 *   P(|g| <= M) multiplies E by a constant, which changes neither the argmin nor the sign of dE/ds.
 * - `L` = `levels`, the number of positive quantization levels (127 for INT8).
 * - `alpha` is dimensionless, in units of 1/sigma, with sigma the family's (untruncated) standard
 *   deviation ({@linkcode familySigma}): alpha = 2 weighs a gradient of 2 sigma by e^4. For unit
 *   sigma this is literally f(g) = exp(alpha |g|). All other quantities (`s`, `max`, `a`) are in
 *   the units of g.
 * - All integrals are closed forms: erf-type (via W. J. Cody's rational Chebyshev approximations of
 *   the scaled complementary error function, relative error below 1e-15) for the Gaussian, and
 *   exponentials times polynomials for the Laplace and inverted-T families. Internally everything
 *   is scaled by exp(-K), K the largest exponent of f p on [0, M], so that the minimizer stays
 *   exact even where E itself overflows a double.
 *
 * @module
 */

import { erfcx } from "../math/erf.ts";

// ---------------------------------------------------------------------------------------------
// Families

/** A zero-mean Gaussian with standard deviation `sigma`. */
export interface GaussianFamily {
  /** Discriminator. */
  readonly kind: "gaussian";
  /** Standard deviation, > 0. */
  readonly sigma: number;
}

/** A zero-mean Laplace distribution, density exp(-|g|/b) / (2b); its std is b*sqrt(2). */
export interface LaplaceFamily {
  /** Discriminator. */
  readonly kind: "laplace";
  /** Scale, > 0. */
  readonly b: number;
}

/**
 * A symmetric piecewise-uniform "inverted-T" density (sharp peak, long flat tails):
 * p(g) = h1 on |g| <= a, h2 on a < |g| <= max, 0 beyond, with h1 = w/(2a) > h2 = (1-w)/(2(max-a)).
 */
export interface InvertedTFamily {
  /** Discriminator. */
  readonly kind: "inverted-t";
  /** Half-width of the peak, 0 < a < max. */
  readonly a: number;
  /** Largest |g| with nonzero density. */
  readonly max: number;
  /** Probability mass inside |g| <= a, with a/max < w < 1 (which is h1 > h2). */
  readonly w: number;
}

/** One of the distribution families the solver handles, told apart by `kind`. */
export type Family = GaussianFamily | LaplaceFamily | InvertedTFamily;

/** The shape a gradient channel is classified as by {@linkcode classifyChannel}. */
export type ChannelShape = "bell" | "inverted-t";

function fmt(x: unknown): string {
  return typeof x === "number" ? String(x) : JSON.stringify(x) ?? String(x);
}

function isFiniteNumber(x: unknown): x is number {
  return typeof x === "number" && Number.isFinite(x);
}

function requirePositive(prefix: string, name: string, x: number): void {
  if (!isFiniteNumber(x) || x <= 0) {
    throw new RangeError(`${prefix}: ${name} must be a finite number > 0, got ${fmt(x)}`);
  }
}

function checkInvertedT(prefix: string, a: number, max: number, w: number): void {
  requirePositive(prefix, "max", max);
  requirePositive(prefix, "a", a);
  if (a >= max) throw new RangeError(`${prefix}: a must be < max (${max}), got ${a}`);
  if (!isFiniteNumber(w) || w <= 0 || w >= 1) {
    throw new RangeError(`${prefix}: w must be a number in (0, 1), got ${fmt(w)}`);
  }
  if (w <= a / max) {
    throw new RangeError(
      `${prefix}: w must exceed a/max (${a / max}) so that the peak density h1 exceeds the tail ` +
        `density h2, got ${w}`,
    );
  }
}

/**
 * A Gaussian family with standard deviation `sigma`.
 *
 * @example
 * ```ts
 * import { gaussian } from "./solve.ts";
 * const g = gaussian(2);
 * if (g.kind !== "gaussian" || g.sigma !== 2) throw new Error("unexpected");
 * ```
 * @throws {RangeError} If `sigma` is not a finite number > 0.
 */
export function gaussian(sigma: number): GaussianFamily {
  requirePositive("Cannot build a Gaussian family", "sigma", sigma);
  return { kind: "gaussian", sigma };
}

/**
 * A Laplace family with scale `b` (density exp(-|g|/b) / (2b), std b*sqrt(2)).
 *
 * @example
 * ```ts
 * import { laplace } from "./solve.ts";
 * if (laplace(0.5).b !== 0.5) throw new Error("unexpected");
 * ```
 * @throws {RangeError} If `b` is not a finite number > 0.
 */
export function laplace(b: number): LaplaceFamily {
  requirePositive("Cannot build a Laplace family", "b", b);
  return { kind: "laplace", b };
}

/**
 * A Laplace family with standard deviation `sigma`, that is scale b = sigma / sqrt(2).
 *
 * @example
 * ```ts
 * import { laplaceFromSigma } from "./solve.ts";
 * if (Math.abs(laplaceFromSigma(1).b - Math.SQRT1_2) > 1e-15) throw new Error("unexpected");
 * ```
 * @throws {RangeError} If `sigma` is not a finite number > 0.
 */
export function laplaceFromSigma(sigma: number): LaplaceFamily {
  requirePositive("Cannot build a Laplace family", "sigma", sigma);
  return { kind: "laplace", b: sigma * Math.SQRT1_2 };
}

/**
 * An inverted-T family: mass `w` spread uniformly on |g| <= `a`, the rest uniformly on
 * `a` < |g| <= `max`.
 *
 * @example
 * ```ts
 * import { invertedT } from "./solve.ts";
 * const t = invertedT(1, 8, 0.9);
 * if (t.kind !== "inverted-t") throw new Error("unexpected");
 * ```
 * @throws {RangeError} If not 0 < a < max, not 0 < w < 1, or w <= a/max (h1 <= h2).
 */
export function invertedT(a: number, max: number, w: number): InvertedTFamily {
  checkInvertedT("Cannot build an inverted-T family", a, max, w);
  return { kind: "inverted-t", a, max, w };
}

/**
 * Fits an inverted-T family to a channel's measured standard deviation `sigma` and maximum |g|
 * `max`. (choice) The tail mass t = 1 - w = P(|g| > a) is given (`tailShare`) or defaults to
 * 1.5 sigma^2 / max^2, half the largest feasible value; then a is the unique positive root that
 * makes the variance equal sigma^2:
 *
 * ```text
 * sigma^2 = w a^2 / 3 + t (max^2 + max a + a^2) / 3   <=>   a^2 + t max a + t max^2 - 3 sigma^2 = 0
 * ```
 *
 * A root a > 0 needs t < 3 sigma^2 / max^2, and a proper inverted-T (h1 > h2) needs
 * sigma < max / sqrt(3) (the uniform density's std) and a < (1 - t) max.
 *
 * @example
 * ```ts
 * import { familySigma, fitInvertedT } from "./solve.ts";
 * const t = fitInvertedT(1, 8);
 * if (Math.abs(familySigma(t) - 1) > 1e-12) throw new Error("variance not matched");
 * ```
 * @param sigma Measured standard deviation, > 0.
 * @param max Measured max |g|, > sigma * sqrt(3).
 * @param tailShare Mass in the flat tails, in (0, 3 sigma^2 / max^2).
 * @throws {RangeError} If the inputs are out of range or admit no inverted-T with that variance.
 */
export function fitInvertedT(sigma: number, max: number, tailShare?: number): InvertedTFamily {
  const prefix = "Cannot fit an inverted-T family";
  requirePositive(prefix, "sigma", sigma);
  requirePositive(prefix, "max", max);
  if (sigma * Math.sqrt(3) >= max) {
    throw new RangeError(
      `${prefix}: sigma must be < max / sqrt(3) (${max / Math.sqrt(3)}), got ${sigma}`,
    );
  }
  const limit = (3 * sigma * sigma) / (max * max);
  const t = tailShare ?? limit / 2;
  if (!isFiniteNumber(t) || t <= 0 || t >= limit) {
    throw new RangeError(
      `${prefix}: tailShare must be a number in (0, 3 sigma^2 / max^2 = ${limit}), got ${fmt(t)}`,
    );
  }
  const c = 3 * sigma * sigma - t * max * max; // > 0
  const a = (2 * c) / (t * max + Math.sqrt(t * t * max * max + 4 * c));
  if (a >= (1 - t) * max) {
    throw new RangeError(
      `${prefix}: tailShare ${t} leaves no peak (a = ${a} must be < (1 - tailShare) * max)`,
    );
  }
  return invertedT(a, max, 1 - t);
}

/**
 * The standard deviation of a family (untruncated), the unit of `alpha`.
 *
 * @example
 * ```ts
 * import { familySigma, laplace } from "./solve.ts";
 * if (Math.abs(familySigma(laplace(1)) - Math.SQRT2) > 1e-15) throw new Error("unexpected");
 * ```
 * @throws {RangeError} If the family's parameters are out of range.
 */
export function familySigma(family: Family): number {
  checkFamily("Cannot compute sigma", family);
  switch (family.kind) {
    case "gaussian":
      return family.sigma;
    case "laplace":
      return family.b * Math.SQRT2;
    case "inverted-t": {
      const { a, max: m, w } = family;
      return Math.sqrt((w * a * a + (1 - w) * (m * m + m * a + a * a)) / 3);
    }
  }
}

/**
 * The two-sided density p(g) of a family at `g`.
 *
 * @example
 * ```ts
 * import { density, gaussian } from "./solve.ts";
 * if (Math.abs(density(gaussian(1), 0) - 1 / Math.sqrt(2 * Math.PI)) > 1e-15) {
 *   throw new Error("unexpected");
 * }
 * ```
 * @throws {RangeError} If the family's parameters are out of range.
 */
export function density(family: Family, g: number): number {
  checkFamily("Cannot compute the density", family);
  const x = Math.abs(g);
  switch (family.kind) {
    case "gaussian": {
      const u = x / family.sigma;
      return Math.exp(-0.5 * u * u) / (family.sigma * SQRT_2PI);
    }
    case "laplace":
      return Math.exp(-x / family.b) / (2 * family.b);
    case "inverted-t":
      return invertedTDensity(family, x);
  }
}

/**
 * P(|g| > sigma) of a family, sigma its standard deviation: the statistic
 * {@linkcode classifyChannel} thresholds (0.317 for a Gaussian, 0.243 for a Laplace).
 *
 * @example
 * ```ts
 * import { gaussian, shareAboveSigma } from "./solve.ts";
 * if (Math.abs(shareAboveSigma(gaussian(3)) - 0.3173) > 1e-4) throw new Error("unexpected");
 * ```
 * @throws {RangeError} If the family's parameters are out of range.
 */
export function shareAboveSigma(family: Family): number {
  checkFamily("Cannot compute the share above sigma", family);
  switch (family.kind) {
    case "gaussian":
      // 2 Q(1) = erfc(1/sqrt 2) = exp(-1/2) erfcx(1/sqrt 2).
      return Math.exp(-0.5) * erfcx(Math.SQRT1_2);
    case "laplace":
      return Math.exp(-Math.SQRT2);
    case "inverted-t": {
      const sigma = familySigma(family);
      const { a, max: m, w } = family;
      if (sigma >= m) return 0;
      if (sigma <= a) return w * (a - sigma) / a + (1 - w);
      return (1 - w) * (m - sigma) / (m - a);
    }
  }
}

/**
 * Classifies a gradient channel (PAPER.md): "bell" if P(|g| > sigma_c) > `lambda`, else
 * "inverted-t". For reference the share is 0.317 for a Gaussian and 0.243 for a Laplace.
 *
 * @example
 * ```ts
 * import { classifyChannel } from "./solve.ts";
 * if (classifyChannel(0.317) !== "bell") throw new Error("unexpected");
 * if (classifyChannel(0.243) !== "inverted-t") throw new Error("unexpected");
 * ```
 * @param shareAboveSigma The channel's fraction of |g| > sigma_c, in [0, 1].
 * @param lambda The threshold, in [0, 1]; 0.3 by default.
 * @throws {RangeError} If either argument is outside [0, 1].
 */
export function classifyChannel(shareAboveSigma: number, lambda = 0.3): ChannelShape {
  const prefix = "Cannot classify a channel";
  if (!isFiniteNumber(shareAboveSigma) || shareAboveSigma < 0 || shareAboveSigma > 1) {
    throw new RangeError(
      `${prefix}: shareAboveSigma must be a number in [0, 1], got ${fmt(shareAboveSigma)}`,
    );
  }
  if (!isFiniteNumber(lambda) || lambda < 0 || lambda > 1) {
    throw new RangeError(`${prefix}: lambda must be a number in [0, 1], got ${fmt(lambda)}`);
  }
  return shareAboveSigma > lambda ? "bell" : "inverted-t";
}

function checkFamily(prefix: string, family: Family): void {
  switch (family?.kind) {
    case "gaussian":
      requirePositive(prefix, "sigma", family.sigma);
      return;
    case "laplace":
      requirePositive(prefix, "b", family.b);
      return;
    case "inverted-t":
      checkInvertedT(prefix, family.a, family.max, family.w);
      return;
    default:
      throw new TypeError(
        `${prefix}: family kind must be "gaussian", "laplace" or "inverted-t", got ${
          fmt((family as { kind?: unknown } | undefined)?.kind)
        }`,
      );
  }
}

function invertedTDensity(family: InvertedTFamily, x: number): number {
  const { a, max: m, w } = family;
  if (x <= a) return w / (2 * a);
  if (x <= m) return (1 - w) / (2 * (m - a));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Special functions

const SQRT_2PI = Math.sqrt(2 * Math.PI);

/** expm1(z)/z, the integral of exp(z t) over t in [0, 1]. */
function phi0(z: number): number {
  return z === 0 ? 1 : Math.expm1(z) / z;
}

/** integral_0^1 t exp(z t) dt = (e^z (z - 1) + 1) / z^2, for z <= 0. */
function phi1(z: number): number {
  if (Math.abs(z) < 0.5) {
    let term = 1;
    let sum = 0.5;
    for (let k = 1; k < 30; k++) {
      term *= z / k;
      sum += term / (k + 2);
    }
    return sum;
  }
  return (Math.exp(z) * (z - 1) + 1) / (z * z);
}

/** integral_0^1 t exp(-z (1 - t)) dt = (z - 1 + e^-z) / z^2, for z > 0. */
function psi1(z: number): number {
  if (z < 0.5) {
    let term = 1;
    let sum = 0.5;
    for (let k = 1; k < 30; k++) {
      term *= -z / k;
      sum += term / ((k + 1) * (k + 2));
    }
    return sum;
  }
  return (z + Math.expm1(-z)) / (z * z);
}

/** m0 = int_x^y exp(lam g - k) dg and m1 = int_x^y (g - x) exp(lam g - k) dg, without overflow. */
function expMoments(lam: number, x: number, y: number, k: number): { m0: number; m1: number } {
  const d = y - x;
  if (!(d > 0)) return { m0: 0, m1: 0 };
  const z = lam * d;
  if (z <= 0) {
    const base = Math.exp(lam * x - k);
    return { m0: base * d * phi0(z), m1: base * d * d * phi1(z) };
  }
  const base = Math.exp(lam * y - k);
  return { m0: base * d * phi0(-z), m1: base * d * d * psi1(z) };
}

// ---------------------------------------------------------------------------------------------
// The integrals of E(s), scaled by exp(-k)

/**
 * The pieces of E(s) and dE/ds, each multiplied by exp(-k): head = int_0^s f p,
 * tail0 = int_s^M f p, tail1 = int_s^M (g - s) f p, fp = f(s) p(s). k depends on M, not on s.
 */
interface Parts {
  k: number;
  head: number;
  tail0: number;
  tail1: number;
  fp: number;
}

function gaussianParts(sigma: number, alpha: number, s: number, m: number): Parts {
  // In standard units u = g / sigma: f p dg = exp(alpha u) phi(u) du = e^{alpha^2/2} phi(u - alpha) du.
  const xs = s / sigma;
  const xm = m / sigma;
  const peak = Math.min(alpha, xm);
  const k = alpha * peak - 0.5 * peak * peak; // max of alpha u - u^2/2 on [0, xm]
  // e^{alpha u - k} phi(u)
  const pe = (u: number) => Math.exp(-0.5 * u * u + alpha * u - k) / SQRT_2PI;
  // e^{alpha^2/2 - k} times the normal tail mass beyond |u - alpha|, via the Mills ratio.
  const tail = (u: number) =>
    0.5 * Math.exp(-0.5 * u * u + alpha * u - k) * erfcx(Math.abs(u - alpha) * Math.SQRT1_2);
  const d0 = (lo: number, hi: number): number => {
    if (!(hi > lo)) return 0;
    if (hi <= alpha) return tail(hi) - tail(lo);
    if (lo >= alpha) return tail(lo) - tail(hi);
    return Math.exp(0.5 * alpha * alpha - k) - tail(lo) - tail(hi);
  };
  const head = d0(0, xs);
  const tail0 = d0(xs, xm);
  // int (u - xs) e^{alpha u} phi(u) du = [-e^{alpha u} phi(u)] + (alpha - xs) * d0.
  const tail1 = xs < xm ? sigma * (pe(xs) - pe(xm) + (alpha - xs) * tail0) : 0;
  return { k, head, tail0, tail1: Math.max(tail1, 0), fp: pe(xs) / sigma };
}

function laplaceParts(b: number, alpha: number, s: number, m: number): Parts {
  const beta = alpha / (b * Math.SQRT2);
  const lam = beta - 1 / b;
  const k = Math.max(0, lam * m);
  const c = 1 / (2 * b);
  const head = expMoments(lam, 0, s, k).m0 * c;
  const t = expMoments(lam, s, m, k);
  return { k, head, tail0: t.m0 * c, tail1: t.m1 * c, fp: Math.exp(lam * s - k) * c };
}

function invertedTParts(family: InvertedTFamily, alpha: number, s: number, m: number): Parts {
  const { a, max: top, w } = family;
  const beta = alpha / familySigma(family);
  const k = beta * Math.min(m, top);
  const pieces = [
    { lo: 0, hi: a, h: w / (2 * a) },
    { lo: a, hi: top, h: (1 - w) / (2 * (top - a)) },
  ];
  // int_x^y p(g) e^{beta g - k} dg and int_x^y (g - x) p(g) e^{beta g - k} dg.
  const integrate = (x: number, y: number) => {
    let m0 = 0;
    let m1 = 0;
    for (const p of pieces) {
      const lo = Math.max(x, p.lo);
      const hi = Math.min(y, p.hi);
      if (!(hi > lo)) continue;
      const mm = expMoments(beta, lo, hi, k);
      m0 += p.h * mm.m0;
      m1 += p.h * (mm.m1 + (lo - x) * mm.m0);
    }
    return { m0, m1 };
  };
  const t = integrate(s, m);
  return {
    k,
    head: integrate(0, s).m0,
    tail0: t.m0,
    tail1: t.m1,
    fp: invertedTDensity(family, s) * Math.exp(beta * s - k),
  };
}

function parts(family: Family, alpha: number, s: number, m: number): Parts {
  switch (family.kind) {
    case "gaussian":
      return gaussianParts(family.sigma, alpha, s, m);
    case "laplace":
      return laplaceParts(family.b, alpha, s, m);
    case "inverted-t":
      return invertedTParts(family, alpha, s, m);
  }
}

function scaledError(p: Parts, s: number, levels: number): number {
  return (s / levels) * p.head + 2 * p.tail1;
}

function scaledSlope(p: Parts, s: number, levels: number): number {
  return p.head / levels + (s / levels) * p.fp - 2 * p.tail0;
}

// ---------------------------------------------------------------------------------------------
// Public solver

/** Options of {@linkcode clippingError}, {@linkcode dClippingError} and {@linkcode optimalClip}. */
export interface ClipOptions {
  /** Magnitude weight, finite and >= 0, in units of 1/sigma: f(g) = exp(alpha |g| / sigma). */
  readonly alpha: number;
  /** Number of positive quantization levels L, an integer >= 1; 127 (INT8) by default. */
  readonly levels?: number;
  /** M, the largest |g| (truncation point of p), finite and > 0. */
  readonly max: number;
}

/** The result of {@linkcode optimalClip}. */
export interface OptimalClip {
  /** The minimizing clipping value, in (0, max]. */
  readonly s: number;
  /** E(s) at the minimizer (Infinity if it exceeds the double range; `s` stays exact). */
  readonly error: number;
  /** Whether the minimum is at the boundary s = max (no clipping). */
  readonly atMax: boolean;
}

const SOLVE = "Cannot solve clipping";

function checkOptions(family: Family, opts: ClipOptions): { alpha: number; L: number; m: number } {
  checkFamily(SOLVE, family);
  const { alpha, max, levels = 127 } = opts;
  if (!isFiniteNumber(alpha) || alpha < 0) {
    throw new RangeError(`${SOLVE}: alpha must be a finite number >= 0, got ${fmt(alpha)}`);
  }
  requirePositive(SOLVE, "max", max);
  if (!Number.isInteger(levels) || levels < 1) {
    throw new RangeError(`${SOLVE}: levels must be an integer >= 1, got ${fmt(levels)}`);
  }
  return { alpha, L: levels, m: max };
}

function checkClip(s: number, m: number): void {
  if (!isFiniteNumber(s) || s <= 0 || s > m) {
    throw new RangeError(`${SOLVE}: s must be a number in (0, max = ${m}], got ${fmt(s)}`);
  }
}

/**
 * The magnitude-weighted clipping error
 * E(s) = (s/L) int_0^s f p dg + 2 int_s^M (g - s) f p dg, f(g) = exp(alpha |g| / sigma).
 * May overflow to Infinity for large alpha * max / sigma; {@linkcode optimalClip} does not.
 *
 * @example
 * ```ts
 * import { clippingError, gaussian } from "./solve.ts";
 * const e3 = clippingError(gaussian(1), 3, { alpha: 0, max: 8 });
 * const e1 = clippingError(gaussian(1), 1, { alpha: 0, max: 8 });
 * if (!(e3 < e1)) throw new Error("clipping at 1 sigma should cost more");
 * ```
 * @param family The gradient distribution.
 * @param s The clipping value, in (0, max].
 * @param opts alpha, levels (127) and max.
 * @throws {RangeError} If any parameter is out of range.
 */
export function clippingError(family: Family, s: number, opts: ClipOptions): number {
  const { alpha, L, m } = checkOptions(family, opts);
  checkClip(s, m);
  const p = parts(family, alpha, s, m);
  return scaledError(p, s, L) * Math.exp(p.k);
}

/**
 * dE/ds = (1/L) int_0^s f p dg + (s/L) f(s) p(s) - 2 int_s^M f p dg, analytically. At a jump of
 * p (the inverted-T's peak edge a) this is the left derivative.
 *
 * @example
 * ```ts
 * import { dClippingError, gaussian } from "./solve.ts";
 * const opts = { alpha: 0, max: 8 };
 * if (!(dClippingError(gaussian(1), 2, opts) < 0)) throw new Error("E falls before 2.87");
 * if (!(dClippingError(gaussian(1), 4, opts) > 0)) throw new Error("E rises after 2.87");
 * ```
 * @param family The gradient distribution.
 * @param s The clipping value, in (0, max].
 * @param opts alpha, levels (127) and max.
 * @throws {RangeError} If any parameter is out of range.
 */
export function dClippingError(family: Family, s: number, opts: ClipOptions): number {
  const { alpha, L, m } = checkOptions(family, opts);
  checkClip(s, m);
  const p = parts(family, alpha, s, m);
  return scaledSlope(p, s, L) * Math.exp(p.k);
}

const GRID = 400;

/**
 * The clipping value s in (0, max] minimizing E(s). E need not be convex, so it scans a grid of
 * 400 points s = max * i / 400, then refines around the best one by bisection on the sign of dE/ds
 * (to a few ulps) or, where dE/ds does not change sign there, golden-section search on E. If the
 * best grid point is max and dE/ds(max) <= 0, the answer is max with `atMax` true.
 *
 * @example
 * ```ts
 * import { gaussian, optimalClip } from "./solve.ts";
 * const { s, atMax } = optimalClip(gaussian(1), { alpha: 0, max: 8 });
 * if (Math.abs(s - 2.87) > 0.01 || atMax) throw new Error(`unexpected ${s}`);
 * ```
 * @param family The gradient distribution.
 * @param opts alpha, levels (127) and max.
 * @throws {RangeError} If any parameter is out of range.
 */
export function optimalClip(family: Family, opts: ClipOptions): OptimalClip {
  const { alpha, L, m } = checkOptions(family, opts);
  const errorAt = (s: number) => scaledError(parts(family, alpha, s, m), s, L);
  const slopeAt = (s: number) => scaledSlope(parts(family, alpha, s, m), s, L);
  const point = (i: number) => (i === GRID ? m : (m * i) / GRID);

  let best = GRID;
  let bestError = errorAt(m);
  for (let i = GRID - 1; i >= 1; i--) {
    const e = errorAt(point(i));
    if (e < bestError) {
      bestError = e;
      best = i;
    }
  }
  const k = parts(family, alpha, m, m).k;
  const result = (s: number, e: number): OptimalClip => ({
    s,
    error: e * Math.exp(k),
    atMax: s === m,
  });
  if (best === GRID && slopeAt(m) <= 0) return result(m, bestError);

  // The minimum lies in [lo, hi] around the best grid point (dE/ds < 0 near s = 0).
  let lo = point(best - 1);
  let hi = best === GRID ? m : point(best + 1);
  let s: number;
  if (slopeAt(Math.max(lo, Number.MIN_VALUE)) < 0 && slopeAt(hi) > 0) {
    for (let iter = 0; iter < 200 && hi - lo > 4 * Number.EPSILON * hi; iter++) {
      const mid = 0.5 * (lo + hi);
      if (slopeAt(mid) < 0) lo = mid;
      else hi = mid;
    }
    s = 0.5 * (lo + hi);
  } else {
    const r = 0.5 * (Math.sqrt(5) - 1);
    let x1 = hi - r * (hi - lo);
    let x2 = lo + r * (hi - lo);
    let e1 = errorAt(x1);
    let e2 = errorAt(x2);
    for (let iter = 0; iter < 200 && hi - lo > 1e-12 * hi; iter++) {
      if (e1 <= e2) {
        hi = x2;
        x2 = x1;
        e2 = e1;
        x1 = hi - r * (hi - lo);
        e1 = errorAt(x1);
      } else {
        lo = x1;
        x1 = x2;
        e1 = e2;
        x2 = lo + r * (hi - lo);
        e2 = errorAt(x2);
      }
    }
    s = e1 <= e2 ? x1 : x2;
  }
  s = Math.min(Math.max(s, Number.MIN_VALUE), m);
  const e = errorAt(s);
  return e <= bestError ? result(s, e) : result(point(best), bestError);
}
