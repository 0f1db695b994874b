/**
 * Tiled GEMM kernels: C[M, N] = sum over the reduction of A(m, k) B(n, k), 64 x 64 output tiles
 * per workgroup of 16 x 16 threads (4 x 4 outputs each), operand tiles staged in workgroup
 * memory. The int8 variant packs four reduction elements per u32 word (bytes fetched one by one,
 * so any channel count and any im2col gather work) and multiplies with `dot4I8Packed` into i32
 * accumulators; the f32 variant multiplies in f32. Convolutions are implicit GEMMs: the loaders
 * compute im2col addresses on the fly. Dispatch: x = N tiles, y = M tiles, z = group * splits +
 * split (a split covers `pu(3)` reduction elements).
 *
 * Parameter words: 0 M, 1 N, 2 K (reduction), 3 reduction per split, 4 splits, 5 has bias,
 * 6 scale layout, 8..21 ConvShape (n h w c k r s groups sh sw ph pw p q), 22 c/groups,
 * 23 k/groups; linear: 8 m, 9 n, 10 k.
 *
 * @module
 */
import type { Binding, KernelSpec } from "./common.ts";
import { r, w } from "./common.ts";

/** Output tile edge. */
export const TILE = 64;
/** Reduction elements per staged tile: 32 int8 (8 words), 16 f32. */
export const TK_I8 = 32;
/** Reduction elements per staged f32 tile. */
export const TK_F32 = 16;

const CONV = `
fn cN() -> u32 { return pu(8u); } fn cH() -> i32 { return pi(9u); } fn cW() -> i32 { return pi(10u); }
fn cC() -> u32 { return pu(11u); } fn cK() -> u32 { return pu(12u); } fn cR() -> u32 { return pu(13u); }
fn cS() -> u32 { return pu(14u); } fn cSH() -> i32 { return pi(16u); } fn cSW() -> i32 { return pi(17u); }
fn cPH() -> i32 { return pi(18u); } fn cPW() -> i32 { return pi(19u); } fn cP() -> i32 { return pi(20u); }
fn cQ() -> i32 { return pi(21u); } fn cCG() -> u32 { return pu(22u); } fn cKG() -> u32 { return pu(23u); }
// Flat NHWC index of input pixel (img, ih, iw) channel ch, or -1 in the padding.
fn xat(img: u32, ih: i32, iw: i32, ch: u32) -> i32 {
  if (ih < 0 || ih >= cH() || iw < 0 || iw >= cW()) { return -1; }
  return i32(((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * cC() + ch);
}
// fprop / wgrad: the input element of output row m (n p q) and tap kk (r s c, c innermost).
fn im2col(g: u32, m: u32, kk: u32) -> i32 {
  let pq = u32(cP() * cQ());
  let img = m / pq; let rem = m % pq;
  let op = i32(rem / u32(cQ())); let oq = i32(rem % u32(cQ()));
  let scg = cS() * cCG();
  let rr = i32(kk / scg); let t = kk % scg; let ss = i32(t / cCG()); let ch = t % cCG();
  return xat(img, op * cSH() - cPH() + rr, oq * cSW() - cPW() + ss, g * cCG() + ch);
}
// dgrad: the dy element of input row m (n h w) and tap kk (r s k, k innermost), or -1.
fn dycol(g: u32, m: u32, kk: u32) -> i32 {
  let hw = u32(cH() * cW());
  let img = m / hw; let rem = m % hw;
  let ih = i32(rem / u32(cW())); let iw = i32(rem % u32(cW()));
  let skg = cS() * cKG();
  let rr = i32(kk / skg); let t = kk % skg; let ss = i32(t / cKG()); let kq = t % cKG();
  let oh = ih + cPH() - rr; let ow = iw + cPW() - ss;
  if (oh < 0 || ow < 0 || oh % cSH() != 0 || ow % cSW() != 0) { return -1; }
  let op = oh / cSH(); let oq = ow / cSW();
  if (op >= cP() || oq >= cQ()) { return -1; }
  return i32(((img * u32(cP()) + u32(op)) * u32(cQ()) + u32(oq)) * cK() + g * cKG() + kq);
}
// dgrad: the weight element [g kg + kq, rr, ss, c] of tap kk (r s k) and input channel c.
fn wcol(g: u32, c: u32, kk: u32) -> u32 {
  let skg = cS() * cKG();
  let rr = kk / skg; let t = kk % skg; let ss = t / cKG(); let kq = t % cKG();
  return (((g * cKG() + kq) * cR() + rr) * cS() + ss) * cCG() + c;
}`;

/** What a GEMM kernel reads and writes: its loaders (element getters) and its store. */
interface GemmParts {
  name: string;
  i8: boolean;
  bindings: Binding[];
  /** `fn la(g, m, k) -> i32|f32` and `fn lb(g, n, k)` (in range: m < M, n < N, k < K). */
  loaders: string;
  /** `fn st(g, sp, m, n, acc)`. */
  store: string;
}

