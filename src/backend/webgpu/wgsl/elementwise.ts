/**
 * Elementwise, pooling, batch-norm, loss and SGD kernels (f32 unless stated). Item counts are
 * in parameter word 0; other parameters follow in the order the backend writes them.
 *
 * @module
 */
import { GROUP_MAIN, type KernelSpec, LINEAR_MAIN, r, w, WG } from "./common.ts";

/** y = value (f1). */
export const FILL: KernelSpec = {
  elementwise: true,
  name: "fill",
  bindings: [w("Y")],
  body: `${LINEAR_MAIN} Y[i] = pf(1u); }`,
};
/** y = a + b. */
export const ADD: KernelSpec = {
  elementwise: true,
  name: "add",
  bindings: [w("Y"), r("A"), r("B")],
  body: `${LINEAR_MAIN} Y[i] = A[i] + B[i]; }`,
};
/** y += alpha x. */
export const AXPY: KernelSpec = {
  elementwise: true,
  name: "axpy",
  bindings: [w("Y"), r("X")],
  body: `${LINEAR_MAIN} Y[i] = Y[i] + pf(1u) * X[i]; }`,
};
/** y = u8 x * scale + shift. */
export const U8_TO_F32: KernelSpec = {
  name: "u8ToF32",
  bindings: [w("Y"), r("X", "u32")],
  body: `${LINEAR_MAIN} Y[i] = f32(u8at(X[i >> 2u], i)) * pf(1u) + pf(2u); }`,
};
/** y = max(x, 0). */
export const RELU: KernelSpec = {
  elementwise: true,
  name: "relu",
  bindings: [w("Y"), r("X")],
  body: `${LINEAR_MAIN} let x = X[i]; Y[i] = select(0.0, x, x > 0.0 || isnan(x)); }`,
};
/** dx = dy (y > 0). */
export const RELU_BWD: KernelSpec = {
  elementwise: true,
  name: "reluBackward",
  bindings: [w("DX"), r("DY"), r("Yv")],
  body: `${LINEAR_MAIN} DX[i] = select(0.0, DY[i], Yv[i] > 0.0); }`,
};
/**
 * One thread per mask word (32 elements): y = relu(x) and the bit mask of x > 0; with word 2 (f32)
 * cap > 0, y = min(max(x, 0), cap) and the bits of 0 < x < cap.
 */
export const RELU_MASK: KernelSpec = {
  name: "reluMask",
  bindings: [w("Y"), w("M", "u32"), r("X")],
  body: `${LINEAR_MAIN}
  let n = pu(1u);
  let cap = pf(2u); // > 0: the clamp to [0, cap] (ReLU6), bits 0 < x < cap
  var bits = 0u;
  for (var b = 0u; b < 32u; b++) {
    let e = i * 32u + b;
    if (e >= n) { break; }
    let x = X[e];
    let hi = cap > 0.0 && x >= cap;
    Y[e] = select(select(0.0, x, x > 0.0 || isnan(x)), cap, hi);
    if (x > 0.0 && !hi) { bits |= 1u << b; }
  }
  M[i] = bits;
}`,
};
/** dx = mask ? dy : 0. */
export const RELU_MASK_BWD: KernelSpec = {
  name: "reluMaskBackward",
  bindings: [w("DX"), r("DY"), r("M", "u32")],
  body: `${LINEAR_MAIN} DX[i] = select(0.0, DY[i], ((M[i >> 5u] >> (i & 31u)) & 1u) == 1u); }`,
};
/** y [rows, ca + cb] = [a, b]; words 1, 2 = ca, cb. */
export const CONCAT: KernelSpec = {
  name: "concatChannels",
  bindings: [w("Y"), r("A"), r("B")],
  body: `${LINEAR_MAIN}
  let ca = pu(1u); let cb = pu(2u); let c = ca + cb;
  let row = i / c; let j = i % c;
  if (j < ca) { Y[i] = A[row * ca + j]; } else { Y[i] = B[row * cb + j - ca]; }
}`,
};
/** The split of CONCAT. */
export const SPLIT: KernelSpec = {
  name: "splitChannels",
  bindings: [w("DA"), w("DB"), r("DY")],
  body: `${LINEAR_MAIN}
  let ca = pu(1u); let cb = pu(2u); let c = ca + cb;
  let row = i / c; let j = i % c;
  if (j < ca) { DA[row * ca + j] = DY[i]; } else { DB[row * cb + j - ca] = DY[i]; }
}`,
};

