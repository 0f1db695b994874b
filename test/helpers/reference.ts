/**
 * Double-precision naive references of every op (direct loops, no GEMM), used by the op tests
 * for forward values and, through central finite differences, for gradients.
 *
 * @module
 */
import type { ConvShape } from "../../src/backend/backend.ts";

/**
 * Visits every (output, input, weight) index triple of a grouped NHWC/OHWI convolution, straight
 * from the definition: y[yi] += x[xi] * w[wi]. The three conv references are this one loop.
 */
function forEachConvTap(s: ConvShape, f: (yi: number, xi: number, wi: number) => void): void {
  const cg = s.c / s.groups, kg = s.k / s.groups;
  for (let n = 0; n < s.n; n++) {
    for (let p = 0; p < s.p; p++) {
      for (let q = 0; q < s.q; q++) {
        for (let k = 0; k < s.k; k++) {
          const yi = ((n * s.p + p) * s.q + q) * s.k + k, g = Math.floor(k / kg);
          for (let r = 0; r < s.r; r++) {
            const h = p * s.strideH - s.padH + r;
            if (h < 0 || h >= s.h) continue;
            for (let t = 0; t < s.s; t++) {
              const w = q * s.strideW - s.padW + t;
              if (w < 0 || w >= s.w) continue;
              for (let c = 0; c < cg; c++) {
                f(
                  yi,
                  ((n * s.h + h) * s.w + w) * s.c + g * cg + c,
                  ((k * s.r + r) * s.s + t) * cg + c,
                );
              }
            }
          }
        }
      }
    }
  }
}

/** y[n,p,q,k] of a grouped NHWC/OHWI convolution (+ bias[k]). */
export function convRef(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array | null,
  s: ConvShape,
): Float64Array {
  const y = new Float64Array(s.n * s.p * s.q * s.k);
  if (b) { for (let i = 0; i < y.length; i++) y[i] = b[i % s.k]!; }
  forEachConvTap(s, (yi, xi, wi) => y[yi]! += x[xi]! * w[wi]!);
  return y;
}

/** dx [n,h,w,c] of a conv from dy and w. */
export function convDgradRef(dy: Float64Array, w: Float64Array, s: ConvShape): Float64Array {
  const dx = new Float64Array(s.n * s.h * s.w * s.c);
  forEachConvTap(s, (yi, xi, wi) => dx[xi]! += dy[yi]! * w[wi]!);
  return dx;
}

/** dw [k,r,s,c/g] of a conv from x and dy. */
export function convWgradRef(x: Float64Array, dy: Float64Array, s: ConvShape): Float64Array {
  const dw = new Float64Array(s.k * s.r * s.s * (s.c / s.groups));
  forEachConvTap(s, (yi, xi, wi) => dw[wi]! += dy[yi]! * x[xi]!);
  return dw;
}

/** y[m, n] = x[m, k] . w[n, k]^T + b[n]. */
export function linearRef(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array | null,
  m: number,
  n: number,
  k: number,
) {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = b ? b[j]! : 0;
      for (let l = 0; l < k; l++) acc += x[i * k + l]! * w[j * k + l]!;
      y[i * n + j] = acc;
    }
  }
  return y;
}

/** Training-mode batch norm over rows of [m, c] (biased batch variance). */
export function batchNormRef(
  x: Float64Array,
  g: Float64Array,
  b: Float64Array,
  m: number,
  c: number,
  eps = 1e-5,
) {
  const y = new Float64Array(m * c);
  for (let j = 0; j < c; j++) {
    let mean = 0;
    for (let i = 0; i < m; i++) mean += x[i * c + j]!;
    mean /= m;
    let v = 0;
    for (let i = 0; i < m; i++) v += (x[i * c + j]! - mean) ** 2;
    v /= m;
    const inv = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < m; i++) y[i * c + j] = g[j]! * (x[i * c + j]! - mean) * inv + b[j]!;
  }
  return y;
}

/** Max or average pooling (average counts padding) of NHWC x with geometry s (k == c). */
export function poolRef(x: Float64Array, s: ConvShape, kind: "max" | "avg") {
  const y = new Float64Array(s.n * s.p * s.q * s.c);
  for (let n = 0; n < s.n; n++) {
    for (let p = 0; p < s.p; p++) {
      for (let q = 0; q < s.q; q++) {
        for (let c = 0; c < s.c; c++) {
          let acc = kind === "max" ? -Infinity : 0;
          for (let r = 0; r < s.r; r++) {
            const h = p * s.strideH - s.padH + r;
            if (h < 0 || h >= s.h) continue;
            for (let t = 0; t < s.s; t++) {
              const w = q * s.strideW - s.padW + t;
              if (w < 0 || w >= s.w) continue;
              const v = x[((n * s.h + h) * s.w + w) * s.c + c]!;
              acc = kind === "max" ? Math.max(acc, v) : acc + v;
            }
          }
          y[((n * s.p + p) * s.q + q) * s.c + c] = kind === "max" ? acc : acc / (s.r * s.s);
        }
      }
    }
  }
  return y;
}

/** Mean softmax cross-entropy of logits [n, classes] against labels. */
export function crossEntropyRef(
  logits: Float64Array,
  labels: Int32Array,
  n: number,
  classes: number,
) {
  let loss = 0;
  for (let i = 0; i < n; i++) {
    let mx = -Infinity;
    for (let j = 0; j < classes; j++) mx = Math.max(mx, logits[i * classes + j]!);
    let z = 0;
    for (let j = 0; j < classes; j++) z += Math.exp(logits[i * classes + j]! - mx);
    loss += Math.log(z) + mx - logits[i * classes + labels[i]!]!;
  }
  return loss / n;
}
