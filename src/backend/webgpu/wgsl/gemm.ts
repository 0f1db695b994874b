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
 * 23 k/groups; linear: 8 m, 9 n, 10 k; dgrad stride phase (one dispatch per phase, see
 * {@link DGRAD_I8}): 24 h0, 25 w0, 26 pixel rows hp, 27 pixel columns wp, 28 bh, 29 bw, 30 rr,
 * 31 ss, 32 ns (taps across).
 *
 * @module
 */
import type { Binding, KernelSpec } from "./common.ts";
import { r, w } from "./common.ts";

/** Output tile edge. */
export const TILE = 32;
/** Reduction elements per staged tile: 32 int8 (8 words), 16 f32. */
export const TK_I8 = 32;
/** Reduction elements per staged f32 tile. */
export const TK_F32 = 16;

/** ConvShape accessors (words 8..23, {@link geom} in backend.ts) and im2col helpers. */
export const CONV = `
fn cH() -> i32 { return pi(9u); } fn cW() -> i32 { return pi(10u); }
fn cC() -> u32 { return pu(11u); } fn cK() -> u32 { return pu(12u); } fn cR() -> u32 { return pu(13u); }
fn cS() -> u32 { return pu(14u); } fn cSH() -> i32 { return pi(16u); } fn cSW() -> i32 { return pi(17u); }
fn cPH() -> i32 { return pi(18u); } fn cPW() -> i32 { return pi(19u); } fn cP() -> i32 { return pi(20u); }
fn cQ() -> i32 { return pi(21u); } fn cCG() -> u32 { return pu(22u); } fn cKG() -> u32 { return pu(23u); }
// Output pixel m (n p q) as (n H, top input row, left input column).
fn outpix(m: u32) -> vec4<i32> {
  let pq = u32(cP() * cQ()); let img = m / pq; let rem = m % pq;
  let op = i32(rem / u32(cQ())); let oq = i32(rem % u32(cQ()));
  return vec4<i32>(i32(img * u32(cH())), op * cSH() - cPH(), oq * cSW() - cPW(), 0);
}
// Tap kk (r s c, c innermost) as (r, s, c).
fn tap(kk: u32) -> vec4<i32> {
  let scg = cS() * cCG(); let t = kk % scg;
  return vec4<i32>(i32(kk / scg), i32(t / cCG()), i32(t % cCG()), 0);
}
// Flat NHWC input index of (n H, row, column) channel ch, or -1 in the padding.
fn xat(nh: i32, ih: i32, iw: i32, ch: u32) -> i32 {
  if (ih < 0 || ih >= cH() || iw < 0 || iw >= cW()) { return -1; }
  return i32((u32(nh + ih) * u32(cW()) + u32(iw)) * cC() + ch);
}`;

/** What a GEMM kernel reads and writes: its loaders (element getters) and its store. */
interface GemmParts {
  name: string;
  i8: boolean;
  bindings: Binding[];
  /**
   * `fn rowA(g, m) -> vec4<i32>` and `fn rowB(g, n)` (per-row address parts, computed once per
   * thread), `fn kdec(k) -> vec4<i32>` (per reduction index, computed once per workgroup and
   * tile into workgroup memory), `fn la(g, ra, kd, k) -> i32|f32` and `fn lb(g, rb, kd, k)`
   * (one element; called only in range). Integer division is slow on some devices (llvmpipe
   * scalarizes it), so the loaders only multiply and add.
   */
  loaders: string;
  /** `fn st(g, sp, m, n, acc)`. */
  store: string;
}

