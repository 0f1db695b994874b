/**
 * The INT8 arithmetic of one conv or linear layer: a `GemmArithmetic` that quantizes the operands
 * of its three GEMMs and runs the integer kernels (int8 x int8 -> int32, rescaled in the
 * epilogue), with the layer's quantizer state (clips, EMA, channel classes, UI8 search results).
 *
 * | GEMM  | int8 operands | scales                                                     |
 * |-------|---------------|------------------------------------------------------------|
 * | fprop | X, W          | X per tensor (max); W per tensor or per output channel      |
 * | dgrad | dY, W         | dY per tensor ("global"); W per tensor                      |
 * | wgrad | X, dY         | X per tensor; dY per output channel with GVQ, else per tensor |
 *
 * dY is quantized in one pass into both versions when GVQ is on. The per-tensor dY clip is the
 * tensor max (UI8: its direction-sensitive search); the per-channel clips follow `cfg.clip`.
 * X is kept in INT8 between fprop and wgrad (the saved activation is a quarter of the size).
 *
 * Decisions happen in TypeScript from per-channel statistics the kernels measure ([4, c]: max,
 * std, share above std, mean), read back once per layer and step.
 *
 * @module
 */
import { ScaleLayout } from "../backend/backend.ts";
import type { ConvShape } from "../backend/backend.ts";
import type { Tape } from "../autograd/tape.ts";
import type { GemmArithmetic } from "../ops/arithmetic.ts";
import { Tensor } from "../tensor.ts";
import type { QuantConfig } from "./config.ts";
import { fitInvertedT, gaussian, laplaceFromSigma, optimalClip } from "./solve.ts";

/** Quantizer statistics of one layer's last step with statistics, for logs and reports. */
export interface LayerQuantStats {
  /** Per-tensor dY clip (dgrad). */
  clipTensor: number;
  /** Per-channel dY clips (wgrad): mean, min, max. */
  clipMean: number;
  /** Smallest per-channel dY clip (the per-tensor clip without GVQ). */
  clipMin: number;
  /** Largest per-channel dY clip (the per-tensor clip without GVQ). */
  clipMax: number;
  /** Max |dY| of the step. */
  gradMax: number;
  /** Share of channels classified bell-shaped at the last classification. */
  bellShare: number;
  /** Relative L2 error of the dequantized dY (the wgrad version), when measured. */
  quantError?: number;
  /** UI8: cosine distance of the searched clip. */
  cosineDistance?: number;
}

/** Serializable state of one layer's quantizer. */
export interface LayerQuantState {
  /** Steps (backward passes) seen. */
  step: number;
  /** Per-channel EMA of the max (MCS), empty before the first step. */
  ema: Float32Array;
  /** Per-channel class from the last classification: 1 bell-shaped, 0 inverted-T. */
  bell: Uint8Array;
  /** UI8: searched clip as a fraction of max |dY|, and its cosine distance. */
  dsgcRatio: number;
  /** UI8: cosine distance of that clip at the last search (drives the LR scaling). */
  dsgcDistance: number;
  /** Running counts for the bell share over the run. */
  bellChannels: number;
  /** Channels classified so far over all classifications (denominator of the run's bell share). */
  classifiedChannels: number;
}

function scaleTensor(tape: Tape, clips: Float32Array): Tensor {
  return tape.own(Tensor.from(tape.backend, clips.map((c) => c / 127), [clips.length], "f32"));
}

function clipTensor(tape: Tape, clips: Float32Array): Tensor {
  return tape.own(Tensor.from(tape.backend, clips, [clips.length], "f32"));
}

/** Cosine distance 1 - cos(g, q_s(g)) of nearest-rounded quantization with clip s. */
export function cosineDistance(g: Float32Array, s: number): number {
  if (!(s > 0)) return 1;
  let dot = 0, gg = 0, qq = 0;
  const k = 127 / s, inv = s / 127;
  for (let i = 0; i < g.length; i++) {
    const v = g[i]!;
    const c = v > s ? s : v < -s ? -s : v;
    const q = Math.sign(c) * Math.floor(Math.abs(c) * k + 0.5) * inv;
    dot += v * q;
    gg += v * v;
    qq += q * q;
  }
  return gg === 0 || qq === 0 ? (gg === 0 ? 0 : 1) : 1 - dot / Math.sqrt(gg * qq);
}

