/**
 * Puts a quantization preset on a model: every conv and linear layer gets its own `Int8Gemm`
 * (except the first conv and the last linear when `fp32FirstLast`, and layers with fewer input
 * channels per tap than `minInt8Channels`), and the model-level view
 * gathers their statistics for logs, their learning-rate factors (UI8) and their state for
 * checkpoints.
 *
 * @module
 */
import { Conv2d, isGemmLayer, Linear } from "../nn/layers.ts";
import type { Module } from "../nn/module.ts";
import { FP32 } from "../ops/arithmetic.ts";
import type { QuantConfig } from "./config.ts";
import { Int8Gemm, type LayerQuantStats } from "./int8_gemm.ts";

/** Host-side tensors of a quantizer state, by name (`quant.<layer>.state`): u32 words. */
export type HostTensors = [string, { shape: number[]; data: Uint32Array }][];

/** The reduction per kernel tap of a GEMM layer: input channels per group, or input features. */
function tapChannels(m: Module): number {
  if (m instanceof Conv2d) return m.inChannels / m.options.groups;
  if (m instanceof Linear) return m.inFeatures;
  return Infinity;
}

/** The quantizers of one model. */
export class ModelQuantizer {
  /** The quantization knobs every INT8 layer follows. */
  readonly cfg: QuantConfig;
  /** INT8 layers by model name; layers left in FP32 are not listed. */
  readonly layers: readonly Int8Gemm[];
  /** Names of the layers kept in FP32. */
  readonly fp32Layers: readonly string[];

  /**
   * Attaches `cfg` to `model` (fp32 presets reset every layer to FP32).
   *
   * @example
   * ```ts
   * import { getBackend } from "../backend/registry.ts";
   * import { Rng } from "../data/rng.ts";
   * import { lenet5 } from "../models/lenet.ts";
   * import { quantConfig } from "./config.ts";
   * import { ModelQuantizer } from "./quantizer.ts";
   * const model = lenet5({ backend: getBackend("cpu"), rng: new Rng(0) });
   * const q = new ModelQuantizer(model, quantConfig("daint8"), 0);
   * console.assert(q.layers.length === 3 && q.fp32Layers.length === 2);
   * model.dispose();
   * ```
   */
  constructor(model: Module, cfg: QuantConfig, seed: number) {
    this.cfg = cfg;
    const gemm = model.namedModules().filter(([, m]) => isGemmLayer(m));
    const layers: Int8Gemm[] = [], fp32: string[] = [];
    gemm.forEach(([name, m], i) => {
      if (!isGemmLayer(m)) return;
      const keep = !cfg.int8 || (cfg.fp32FirstLast && (i === 0 || i === gemm.length - 1)) ||
        tapChannels(m) < cfg.minInt8Channels;
      if (keep) {
        m.arithmetic = FP32;
        fp32.push(name);
      } else {
        const q = new Int8Gemm(name, i, cfg, seed);
        m.arithmetic = q;
        layers.push(q);
      }
    });
    this.layers = layers;
    this.fp32Layers = fp32;
  }

  /** Ask every layer to measure its quantization error on the next backward. */
  set measureError(on: boolean) {
    for (const l of this.layers) l.measureError = on;
  }

  /** Learning-rate factors by parameter name (`<layer>.weight`, `<layer>.bias`), UI8 only. */
  lrScales(): Map<string, number> {
    const out = new Map<string, number>();
    if (!this.cfg.lrScaling) return out;
    for (const l of this.layers) {
      out.set(`${l.layer}.weight`, l.lrScale);
      out.set(`${l.layer}.bias`, l.lrScale);
    }
    return out;
  }

  /** UI8: reads the search distances of layers that searched in the last step (a step edge). */
  async syncLrScales(): Promise<void> {
    for (const l of this.layers) if (l.cfg.lrScaling && l.searchedLastStep) await l.syncLrScale();
  }

  /** Per-layer statistics of the last step, for the JSONL log (read at a step edge). */
  async stats(): Promise<Record<string, LayerQuantStats>> {
    const out: Record<string, LayerQuantStats> = {};
    for (const l of this.layers) {
      const st = await l.readStats();
      if (st) out[l.layer] = st;
    }
    return out;
  }

  /** Share of bell-shaped channels per layer over all classifications so far (a step edge). */
  async bellShares(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const l of this.layers) {
      const s = await l.readState();
      out[l.layer] = s && s.classifiedChannels > 0 ? s.bellChannels / s.classifiedChannels : NaN;
    }
    return out;
  }

  /**
   * The state of every layer as named host tensors (`quant.<layer>.state`, the u32 state words
   * of kernels/daint8.h bit for bit), downloaded at a step edge for checkpoints.
   */
  async stateTensors(): Promise<HostTensors> {
    const out: HostTensors = [];
    for (const l of this.layers) {
      const w = await l.readStateWords();
      if (w) out.push([`quant.${l.layer}.state`, { shape: [w.length], data: w }]);
    }
    return out;
  }

  /**
   * Restores `stateTensors()` output for a run at `step` > 0; throws a TypeError naming a
   * missing tensor and a RangeError for a state that is not valid.
   */
  restore(get: (name: string) => Uint32Array | undefined, from: string, step: number): void {
    for (const l of this.layers) {
      const w = get(`quant.${l.layer}.state`);
      if (!w) {
        if (step === 0) continue;
        throw new TypeError(
          `Cannot resume from "${from}": it has no quantizer state for layer "${l.layer}" ` +
            `(saved with another --quant, or by an older daint8)`,
        );
      }
      l.restoreStateWords(w, from);
    }
  }

  /** Frees every layer's device state. */
  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}
