/**
 * Puts a quantization preset on a model: every conv and linear layer gets its own `Int8Gemm`
 * (except the first conv and the last linear when `fp32FirstLast`), and the model-level view
 * gathers their statistics for logs, their learning-rate factors (UI8) and their state for
 * checkpoints.
 *
 * @module
 */
import { isGemmLayer } from "../nn/layers.ts";
import type { Module } from "../nn/module.ts";
import { FP32 } from "../ops/arithmetic.ts";
import type { QuantConfig } from "./config.ts";
import { Int8Gemm, type LayerQuantStats } from "./int8_gemm.ts";

/** Host-side tensors of a quantizer state, by name (`quant.<layer>.<field>`). */
export type HostTensors = [string, { shape: number[]; data: Float32Array }][];

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
   * ```ts ignore
   * const q = new ModelQuantizer(model, quantConfig("daint8"), 0);
   * ```
   */
  constructor(model: Module, cfg: QuantConfig, seed: number) {
    this.cfg = cfg;
    const gemm = model.namedModules().filter(([, m]) => isGemmLayer(m));
    const layers: Int8Gemm[] = [], fp32: string[] = [];
    gemm.forEach(([name, m], i) => {
      if (!isGemmLayer(m)) return;
      const keep = !cfg.int8 || (cfg.fp32FirstLast && (i === 0 || i === gemm.length - 1));
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

  /** Per-layer statistics of the last step, for the JSONL log. */
  stats(): Record<string, LayerQuantStats> {
    const out: Record<string, LayerQuantStats> = {};
    for (const l of this.layers) if (l.last) out[l.layer] = l.last;
    return out;
  }

  /** Share of bell-shaped channels per layer over all classifications so far. */
  bellShares(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const l of this.layers) {
      const s = l.state;
      out[l.layer] = s.classifiedChannels > 0 ? s.bellChannels / s.classifiedChannels : NaN;
    }
    return out;
  }

  /** The state of every layer as named f32 host tensors. */
  stateTensors(): HostTensors {
    const out: HostTensors = [];
    for (const l of this.layers) {
      const s = l.state;
      const p = `quant.${l.layer}`;
      out.push([`${p}.scalars`, {
        shape: [5],
        data: Float32Array.of(
          s.step,
          s.dsgcRatio,
          s.dsgcDistance,
          s.bellChannels,
          s.classifiedChannels,
        ),
      }]);
      if (s.ema.length > 0) {
        out.push([`${p}.ema`, { shape: [s.ema.length], data: s.ema.slice() }]);
        out.push([`${p}.bell`, { shape: [s.bell.length], data: Float32Array.from(s.bell) }]);
      }
    }
    return out;
  }

  /** Restores `stateTensors()` output; throws a TypeError naming a missing tensor. */
  restore(get: (name: string) => Float32Array | undefined, from: string): void {
    for (const l of this.layers) {
      const p = `quant.${l.layer}`;
      const sc = get(`${p}.scalars`);
      if (!sc || sc.length !== 5) {
        throw new TypeError(
          `Cannot resume from "${from}": it has no quantizer state for layer "${l.layer}" ` +
            `(saved with another --quant?)`,
        );
      }
      const ema = get(`${p}.ema`), bell = get(`${p}.bell`);
      l.state = {
        step: sc[0]!,
        dsgcRatio: sc[1]!,
        dsgcDistance: sc[2]!,
        bellChannels: sc[3]!,
        classifiedChannels: sc[4]!,
        ema: ema ? ema.slice() : new Float32Array(0),
        bell: bell ? Uint8Array.from(bell) : new Uint8Array(0),
      };
    }
  }
}
