/**
 * Layers: Conv2d, Linear, BatchNorm2d, ReLU, pools, Flatten, Sequential. Conv2d and Linear run
 * their GEMMs through a swappable `arithmetic` (fp32 by default; quantizers plug in there).
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { BatchNormState } from "../backend/backend.ts";
import type { Tape } from "../autograd/tape.ts";
import { FP32, type GemmArithmetic } from "../ops/arithmetic.ts";
import { conv2d, type Conv2dOptions, linear, type Pair, pair } from "../ops/conv.ts";
import { flatten, relu } from "../ops/elementwise.ts";
import { batchNorm, batchNormRelu } from "../ops/norm.ts";
import { globalAvgPool, maxPool2d, type PoolOptions } from "../ops/pool.ts";
import { Tensor as T } from "../tensor.ts";
import { type InitContext, Module, uniformTensor } from "./module.ts";

/** A layer whose GEMMs a quantizer can take over. */
export interface GemmLayer {
  /**
   * How the layer runs its fprop, dgrad and wgrad GEMMs; `FP32` by default, an `Int8Gemm` once a
   * `ModelQuantizer` takes the layer over.
   */
  arithmetic: GemmArithmetic;
  /** The layer's f32 weight: [out, kh, kw, in/groups] (OHWI) for Conv2d, [out, in] for Linear. */
  readonly weight: Tensor;
}

/** Whether `m` is a Conv2d or Linear. */
export function isGemmLayer(m: Module): m is Module & GemmLayer {
  return m instanceof Conv2d || m instanceof Linear;
}

/** 2-D convolution layer, weight [out, kh, kw, in/groups] (OHWI), optional bias [out]. */
export class Conv2d extends Module implements GemmLayer {
  /** Input channels c of x [n, h, w, c]. */
  readonly inChannels: number;
  /** Output channels k of y [n, p, q, k]. */
  readonly outChannels: number;
  /** Kernel [height, width]. */
  readonly kernel: [number, number];
  /** Stride, padding and groups with their defaults filled in (1, 0, 1). */
  readonly options: Required<Conv2dOptions>;
  /** f32 weight [outChannels, kh, kw, inChannels / groups] (OHWI), parameter `weight`. */
  readonly weight: Tensor;
  /** f32 bias [outChannels] (parameter `bias`), or null when created with `bias: false`. */
  readonly bias: Tensor | null;
  /**
   * How the three GEMMs run: `FP32` by default, an `Int8Gemm` once a `ModelQuantizer` takes the
   * layer over.
   */
  arithmetic: GemmArithmetic = FP32;

  /**
   * Weights from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's default.
   *
   * @example
   * ```ts
   * import { getBackend } from "../backend/registry.ts";
   * import { Rng } from "../data/rng.ts";
   * import { Conv2d } from "./layers.ts";
   * const init = { backend: getBackend("cpu"), rng: new Rng(0) };
   * const conv = new Conv2d(init, 16, 32, 3, { stride: 2, padding: 1, bias: false });
   * console.assert(conv.weight.shape.join() === "32,3,3,16"); // OHWI
   * conv.dispose();
   * ```
   */
  constructor(
    init: InitContext,
    inChannels: number,
    outChannels: number,
    kernel: Pair,
    opts: Conv2dOptions & { bias?: boolean } = {},
  ) {
    super();
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernel = pair(kernel);
    const groups = opts.groups ?? 1;
    this.options = { stride: opts.stride ?? 1, padding: opts.padding ?? 0, groups };
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new RangeError(
        `Cannot create Conv2d: ${inChannels} input and ${outChannels} output channels are not ` +
          `divisible by ${groups} groups`,
      );
    }
    const fanIn = (inChannels / groups) * this.kernel[0] * this.kernel[1];
    const bound = 1 / Math.sqrt(fanIn);
    this.weight = this.param(
      "weight",
      uniformTensor(init, [outChannels, ...this.kernel, inChannels / groups], bound),
    );
    this.bias = opts.bias ?? true
      ? this.param("bias", uniformTensor(init, [outChannels], bound))
      : null;
  }

  /** y [n, p, q, outChannels] from x [n, h, w, inChannels] (NHWC, f32) through `arithmetic`. */
  forward(tape: Tape, x: Tensor): Tensor {
    return conv2d(tape, x, this.weight, this.bias, this.options, this.arithmetic);
  }
}

/** Fully connected layer, weight [out, in], optional bias [out]. */
export class Linear extends Module implements GemmLayer {
  /** Input features: x is [n, inFeatures]. */
  readonly inFeatures: number;
  /** Output features: y is [n, outFeatures]. */
  readonly outFeatures: number;
  /** f32 weight [outFeatures, inFeatures], parameter `weight`. */
  readonly weight: Tensor;
  /** f32 bias [outFeatures] (parameter `bias`), or null when created with `bias: false`. */
  readonly bias: Tensor | null;
  /**
   * How the three GEMMs run: `FP32` by default, an `Int8Gemm` once a `ModelQuantizer` takes the
   * layer over.
   */
  arithmetic: GemmArithmetic = FP32;