/** Workgroup sum of one f32 per thread into sh[0] (all threads must call it). */
const REDUCE = `
var<workgroup> sh: array<f32, ${WG}>;
var<workgroup> sh2: array<f32, ${WG}>;
fn reduce2(t: u32, a: f32, b: f32) {
  sh[t] = a; sh2[t] = b;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { sh[t] += sh[t + s]; sh2[t] += sh2[t + s]; }
    workgroupBarrier();
  }
}`;
export { REDUCE };

/** db[j] = sum of dy[:, j]: one workgroup per column; words 0 = n (columns), 1 = m (rows). */
export const BIAS_GRAD: KernelSpec = {
  name: "biasGrad",
  bindings: [w("DB"), r("DY")],
  body: `${REDUCE}
${GROUP_MAIN}
  let n = pu(0u); let m = pu(1u);
  if (item >= n) { return; }
  var s = 0.0;
  for (var i = t; i < m; i += ${WG}u) { s += DY[i * n + item]; }
  reduce2(t, s, 0.0);
  if (t == 0u) { DB[item] = sh[0]; }
}`,
};

/** Channel geometry words shared by the pools (16 words from 8, as ConvShape). */
const GEOM = `
fn gN() -> u32 { return pu(8u); } fn gH() -> i32 { return pi(9u); } fn gW() -> i32 { return pi(10u); }
fn gC() -> u32 { return pu(11u); } fn gR() -> i32 { return pi(13u); } fn gS() -> i32 { return pi(14u); }
fn gSH() -> i32 { return pi(16u); } fn gSW() -> i32 { return pi(17u); }
fn gPH() -> i32 { return pi(18u); } fn gPW() -> i32 { return pi(19u); }
fn gP() -> i32 { return pi(20u); } fn gQ() -> i32 { return pi(21u); }`;
export { GEOM };

/** Max pool forward: one thread per output element. */
export const MAXPOOL: KernelSpec = {
  name: "maxPool",
  bindings: [w("Y"), w("AM", "i32"), r("X")],
  body: `${GEOM}
${LINEAR_MAIN}
  let c = gC(); let ch = i % c; let pix = i / c;
  let oq = i32(pix % u32(gQ())); let op = i32((pix / u32(gQ())) % u32(gP()));
  let img = pix / u32(gQ() * gP());
  var best = 0.0; var arg = -1;
  for (var rr = 0; rr < gR(); rr++) {
    let ih = op * gSH() - gPH() + rr;
    if (ih < 0 || ih >= gH()) { continue; }
    for (var ss = 0; ss < gS(); ss++) {
      let iw = oq * gSW() - gPW() + ss;
      if (iw < 0 || iw >= gW()) { continue; }
      let v = X[((img * u32(gH()) + u32(ih)) * u32(gW()) + u32(iw)) * c + ch];
      if (arg < 0 || v > best || isnan(v)) { best = v; arg = ih * gW() + iw; }
    }
  }
  Y[i] = best; AM[i] = arg;
}`,
};
/** Max pool backward as a gather: one thread per input element sums the dy of windows whose argmax it is. */
export const MAXPOOL_BWD: KernelSpec = {
  name: "maxPoolBackward",
  bindings: [w("DX"), r("DY"), r("AM", "i32")],
  body: `${GEOM}
${LINEAR_MAIN}
  let c = gC(); let ch = i % c; let pix = i / c;
  let iw = i32(pix % u32(gW())); let ih = i32((pix / u32(gW())) % u32(gH()));
  let img = pix / u32(gW() * gH());
  let me = ih * gW() + iw;
  var s = 0.0;
  let p0 = max(0, (ih + gPH() - gR() + gSH()) / gSH()); let p1 = min(gP() - 1, (ih + gPH()) / gSH());
  let q0 = max(0, (iw + gPW() - gS() + gSW()) / gSW()); let q1 = min(gQ() - 1, (iw + gPW()) / gSW());
  for (var op = p0; op <= p1; op++) {
    for (var oq = q0; oq <= q1; oq++) {
      let o = ((img * u32(gP()) + u32(op)) * u32(gQ()) + u32(oq)) * c + ch;
      if (AM[o] == me) { s += DY[o]; }
    }
  }
  DX[i] = s;
}`,
};
/** Average pool forward (padding counts in the divisor). */
export const AVGPOOL: KernelSpec = {
  name: "avgPool",
  bindings: [w("Y"), r("X")],
  body: `${GEOM}
${LINEAR_MAIN}
  let c = gC(); let ch = i % c; let pix = i / c;
  let oq = i32(pix % u32(gQ())); let op = i32((pix / u32(gQ())) % u32(gP()));
  let img = pix / u32(gQ() * gP());
  var s = 0.0;
  for (var rr = 0; rr < gR(); rr++) {
    let ih = op * gSH() - gPH() + rr;
    if (ih < 0 || ih >= gH()) { continue; }
    for (var ss = 0; ss < gS(); ss++) {
      let iw = oq * gSW() - gPW() + ss;
      if (iw < 0 || iw >= gW()) { continue; }
      s += X[((img * u32(gH()) + u32(ih)) * u32(gW()) + u32(iw)) * c + ch];
    }
  }
  Y[i] = s / f32(gR() * gS());
}`,
};
/** Average pool backward as a gather. */
export const AVGPOOL_BWD: KernelSpec = {
  name: "avgPoolBackward",
  bindings: [w("DX"), r("DY")],
  body: `${GEOM}
${LINEAR_MAIN}
  let c = gC(); let ch = i % c; let pix = i / c;
  let iw = i32(pix % u32(gW())); let ih = i32((pix / u32(gW())) % u32(gH()));
  let img = pix / u32(gW() * gH());
  var s = 0.0;
  let p0 = max(0, (ih + gPH() - gR() + gSH()) / gSH()); let p1 = min(gP() - 1, (ih + gPH()) / gSH());
  let q0 = max(0, (iw + gPW() - gS() + gSW()) / gSW()); let q1 = min(gQ() - 1, (iw + gPW()) / gSW());
  for (var op = p0; op <= p1; op++) {
    for (var oq = q0; oq <= q1; oq++) {
      s += DY[((img * u32(gP()) + u32(op)) * u32(gQ()) + u32(oq)) * c + ch];
    }
  }
  DX[i] = s / f32(gR() * gS());
}`,
};
/** Global average pool: words 1 = hw, 2 = c. */
export const GAP: KernelSpec = {
  name: "globalAvgPool",
  bindings: [w("Y"), r("X")],
  body: `${LINEAR_MAIN}
  let hw = pu(1u); let c = pu(2u); let img = i / c; let ch = i % c;
  var s = 0.0;
  for (var j = 0u; j < hw; j++) { s += X[(img * hw + j) * c + ch]; }
  Y[i] = s / f32(hw);
}`,
};
/** Its backward. */
export const GAP_BWD: KernelSpec = {
  name: "globalAvgPoolBackward",
  bindings: [w("DX"), r("DY")],
  body: `${LINEAR_MAIN}
  let hw = pu(1u); let c = pu(2u); let img = i / (hw * c); let ch = i % c;
  DX[i] = DY[img * c + ch] / f32(hw);
}`,
};

