/**
 * Depthwise convolutions (one channel per group, MobileNetV2's 3x3 layers) as direct kernels:
 * the GEMM kernels would run one column of a 32-wide tile per group, 32 times the work. fprop and
 * dgrad: one thread per output element (channel fastest, so neighbouring threads read
 * neighbouring bytes or floats of one pixel); dgrad gathers the dy pixels whose windows cover its
 * input pixel (no write conflicts). wgrad: one thread per (split, tap, channel) sums its split's
 * pixels into a partial of the GEMM wgrad's layout, [splits][c][tap], which `WGRAD_SUM` adds over
 * the splits and scales. The int8 kernels multiply bytes of packed words in i32 (exact; a split
 * holds at most I8_CHUNK pixels), the f32 ones in f32.
 *
 * Parameter words: 0 items, 5 bias (fprop) or accumulate (dgrad), 6 w scale layout (int8
 * fprop: 2 per channel), 8..23 ConvShape ({@link CONV}), 24 pixels per split (wgrad).
 *
 * @module
 */
import type { KernelSpec } from "./common.ts";
import { LINEAR_MAIN, r, w } from "./common.ts";
import { CONV } from "./gemm.ts";

const T = (i8: boolean) => i8 ? "i32" : "f32";
const get = (i8: boolean, buf: string, idx: string) =>
  i8 ? `i8at(${buf}[(${idx}) >> 2u], ${idx})` : `${buf}[${idx}]`;
// weight (channel ch, tap r s) of the [C, R, S] depthwise weights
const WAT = "(ch * cR() + r) * cS() + s";

// The dgrad's gather over the dy pixels (oh, ow) whose windows cover input pixel (ih, iw): only
// the taps r = rh + j*sh reach row ih, from the dy row (ih + ph - rh) / sh down by one a tap (no
// division in the loops); columns alike. COVER_LOOP(body) runs body for each (r, s, oh, ow).
const COVER_HEAD = `let rh = (ih + cPH()) % cSH(); let rw = (iw + cPW()) % cSW();
  let ow0 = (iw + cPW() - rw) / cSW();`;
const COVER_LOOP = (body: string) =>
  `var oh = (ih + cPH() - rh) / cSH();
  for (var r = u32(rh); r < cR() && oh >= 0; r += u32(cSH())) {
    if (oh < cP()) {
      var ow = ow0;
      for (var s = u32(rw); s < cS() && ow >= 0; s += u32(cSW())) {
        if (ow < cQ()) {
          ${body}
        }
        ow -= 1;
      }
    }
    oh -= 1;
  }`;

function fwd(i8: boolean): KernelSpec {
  return {
    name: i8 ? "depthwiseI8" : "depthwise",
    bindings: i8
      ? [w("Y"), r("X", "u32"), r("Wt", "u32"), r("BI"), r("XS"), r("WS")]
      : [w("Y"), r("X"), r("Wt"), r("BI")],
    body: `${CONV}
${LINEAR_MAIN}
  let C = cC(); let ch = i % C; let m = i / C;
  let pq = u32(cP() * cQ()); let img = m / pq; let rem = m % pq;
  let oh = i32(rem / u32(cQ())) * cSH() - cPH(); let ow = i32(rem % u32(cQ())) * cSW() - cPW();
  var acc = ${T(i8)}(0);
  for (var r = 0u; r < cR(); r++) {
    let ih = oh + i32(r);
    if (ih < 0 || ih >= cH()) { continue; }
    for (var s = 0u; s < cS(); s++) {
      let iw = ow + i32(s);
      if (iw < 0 || iw >= cW()) { continue; }
      let xi = ((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * C + ch;
      acc += ${get(i8, "X", "xi")} * ${get(i8, "Wt", WAT)};
    }
  }
  var v = f32(acc)${i8 ? " * (XS[0] * WS[select(0u, ch, pu(6u) == 2u)])" : ""};
  if (pu(5u) == 1u) { v = v + BI[ch]; }
  Y[i] = v;
}`,
  };
}

function dgrad(i8: boolean): KernelSpec {
  return {
    name: i8 ? "depthwiseDgradI8" : "depthwiseDgrad",
    bindings: i8
      ? [w("DX"), r("DY", "u32"), r("Wt", "u32"), r("DS"), r("WS")]
      : [w("DX"), r("DY"), r("Wt")],
    body: `${CONV}
${LINEAR_MAIN}
  let C = cC(); let ch = i % C; let pix = i / C;
  let hw = u32(cH() * cW()); let img = pix / hw; let rem = pix % hw;
  let ih = i32(rem / u32(cW())); let iw = i32(rem % u32(cW()));
  ${COVER_HEAD}
  var acc = ${T(i8)}(0);
  ${
      COVER_LOOP(`let di = ((img * u32(cP()) + u32(oh)) * u32(cQ()) + u32(ow)) * C + ch;
          acc += ${get(i8, "DY", "di")} * ${get(i8, "Wt", WAT)};`)
    }
  let v = f32(acc)${i8 ? " * (DS[0] * WS[0])" : ""};
  if (pu(5u) == 1u) { DX[i] = DX[i] + v; } else { DX[i] = v; }
}`,
  };
}