function gemm(p: GemmParts): KernelSpec {
  const T = p.i8 ? "u32" : "f32";
  const AT = p.i8 ? "i32" : "f32";
  const TKW = p.i8 ? TK_I8 / 4 : TK_F32; // words per staged row
  const step = p.i8 ? TK_I8 : TK_F32;
  const R = TILE / 4; // threads per tile edge; each computes 4 x 4 outputs
  const LANES = (R * R) / TILE; // threads loading one tile row
  const ii = [0, 1, 2, 3];
  const mul = (i: number, j: number) => p.i8 ? `dot4I8Packed(a${i}, b${j})` : `a${i} * b${j}`;
  const accs = ii.flatMap((i) => ii.map((j) => `var c${i}${j} = ${AT}(0);`)).join(" ");
  const loads = ii.map((i) =>
    `let a${i} = As[(lid.y + ${R * i}u) * ${TKW}u + kk]; let b${i} = Bs[(lid.x + ${
      R * i
    }u) * ${TKW}u + kk];`
  ).join("\n      ");
  const fma = ii.flatMap((i) => ii.map((j) => `c${i}${j} += ${mul(i, j)};`)).join(" ");
  const stores = ii.flatMap((i) =>
    ii.map((j) =>
      `{ let m = m0 + lid.y + ${R * i}u; let n = n0 + lid.x + ${
        R * j
      }u; if (m < M && n < N) { st(g, sp, m, n, c${i}${j}); } }`
    )
  ).join("\n  ");
  // int8: a word holds 4 reduction elements; with flag bit 0 (A) / 1 (B) in word 7 they are 4
  // consecutive, aligned bytes of the operand, loaded as one word (la4 / lb4), else 4 bytes.
  const fill = p.i8
    ? `var wa = 0u; var wb = 0u;
      let kb = kt + wv * 4u;
      if (kb < k1) {
        if ((fast & 1u) != 0u) {
          if (okA) { wa = la4(g, ra, KD[wv * 4u], kb); }
        } else if (okA) {
          var v = vec4<i32>(0);
          for (var j = 0u; j < 4u; j++) {
            let k = kb + j;
            if (k < k1) { v[j] = la(g, ra, KD[wv * 4u + j], k); }
          }
          wa = pack4xI8(v);
        }
        if ((fast & 2u) != 0u) {
          if (okB) { wb = lb4(g, rb, KD[wv * 4u], kb); }
        } else if (okB) {
          var v = vec4<i32>(0);
          for (var j = 0u; j < 4u; j++) {
            let k = kb + j;
            if (k < k1) { v[j] = lb(g, rb, KD[wv * 4u + j], k); }
          }
          wb = pack4xI8(v);
        }
      }
      As[row * ${TKW}u + wv] = wa; Bs[row * ${TKW}u + wv] = wb;`
    : `var va = 0.0; var vb = 0.0;
      let k = kt + wv;
      if (k < k1) {
        let kd = KD[wv];
        if (okA) { va = la(g, ra, kd, k); }
        if (okB) { vb = lb(g, rb, kd, k); }
      }
      As[row * ${TKW}u + wv] = va; Bs[row * ${TKW}u + wv] = vb;`;
  const stubs = p.i8
    ? ["la4", "lb4"].filter((f) => !p.loaders.includes(`fn ${f}(`)).map((f) =>
      `fn ${f}(g: u32, r: vec4<i32>, kd: vec4<i32>, k: u32) -> u32 { return 0u; }`
    ).join("\n")
    : "";
  return {
    name: p.name,
    bindings: p.bindings,
    body: `${CONV}
${p.loaders}
${stubs}
${p.store}
var<workgroup> As: array<${T}, ${TILE * TKW}>;
var<workgroup> Bs: array<${T}, ${TILE * TKW}>;
var<workgroup> KD: array<vec4<i32>, ${step}>;
@compute @workgroup_size(${R}, ${R})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let M = pu(0u); let N = pu(1u); let K = pu(2u); let kc = pu(3u); let splits = pu(4u);
  let g = wid.z / splits; let sp = wid.z % splits;
  let k0 = sp * kc; let k1 = min(K, k0 + kc);
  let m0 = wid.y * ${TILE}u; let n0 = wid.x * ${TILE}u;
  let row = li % ${TILE}u; let lane = li / ${TILE}u; let fast = pu(7u);
  let okA = m0 + row < M; let okB = n0 + row < N;
  let ra = rowA(g, min(m0 + row, M - 1u)); let rb = rowB(g, min(n0 + row, N - 1u));
  ${accs}
  for (var kt = k0; kt < k1; kt += ${step}u) {
    if (li < ${step}u) { KD[li] = kdec(min(kt + li, K - 1u)); }
    workgroupBarrier();
    for (var wv = lane; wv < ${TKW}u; wv += ${LANES}u) {
      ${fill}
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TKW}u; kk++) {
      ${loads}
      ${fma}
    }
    workgroupBarrier();
  }
  ${stores}
}`,
  };
}

const NOROW = `fn kdec(k: u32) -> vec4<i32> { return vec4<i32>(0); }`;
const I8 = (buf: string, idx: string) => `i8at(${buf}[(${idx}) >> 2u], ${idx})`;
const V1 = (x: string) => `vec4<i32>(bitcast<i32>(${x}), 0, 0, 0)`;
const X1 = (v: string) => `bitcast<u32>(${v}.x)`;
const SIG = (T: string) => ({
  row: (body: string, name = "rowA") => `fn ${name}(g: u32, m: u32) -> vec4<i32> { ${body} }`,
  ld: (name: string, body: string) =>
    `fn ${name}(g: u32, r: vec4<i32>, kd: vec4<i32>, k: u32) -> ${T} { ${body} }`,
});