interface DyQuant {
  id: number;
  tq: Tensor;
  tScale: Tensor;
  cq: Tensor | null;
  cScale: Tensor | null;
}

/** INT8 GEMMs with the quantizer state of one layer. */
export class Int8Gemm implements GemmArithmetic {
  readonly name: string;
  /** The layer's name in the model (`layer1.0.conv1`). */
  readonly layer: string;
  /** The quantization knobs this layer follows. */
  readonly cfg: QuantConfig;
  /**
   * The layer's quantizer state, updated every backward and replaced wholesale when a checkpoint is
   * restored.
   */
  state: LayerQuantState = {
    step: 0,
    ema: new Float32Array(0),
    bell: new Uint8Array(0),
    dsgcRatio: 1,
    dsgcDistance: 0,
    bellChannels: 0,
    classifiedChannels: 0,
  };
  /** Statistics of the last step (refreshed every step). */
  last: LayerQuantStats | null = null;
  /** Measure the quantization error on the next backward (costs a read-back). */
  measureError = false;
  readonly #seedBase: bigint;
  #saved: { x: Tensor; xq: Tensor; xScale: Tensor; w: Tensor; wq: Tensor; wScale: Tensor } | null =
    null;
  #dy: DyQuant | null = null;
  #solveCache = new Map<string, number>();

  /**
   * INT8 arithmetic for layer `layer`, the `index`-th GEMM layer of the model; `index` and `seed`
   * fix the stochastic-rounding streams, so runs are reproducible.
   */
  constructor(layer: string, index: number, cfg: QuantConfig, seed: number) {
    this.name = cfg.name;
    this.layer = layer;
    this.cfg = cfg;
    this.#seedBase = BigInt(seed) * 1_000_003n + BigInt(index) * 7_919n;
  }

  /** UI8's layer learning-rate factor (1 unless lrScaling). */
  get lrScale(): number {
    if (!this.cfg.lrScaling || this.state.step === 0) return 1;
    return Math.max(
      Math.exp(-this.cfg.lrScaleBeta * this.state.dsgcDistance),
      this.cfg.lrScaleFloor,
    );
  }