  /**
   * Weight and bias from U(-1/sqrt(inFeatures), 1/sqrt(inFeatures)), as PyTorch's default; `bias:
   * false` leaves the bias out.
   */
  constructor(
    init: InitContext,
    inFeatures: number,
    outFeatures: number,
    opts: { bias?: boolean } = {},
  ) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param("weight", uniformTensor(init, [outFeatures, inFeatures], bound));
    this.bias = opts.bias ?? true
      ? this.param("bias", uniformTensor(init, [outFeatures], bound))
      : null;
  }

  /** y [n, outFeatures] = x [n, inFeatures] . weight^T (+ bias), through `arithmetic`. */
  forward(tape: Tape, x: Tensor): Tensor {
    return linear(tape, x, this.weight, this.bias, this.arithmetic);
  }
}

/** Batch normalization over channels (weight = gamma, bias = beta), PyTorch's defaults. */
export class BatchNorm2d extends Module {
  /** Normalized channels: the last dimension of the input. */
  readonly channels: number;
  /** Weight of the batch statistics in the running-statistics update (default 0.1). */
  momentum: number;
  /** Added to the variance before the square root (default 1e-5). */
  eps: number;
  /**
   * gamma (parameter `weight`, starts at 1), beta (`bias`, 0) and the running mean (buffer
   * `running_mean`, 0) and variance (`running_var`, 1), all [channels].
   */
  readonly state: BatchNormState;

  /**
   * Creates the parameters and buffers for `channels` channels; `momentum` and `eps` as PyTorch
   * (0.1, 1e-5).
   */
  constructor(init: InitContext, channels: number, opts: { momentum?: number; eps?: number } = {}) {
    super();
    this.channels = channels;
    this.momentum = opts.momentum ?? 0.1;
    this.eps = opts.eps ?? 1e-5;
    const b = init.backend;
    this.state = {
      gamma: this.param("weight", T.full(b, [channels], 1)),
      beta: this.param("bias", T.full(b, [channels], 0)),
      runningMean: this.buffer("running_mean", T.full(b, [channels], 0)),
      runningVar: this.buffer("running_var", T.full(b, [channels], 1)),
    };
  }

  /**
   * Normalizes x [..., channels] with batch statistics (updating the running ones) in training
   * mode, with the running statistics in evaluation mode.
   */
  forward(tape: Tape, x: Tensor): Tensor {
    return batchNorm(tape, x, this.state, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
    });
  }

  /**
   * relu(this(x) + residual), or relu(this(x)) without a residual (relu6 with `activation`
   * "relu6"): one fused backend op each way in training mode (see `batchNormRelu`), the same
   * values as the separate ops.
   */
  forwardRelu(
    tape: Tape,
    x: Tensor,
    residual: Tensor | null = null,
    activation: "relu" | "relu6" = "relu",
  ): Tensor {
    return batchNormRelu(
      tape,
      x,
      this.state,
      {
        training: this.training,
        momentum: this.momentum,
        eps: this.eps,
      },
      residual,
      activation,
    );
  }
}

/** max(x, 0). */
export class ReLU extends Module {
  /** max(x, 0) elementwise, same shape as x. */
  forward(tape: Tape, x: Tensor): Tensor {
    return relu(tape, x);
  }
}

/** Max pooling; stride defaults to the kernel size. */
export class MaxPool2d extends Module {
  /** Max pooling over `kernel` windows; `options.stride` defaults to the kernel, padding to 0. */
  constructor(readonly kernel: Pair, readonly options: PoolOptions = {}) {
    super();
  }
  /** y [n, p, q, c] from x [n, h, w, c]: the max of each window, per channel. */
  forward(tape: Tape, x: Tensor): Tensor {
    return maxPool2d(tape, x, this.kernel, this.options);
  }
}

/** Mean over height and width: [n, h, w, c] -> [n, c]. */
export class GlobalAvgPool extends Module {
  /** y [n, c], the mean of x [n, h, w, c] over height and width. */
  forward(tape: Tape, x: Tensor): Tensor {
    return globalAvgPool(tape, x);
  }
}

/** [n, ...] -> [n, features]. */
export class Flatten extends Module {
  /** x [n, ...] reshaped to [n, features] (features = product of the other dimensions). */
  forward(tape: Tape, x: Tensor): Tensor {
    return flatten(tape, x);
  }
}

/** Runs its children in order; they are named "0", "1", ... as in PyTorch. */
export class Sequential extends Module {
  /** The children in the order they run. */
  readonly layers: readonly Module[];
  /** Registers `layers` as children named "0", "1", ... in this order. */
  constructor(...layers: Module[]) {
    super();
    layers.forEach((m, i) => this.child(String(i), m));
    this.layers = layers;
  }
  /** Feeds x through every layer in order and returns the last output. */
  forward(tape: Tape, x: Tensor): Tensor {
    for (const m of this.layers) x = m.forward(tape, x);
    return x;
  }
}
