/**
 * The quantizer decision of kernels/daint8.h (d8_quant_decide) written out in TypeScript with
 * float32 rounding at every step (Math.fround), as the reference the device op is tested against:
 * max and mcs must match it bit for bit, mcs-solve to the table's resolution, dsgc's distances to
 * 1e-6.
 *
 * @module
 */
import type { QuantKnobs } from "../../src/backend/backend.ts";
import { cosineDistance } from "../../src/quant/int8_gemm.ts";

const f = Math.fround;

/** The host state of the reference (the same fields the device words hold). */
export interface RefState {
  step: number;
  bellChannels: number;
  classified: number;
  ratio: number; // 0 = not searched
  distance: number;
  started: boolean;
  ema: Float32Array;
  bell: Uint8Array;
}

/** A fresh state for `c` channels. */
export function refState(c: number): RefState {
  return {
    step: 0,
    bellChannels: 0,
    classified: 0,
    ratio: 0,
    distance: 0,
    started: false,
    ema: new Float32Array(c),
    bell: new Uint8Array(c),
  };
}

/** The outputs of one decision. */
export interface RefDecision {
  clipTensor: number;
  clipsChannel: Float32Array | null;
  record: Float32Array;
}

function lookup(row: Float32Array, size: number, pos: number): number {
  let i0 = Math.trunc(pos);
  if (i0 > size - 2) i0 = size - 2;
  const frac = Math.min(f(pos - i0), 1);
  const a = row[i0]!, b = row[i0 + 1]!;
  return f(a + f(f(b - a) * frac));
}

/**
 * One decision on `stats` [4, c] (max, std, share, mean) updating `st`; `dy` for dsgc, `table`
 * [3, size] for mcs-solve.
 */
export function decideRef(
  st: RefState,
  stats: Float32Array,
  kn: QuantKnobs,
  dy: Float32Array | null,
  table: Float32Array | null,
): RefDecision {
  const c = kn.channels;
  const mx = stats.subarray(0, c), sd = stats.subarray(c, 2 * c);
  const share = stats.subarray(2 * c, 3 * c);
  let gmax = 0;
  for (let j = 0; j < c; j++) if (mx[j]! > gmax) gmax = mx[j]!;
  const refresh = st.step % kn.statsPeriod === 0;
  if (!st.started) {
    st.ema.set(mx);
    st.bell.fill(1);
    st.started = true;
  } else {
    const keep = f(1 - f(f(kn.k) * f(kn.A)));
    for (let j = 0; j < c; j++) {
      st.ema[j] = f(f(keep * st.ema[j]!) + f(f(kn.A) * mx[j]!));
    }
  }
  if (refresh) {
    let bells = 0;
    for (let j = 0; j < c; j++) {
      st.bell[j] = share[j]! > f(kn.lambda) ? 1 : 0;
      bells += st.bell[j]!;
    }
    st.bellChannels += bells;
    st.classified += c;
  }
  let ratio = st.ratio > 0 ? st.ratio : 1;
  if (kn.clip === "dsgc" && refresh) {
    const n = kn.dsgcCandidates, lo = f(kn.dsgcMinRatio);
    let best = -1, bestD = Infinity, bestR = 1;
    for (let i = 0; i < n; i++) {
      const r = n === 1 ? 1 : f(lo + f(f(1 - lo) * f(i / (n - 1))));
      const d = cosineDistance(dy!, f(r * gmax));
      if (best < 0 || d < bestD) {
        best = i;
        bestD = d;
        bestR = r;
      }
    }
    ratio = bestR;
    st.ratio = ratio;
    st.distance = f(bestD);
  }
  const clipTensor = kn.clip === "dsgc" ? f(ratio * gmax) : gmax;
  let clips: Float32Array | null = null;
  let cmean = clipTensor, cmin = clipTensor, cmax = clipTensor;
  if (kn.gvq) {
    clips = new Float32Array(c);
    let sum = 0;
    for (let j = 0; j < c; j++) {
      const m = mx[j]!;
      let s = m;
      if (kn.clip === "dsgc") s = f(ratio * m);
      else if (kn.clip === "mcs") s = st.bell[j] ? m : Math.min(st.ema[j]!, m);
      else if (kn.clip === "mcs-solve" && sd[j]! > 0 && m > 0) {
        const t = kn.table!;
        const r = Math.min(f(m / sd[j]!), f(t.max));
        const fam = st.bell[j] ? 0 : kn.sharpInvertedT && r > f(f(Math.sqrt(3)) * f(1.001)) ? 2 : 1;
        const row = table!.subarray(fam * t.size, (fam + 1) * t.size);
        s = Math.min(m, f(lookup(row, t.size, f(r / f(t.step))) * sd[j]!));
      }
      clips[j] = s;
      sum += clips[j]!;
      cmin = j === 0 ? clips[j]! : Math.min(cmin, clips[j]!);
      cmax = j === 0 ? clips[j]! : Math.max(cmax, clips[j]!);
    }
    cmean = f(sum / c);
  }
  let nb = 0;
  for (let j = 0; j < c; j++) nb += st.bell[j]!;
  st.step++;
  return {
    clipTensor,
    clipsChannel: clips,
    record: Float32Array.of(
      clipTensor,
      cmean,
      cmin,
      cmax,
      gmax,
      nb / c,
      kn.clip === "dsgc" ? st.distance : 0,
      0,
    ),
  };
}
