/**
 * Double-precision naive references of every op (direct loops, no GEMM), used by the op tests
 * for forward values and, through central finite differences, for gradients.
 *
 * @module
 */
import type { ConvShape } from "../../src/backend/backend.ts";

/** y[n,p,q,k] of a grouped NHWC/OHWI convolution, straight from the definition. */
export function convRef(x: Float64Array, w: Float64Array, b: Float64Array | null, s: ConvShape) {
  const y = new Float64Array(s.n * s.p * s.q * s.k);
  const cg = s.c / s.groups, kg = s.k / s.groups;
  for (let n = 0; n < s.n; n++) {
    for (let p = 0; p < s.p; p++) {
      for (let q = 0; q < s.q; q++) {
        for (let k = 0; k < s.k; k++) {
          const g = Math.floor(k / kg);
          let acc = b ? b[k]! : 0;
          for (let r = 0; r < s.r; r++) {
            const h = p * s.strideH - s.padH + r;
            if (h < 0 || h >= s.h) continue;
            for (let t = 0; t < s.s; t++) {
              const ww = q * s.strideW - s.padW + t;
              if (ww < 0 || ww >= s.w) continue;
              for (let c = 0; c < cg; c++) {
                acc += x[((n * s.h + h) * s.w + ww) * s.c + g * cg + c]! *
                  w[((k * s.r + r) * s.s + t) * cg + c]!;
              }
            }
          }
          y[((n * s.p + p) * s.q + q) * s.k + k] = acc;
        }
      }
    }
  }
  return y;
}

/** dx of a conv from dy and w, float64, by scattering (reference). */
export function convDgradRef(dy: Float64Array, w: Float64Array, s: ConvShape): Float64Array {
  const dx = new Float64Array(s.n * s.h * s.w * s.c);
  const cg = s.c / s.groups, kg = s.k / s.groups;
  for (let n = 0; n < s.n; n++) {
    for (let p = 0; p < s.p; p++) {
      for (let q = 0; q < s.q; q++) {
        for (let k = 0; k < s.k; k++) {
          const g = dy[((n * s.p + p) * s.q + q) * s.k + k]!, grp = Math.floor(k / kg);
          for (let r = 0; r < s.r; r++) {
            const h = p * s.strideH - s.padH + r;
            if (h < 0 || h >= s.h) continue;
            for (let t = 0; t < s.s; t++) {
              const ww = q * s.strideW - s.padW + t;
              if (ww < 0 || ww >= s.w) continue;
              for (let c = 0; c < cg; c++) {
                dx[((n * s.h + h) * s.w + ww) * s.c + grp * cg + c]! += g *
                  w[((k * s.r + r) * s.s + t) * cg + c]!;
              }
            }
          }
        }
      }
    }
  }
  return dx;
}

/** dw of a conv from x and dy, float64 (reference). */
export function convWgradRef(x: Float64Array, dy: Float64Array, s: ConvShape): Float64Array {
  const cg = s.c / s.groups, kg = s.k / s.groups;
  const dw = new Float64Array(s.k * s.r * s.s * cg);
  for (let n = 0; n < s.n; n++) {
    for (let p = 0; p < s.p; p++) {
      for (let q = 0; q < s.q; q++) {
        for (let k = 0; k < s.k; k++) {
          const g = dy[((n * s.p + p) * s.q + q) * s.k + k]!, grp = Math.floor(k / kg);
          for (let r = 0; r < s.r; r++) {
            const h = p * s.strideH - s.padH + r;
            if (h < 0 || h >= s.h) continue;
            for (let t = 0; t < s.s; t++) {
              const ww = q * s.strideW - s.padW + t;
              if (ww < 0 || ww >= s.w) continue;
              for (let c = 0; c < cg; c++) {
                dw[((k * s.r + r) * s.s + t) * cg + c]! += g *
                  x[((n * s.h + h) * s.w + ww) * s.c + grp * cg + c]!;
              }
            }
          }
        }
      }
    }
  }
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