/** c (i32) [m, n] = a (i8) [m, k] . b (i8) [n, k]^T. */
export const GEMM_I8 = gemm({
  name: "gemmI8",
  i8: true,
  bindings: [w("Cm", "i32"), r("Am", "u32"), r("Bm", "u32")],
  loaders: `${NOROW}
${SIG("i32").row(`return ${V1("m * pu(2u)")};`)}
${SIG("i32").row(`return ${V1("m * pu(2u)")};`, "rowB")}
${SIG("i32").ld("la", `let i = ${X1("r")} + k; return ${I8("Am", "i")};`)}
${SIG("i32").ld("lb", `let i = ${X1("r")} + k; return ${I8("Bm", "i")};`)}
${SIG("u32").ld("la4", `return Am[(${X1("r")} + k) >> 2u];`)}
${SIG("u32").ld("lb4", `return Bm[(${X1("r")} + k) >> 2u];`)}`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: i32) { Cm[m * pu(1u) + n] = acc; }`,
});

function convFwd(i8: boolean): KernelSpec {
  const T = i8 ? "i32" : "f32";
  const get = (buf: string, idx: string) => i8 ? I8(buf, idx) : `${buf}[${idx}]`;
  const scale = i8 ? " * (XS[0] * WS[select(0u, co, pu(6u) == 2u)])" : "";
  const S = SIG(T);
  return gemm({
    name: i8 ? "conv2dI8" : "conv2d",
    i8,
    bindings: i8
      ? [w("Y"), r("X", "u32"), r("Wt", "u32"), r("BI"), r("XS"), r("WS")]
      : [w("Y"), r("X"), r("Wt"), r("BI")],
    loaders: `fn kdec(k: u32) -> vec4<i32> { return tap(k); }
${S.row("return outpix(m);")}
${S.row(`return ${V1("(g * cKG() + m) * pu(2u)")};`, "rowB")}
${
      S.ld(
        "la",
        `let i = xat(r.x, r.y + kd.x, r.z + kd.y, g * cCG() + u32(kd.z));
  if (i < 0) { return ${T}(0); } let u = u32(i); return ${get("X", "u")};`,
      )
    }
${S.ld("lb", `let u = ${X1("r")} + k; return ${get("Wt", "u")};`)}
${
      i8
        ? `${
          SIG("u32").ld(
            "la4",
            `let i = xat(r.x, r.y + kd.x, r.z + kd.y, g * cCG() + u32(kd.z));
  if (i < 0) { return 0u; } return X[u32(i) >> 2u];`,
          )
        }
${SIG("u32").ld("lb4", `return Wt[(${X1("r")} + k) >> 2u];`)}`
        : ""
    }`,
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
  const T = i8 ? "i32" : "f32";
  const get = (buf: string, idx: string) => i8 ? I8(buf, idx) : `${buf}[${idx}]`;
  const S = SIG(T);
  return gemm({
    name: i8 ? "conv2dDgradI8" : "conv2dDgrad",
    i8,
    bindings: i8
      ? [w("DX"), r("DY", "u32"), r("Wt", "u32"), r("DS"), r("WS")]
      : [w("DX"), r("DY"), r("Wt")],
    // One dispatch per stride phase (rr, ss) (the cuda dgrad's mapping, kernels/cuda/int8_conv.cu):
    // rows are the phase's input pixels (h0 + hi*sh, w0 + wi*sw), n hp wp; columns the input
    // channels of the group; the reduction only the taps (rr + j*sh, ss + l*sw) that reach them,
    // (j l k): no structural zeros (stride 1: one phase, every tap).
    loaders: `fn kdec(k: u32) -> vec4<i32> {
  let lkg = pu(32u) * cKG(); let t = k % lkg;
  return vec4<i32>(i32(k / lkg), i32(t / cKG()), i32(t % cKG()), 0);
}
${
      S.row(`let hw = pu(26u) * pu(27u); let img = m / hw; let rem = m % hw;
  return vec4<i32>(i32(img), i32(rem / pu(27u)) + pi(28u), i32(rem % pu(27u)) + pi(29u), 0);`)
    }
${S.row("return vec4<i32>(i32(m), 0, 0, 0);", "rowB")}
${
      S.ld(
        "la",
        `let oh = r.y - kd.x; let ow = r.z - kd.y;
  if (oh < 0 || ow < 0 || oh >= cP() || ow >= cQ()) { return ${T}(0); }
  let u = ((u32(r.x) * u32(cP()) + u32(oh)) * u32(cQ()) + u32(ow)) * cK() + g * cKG() + u32(kd.z);
  return ${get("DY", "u")};`,
      )
    }
${
      i8
        ? SIG("u32").ld(
          "la4",
          `let oh = r.y - kd.x; let ow = r.z - kd.y;
  if (oh < 0 || ow < 0 || oh >= cP() || ow >= cQ()) { return 0u; }
  let u = ((u32(r.x) * u32(cP()) + u32(oh)) * u32(cQ()) + u32(ow)) * cK() + g * cKG() + u32(kd.z);
  return DY[u >> 2u];`,
        )
        : ""
    }
${
      S.ld(
        "lb",
        `let rr = pu(30u) + u32(kd.x) * u32(cSH()); let ss = pu(31u) + u32(kd.y) * u32(cSW());
  let u = (((g * cKG() + u32(kd.z)) * cR() + rr) * cS() + ss) * cCG() + u32(r.x);
  return ${get("Wt", "u")};`,
      )
    }`,
    // word 5 = 1: dx += the gradient (accumulate; each element has exactly one writer)
    store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: ${T}) {
  let hw = pu(26u) * pu(27u); let img = m / hw; let rem = m % hw;
  let h = pu(24u) + (rem / pu(27u)) * u32(cSH()); let w = pu(25u) + (rem % pu(27u)) * u32(cSW());
  let o = ((img * u32(cH()) + h) * u32(cW()) + w) * cC() + g * cCG() + n;
  let v = f32(acc)${i8 ? " * (DS[0] * WS[0])" : ""};
  if (pu(5u) == 1u) { DX[o] = DX[o] + v; } else { DX[o] = v; }
}`,
  });
}

