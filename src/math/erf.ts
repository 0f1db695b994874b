/**
 * The error function family in float64, after W. J. Cody, "Rational Chebyshev approximations for
 * the error function", Math. Comp. 23 (1969), 631-637 (the coefficients of his CALERF, netlib
 * specfun): relative error below 1e-15 on the whole line; erfc and erfcx keep their relative
 * precision far in the tail. Shared by the clipping solver and the gradient report.
 *
 * @module
 */

const INV_SQRT_PI = 1 / Math.sqrt(Math.PI);

const A = [
  3.1611237438705656,
  113.864154151050156,
  377.485237685302021,
  3209.37758913846947,
  0.185777706184603153,
] as const;
const B = [
  23.6012909523441209,
  244.024637934444173,
  1282.61652607737228,
  2844.23683343917062,
] as const;
const C = [
  0.564188496988670089,
  8.88314979438837594,
  66.1191906371416295,
  298.635138197400131,
  881.95222124176909,
  1712.04761263407058,
  2051.07837782607147,
  1230.33935479799725,
  2.15311535474403846e-8,
] as const;
const D = [
  15.7449261107098347,
  117.693950891312499,
  537.181101862009858,
  1621.38957456669019,
  3290.79923573345963,
  4362.61909014324716,
  3439.36767414372164,
  1230.33935480374942,
] as const;
const P = [
  0.305326634961232344,
  0.360344899949804439,
  0.125781726111229246,
  0.0160837851487422766,
  6.58749161529837803e-4,
  0.0163153871373020978,
] as const;
const Q = [
  2.56852019228982242,
  1.87295284992346047,
  0.527905102951428412,
  0.0605183413124413191,
  0.00233520497626869185,
] as const;

/** erf(x) for |x| <= 0.46875. */
function erfSmall(x: number): number {
  const z = x * x;
  let num = A[4] * z;
  let den = z;
  for (let i = 0; i < 3; i++) {
    num = (num + A[i]!) * z;
    den = (den + B[i]!) * z;
  }
  return (x * (num + A[3])) / (den + B[3]);
}

/** exp(x^2) erfc(x) for x > 0.46875 (the rational parts of CALERF). */
function erfcxRational(x: number): number {
  if (x <= 4) {
    let num = C[8] * x;
    let den = x;
    for (let i = 0; i < 7; i++) {
      num = (num + C[i]!) * x;
      den = (den + D[i]!) * x;
    }
    return (num + C[7]) / (den + D[7]);
  }
  if (x >= 6.71e7) return INV_SQRT_PI / x;
  const z = 1 / (x * x);
  let num = P[5] * z;
  let den = z;
  for (let i = 0; i < 4; i++) {
    num = (num + P[i]!) * z;
    den = (den + Q[i]!) * z;
  }
  const r = (z * (num + P[4])) / (den + Q[4]);
  return (INV_SQRT_PI - r) / x;
}

/** exp(-x^2) without the rounding error of squaring x (Cody's split of x into 1/16ths). */
function expNegSquare(x: number): number {
  const y = Math.trunc(x * 16) / 16;
  const del = (x - y) * (x + y);
  return Math.exp(-y * y) * Math.exp(-del);
}

/** erfc(x) for x > 0.46875. */
function erfcPositive(x: number): number {
  if (x >= 27) return 0; // below the smallest double
  return expNegSquare(x) * erfcxRational(x);
}

/**
 * The error function.
 *
 * @example
 * ```ts
 * import { erf } from "./erf.ts";
 * if (Math.abs(erf(1) - 0.8427007929497149) > 1e-15) throw new Error("erf(1)");
 * ```
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax <= 0.46875) return erfSmall(x);
  const r = 1 - erfcPositive(ax);
  return x < 0 ? -r : r;
}

/**
 * The complementary error function 1 - erf(x), precise in the right tail.
 *
 * @example
 * ```ts
 * import { erfc } from "./erf.ts";
 * if (Math.abs(erfc(5) / 1.5374597944280349e-12 - 1) > 1e-13) throw new Error("erfc(5)");
 * ```
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax <= 0.46875) return 1 - erfSmall(x);
  const r = erfcPositive(ax);
  return x < 0 ? 2 - r : r;
}

/**
 * The scaled complementary error function exp(x^2) erfc(x), for x >= 0 (no overflow or
 * underflow for large x).
 *
 * @example
 * ```ts
 * import { erfcx } from "./erf.ts";
 * if (Math.abs(erfcx(10) / 0.0561409927438226 - 1) > 1e-14) throw new Error("erfcx(10)");
 * ```
 */
export function erfcx(x: number): number {
  if (x <= 0.46875) return Math.exp(x * x) * (1 - erfSmall(x));
  return erfcxRational(x);
}
