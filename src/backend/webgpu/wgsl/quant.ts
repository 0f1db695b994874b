/**
 * INT8 quantization kernels (kernels/cpu/quant.cpp semantics): quantize (nearest and
 * stochastic, the same counter hash), dual quantize, dequantize, row max (absmax and the
 * max-scale quantizer), channel statistics, the quantizer decision and the quantization error.
 * int8 outputs are written a u32 word (four elements) per thread.
 *
 * @module
 */
import { GROUP_MAIN, type KernelSpec, LINEAR_MAIN, r, w, WG } from "./common.ts";
import { REDUCE } from "./elementwise.ts";

const CLIP_INDEX = `fn clip_index(e: u32) -> u32 {
  let lay = pu(3u); let inner = pu(2u);
  if (lay == 1u) { return e % inner; }
  if (lay == 2u) { return e / inner; }
  return 0u;
}`;

/**
 * y (i8) from x viewed as [outer, inner]: words 0 = output words, 1 = elements, 2 = inner,
 * 3 = layout, 4 = stochastic, 5 = seed.
 */
export const QUANTIZE: KernelSpec = {
  name: "quantizeI8",
  bindings: [w("Y", "u32"), r("X"), r("CL")],
  body: `${CLIP_INDEX}
${LINEAR_MAIN}
  let n = pu(1u); let stoch = pu(4u) == 1u;
  let k0 = key0(pu(5u)); let k1 = key1(k0);
  var v = vec4<i32>(0);
  var at = 0xffffffffu; var inv = 0.0; // the last clip's inverse (the division is not cheap)
  for (var j = 0u; j < 4u; j++) {
    let e = i * 4u + j;
    if (e < n) {
      let ci = clip_index(e);
      if (ci != at) { inv = inv_of(CL[ci]); at = ci; }
      v[j] = quant1(X[e] * inv, stoch, e, k0, k1);
    }
  }
  Y[i] = pack4xI8(v);
}`,
};

/** Dual quantize of x [rows, inner]: yt with CT[0], yc with CC[c]; words as QUANTIZE. */
export const QUANTIZE_DUAL: KernelSpec = {
  name: "quantizeI8Dual",
  bindings: [w("YT", "u32"), w("YC", "u32"), r("X"), r("CT"), r("CC")],
  body: `${LINEAR_MAIN}
  let n = pu(1u); let inner = pu(2u); let stoch = pu(4u) == 1u;
  let k0 = key0(pu(5u)); let k1 = key1(k0);
  let it = inv_of(CT[0]);
  var a = vec4<i32>(0); var b = vec4<i32>(0);
  for (var j = 0u; j < 4u; j++) {
    let e = i * 4u + j;
    if (e < n) {
      let x = X[e];
      a[j] = quant1(x * it, stoch, e, k0, k1);
      b[j] = quant1(x * inv_of(CC[e % inner]), stoch, e, k0, k1);
    }
  }
  YT[i] = pack4xI8(a); YC[i] = pack4xI8(b);
}`,
};

/** y (f32) = q * scale_of(clip); words 0 = elements, 2 = inner, 3 = layout. */
export const DEQUANTIZE: KernelSpec = {
  name: "dequantizeI8",
  bindings: [w("Y"), r("Q", "u32"), r("CL")],
  body: `${CLIP_INDEX}
${LINEAR_MAIN}
  Y[i] = f32(i8at(Q[i >> 2u], i)) * scale_of(CL[clip_index(i)]);
}`,
};

/**
 * Row max |x| of x [rows, inner]: one workgroup per row; words 0 = rows, 1 = inner, 2 = also
 * write scale_of(max) into SC. NaN is ignored (as std::max(m, NaN) keeps m).
 */
export const ROW_MAX: KernelSpec = {
  name: "rowMax",
  bindings: [w("MX"), w("SC"), r("X")],
  body: `var<workgroup> shm: array<f32, ${WG}>;
${GROUP_MAIN}
  if (item >= pu(0u)) { return; }
  let inner = pu(1u);
  var m = 0.0;
  for (var i = t; i < inner; i += ${WG}u) {
    let a = abs(X[item * inner + i]);
    if (a > m) { m = a; }
  }
  shm[t] = m;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { shm[t] = max(shm[t], shm[t + s]); }
    workgroupBarrier();
  }
  if (t == 0u) {
    MX[item] = shm[0];
    if (pu(2u) == 1u) { SC[item] = scale_of(shm[0]); }
  }
}`,
};

/**
 * Channel statistics of x [rows, c] into out [4, c] (max |x|, std, share |x| > std, mean): one
 * workgroup per channel, f32 sums shifted by row 0 (then about the mean); words 0 = c, 1 = rows.
 */