/** BN training forward: one workgroup per channel; words 0 = c, 1 = m, f2 = momentum, f3 = eps. */
export const BN_TRAIN: KernelSpec = {
  name: "batchNormTrain",
  bindings: [w("Y"), w("SM"), w("SI"), w("RM"), w("RV"), r("X"), r("G"), r("Bt")],
  body: `${REDUCE}
${GROUP_MAIN}
  let c = pu(0u); let m = pu(1u); let mom = pf(2u); let eps = pf(3u);
  if (item >= c) { return; }
  let x0 = X[item];
  var s = 0.0;
  for (var i = t; i < m; i += ${WG}u) { s += X[i * c + item] - x0; }
  reduce2(t, s, 0.0);
  let mean = x0 + sh[0] / f32(m);
  workgroupBarrier();
  var s2 = 0.0;
  for (var i = t; i < m; i += ${WG}u) { let d = X[i * c + item] - mean; s2 += d * d; }
  reduce2(t, s2, 0.0);
  let v = sh[0] / f32(m);
  let invstd = 1.0 / sqrt(v + eps);
  let sc = invstd * G[item]; let b = Bt[item];
  workgroupBarrier();
  if (t == 0u) {
    SM[item] = mean; SI[item] = invstd;
    RM[item] = (1.0 - mom) * RM[item] + mom * mean;
    RV[item] = (1.0 - mom) * RV[item] + mom * v * f32(m) / f32(m - 1u);
  }
  for (var i = t; i < m; i += ${WG}u) { Y[i * c + item] = (X[i * c + item] - mean) * sc + b; }
}`,
};
/** BN inference: one thread per element; words 0 = m c, 1 = c, f2 = eps. */
export const BN_INFER: KernelSpec = {
  name: "batchNormInfer",
  bindings: [w("Y"), r("X"), r("G"), r("Bt"), r("RM"), r("RV")],
  body: `${LINEAR_MAIN}
  let ch = i % pu(1u);
  let s = G[ch] / sqrt(RV[ch] + pf(2u));
  Y[i] = X[i] * s + (Bt[ch] - s * RM[ch]);
}`,
};
/** BN backward: one workgroup per channel; words 0 = c, 1 = m. */
export const BN_BWD: KernelSpec = {
  name: "batchNormBackward",
  bindings: [w("DX"), w("DG"), w("DBt"), r("DY"), r("X"), r("G"), r("SM"), r("SI")],
  body: `${REDUCE}
${GROUP_MAIN}
  let c = pu(0u); let m = pu(1u);
  if (item >= c) { return; }
  let mean = SM[item]; let inv = SI[item];
  var a = 0.0; var b = 0.0;
  for (var i = t; i < m; i += ${WG}u) {
    let dy = DY[i * c + item];
    a += dy; b += dy * (X[i * c + item] - mean) * inv;
  }
  reduce2(t, a, b);
  let sdy = sh[0]; let sdyx = sh2[0];
  workgroupBarrier();
  if (t == 0u) { DG[item] = sdyx; DBt[item] = sdy; }
  let k = G[item] * inv / f32(m);
  for (var i = t; i < m; i += ${WG}u) {
    let xh = (X[i * c + item] - mean) * inv;
    DX[i * c + item] = k * (f32(m) * DY[i * c + item] - sdy - xh * sdyx);
  }
}`,
};