function wgrad(i8: boolean): KernelSpec {
  return {
    name: i8 ? "depthwiseWgradI8" : "depthwiseWgrad",
    bindings: [w("PART"), r("X", i8 ? "u32" : "f32"), r("DY", i8 ? "u32" : "f32")],
    body: `${CONV}
${LINEAR_MAIN}
  let C = cC(); let taps = cR() * cS();
  let ch = i % C; let tap = (i / C) % taps; let sp = i / (C * taps);
  let r = tap / cS(); let s = tap % cS();
  let pixels = pu(8u) * u32(cP() * cQ());
  let m0 = sp * pu(24u); let m1 = min(m0 + pu(24u), pixels);
  // pixel m0's (image, row, column), then stepped without division
  let pq = u32(cP() * cQ());
  var img = m0 / pq; var op = i32((m0 % pq) / u32(cQ())); var oq = i32(m0 % u32(cQ()));
  var acc = ${T(i8)}(0);
  for (var m = m0; m < m1; m++) {
    let ih = op * cSH() - cPH() + i32(r); let iw = oq * cSW() - cPW() + i32(s);
    if (ih >= 0 && ih < cH() && iw >= 0 && iw < cW()) {
      let xi = ((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * C + ch;
      let di = m * C + ch;
      acc += ${get(i8, "DY", "di")} * ${get(i8, "X", "xi")};
    }
    oq += 1;
    if (oq == cQ()) { oq = 0; op += 1; if (op == cP()) { op = 0; img += 1u; } }
  }
  PART[(sp * C + ch) * taps + tap] = f32(acc);
}`,
  };
}

// ---- int8 with C % 4 == 0: 4 channels a thread -----------------------------------------------
// A thread holds one word of an NHWC pixel (4 channels); the weights come transposed to
// [tap][C] (DW_PACK_I8), so a word is one tap's 4 channels. Channel j's product alone is
// dot4I8Packed(a, b & (0xff << 8j)): no byte extraction, exact i32. Items: (pixel, quad), quad
// fastest.
const LANE = (b: string, j: number) => `(${b} & ${(0xff << (8 * j)) >>> 0}u)`;
const DOT4 = (acc: string, a: string, b: string) =>
  [0, 1, 2, 3].map((j) => `${acc}[${j}] += dot4I8Packed(${a}, ${LANE(b, j)});`).join(" ");

/** wq[tap][quad] = the 4 weight bytes (channels 4 quad .. 4 quad + 3) of one tap, packed. */
export const DW_PACK_I8: KernelSpec = {
  name: "depthwisePackI8",
  bindings: [w("WQ", "u32"), r("Wt", "u32")],
  body: `${CONV}
${LINEAR_MAIN}
  let taps = cR() * cS(); let quads = cC() / 4u; let tap = i / quads; let q = i % quads;
  var v = vec4<i32>(0);
  for (var j = 0u; j < 4u; j++) { let b = (4u * q + j) * taps + tap; v[j] = i8at(Wt[b >> 2u], b); }
  WQ[i] = pack4xI8(v);
}`,
};

/** f32 depthwise weights [C][taps] re-laid as [taps][C], so a vec4 is one tap's 4 channels. */
export const DW_PACK_F32: KernelSpec = {
  name: "depthwisePackF32",
  bindings: [w("WQ"), r("Wt")],
  body: `${CONV}
${LINEAR_MAIN}
  let taps = cR() * cS(); let tap = i / cC(); let ch = i % cC();
  WQ[i] = Wt[ch * taps + tap];
}`,
};