  /** Per-tensor max-clip quantization of `t` on the device: int8 values and scale (clip/127). */
  #quantPerTensor(tape: Tape, t: Tensor): { q: Tensor; scale: Tensor } {
    const b = tape.backend;
    const clip = tape.empty([1]);
    b.absmax(clip, t);
    const q = tape.empty(t.shape, "i8");
    b.quantizeI8(q, t, t.size, 1, clip, ScaleLayout.tensor, false, 0n);
    const scale = tape.empty([1]);
    b.fill(scale, 0);
    b.axpy(scale, 1 / 127, clip);
    return { q, scale };
  }

  #quantX(tape: Tape, x: Tensor): { xq: Tensor; xScale: Tensor } {
    const { q, scale } = this.#quantPerTensor(tape, x);
    return { xq: q, xScale: scale };
  }

  #quantW(tape: Tape, w: Tensor, perChannel: boolean): { wq: Tensor; wScale: Tensor } {
    if (!perChannel) {
      const { q, scale } = this.#quantPerTensor(tape, w);
      return { wq: q, wScale: scale };
    }
    const b = tape.backend;
    const k = w.shape[0]!, inner = w.size / k;
    const wq = tape.empty(w.shape, "i8");
    // Per output channel: row maxima of the (small) weight on the host.
    const host = w.toFloat32();
    const clips = new Float32Array(k);
    for (let i = 0; i < k; i++) {
      let m = 0;
      for (let j = 0; j < inner; j++) m = Math.max(m, Math.abs(host[i * inner + j]!));
      clips[i] = m;
    }
    b.quantizeI8(wq, w, k, inner, clipTensor(tape, clips), ScaleLayout.outer, false, 0n);
    return { wq, wScale: scaleTensor(tape, clips) };
  }

  forward(tape: Tape, y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, s: ConvShape): void {
    const { xq, xScale } = this.#quantX(tape, x);
    const { wq, wScale } = this.#quantW(tape, w, this.cfg.weightPerChannel);
    tape.backend.conv2dI8(
      y,
      xq,
      wq,
      bias,
      xScale,
      wScale,
      this.cfg.weightPerChannel ? ScaleLayout.outer : ScaleLayout.tensor,
      s,
    );
    this.#saved = { x, xq, xScale, w, wq, wScale };
    this.#dy = null;
  }

  dgrad(tape: Tape, dx: Tensor, dy: Tensor, w: Tensor, s: ConvShape): void {
    const q = this.#quantDy(tape, dy, s.k);
    const sv = this.#saved;
    const wt = sv && sv.w.id === w.id && !this.cfg.weightPerChannel
      ? { wq: sv.wq, wScale: sv.wScale }
      : this.#quantW(tape, w, false);
    tape.backend.conv2dDgradI8(dx, q.tq, wt.wq, q.tScale, wt.wScale, s);
  }

  wgrad(tape: Tape, dw: Tensor, x: Tensor, dy: Tensor, s: ConvShape): void {
    const q = this.#quantDy(tape, dy, s.k);
    const sv = this.#saved;
    const xt = sv && sv.x.id === x.id ? sv : this.#quantX(tape, x);
    if (q.cq && q.cScale) {
      tape.backend.conv2dWgradI8(dw, xt.xq, q.cq, xt.xScale, q.cScale, ScaleLayout.inner, s);
    } else {
      tape.backend.conv2dWgradI8(dw, xt.xq, q.tq, xt.xScale, q.tScale, ScaleLayout.tensor, s);
    }
  }

  /** Chooses the clips of dY [rows, k] from its statistics and quantizes it (once per step). */
  #quantDy(tape: Tape, dy: Tensor, k: number): DyQuant {
    if (this.#dy && this.#dy.id === dy.id) return this.#dy;
    const b = tape.backend, cfg = this.cfg, st = this.state;
    const rows = dy.size / k;
    const statsT = tape.empty([4, k]);
    b.channelStats(statsT, dy, rows, k);
    const stats = statsT.toFloat32();
    const max = stats.subarray(0, k), std = stats.subarray(k, 2 * k);
    const share = stats.subarray(2 * k, 3 * k);
    let gmax = 0;
    for (let c = 0; c < k; c++) gmax = Math.max(gmax, max[c]!);
    const refresh = st.step % cfg.statsPeriod === 0;

    // MCS bookkeeping: EMA of each channel's max (first step takes the max), classes.
    if (st.ema.length !== k) {
      st.ema = Float32Array.from(max);
      st.bell = new Uint8Array(k).fill(1);
    } else {
      for (let c = 0; c < k; c++) {
        st.ema[c] = (1 - cfg.k * cfg.A) * st.ema[c]! + cfg.A * max[c]!;
      }
    }
    if (refresh) {
      let bells = 0;
      for (let c = 0; c < k; c++) {
        st.bell[c] = share[c]! > cfg.lambda ? 1 : 0;
        bells += st.bell[c]!;
      }
      st.bellChannels += bells;
      st.classifiedChannels += k;
    }

    let host: Float32Array | null = null;
    const hostDy = () => host ??= dy.toFloat32();
    if (cfg.clip === "dsgc" && refresh) {
      let best = 1, bestD = Infinity;
      for (let i = 0; i < cfg.dsgcCandidates; i++) {
        const r = cfg.dsgcMinRatio +
          (1 - cfg.dsgcMinRatio) * (cfg.dsgcCandidates === 1 ? 1 : i / (cfg.dsgcCandidates - 1));
        const d = cosineDistance(hostDy(), r * gmax);
        if (d < bestD) {
          bestD = d;
          best = r;
        }
      }
      st.dsgcRatio = best;
      st.dsgcDistance = bestD;
    }

    const tClip = cfg.clip === "dsgc" ? st.dsgcRatio * gmax : gmax;
    let cClips: Float32Array | null = null;
    if (cfg.gvq) {
      cClips = new Float32Array(k);
      for (let c = 0; c < k; c++) {
        const m = max[c]!;
        switch (cfg.clip) {
          case "max":
            cClips[c] = m;
            break;
          case "dsgc":
            cClips[c] = st.dsgcRatio * m;
            break;
          case "mcs":
            cClips[c] = st.bell[c] ? m : Math.min(st.ema[c]!, m);
            break;
          case "mcs-solve":
            cClips[c] = this.#solve(st.bell[c] === 1, std[c]!, m);
            break;
        }
      }
    }

    const seed = this.#seedBase * 1_000_003n + BigInt(st.step);
    const tq = tape.empty(dy.shape, "i8");
    const tClipT = clipTensor(tape, Float32Array.of(tClip));
    let cq: Tensor | null = null, cScale: Tensor | null = null;
    if (cClips) {
      cq = tape.empty(dy.shape, "i8");
      b.quantizeI8Dual(
        tq,
        cq,
        dy,
        rows,
        k,
        tClipT,
        clipTensor(tape, cClips),
        cfg.stochastic,
        seed,
      );
      cScale = scaleTensor(tape, cClips);
    } else {
      b.quantizeI8(tq, dy, rows * k, 1, tClipT, ScaleLayout.tensor, cfg.stochastic, seed);
    }

    let cm = tClip, cmin = tClip, cmax = tClip;
    if (cClips) {
      cm = cClips.reduce((a, v) => a + v, 0) / k;
      cmin = Math.min(...cClips);
      cmax = Math.max(...cClips);
    }
    this.last = {
      clipTensor: tClip,
      clipMean: cm,
      clipMin: cmin,
      clipMax: cmax,
      gradMax: gmax,
      bellShare: st.bell.reduce((a, v) => a + v, 0) / k,
      ...(cfg.clip === "dsgc" ? { cosineDistance: st.dsgcDistance } : {}),
    };
    if (this.measureError) {
      const deq = tape.empty(dy.shape);
      if (cq && cClips) {
        b.dequantizeI8(deq, cq, rows, k, clipTensor(tape, cClips), ScaleLayout.inner);
      } else b.dequantizeI8(deq, tq, rows * k, 1, tClipT, ScaleLayout.tensor);
      const g = hostDy(), d = deq.toFloat32();
      let num = 0, den = 0;
      for (let i = 0; i < g.length; i++) {
        num += (g[i]! - d[i]!) ** 2;
        den += g[i]! ** 2;
      }
      this.last.quantError = den > 0 ? Math.sqrt(num / den) : 0;
    }
    st.step++;
    this.#dy = { id: dy.id, tq, tScale: scaleTensor(tape, Float32Array.of(tClip)), cq, cScale };
    return this.#dy;
  }

  /**
   * mcs-solve: the clip minimizing E(s) of the channel's family, fitted to its sigma and max
   * (Gaussian for bell-shaped channels, `sharpFamily` for inverted-T ones). In units of sigma the
   * optimum depends only on max/sigma, so solves are memoized on that ratio (0.01 resolution).
   */
  #solve(bell: boolean, sigma: number, max: number): number {
    if (!(sigma > 0) || !(max > 0)) return max;
    const ratio = Math.round(Math.min(max / sigma, 64) * 100) / 100;
    const useT = !bell && this.cfg.sharpFamily === "inverted-t" && ratio > Math.sqrt(3) * 1.001;
    const key = `${bell ? "g" : useT ? "t" : "l"}${ratio}`;
    let sOverSigma = this.#solveCache.get(key);
    if (sOverSigma === undefined) {
      const family = bell ? gaussian(1) : useT ? fitInvertedT(1, ratio) : laplaceFromSigma(1);
      sOverSigma = optimalClip(family, { alpha: this.cfg.alpha, max: ratio }).s;
      this.#solveCache.set(key, sOverSigma);
    }
    return Math.min(max, sOverSigma * sigma);
  }
}