/**
 * Softmax cross-entropy forward: one workgroup, each thread a set of rows; words 0 = n, 1 =
 * classes, 2 = has accum. A label outside [0, classes) is computed clamped and recorded in BAD
 * ([set, row, value, classes], the first bad row of the first call that had one), which the
 * backend reports at its next read.
 */
export const XENT: KernelSpec = {
  name: "softmaxCrossEntropy",
  bindings: [w("ST"), w("PR"), w("AC"), r("L"), r("LB", "i32"), w("BAD", "u32")],
  body: `${REDUCE}
var<workgroup> badRow: atomic<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) t: u32) {
  let n = pu(0u); let k = pu(1u);
  if (t == 0u) { atomicStore(&badRow, 0xffffffffu); }
  workgroupBarrier();
  var loss = 0.0; var correct = 0.0;
  for (var i = t; i < n; i += ${WG}u) {
    var mx = L[i * k]; var am = 0u;
    for (var j = 1u; j < k; j++) { let v = L[i * k + j]; if (v > mx) { mx = v; am = j; } }
    if (LB[i] < 0 || LB[i] >= i32(k)) { atomicMin(&badRow, i); }
    let y = u32(clamp(LB[i], 0, i32(k) - 1));
    let xy = L[i * k + y];
    var s = 0.0;
    for (var j = 0u; j < k; j++) { let e = exp(L[i * k + j] - mx); PR[i * k + j] = e; s += e; }
    let inv = 1.0 / s;
    for (var j = 0u; j < k; j++) { PR[i * k + j] = PR[i * k + j] * inv; }
    loss += log(s) + mx - xy;
    if (am == y) { correct += 1.0; }
  }
  reduce2(t, loss, correct);
  if (t == 0u) {
    let bad = atomicLoad(&badRow);
    if (bad != 0xffffffffu && BAD[0] == 0u) {
      BAD[0] = 1u; BAD[1] = bad; BAD[2] = bitcast<u32>(LB[bad]); BAD[3] = k;
    }
    ST[0] = sh[0] / f32(n); ST[1] = sh2[0];
    if (pu(2u) == 1u) {
      AC[0] = AC[0] + sh[0]; AC[1] = AC[1] + sh2[0]; AC[2] = AC[2] + f32(n); AC[3] = AC[3] + 1.0;
    }
  }
}`,
};
/** Its backward: words 0 = n classes, 1 = classes, f2 = scale, 3 = has seed. */
export const XENT_BWD: KernelSpec = {
  name: "softmaxCrossEntropyBackward",
  bindings: [w("D"), r("PR"), r("LB", "i32"), r("SEED")],
  body: `${LINEAR_MAIN}
  let k = pu(1u);
  var sc = pf(2u);
  if (pu(3u) == 1u) { sc = sc * SEED[0]; }
  var d = sc * PR[i];
  if (i32(i % k) == LB[i / k]) { d -= sc; }
  D[i] = d;
}`,
};