// The 4-channel kernels, int8 (words, dot4I8Packed on one lane at a time) or f32 (vec4).
function quad(i8: boolean) {
  const E = i8 ? "u32" : "vec4<f32>", A = i8 ? "vec4<i32>" : "vec4<f32>";
  const mac = (a: string, b: string) => i8 ? DOT4("acc", a, b) : `acc += ${a} * ${b};`;
  const fwd: KernelSpec = {
    name: i8 ? "depthwiseI8x4" : "depthwiseX4",
    bindings: i8
      ? [w("Y"), r("X", E), r("WQ", E), r("BI"), r("XS"), r("WS")]
      : [w("Y"), r("X", E), r("WQ", E), r("BI")],
    body: `${CONV}
${LINEAR_MAIN}
  let quads = cC() / 4u; let q = i % quads; let m = i / quads;
  let pq = u32(cP() * cQ()); let img = m / pq; let rem = m % pq;
  let oh = i32(rem / u32(cQ())) * cSH() - cPH(); let ow = i32(rem % u32(cQ())) * cSW() - cPW();
  var acc = ${A}(0);
  for (var r = 0u; r < cR(); r++) {
    let ih = oh + i32(r);
    if (ih < 0 || ih >= cH()) { continue; }
    for (var s = 0u; s < cS(); s++) {
      let iw = ow + i32(s);
      if (iw < 0 || iw >= cW()) { continue; }
      let a = X[((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * quads + q];
      let b = WQ[(r * cS() + s) * quads + q];
      ${mac("a", "b")}
    }
  }
  for (var j = 0u; j < 4u; j++) {
    let ch = 4u * q + j;
    var v = f32(acc[j])${i8 ? " * (XS[0] * WS[select(0u, ch, pu(6u) == 2u)])" : ""};
    if (pu(5u) == 1u) { v = v + BI[ch]; }
    Y[m * cC() + ch] = v;
  }
}`,
  };
  const dgrad: KernelSpec = {
    name: i8 ? "depthwiseDgradI8x4" : "depthwiseDgradX4",
    bindings: i8
      ? [w("DX"), r("DY", E), r("WQ", E), r("DS"), r("WS")]
      : [w("DX"), r("DY", E), r("WQ", E)],
    body: `${CONV}
${LINEAR_MAIN}
  let quads = cC() / 4u; let q = i % quads; let pix = i / quads;
  let hw = u32(cH() * cW()); let img = pix / hw; let rem = pix % hw;
  let ih = i32(rem / u32(cW())); let iw = i32(rem % u32(cW()));
  ${COVER_HEAD}
  var acc = ${A}(0);
  ${
      COVER_LOOP(`let a = DY[((img * u32(cP()) + u32(oh)) * u32(cQ()) + u32(ow)) * quads + q];
          let b = WQ[(r * cS() + s) * quads + q];
          ${mac("a", "b")}`)
    }
  for (var j = 0u; j < 4u; j++) {
    let o = pix * cC() + 4u * q + j;
    let v = f32(acc[j])${i8 ? " * (DS[0] * WS[0])" : ""};
    if (pu(5u) == 1u) { DX[o] = DX[o] + v; } else { DX[o] = v; }
  }
}`,
  };
  const wgrad: KernelSpec = {
    name: i8 ? "depthwiseWgradI8x4" : "depthwiseWgradX4",
    bindings: [w("PART"), r("X", E), r("DY", E)],
    body: `${CONV}
${LINEAR_MAIN}
  let quads = cC() / 4u; let taps = cR() * cS();
  let q = i % quads; let tap = (i / quads) % taps; let sp = i / (quads * taps);
  let r = tap / cS(); let s = tap % cS();
  let pixels = pu(8u) * u32(cP() * cQ());
  let m0 = sp * pu(24u); let m1 = min(m0 + pu(24u), pixels);
  let pq = u32(cP() * cQ());
  var img = m0 / pq; var op = i32((m0 % pq) / u32(cQ())); var oq = i32(m0 % u32(cQ()));
  var acc = ${A}(0);
  for (var m = m0; m < m1; m++) {
    let ih = op * cSH() - cPH() + i32(r); let iw = oq * cSW() - cPW() + i32(s);
    if (ih >= 0 && ih < cH() && iw >= 0 && iw < cW()) {
      let a = X[((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * quads + q];
      let b = DY[m * quads + q];
      ${mac("b", "a")}
    }
    oq += 1;
    if (oq == cQ()) { oq = 0; op += 1; if (op == cP()) { op = 0; img += 1u; } }
  }
  for (var j = 0u; j < 4u; j++) { PART[(sp * cC() + 4u * q + j) * taps + tap] = f32(acc[j]); }
}`,
  };
  return { fwd, dgrad, wgrad };
}
const Q8 = quad(true), QF = quad(false);
/** int8 depthwise forward, 4 channels a thread (C % 4 == 0; weights from DW_PACK_I8). */
export const DW_I8_4 = Q8.fwd;
/** int8 depthwise input gradient, 4 channels a thread. */
export const DW_DGRAD_I8_4 = Q8.dgrad;
/** int8 depthwise weight gradient partials [splits][c][tap], 4 channels a thread. */
export const DW_WGRAD_I8_4 = Q8.wgrad;
/** f32 depthwise forward, 4 channels a thread (C % 4 == 0; weights from DW_PACK_F32). */
export const DW_F32_4 = QF.fwd;
/** f32 depthwise input gradient, 4 channels a thread. */
export const DW_DGRAD_F32_4 = QF.dgrad;
/** f32 depthwise weight gradient partials, 4 channels a thread. */
export const DW_WGRAD_F32_4 = QF.wgrad;

/** f32 depthwise forward (bias flag in word 5). */
export const DW_F32 = fwd(false);
/** int8 depthwise forward, the x and w scales in the epilogue. */
export const DW_I8 = fwd(true);
/** f32 depthwise input gradient (word 5: accumulate into dx). */
export const DW_DGRAD_F32 = dgrad(false);
/** int8 depthwise input gradient. */
export const DW_DGRAD_I8 = dgrad(true);
/** f32 depthwise weight gradient partials [splits][c][tap]. */
export const DW_WGRAD_F32 = wgrad(false);
/** int8 depthwise weight gradient partials (exact i32 per split, stored as f32). */
export const DW_WGRAD_I8 = wgrad(true);