/** f32 convolution input gradient. */
export const DGRAD_F32 = convDgrad(false);
/** int8 convolution input gradient. */
export const DGRAD_I8 = convDgrad(true);

function convWgrad(i8: boolean): KernelSpec {
  const T = i8 ? "i32" : "f32";
  const get = (buf: string, idx: string) => i8 ? I8(buf, idx) : `${buf}[${idx}]`;
  const S = SIG(T);
  return gemm({
    name: i8 ? "conv2dWgradI8" : "conv2dWgrad",
    i8,
    bindings: [w("PART"), r("X", i8 ? "u32" : "f32"), r("DY", i8 ? "u32" : "f32")],
    // rows: output channels of the group; columns: taps (r s c); reduction: output pixels.
    loaders: `fn kdec(k: u32) -> vec4<i32> { return outpix(k); }
${S.row("return vec4<i32>(i32(g * cKG() + m), 0, 0, 0);")}
${S.row("return tap(m);", "rowB")}
${S.ld("la", `let u = k * cK() + u32(r.x); return ${get("DY", "u")};`)}
${
      S.ld(
        "lb",
        `let i = xat(kd.x, kd.y + r.x, kd.z + r.y, g * cCG() + u32(r.z));
  if (i < 0) { return ${T}(0); } let u = u32(i); return ${get("X", "u")};`,
      )
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

const FS = SIG("f32");

/** f32 linear forward: y [m, n] = x [m, k] . w [n, k]^T (+ bias). */
export const LINEAR = gemm({
  name: "linear",
  i8: false,
  bindings: [w("Y"), r("X"), r("Wt"), r("BI")],
  loaders: `${NOROW}
${FS.row(`return ${V1("m * pu(10u)")};`)}
${FS.row(`return ${V1("m * pu(10u)")};`, "rowB")}
${FS.ld("la", `return X[${X1("r")} + k];`)}
${FS.ld("lb", `return Wt[${X1("r")} + k];`)}`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: f32) {
  var v = acc; if (pu(5u) == 1u) { v = v + BI[n]; } Y[m * pu(9u) + n] = v;
}`,
});
/** dx [m, k] = dy [m, n] . w [n, k]. */
export const LINEAR_DGRAD = gemm({
  name: "linearDgrad",
  i8: false,
  bindings: [w("DX"), r("DY"), r("Wt")],
  loaders: `${NOROW}
${FS.row(`return ${V1("m * pu(9u)")};`)}
${FS.row(`return ${V1("m")};`, "rowB")}
${FS.ld("la", `return DY[${X1("r")} + k];`)}
${FS.ld("lb", `return Wt[k * pu(10u) + ${X1("r")}];`)}`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: f32) { DX[m * pu(10u) + n] = acc; }`,
});
/** dw [n, k] partials = dy^T x over reduction splits (summed by WGRAD_SUM). */
export const LINEAR_WGRAD = gemm({
  name: "linearWgrad",
  i8: false,
  bindings: [w("PART"), r("X"), r("DY")],
  loaders: `${NOROW}
${FS.row(`return ${V1("m")};`)}
${FS.row(`return ${V1("m")};`, "rowB")}
${FS.ld("la", `return DY[k * pu(9u) + ${X1("r")}];`)}
${FS.ld("lb", `return X[k * pu(10u) + ${X1("r")}];`)}`,
  store: `fn st(g: u32, sp: u32, m: u32, n: u32, acc: f32) {
  PART[(sp * pu(0u) + m) * pu(1u) + n] = acc;
}`,
});