function gemm(p: GemmParts): KernelSpec {
  const T = p.i8 ? "u32" : "f32";
  const AT = p.i8 ? "i32" : "f32";
  const TKW = p.i8 ? TK_I8 / 4 : TK_F32; // words per staged row
  const step = p.i8 ? TK_I8 : TK_F32;
  const fetch = (fn: string, idx: string) =>
    p.i8
      ? `var v = vec4<i32>(0); for (var j = 0u; j < 4u; j++) { let k = kb + j; if (k < k1) { v[j] = ${fn}(g, ${idx}, k); } } tile = pack4xI8(v);`
      : `if (kb < k1) { tile = ${fn}(g, ${idx}, kb); }`;
  const mul = p.i8 ? "dot4I8Packed(a[i], b[j])" : "a[i] * b[j]";
  return {
    name: p.name,
    bindings: p.bindings,
    body: `${CONV}
${p.loaders}
${p.store}
var<workgroup> As: array<${T}, ${TILE * TKW}>;
var<workgroup> Bs: array<${T}, ${TILE * TKW}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let M = pu(0u); let N = pu(1u); let K = pu(2u); let kc = pu(3u); let splits = pu(4u);
  let g = wid.z / splits; let sp = wid.z % splits;
  let k0 = sp * kc; let k1 = min(K, k0 + kc);
  let m0 = wid.y * ${TILE}u; let n0 = wid.x * ${TILE}u;
  var acc: array<array<${AT}, 4>, 4>;
  for (var kt = k0; kt < k1; kt += ${step}u) {
    for (var e = li; e < ${TILE * TKW}u; e += 256u) {
      let row = e / ${TKW}u; let kb = kt + (e % ${TKW}u) * ${p.i8 ? 4 : 1}u;
      var tile: ${T} = ${T}(0);
      let m = m0 + row;
      if (m < M) { ${fetch("la", "m")} }
      As[e] = tile;
      tile = ${T}(0);
      let n = n0 + row;
      if (n < N) { ${fetch("lb", "n")} }
      Bs[e] = tile;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TKW}u; kk++) {
      var a: array<${T}, 4>; var b: array<${T}, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = As[(lid.y + 16u * i) * ${TKW}u + kk];
        b[i] = Bs[(lid.x + 16u * i) * ${TKW}u + kk];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] += ${mul}; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      let m = m0 + lid.y + 16u * i; let n = n0 + lid.x + 16u * j;
      if (m < M && n < N) { st(g, sp, m, n, acc[i][j]); }
    }
  }
}`,
  };
}

const I8 = (buf: string, idx: string) => `i8at(${buf}[(${idx}) >> 2u], ${idx})`;

/** c (i32) [m, n] = a (i8) [m, k] . b (i8) [n, k]^T. */
export const GEMM_I8 = gemm({
  name: "gemmI8",
  i8: true,
  bindings: [w("Cm", "i32"), r("Am", "u32"), r("Bm", "u32")],
  loaders: `fn la(g: u32, m: u32, k: u32) -> i32 { let i = m * pu(2u) + k; return ${
    I8("Am", "i")
  }; }
fn lb(g: u32, n: u32, k: u32) -> i32 { let i = n * pu(2u) + k; return ${I8("Bm", "i")}; }`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: i32) { Cm[m * pu(1u) + n] = acc; }`,
});

function convFwd(i8: boolean): KernelSpec {
  const get = (buf: string, idx: string) => i8 ? I8(buf, idx) : `${buf}[${idx}]`;
  const T = i8 ? "i32" : "f32";
  const scale = i8 ? " * (XS[0] * WS[select(0u, co, pu(6u) == 2u)])" : "";
  return gemm({
    name: i8 ? "conv2dI8" : "conv2d",
    i8,
    bindings: i8
      ? [w("Y"), r("X", "u32"), r("Wt", "u32"), r("BI"), r("XS"), r("WS")]
      : [w("Y"), r("X"), r("Wt"), r("BI")],
    loaders: `fn la(g: u32, m: u32, k: u32) -> ${T} {
  let i = im2col(g, m, k); if (i < 0) { return ${T}(0); } let u = u32(i); return ${get("X", "u")};
}
fn lb(g: u32, n: u32, k: u32) -> ${T} { let u = (g * cKG() + n) * pu(2u) + k; return ${
      get("Wt", "u")
    }; }`,
    store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: ${T}) {
  let co = g * cKG() + n;
  var v = f32(acc)${scale};
  if (pu(5u) == 1u) { v = v + BI[co]; }
  Y[m * cK() + co] = v;
}`,
  });
}

/** f32 convolution forward (bias flag in word 5). */
export const CONV_F32 = convFwd(false);
/** int8 convolution forward with the x and w scales in the epilogue. */
export const CONV_I8 = convFwd(true);

