/**
 * Layers the model zoo adds: ReLU6, Dropout (seeded), adaptive average pooling, channel
 * concatenation of parallel branches, and the weight initializers torchvision uses.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import type { Rng } from "../data/rng.ts";
import { concatChannels } from "../ops/elementwise.ts";
import { adaptiveAvgPool2d, dropout, relu6 } from "../ops/zoo.ts";
import { type Pair, pair } from "../ops/conv.ts";
import { BatchNorm2d, Conv2d, Linear } from "./layers.ts";
import { type InitContext, Module } from "./module.ts";
import { Tensor as T } from "../tensor.ts";

/** min(max(x, 0), 6), MobileNetV2's activation. */
export class ReLU6 extends Module {
  /** min(max(x, 0), 6) elementwise, same shape as x. */
  forward(tape: Tape, x: Tensor): Tensor {
    return relu6(tape, x);
  }
}

/**
 * Inverted dropout with probability `p`: identity in evaluation mode; in training mode a mask
 * drawn from the layer's own generator (split from the model's init generator, so a seed fixes
 * every mask). The generator's state is not checkpointed: a resumed run draws other masks.
 */
export class Dropout extends Module {
  /** The layer's mask generator. */
  readonly rng: Rng;
  /** Drops with probability `p` in [0, 1); the generator is split from `init.rng`. */
  constructor(init: InitContext, readonly p = 0.5) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout probability must be in [0, 1), got ${p}`);
    this.rng = init.rng.split();
  }
  /** x in evaluation mode, else the dropped-out x (as PyTorch, also on a no-gradient tape). */
  forward(tape: Tape, x: Tensor): Tensor {
    if (!this.training) return x;
    return dropout(tape, x, this.p, this.rng);
  }
}

/** Adaptive average pooling to a fixed output size, as torch.nn.AdaptiveAvgPool2d. */
export class AdaptiveAvgPool2d extends Module {
  /** Output [height, width]. */
  readonly size: [number, number];
  /** Pools any [n, h, w, c] input to [n, size, c]. */
  constructor(size: Pair) {
    super();
    this.size = pair(size);
  }
  /** y [n, p, q, c] from x [n, h, w, c]. */
  forward(tape: Tape, x: Tensor): Tensor {
    return adaptiveAvgPool2d(tape, x, this.size);
  }
}

/** Concatenates NHWC tensors along channels, in order. */
export function concatAll(tape: Tape, parts: readonly Tensor[]): Tensor {
  if (parts.length === 0) throw new TypeError("Cannot concat: no tensors given");
  let y = parts[0]!;
  for (let i = 1; i < parts.length; i++) y = concatChannels(tape, y, parts[i]!);
  return y;
}

/** Replaces a tensor's values with `data` (same size). */
export function setTensor(init: InitContext, t: Tensor, data: Float32Array): void {
  if (init.zeros) return;
  const fresh = T.from(init.backend, data, [...t.shape], "f32");
  init.backend.copy(t, fresh);
  fresh.dispose();
}

/**
 * N(0, std^2) values from `init.rng` (Box-Muller on 32-bit draws, both outputs used); with
 * `truncate`, values beyond +-2 std are redrawn (torch's trunc_normal_).
 */
export function normalValues(
  init: InitContext,
  size: number,
  std: number,
  truncate = false,
): Float32Array {
  const data = new Float32Array(size);
  if (init.zeros) return data;
  const rng = init.rng, limit = 2 * std, inv = 1 / 4294967296;
  let i = 0;
  while (i < size) {
    const r = Math.sqrt(-2 * Math.log((rng.nextU32() + 1) * inv)) * std;
    const a = 2 * Math.PI * rng.nextU32() * inv;
    const v1 = r * Math.cos(a), v2 = r * Math.sin(a);
    if (!truncate || Math.abs(v1) <= limit) data[i++] = v1;
    if (i < size && (!truncate || Math.abs(v2) <= limit)) data[i++] = v2;
  }
  return data;
}

/** Kaiming-normal (fan_out, ReLU gain) weights for a conv: N(0, 2 / (k * r * s)). */
export function kaimingFanOut(init: InitContext, conv: Conv2d): void {
  const [k, r, s] = conv.weight.shape as [number, number, number, number];
  setTensor(init, conv.weight, normalValues(init, conv.weight.size, Math.sqrt(2 / (k * r * s))));
  if (conv.bias) init.backend.fill(conv.bias, 0);
}

/**
 * torchvision's usual initialization for the whole tree: Kaiming-normal (fan_out) convolutions
 * with zero bias, batch norm gamma 1 / beta 0 (already so), and linear weights from N(0,
 * `linearStd`^2) with zero bias (`linearStd` null keeps PyTorch's default uniform init).
 */
export function torchvisionInit(init: InitContext, model: Module, linearStd: number | null): void {
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d) kaimingFanOut(init, m);
    else if (m instanceof Linear && linearStd !== null) {
      setTensor(init, m.weight, normalValues(init, m.weight.size, linearStd));
      if (m.bias) init.backend.fill(m.bias, 0);
    } else if (m instanceof BatchNorm2d) {
      init.backend.fill(m.state.gamma, 1);
      init.backend.fill(m.state.beta, 0);
    }
  }
}

/** A model whose classifier flattens a [c, h, w] feature map in PyTorch (NCHW order). */
export interface TorchFlatten {
  /**
   * Linear layers (by name) whose input is a flattened feature map, with the map's [c, h, w]:
   * importing torchvision weights permutes their columns from c-h-w order to our h-w-c order.
   */
  readonly torchFlatten: Readonly<Record<string, readonly [number, number, number]>>;
}

/** Whether `m` declares flattened feature maps (see {@linkcode TorchFlatten}). */
export function hasTorchFlatten(m: Module): m is Module & TorchFlatten {
  return "torchFlatten" in m;
}