export const CHANNEL_STATS: KernelSpec = {
  name: "channelStats",
  bindings: [w("O"), r("X")],
  body: `${REDUCE}
var<workgroup> shm: array<f32, ${WG}>;
var<workgroup> shc: array<u32, ${WG}>;
${GROUP_MAIN}
  let c = pu(0u); let rows = pu(1u);
  if (item >= c) { return; }
  let x0 = X[item];
  var s = 0.0; var m = 0.0;
  for (var i = t; i < rows; i += ${WG}u) {
    let x = X[i * c + item];
    s += x - x0;
    let a = abs(x);
    if (a > m) { m = a; }
  }
  shm[t] = m;
  reduce2(t, s, 0.0);
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (t < k) { shm[t] = max(shm[t], shm[t + k]); }
    workgroupBarrier();
  }
  let mean = x0 + sh[0] / f32(rows);
  let mx = shm[0];
  workgroupBarrier();
  var s2 = 0.0;
  for (var i = t; i < rows; i += ${WG}u) { let d = X[i * c + item] - mean; s2 += d * d; }
  reduce2(t, s2, 0.0);
  let sd = sqrt(sh[0] / f32(rows));
  let sdb = bitcast<u32>(sd);
  var cnt = 0u;
  for (var i = t; i < rows; i += ${WG}u) {
    if ((bitcast<u32>(X[i * c + item]) & 0x7fffffffu) > sdb) { cnt += 1u; }
  }
  shc[t] = cnt;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (t < k) { shc[t] += shc[t + k]; }
    workgroupBarrier();
  }
  if (t == 0u) {
    O[item] = mx; O[c + item] = sd; O[2u * c + item] = fdiv(f32(shc[0]), f32(rows));
    O[3u * c + item] = mean;
  }
}`,
};

/** Shared by the decision kernels: knobs at words 16..31 (d8_quant_knobs), rows at word 1. */
const DECIDE_COMMON = `
fn kC() -> u32 { return pu(16u); } fn kClip() -> u32 { return pu(17u); }
fn kGvq() -> bool { return pu(18u) == 1u; } fn kPeriod() -> u32 { return pu(19u); }
fn kCand() -> u32 { return pu(20u); } fn kSharp() -> bool { return pu(21u) == 1u; }
fn kTsize() -> u32 { return pu(22u); } fn kLambda() -> f32 { return pf(24u); }
fn kK() -> f32 { return pf(25u); } fn kA() -> f32 { return pf(26u); } fn kMin() -> f32 { return pf(27u); }
fn kTmax() -> f32 { return pf(28u); } fn kTstep() -> f32 { return pf(29u); }
// (hi 2^32 + lo) % p without 64-bit integers.
fn mod64(lo: u32, hi: u32, p: u32) -> u32 {
  var r = 0u;
  for (var b = 0u; b < 64u; b++) {
    let word = select(lo, hi, b < 32u);
    let bit = (word >> (31u - (b % 32u))) & 1u;
    if (r >= p - r) { r = r - (p - r); } else { r = r + r; }
    if (bit == 1u) { if (r >= p - 1u) { r = r + 1u - p; } else { r = r + 1u; } }
  }
  return r;
}
fn gmax_of() -> f32 {
  var g = 0.0;
  for (var c = 0u; c < kC(); c++) { let m = STATS[c]; if (m > g) { g = m; } }
  return g;
}
fn lerp_ratio(lo: f32, i: u32, n: u32) -> f32 {
  if (n == 1u) { return 1.0; }
  let t = fdiv(f32(i), f32(n - 1u));
  let span = 1.0 - lo;
  let d = opq(span * t);
  return lo + d;
}`;

/**
 * DSGC candidate distances (only on a refresh step of a dsgc layer): one workgroup per
 * candidate, f32 sums over dy; DIST[i] = 1 - cos(dy, q(dy, clip_i)).
 */
export const DSGC: KernelSpec = {
  name: "dsgcDistances",
  bindings: [w("DIST"), r("STATE", "u32"), r("STATS"), r("DY")],
  body: `${REDUCE}
${DECIDE_COMMON}
var<workgroup> sh3: array<f32, ${WG}>;
${GROUP_MAIN}
  let cand = item;
  if (cand >= kCand()) { return; }
  let live = mod64(STATE[0], STATE[1], kPeriod()) == 0u;
  let n = select(0u, pu(1u) * kC(), live);
  let clip = lerp_ratio(kMin(), cand, kCand()) * gmax_of();
  let inv = inv_of(clip); let sc = scale_of(clip);
  var gg = 0.0; var dot = 0.0; var qq = 0.0;
  for (var i = t; i < n; i += ${WG}u) {
    let x = DY[i];
    let q = f32(quant1(x * inv, false, 0u, 0u, 0u)) * sc;
    gg += x * x; dot += x * q; qq += q * q;
  }
  sh3[t] = gg;
  reduce2(t, dot, qq);
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (t < k) { sh3[t] += sh3[t + k]; }
    workgroupBarrier();
  }
  if (t == 0u && live) {
    let G = sh3[0]; let D = sh[0]; let Q = sh2[0];
    var d = 1.0 - D / sqrt(G * Q);
    if (!(clip > 0.0)) { d = 1.0; } else if (G == 0.0 || Q == 0.0) { d = select(1.0, 0.0, G == 0.0); }
    DIST[cand] = d;
  }
}`,
};

