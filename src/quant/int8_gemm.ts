/**
 * The INT8 arithmetic of one conv or linear layer: a `GemmArithmetic` that quantizes the operands
 * of its three GEMMs and runs the integer kernels (int8 x int8 -> int32, rescaled in the
 * epilogue), with the layer's quantizer state in device buffers.
 *
 * | GEMM  | int8 operands | scales                                                     |
 * |-------|---------------|------------------------------------------------------------|
 * | fprop | X, W          | X per tensor (max); W per tensor or per output channel      |
 * | dgrad | dY, W         | dY per tensor ("global"); W per tensor                      |
 * | wgrad | X, dY         | X per tensor; dY per output channel with GVQ, else per tensor |
 *
 * A step is one stream of device work with no host round trip: forward quantizes X and W with
 * kernels that write their own scales and keeps only the int8 copies for backward; backward
 * runs the decision op on dY (its per-channel statistics, then the MCS classifier and EMA,
 * mcs-solve's table or UI8's DSGC search: kernels/daint8.h d8_quant_decide) on the device, and
 * quantizes dY in one pass into both versions. TypeScript only configures the decision (the knobs, the
 * mcs-solve table built once from src/quant/solve.ts) and reads the layer's log record and state
 * at step edges.
 *
 * @module
 */
import {
  type Backend,
  type QuantDecision,
  type QuantKnobs,
  quantStateWords,
  ScaleLayout,
} from "../backend/backend.ts";
import type { ConvShape } from "../backend/backend.ts";
import type { Tape } from "../autograd/tape.ts";
import type { GemmArithmetic, GemmSaved } from "../ops/arithmetic.ts";
import { Tensor } from "../tensor.ts";
import type { QuantConfig } from "./config.ts";
import { fitInvertedT, gaussian, laplaceFromSigma, optimalClip } from "./solve.ts";

/** Quantizer statistics of one layer's last step, for logs and reports. */
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

/**
 * The host view of one layer's quantizer state (kernels/daint8.h d8_quant_decide's state
 * words), decoded from a download.
 */
export interface LayerQuantState {
  /** Steps (backward passes) seen. */
  step: number;
  /** Per-channel EMA of the max (MCS), empty before the first step. */
  ema: Float32Array;
  /** Per-channel class from the last classification: 1 bell-shaped, 0 inverted-T. */
  bell: Uint8Array;
  /** UI8: searched clip as a fraction of max |dY| (1 before the first search). */
  dsgcRatio: number;
  /** UI8: cosine distance of that clip at the last search (drives the LR scaling). */
  dsgcDistance: number;
  /** Bell-shaped channels counted over all classifications. */
  bellChannels: number;
  /** Channels classified so far over all classifications (denominator of the run's bell share). */
  classifiedChannels: number;
}

