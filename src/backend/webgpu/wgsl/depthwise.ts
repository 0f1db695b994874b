/**
 * Depthwise convolutions (one channel per group, MobileNetV2's 3x3 layers) as direct kernels:
 * the GEMM kernels would run one column of a 32-wide tile per group, 32 times the work. fprop and
 * dgrad: one thread per output element, or with C % 4 == 0 per 4 channels of a pixel (a u32 of
 * int8 or a vec4 of f32; the weights re-laid as [tap][C] by `DW_PACK_*`), channel fastest so that
 * neighbouring threads read neighbouring bytes of a pixel; dgrad gathers the dy pixels whose
 * windows cover its input pixel (no write conflicts). wgrad: one thread per (split, tap, channel
 * or quad) sums its split's pixels into a partial of the GEMM wgrad's layout, [splits][c][tap],
 * which `WGRAD_SUM` adds over the splits and scales. The int8 kernels multiply in i32 (exact; a
 * split holds at most I8_CHUNK pixels): bytes extracted one by one, or with 4 channels a word
 * `dot4I8Packed` of one byte lane at a time (no extraction). The f32 ones multiply in f32.
 *
 * Parameter words: 0 items, 5 bias (fprop) or accumulate (dgrad), 6 w scale layout (int8
 * fprop: 2 per channel), 8..23 ConvShape ({@link CONV}), 24 pixels per split (wgrad).
 *
 * @module
 */
import type { KernelSpec } from "./common.ts";
import { LINEAR_MAIN, r, w } from "./common.ts";
import { CONV } from "./gemm.ts";

// The dgrad's gather over the dy pixels (oh, ow) whose windows cover input pixel (ih, iw): only
// the taps r = rh + j*sh reach row ih, from the dy row (ih + ph - rh) / sh down by one a tap (no
// division in the loops); columns alike. Runs body for each (r, s, oh, ow).
const COVER = (body: string) =>
  `let rh = (ih + cPH()) % cSH(); let rw = (iw + cPW()) % cSW();
  let ow0 = (iw + cPW() - rw) / cSW();
  var oh = (ih + cPH() - rh) / cSH();
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

/** The three kernels of one form: int8 or f32, 1 or 4 channels a thread. */
function depthwise(i8: boolean, lanes: 1 | 4) {
  const four = lanes === 4;
  // a thread's unit: a channel (ch = u) or a quad (channels 4u .. 4u + 3); U units a pixel
  const U = four ? "(cC() / 4u)" : "cC()";
  const E = i8 ? "u32" : four ? "vec4<f32>" : "f32"; // the binding's element
  const A = four ? (i8 ? "vec4<i32>" : "vec4<f32>") : (i8 ? "i32" : "f32");
  // unit k of a tensor bound as E: int8 channels come out of their word
  const ld = (buf: string, k: string) =>
    i8 && !four ? `i8at(${buf}[(${k}) >> 2u], ${k})` : `${buf}[${k}]`;
  const mac = (a: string, b: string) =>
    i8 && four
      ? [0, 1, 2, 3].map((j) =>
        `acc[${j}] += dot4I8Packed(${a}, ${b} & ${(0xff << (8 * j)) >>> 0}u);`
      ).join(" ")
      : `acc += ${a} * ${b};`;
  // the weight unit of tap (r, s): [C][R][S] as given, or [tap][C] packed for four
  const wAt = four ? `WQ[(r * cS() + s) * ${U} + u]` : ld("WQ", "(u * cR() + r) * cS() + s");
  // channel j of the thread's unit, and its sum
  const lane = (j: string) => four ? `acc[${j}]` : "acc";
  const each = (body: string) =>
    four
      ? `for (var j = 0u; j < 4u; j++) { let ch = 4u * u + j; ${body} }`
      : `{ let ch = u; ${body} }`;
  const suffix = `${i8 ? "I8" : ""}${four ? "x4" : ""}`;
  const fwd: KernelSpec = {
    name: `depthwise${suffix}`,
    bindings: [w("Y"), r("X", E), r("WQ", E), r("BI"), ...(i8 ? [r("XS"), r("WS")] : [])],
    body: `${CONV}
${LINEAR_MAIN}
  let u = i % ${U}; let m = i / ${U};
  let pq = u32(cP() * cQ()); let img = m / pq; let rem = m % pq;
  let oh = i32(rem / u32(cQ())) * cSH() - cPH(); let ow = i32(rem % u32(cQ())) * cSW() - cPW();
  var acc = ${A}(0);
  for (var r = 0u; r < cR(); r++) {
    let ih = oh + i32(r);
    if (ih < 0 || ih >= cH()) { continue; }
    for (var s = 0u; s < cS(); s++) {
      let iw = ow + i32(s);
      if (iw < 0 || iw >= cW()) { continue; }
      let a = ${ld("X", `((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * ${U} + u`)};
      let b = ${wAt};
      ${mac("a", "b")}
    }
  }
  ${
      each(`var v = f32(${lane("j")})${i8 ? " * (XS[0] * WS[select(0u, ch, pu(6u) == 2u)])" : ""};
    if (pu(5u) == 1u) { v = v + BI[ch]; }
    Y[m * cC() + ch] = v;`)
    }
}`,
  };
  const dgrad: KernelSpec = {
    name: `depthwiseDgrad${suffix}`,
    bindings: [w("DX"), r("DY", E), r("WQ", E), ...(i8 ? [r("DS"), r("WS")] : [])],
    body: `${CONV}