/** SGD: words 0 = n, f1 = lr, f2 = momentum, f3 = weight decay, 4 = nesterov, 5 = has flag. */
export const SGD: KernelSpec = {
  name: "sgdStep",
  bindings: [w("Wt"), w("MB"), w("NF", "atomic<u32>"), r("GR")],
  body: `${LINEAR_MAIN}
  let lr = pf(1u); let mom = pf(2u); let wd = pf(3u);
  let gr = GR[i]; let w0 = Wt[i];
  let g = gr + wd * w0;
  var w1: f32;
  if (mom == 0.0) {
    w1 = w0 - lr * g;
  } else {
    let mb = mom * MB[i] + g;
    MB[i] = mb;
    if (pu(4u) == 1u) { w1 = w0 - lr * (g + mom * mb); } else { w1 = w0 - lr * mb; }
  }
  Wt[i] = w1;
  if (pu(5u) == 1u && (!finite(gr) || !finite(w1))) { atomicStore(&NF[0], 1u); }
}`,
};

// ---- model-zoo ops (kernels/cpu/zoo_ops.cpp) ----
/** y = a * b. */
export const MUL: KernelSpec = {
  name: "mul",
  elementwise: true,
  bindings: [w("Y"), r("A"), r("B")],
  body: `${LINEAR_MAIN} Y[i] = A[i] * B[i]; }`,
};
/** y = min(max(x, 0), 6), NaN -> 0. */
export const RELU6: KernelSpec = {
  name: "relu6",
  elementwise: true,
  bindings: [w("Y"), r("X")],
  body: `${LINEAR_MAIN} let v = X[i]; Y[i] = select(0.0, select(6.0, v, v < 6.0), v > 0.0); }`,
};
/** dx = dy where 0 < y < 6. */
export const RELU6_BWD: KernelSpec = {
  name: "relu6Backward",
  elementwise: true,
  bindings: [w("DX"), r("DY"), r("Yv")],
  body: `${LINEAR_MAIN} let y = Yv[i]; DX[i] = select(0.0, DY[i], y > 0.0 && y < 6.0); }`,
};

/** Adaptive pooling geometry: words 1 n, 2 h, 3 w, 4 c, 5 p, 6 q; torchvision's windows. */
const ADAPT = `
fn ws(i: u32, inn: u32, out: u32) -> u32 { return i * inn / out; }
fn we(i: u32, inn: u32, out: u32) -> u32 { return ((i + 1u) * inn + out - 1u) / out; }`;

/** Adaptive average pool forward: one thread per output element. */
export const ADAPTIVE_AVGPOOL: KernelSpec = {
  name: "adaptiveAvgPool",
  bindings: [w("Y"), r("X")],
  body: `${ADAPT}
${LINEAR_MAIN}
  let h = pu(2u); let wd = pu(3u); let c = pu(4u); let p = pu(5u); let q = pu(6u);
  let ch = i % c; let pix = i / c; let j = pix % q; let ii = (pix / q) % p; let img = pix / (p * q);
  let h0 = ws(ii, h, p); let h1 = we(ii, h, p); let w0 = ws(j, wd, q); let w1 = we(j, wd, q);
  var s = 0.0;
  for (var a = h0; a < h1; a++) {
    for (var b = w0; b < w1; b++) { s += X[((img * h + a) * wd + b) * c + ch]; }
  }
  Y[i] = s * fdiv(1.0, f32((h1 - h0) * (w1 - w0)));
}`,
};
/** Its backward as a gather: one thread per input element, windows in (i, j) order. */
export const ADAPTIVE_AVGPOOL_BWD: KernelSpec = {
  name: "adaptiveAvgPoolBackward",
  bindings: [w("DX"), r("DY")],
  body: `${ADAPT}
${LINEAR_MAIN}
  let h = pu(2u); let wd = pu(3u); let c = pu(4u); let p = pu(5u); let q = pu(6u);
  let ch = i % c; let pix = i / c; let b = pix % wd; let a = (pix / wd) % h; let img = pix / (h * wd);
  var s = 0.0;
  for (var ii = 0u; ii < p; ii++) {
    let h0 = ws(ii, h, p); let h1 = we(ii, h, p);
    if (a < h0 || a >= h1) { continue; }
    for (var j = 0u; j < q; j++) {
      let w0 = ws(j, wd, q); let w1 = we(j, wd, q);
      if (b < w0 || b >= w1) { continue; }
      s += DY[((img * p + ii) * q + j) * c + ch] * fdiv(1.0, f32((h1 - h0) * (w1 - w0)));
    }
  }
  DX[i] = s;
}`,
};