function convDgrad(i8: boolean): KernelSpec {
  const get = (buf: string, idx: string) => i8 ? I8(buf, idx) : `${buf}[${idx}]`;
  const T = i8 ? "i32" : "f32";
  return gemm({
    name: i8 ? "conv2dDgradI8" : "conv2dDgrad",
    i8,
    bindings: i8
      ? [w("DX"), r("DY", "u32"), r("Wt", "u32"), r("DS"), r("WS")]
      : [w("DX"), r("DY"), r("Wt")],
    loaders: `fn la(g: u32, m: u32, k: u32) -> ${T} {
  let i = dycol(g, m, k); if (i < 0) { return ${T}(0); } let u = u32(i); return ${get("DY", "u")};
}
fn lb(g: u32, n: u32, k: u32) -> ${T} { let u = wcol(g, n, k); return ${get("Wt", "u")}; }`,
    store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: ${T}) {
  DX[m * cC() + g * cCG() + n] = f32(acc)${i8 ? " * (DS[0] * WS[0])" : ""};
}`,
  });
}

/** f32 convolution input gradient. */
export const DGRAD_F32 = convDgrad(false);
/** int8 convolution input gradient. */
export const DGRAD_I8 = convDgrad(true);

function convWgrad(i8: boolean): KernelSpec {
  const get = (buf: string, idx: string) => i8 ? I8(buf, idx) : `${buf}[${idx}]`;
  const T = i8 ? "i32" : "f32";
  return gemm({
    name: i8 ? "conv2dWgradI8" : "conv2dWgrad",
    i8,
    bindings: [w("PART"), r("X", i8 ? "u32" : "f32"), r("DY", i8 ? "u32" : "f32")],
    // rows: output channels of the group; columns: taps (r s c); reduction: output pixels.
    loaders: `fn la(g: u32, m: u32, k: u32) -> ${T} { let u = k * cK() + g * cKG() + m; return ${
      get("DY", "u")
    }; }
fn lb(g: u32, n: u32, k: u32) -> ${T} {
  let i = im2col(g, k, n); if (i < 0) { return ${T}(0); } let u = u32(i); return ${get("X", "u")};
}`,
    store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: ${T}) {
  PART[((sp * pu(15u) + g) * pu(0u) + m) * pu(1u) + n] = f32(acc);
}`,
  });
}

/** f32 convolution weight gradient partials [splits, groups, kg, r s cg]. */
export const WGRAD_F32 = convWgrad(false);
/** int8 convolution weight gradient partials (exact int32 per split, stored as f32). */
export const WGRAD_I8 = convWgrad(true);

/**
 * Sums wgrad partials over splits: dw[g kg + k, col] = sum_sp part * scale; words 0 = items
 * (groups kg cols), 1 = splits, 2 = kg cols (per group), 3 = cols, 4 = scaled (0 f32, 1 i8),
 * 5 = per-channel dy scale, 6 = kg.
 */
export const WGRAD_SUM: KernelSpec = {
  name: "wgradSum",
  bindings: [w("DW"), r("PART"), r("XS"), r("DS")],
  body: `@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let i = lin(gid, nw);
  if (i >= pu(0u)) { return; }
  var s = 0.0;
  for (var sp = 0u; sp < pu(1u); sp++) { s += PART[sp * pu(0u) + i]; }
  if (pu(4u) == 1u) {
    let co = i / pu(3u);
    s = s * (DS[select(0u, co, pu(5u) == 1u)] * XS[0]);
  }
  DW[i] = s;
}`,
};

/** f32 linear forward: y [m, n] = x [m, k] . w [n, k]^T (+ bias). */
export const LINEAR = gemm({
  name: "linear",
  i8: false,
  bindings: [w("Y"), r("X"), r("Wt"), r("BI")],
  loaders: `fn la(g: u32, m: u32, k: u32) -> f32 { return X[m * pu(10u) + k]; }
fn lb(g: u32, n: u32, k: u32) -> f32 { return Wt[n * pu(10u) + k]; }`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: f32) {
  var v = acc; if (pu(5u) == 1u) { v = v + BI[n]; } Y[m * pu(9u) + n] = v;
}`,
});
/** dx [m, k] = dy [m, n] . w [n, k]. */
export const LINEAR_DGRAD = gemm({
  name: "linearDgrad",
  i8: false,
  bindings: [w("DX"), r("DY"), r("Wt")],
  loaders: `fn la(g: u32, m: u32, j: u32) -> f32 { return DY[m * pu(9u) + j]; }
fn lb(g: u32, c: u32, j: u32) -> f32 { return Wt[j * pu(10u) + c]; }`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: f32) { DX[m * pu(10u) + n] = acc; }`,
});
/** dw [n, k] partials = dy^T x over reduction splits (summed by WGRAD_SUM). */
export const LINEAR_WGRAD = gemm({
  name: "linearWgrad",
  i8: false,
  bindings: [w("PART"), r("X"), r("DY")],
  loaders: `fn la(g: u32, row: u32, i: u32) -> f32 { return DY[i * pu(9u) + row]; }
fn lb(g: u32, col: u32, i: u32) -> f32 { return X[i * pu(10u) + col]; }`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: f32) {
  PART[(sp * pu(0u) + m) * pu(1u) + n] = acc;
}`,
});