/** Decodes the state words of a layer with `channels` channels. */
export function decodeQuantState(words: Uint32Array, channels: number): LayerQuantState {
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  const u64 = (i: number) => words[i]! + words[i + 1]! * 2 ** 32;
  const started = words[8] === 1;
  return {
    step: u64(0),
    bellChannels: u64(2),
    classifiedChannels: u64(4),
    dsgcRatio: f[6]! > 0 ? f[6]! : 1,
    dsgcDistance: f[7]!,
    ema: started ? f.slice(16, 16 + channels) : new Float32Array(0),
    bell: started
      ? Uint8Array.from(words.subarray(16 + channels, 16 + 2 * channels))
      : new Uint8Array(0),
  };
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

/** Wellons' lowbias32, the mixer of the stochastic-rounding hash (kernels/daint8.h). */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The mcs-solve table's grid: s/sigma optima at max/sigma = i * step for i < size. */
export const SOLVE_TABLE = { max: 64, step: 0.125, size: 513 } as const;

const tableCache = new Map<string, Float32Array>();

/**
 * The mcs-solve table [3, SOLVE_TABLE.size]: the optimal clip over sigma of the Gaussian,
 * Laplace and fitted inverted-T families at max/sigma = i * step, for magnitude weight `alpha`
 * (src/quant/solve.ts). The inverted-T row repeats Laplace where the fit does not exist
 * (max/sigma <= sqrt(3) * 1.001) and when `withInvertedT` is false. Built once per process.
 */
export function solveTable(alpha: number, withInvertedT: boolean): Float32Array {
  const key = `${alpha}/${withInvertedT}`;
  const hit = tableCache.get(key);
  if (hit) return hit;
  const { size, step } = SOLVE_TABLE;
  const t = new Float32Array(3 * size);
  for (let i = 0; i < size; i++) {
    const r = i * step;
    if (r <= 0) continue; // a zero max clips at 0
    t[i] = optimalClip(gaussian(1), { alpha, max: r }).s;
    t[size + i] = optimalClip(laplaceFromSigma(1), { alpha, max: r }).s;
    t[2 * size + i] = withInvertedT && r > Math.sqrt(3) * 1.001
      ? optimalClip(fitInvertedT(1, r), { alpha, max: r }).s
      : t[size + i]!;
  }
  tableCache.set(key, t);
  return t;
}

interface Int8Saved extends GemmSaved {
  readonly kind: "int8";
  readonly xq: Tensor;
  readonly xScale: Tensor;
  readonly wq: Tensor;
  readonly wScale: Tensor;
  readonly w: Tensor;
}

/** The persistent device buffers of one layer's quantizer. */
interface Buffers extends QuantDecision {
  stats: Tensor;
  table: Tensor | null;
}

/** INT8 GEMMs with the quantizer state of one layer. */
export class Int8Gemm implements GemmArithmetic {
  readonly name: string;
  /** The layer's name in the model (`layer1.0.conv1`). */
  readonly layer: string;
  /** The quantization knobs this layer follows. */
  readonly cfg: QuantConfig;
  /** Measure the quantization error of dY on the next backward (into the log record). */
  measureError = false;
  /**
   * UI8's cosine distance of the last search, as read at a step edge (`syncLrScale`): the layer
   * learning-rate factor follows it from the next step on.
   */
  dsgcDistance = 0;
  readonly #seedKey: number;
  #buf: Buffers | null = null;
  /** Backward passes so far: the host's count of the device counter (it keys the hash). */
  #step = 0;
  #pendingState: Int32Array | null = null;

  /**
   * INT8 arithmetic for layer `layer`, the `index`-th GEMM layer of the model; `index` and `seed`
   * fix the stochastic-rounding streams, so runs are reproducible.
   *
   * @example
   * ```ts
   * import { Int8Gemm } from "./int8_gemm.ts";
   * import { quantConfig } from "./config.ts";
   * const q = new Int8Gemm("conv2", 1, quantConfig("daint8"), 0);
   * console.assert(q.lrScale === 1);
   * ```
   */
  constructor(layer: string, index: number, cfg: QuantConfig, seed: number) {
    this.name = cfg.name;
    this.layer = layer;
    this.cfg = cfg;
    this.#seedKey = mix32((mix32(seed >>> 0) + Math.imul(index + 1, 0x9e3779b9)) >>> 0);
  }

  /** Backward passes seen. */
  get step(): number {
    return this.#step;
  }

  /** UI8's layer learning-rate factor (1 unless lrScaling). */
  get lrScale(): number {
    if (!this.cfg.lrScaling || this.#step === 0) return 1;
    return Math.max(Math.exp(-this.cfg.lrScaleBeta * this.dsgcDistance), this.cfg.lrScaleFloor);
  }

  /** Whether the last backward ran a DSGC search (the distance is worth reading). */
  get searchedLastStep(): boolean {
    return this.cfg.clip === "dsgc" && this.#step > 0 &&
      (this.#step - 1) % this.cfg.statsPeriod === 0;
  }

  /** The stochastic-rounding seed of backward pass `step` (u32). */
  #seed(step: number): number {
    return mix32((this.#seedKey ^ mix32(step >>> 0) ^ Math.floor(step / 2 ** 32)) >>> 0);
  }

  #knobs(k: number): QuantKnobs {
    const c = this.cfg;
    return {
      channels: k,
      clip: c.clip,
      gvq: c.gvq,
      statsPeriod: c.statsPeriod,
      dsgcCandidates: c.dsgcCandidates,
      dsgcMinRatio: c.dsgcMinRatio,
      sharpInvertedT: c.sharpFamily === "inverted-t",
      lambda: c.lambda,
      k: c.k,
      A: c.A,
      ...(c.clip === "mcs-solve"
        ? { table: { size: SOLVE_TABLE.size, max: SOLVE_TABLE.max, step: SOLVE_TABLE.step } }
        : {}),
    };
  }

  /** The layer's device buffers, created on the first backward (when dY's channels are known). */
  #buffers(b: Backend, k: number): Buffers {
    if (this.#buf) {
      if (this.#buf.stats.shape[1] !== k) {
        throw new TypeError(
          `Cannot run INT8 layer "${this.layer}" with ${k} output channels: its quantizer ` +
            `state has ${this.#buf.stats.shape[1]}`,
        );
      }
      return this.#buf;
    }
    const state = Tensor.from(
      b,
      this.#pendingState ?? new Int32Array(quantStateWords(k)),
      [quantStateWords(k)],
      "i32",
    );
    this.#pendingState = null;
    const gvq = this.cfg.gvq;
    const table = this.cfg.clip === "mcs-solve"
      ? Tensor.from(
        b,
        solveTable(this.cfg.alpha, this.cfg.sharpFamily === "inverted-t"),
        [3, SOLVE_TABLE.size],
        "f32",
      )
      : null;
    this.#buf = {
      state,
      clipTensor: Tensor.empty(b, [1]),
      scaleTensor: Tensor.empty(b, [1]),
      clipsChannel: gvq ? Tensor.empty(b, [k]) : null,
      scalesChannel: gvq ? Tensor.empty(b, [k]) : null,
      record: Tensor.full(b, [8], 0),
      stats: Tensor.empty(b, [4, k]),
      table,
    };
    return this.#buf;
  }

  forward(
    tape: Tape,
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    s: ConvShape,
  ): GemmSaved {
    const b = tape.backend;
    const xq = tape.empty(x.shape, "i8"), xScale = tape.empty([1]);
    b.quantizeI8MaxScale(xq, xScale, x, x.size, 1, ScaleLayout.tensor);
    const perChannel = this.cfg.weightPerChannel;
    const k = w.shape[0]!;
    const wq = tape.empty(w.shape, "i8"), wScale = tape.empty([perChannel ? k : 1]);
    if (perChannel) b.quantizeI8MaxScale(wq, wScale, w, k, w.size / k, ScaleLayout.outer);
    else b.quantizeI8MaxScale(wq, wScale, w, w.size, 1, ScaleLayout.tensor);
    b.conv2dI8(
      y,
      xq,
      wq,
      bias,
      xScale,
      wScale,
      perChannel ? ScaleLayout.outer : ScaleLayout.tensor,
      s,
    );
    // Backward reads only the int8 copies: the f32 x is free to go.
    const saved: Int8Saved = {
      kind: "int8",
      xq: tape.save(xq),
      xScale: tape.save(xScale),
      wq: tape.save(wq),
      wScale: tape.save(wScale),
      w: tape.save(w),
    };
    return saved;
  }

  backward(
    tape: Tape,
    saved: GemmSaved,
    dy: Tensor,
    dx: Tensor | null,
    dw: Tensor | null,
    s: ConvShape,
    accumulateDx = false,
  ): void {
    const sv = saved as Int8Saved;
    const b = tape.backend, cfg = this.cfg, k = s.k;
    const rows = dy.size / k;
    const buf = this.#buffers(b, k);
    b.quantDecide(buf, buf.stats, dy, buf.table, rows, this.#knobs(k));
    const seed = this.#seed(this.#step);
    this.#step++;
    const tq = tape.empty(dy.shape, "i8");
    let cq: Tensor | null = null;
    if (cfg.gvq) {
      cq = tape.empty(dy.shape, "i8");
      b.quantizeI8Dual(
        tq,
        cq,
        dy,
        rows,
        k,
        buf.clipTensor,
        buf.clipsChannel!,
        cfg.stochastic,
        seed,
      );
    } else {
      b.quantizeI8(tq, dy, rows * k, 1, buf.clipTensor, ScaleLayout.tensor, cfg.stochastic, seed);
    }
    if (this.measureError) {
      if (cq) b.quantError(buf.record, dy, cq, buf.clipsChannel!, rows, k, ScaleLayout.inner);
      else b.quantError(buf.record, dy, tq, buf.clipTensor, rows, k, ScaleLayout.tensor);
    }
    if (dx) {
      let wq = sv.wq, wScale = sv.wScale;
      if (cfg.weightPerChannel) {
        // dgrad reduces over output channels: it needs one weight scale for the whole tensor.
        wq = tape.empty(sv.w.shape, "i8");
        wScale = tape.empty([1]);
        b.quantizeI8MaxScale(wq, wScale, sv.w, sv.w.size, 1, ScaleLayout.tensor);
      }
      b.conv2dDgradI8(dx, tq, wq, buf.scaleTensor, wScale, s, accumulateDx);
    }
    if (dw) {
      if (cq) {
        b.conv2dWgradI8(dw, sv.xq, cq, sv.xScale, buf.scalesChannel!, ScaleLayout.inner, s);
      } else {
        b.conv2dWgradI8(dw, sv.xq, tq, sv.xScale, buf.scaleTensor, ScaleLayout.tensor, s);
      }
    }
  }

  /** The layer's log record of its last step, read at a step edge (null before the first). */
  async readStats(): Promise<LayerQuantStats | null> {
    if (!this.#buf || this.#step === 0) return null;
    const r = new Float32Array(8);
    await this.#buf.record.backend.read(r, this.#buf.record);
    return {
      clipTensor: r[0]!,
      clipMean: r[1]!,
      clipMin: r[2]!,
      clipMax: r[3]!,
      gradMax: r[4]!,
      bellShare: r[5]!,
      ...(this.measureError ? { quantError: r[7]! } : {}),
      ...(this.cfg.clip === "dsgc" ? { cosineDistance: r[6]! } : {}),
    };
  }

  /** The state words on the host (a step-edge read), or null before the first backward. */
  async readStateWords(): Promise<Uint32Array | null> {
    if (!this.#buf) {
      return this.#pendingState ? new Uint32Array(this.#pendingState.slice().buffer) : null;
    }
    const w = new Uint32Array(this.#buf.state.size);
    await this.#buf.state.backend.read(w, this.#buf.state);
    return w;
  }

  /** The decoded state (a step-edge read), or null before the first backward. */
  async readState(): Promise<LayerQuantState | null> {
    const w = await this.readStateWords();
    return w ? decodeQuantState(w, (w.length - 16) / 2) : null;
  }

  /** Reads UI8's search distance at a step edge after a search, for the LR factor. */
  async syncLrScale(): Promise<void> {
    const st = await this.readState();
    if (st) this.dsgcDistance = st.dsgcDistance;
  }

  /**
   * Restores state words saved by `readStateWords` (uploaded with the first backward); throws a
   * RangeError naming the problem when they are not a valid state.
   */
  restoreStateWords(words: Uint32Array, from: string): void {
    const c = (words.length - 16) / 2;
    const where = `Cannot resume from "${from}": quantizer state of layer "${this.layer}"`;
    if (!Number.isInteger(c) || c < 1) {
      throw new RangeError(`${where} has ${words.length} words, not 16 + 2 x channels`);
    }
    const st = decodeQuantState(words, c);
    if (words[8] !== 0 && words[8] !== 1) {
      throw new RangeError(`${where} has a bad start flag ${words[8]}`);
    }
    if (!(st.dsgcRatio > 0 && st.dsgcRatio <= 1)) {
      throw new RangeError(`${where} has a DSGC ratio ${st.dsgcRatio} outside (0, 1]`);
    }
    if (!(Number.isFinite(st.dsgcDistance) && st.dsgcDistance >= 0)) {
      throw new RangeError(`${where} has a DSGC distance ${st.dsgcDistance}`);
    }
    const badEma = st.ema.findIndex((v) => !(Number.isFinite(v) && v >= 0));
    if (badEma >= 0) {
      throw new RangeError(`${where} has EMA clip ${st.ema[badEma]} at channel ${badEma}`);
    }
    const badBell = st.bell.findIndex((v) => v > 1);
    if (badBell >= 0) {
      throw new RangeError(`${where} has class ${st.bell[badBell]} at channel ${badBell}`);
    }
    if (st.bellChannels > st.classifiedChannels) {
      throw new RangeError(`${where} counts more bell channels than classified ones`);
    }
    if (this.#buf) {
      if (this.#buf.state.size !== words.length) {
        throw new RangeError(
          `${where} is for ${c} channels, the layer has ${(this.#buf.state.size - 16) / 2}`,
        );
      }
      this.#buf.state.backend.upload(
        this.#buf.state,
        new Int32Array(words.buffer, words.byteOffset, words.length),
      );
    } else {
      this.#pendingState = new Int32Array(words.slice().buffer);
    }
    this.#step = st.step;
    this.dsgcDistance = st.dsgcDistance;
  }

  /** Frees the layer's device buffers (its state is lost unless read first). */
  dispose(): void {
    if (!this.#buf) return;
    for (const t of Object.values(this.#buf)) if (t instanceof Tensor) t.dispose();
    this.#buf = null;
  }
}
