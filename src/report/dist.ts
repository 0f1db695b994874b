/**
 * The two reference families of the gradient analysis (`deno task analyze`), in float64:
 * Gaussian and Laplace densities and CDFs, on the error function of src/math/erf.ts (precise in
 * the tail: the Gaussian CDF of -10 sigma is exact to the last digits, not 0).
 *
 * @module
 */

import { erf, erfc } from "../math/erf.ts";

export { erf, erfc };

const SQRT_2PI = Math.sqrt(2 * Math.PI);

/** Parameters of a Gaussian: mean and standard deviation (> 0). */
export interface GaussianFit {
  mean: number;
  sigma: number;
}

/** Parameters of a Laplace distribution: location and scale b (> 0); its std is b*sqrt(2). */
export interface LaplaceFit {
  median: number;
  b: number;
}

/** Gaussian CDF, via erfc so that both tails keep their relative precision. */
export function gaussianCdf(f: GaussianFit, x: number): number {
  return 0.5 * erfc(-(x - f.mean) / (f.sigma * Math.SQRT2));
}

/** Gaussian density. */
export function gaussianPdf(f: GaussianFit, x: number): number {
  const u = (x - f.mean) / f.sigma;
  return Math.exp(-0.5 * u * u) / (SQRT_2PI * f.sigma);
}

/** Laplace CDF. */
export function laplaceCdf(f: LaplaceFit, x: number): number {
  const u = (x - f.median) / f.b;
  return u < 0 ? 0.5 * Math.exp(u) : 1 - 0.5 * Math.exp(-u);
}

/** Laplace density exp(-|x - median| / b) / (2b). */
export function laplacePdf(f: LaplaceFit, x: number): number {
  return Math.exp(-Math.abs(x - f.median) / f.b) / (2 * f.b);
}