/** The decision itself, one thread (d8_quant_decide after the statistics). */
export const DECIDE: KernelSpec = {
  name: "quantDecide",
  bindings: [
    w("ST", "u32"),
    w("CT"),
    w("SCT"),
    w("CC"),
    w("SCC"),
    w("REC"),
    r("STATS"),
    r("DIST"),
    r("TAB"),
  ],
  body: `${DECIDE_COMMON}
fn table_lookup(fam: u32, pos: f32) -> f32 {
  let size = kTsize();
  var i0 = u32(pos);
  if (i0 > size - 2u) { i0 = size - 2u; }
  let frac = min(pos - f32(i0), 1.0);
  let a = TAB[fam * size + i0]; let b = TAB[fam * size + i0 + 1u];
  let d = opq((b - a) * frac);
  return a + d;
}
fn add64(at: u32, v: u32) {
  let lo = ST[at] + v;
  if (lo < ST[at]) { ST[at + 1u] = ST[at + 1u] + 1u; }
  ST[at] = lo;
}
@compute @workgroup_size(1)
fn main() {
  let C = kC();
  let H = 16u;
  let gmax = gmax_of();
  let refresh = mod64(ST[0], ST[1], kPeriod()) == 0u;
  if (ST[8] == 0u) {
    for (var c = 0u; c < C; c++) { ST[H + c] = bitcast<u32>(STATS[c]); ST[H + C + c] = 1u; }
    ST[8] = 1u;
  } else {
    let keep = 1.0 - opq(kK() * kA());
    for (var c = 0u; c < C; c++) {
      let x = opq(keep * bitcast<f32>(ST[H + c]));
      let y = opq(kA() * STATS[c]);
      ST[H + c] = bitcast<u32>(x + y);
    }
  }
  if (refresh) {
    var bells = 0u;
    for (var c = 0u; c < C; c++) {
      let b = select(0u, 1u, STATS[2u * C + c] > kLambda());
      ST[H + C + c] = b;
      bells += b;
    }
    add64(2u, bells);
    add64(4u, C);
  }
  var ratio = 1.0;
  if (bitcast<f32>(ST[6]) > 0.0) { ratio = bitcast<f32>(ST[6]); }
  if (kClip() == 3u && refresh) {
    var best = 0u;
    for (var i = 1u; i < kCand(); i++) { if (DIST[i] < DIST[best]) { best = i; } }
    ratio = lerp_ratio(kMin(), best, kCand());
    ST[6] = bitcast<u32>(ratio);
    ST[7] = bitcast<u32>(DIST[best]);
  }
  var tclip = gmax;
  if (kClip() == 3u) { tclip = ratio * gmax; }
  CT[0] = tclip; SCT[0] = scale_of(tclip);
  var cmean = tclip; var cmin = tclip; var cmax = tclip;
  if (kGvq()) {
    let tmin = 1.7320508 * 1.001;
    var sum = 0.0;
    for (var c = 0u; c < C; c++) {
      let m = STATS[c];
      var s = m;
      let bell = ST[H + C + c] == 1u;
      if (kClip() == 3u) { s = ratio * m; }
      else if (kClip() == 1u) { if (!bell) { s = min(bitcast<f32>(ST[H + c]), m); } }
      else if (kClip() == 2u) {
        let sig = STATS[C + c];
        if (sig > 0.0 && m > 0.0) {
          let rr = min(fdiv(m, sig), kTmax());
          var fam = 1u;
          if (bell) { fam = 0u; } else if (kSharp() && rr > tmin) { fam = 2u; }
          s = min(m, table_lookup(fam, fdiv(rr, kTstep())) * sig);
        }
      }
      CC[c] = s; SCC[c] = scale_of(s);
      sum += s;
      if (c == 0u) { cmin = s; cmax = s; } else { cmin = min(cmin, s); cmax = max(cmax, s); }
    }
    cmean = fdiv(sum, f32(C));
  }
  var nb = 0u;
  for (var c = 0u; c < C; c++) { nb += ST[H + C + c]; }
  REC[0] = tclip; REC[1] = cmean; REC[2] = cmin; REC[3] = cmax; REC[4] = gmax;
  REC[5] = fdiv(f32(nb), f32(C));
  REC[6] = select(0.0, bitcast<f32>(ST[7]), kClip() == 3u);
  add64(0u, 1u);
}`,
};

/** record[7] = relative L2 error of q against x; words 0 = elements, 2 = inner, 3 = layout. */
export const QUANT_ERROR: KernelSpec = {
  name: "quantError",
  bindings: [w("REC"), r("X"), r("Q", "u32"), r("CL")],
  body: `${REDUCE}
${CLIP_INDEX}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) t: u32) {
  let n = pu(0u);
  var num = 0.0; var den = 0.0;
  for (var i = t; i < n; i += ${WG}u) {
    let g = X[i];
    let d = g - f32(i8at(Q[i >> 2u], i)) * scale_of(CL[clip_index(i)]);
    num += d * d; den += g * g;
  }
  reduce2(t, num, den);
  if (t == 0u) { REC[7] = select(0.0, sqrt(sh[0] / sh2[0]), sh2[0] > 0.0); }
}`,
};