${LINEAR_MAIN}
  let u = i % ${U}; let pix = i / ${U};
  let hw = u32(cH() * cW()); let img = pix / hw; let rem = pix % hw;
  let ih = i32(rem / u32(cW())); let iw = i32(rem % u32(cW()));
  var acc = ${A}(0);
  ${
      COVER(`let a = ${ld("DY", `((img * u32(cP()) + u32(oh)) * u32(cQ()) + u32(ow)) * ${U} + u`)};
          let b = ${wAt};
          ${mac("a", "b")}`)
    }
  ${
      each(`let o = pix * cC() + ch;
    let v = f32(${lane("j")})${i8 ? " * (DS[0] * WS[0])" : ""};
    if (pu(5u) == 1u) { DX[o] = DX[o] + v; } else { DX[o] = v; }`)
    }
}`,
  };
  const wgrad: KernelSpec = {
    name: `depthwiseWgrad${suffix}`,
    bindings: [w("PART"), r("X", E), r("DY", E)],
    body: `${CONV}
${LINEAR_MAIN}
  let taps = cR() * cS();
  let u = i % ${U}; let tap = (i / ${U}) % taps; let sp = i / (${U} * taps);
  let r = tap / cS(); let s = tap % cS();
  let pixels = pu(8u) * u32(cP() * cQ());
  let m0 = sp * pu(24u); let m1 = min(m0 + pu(24u), pixels);
  // pixel m0's (image, row, column), then stepped without division
  let pq = u32(cP() * cQ());
  var img = m0 / pq; var op = i32((m0 % pq) / u32(cQ())); var oq = i32(m0 % u32(cQ()));
  var acc = ${A}(0);
  for (var m = m0; m < m1; m++) {
    let ih = op * cSH() - cPH() + i32(r); let iw = oq * cSW() - cPW() + i32(s);
    if (ih >= 0 && ih < cH() && iw >= 0 && iw < cW()) {
      let a = ${ld("DY", `m * ${U} + u`)};
      let b = ${ld("X", `((img * u32(cH()) + u32(ih)) * u32(cW()) + u32(iw)) * ${U} + u`)};
      ${mac("a", "b")}
    }
    oq += 1;
    if (oq == cQ()) { oq = 0; op += 1; if (op == cP()) { op = 0; img += 1u; } }
  }
  ${each(`PART[(sp * cC() + ch) * taps + tap] = f32(${lane("j")});`)}
}`,
  };
  return { fwd, dgrad, wgrad };
}

/** int8 depthwise weights [C][taps] packed as [taps][C / 4] words (4 channels of a tap). */
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

const F1 = depthwise(false, 1), F4 = depthwise(false, 4);
const I1 = depthwise(true, 1), I4 = depthwise(true, 4);
/** f32 depthwise forward (bias flag in word 5), one channel a thread. */
export const DW_F32 = F1.fwd;
/** f32 depthwise input gradient (word 5: accumulate into dx). */
export const DW_DGRAD_F32 = F1.dgrad;
/** f32 depthwise weight gradient partials [splits][c][tap]. */
export const DW_WGRAD_F32 = F1.wgrad;
/** f32, 4 channels a thread (C % 4 == 0; weights from DW_PACK_F32). */
export const DW_F32_4 = F4.fwd;
/** f32 depthwise input gradient, 4 channels a thread. */
export const DW_DGRAD_F32_4 = F4.dgrad;
/** f32 depthwise weight gradient partials, 4 channels a thread. */
export const DW_WGRAD_F32_4 = F4.wgrad;
/** int8 depthwise forward, the x and w scales in the epilogue, one channel a thread. */
export const DW_I8 = I1.fwd;
/** int8 depthwise input gradient. */
export const DW_DGRAD_I8 = I1.dgrad;
/** int8 depthwise weight gradient partials (exact i32 per split, stored as f32). */
export const DW_WGRAD_I8 = I1.wgrad;
/** int8, 4 channels a thread (C % 4 == 0; weights from DW_PACK_I8). */
export const DW_I8_4 = I4.fwd;
/** int8 depthwise input gradient, 4 channels a thread. */
export const DW_DGRAD_I8_4 = I4.dgrad;
/** int8 depthwise weight gradient partials, 4 channels a thread. */
export const DW_WGRAD_I8_4 = I4.wgrad;
