/**
 * The backend interface: every op a model needs, on tensors that live on the backend. One
 * implementation per native library (`cpu`, later `cuda`), all behind the same C ABI; models
 * never branch on the backend. Shapes are checked by the ops in src/ops before they get here;
 * the native library checks them again and reports a `Daint8Error`.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";

/** A block of backend memory. `refs` counts the tensor views using it. */
export interface Storage {
  readonly handle: Deno.PointerValue;
  readonly bytes: number;
  refs: number;
}

/** Convolution / pooling geometry (kernels/daint8.h `d8_conv_shape`). */
export interface ConvShape {
  n: number;
  h: number;
  w: number;
  c: number;
  k: number;
  r: number;
  s: number;
  groups: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  p: number;
  q: number;
}

/** Batch-norm tensors of one layer: affine parameters and running statistics, all [c]. */
export interface BatchNormState {
  gamma: Tensor;
  beta: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
}

/** Hyper-parameters of one SGD update. */
export interface SgdHyper {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
}

/** Which index picks a clip or scale (kernels/daint8.h D8_SCALE_*). */
export const ScaleLayout = { tensor: 0, inner: 1, outer: 2 } as const;
/** A clip / scale layout value. */
export type ScaleLayout = typeof ScaleLayout[keyof typeof ScaleLayout];

/** The int8 inner-loop variants (kernels/daint8.h d8_set_int8_kernel). */
export const INT8_KERNELS = ["auto", "portable", "avx2", "avx512-vnni"] as const;
/** An int8 kernel variant. */
export type Int8Kernel = typeof INT8_KERNELS[number];

/** Everything a model, an optimizer and the trainer ask of a device. */
export interface Backend {
  /** `cpu` or `cuda`. */
  readonly name: string;
  /** A description of the device (CPU features and threads, or GPU name). */
  info(): string;
  /** Sets the worker thread count (cpu); 0 = all cores. */
  setThreads(threads: number): void;
  synchronize(): void;
  /** Frees cached memory and the context; the backend is unusable afterwards. */
  close(): void;

  alloc(bytes: number): Storage;
  /** Returns storage whose last view was disposed (it may be cached for reuse). */
  release(storage: Storage): void;
  upload(dst: Tensor, src: ArrayBufferView): void;
  download(dst: ArrayBufferView, src: Tensor): void;
  copy(dst: Tensor, src: Tensor): void;

  fill(y: Tensor, value: number): void;
  add(y: Tensor, a: Tensor, b: Tensor): void;
  axpy(y: Tensor, alpha: number, x: Tensor): void;
  u8ToF32(y: Tensor, x: Tensor, scale: number, shift: number): void;
  relu(y: Tensor, x: Tensor): void;
  reluBackward(dx: Tensor, dy: Tensor, y: Tensor): void;
  concatChannels(y: Tensor, a: Tensor, b: Tensor, rows: number, ca: number, cb: number): void;
  splitChannels(da: Tensor, db: Tensor, dy: Tensor, rows: number, ca: number, cb: number): void;

  conv2d(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, shape: ConvShape): void;
  conv2dDgrad(dx: Tensor, dy: Tensor, w: Tensor, shape: ConvShape): void;
  conv2dWgrad(dw: Tensor, x: Tensor, dy: Tensor, shape: ConvShape): void;
  biasGrad(db: Tensor, dy: Tensor, m: number, n: number): void;

  linear(
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    m: number,
    n: number,
    k: number,
  ): void;
  linearDgrad(dx: Tensor, dy: Tensor, w: Tensor, m: number, n: number, k: number): void;
  linearWgrad(dw: Tensor, x: Tensor, dy: Tensor, m: number, n: number, k: number): void;

  batchNormTrain(
    y: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    x: Tensor,
    state: BatchNormState,
    m: number,
    c: number,
    momentum: number,
    eps: number,
  ): void;
  batchNormInfer(
    y: Tensor,
    x: Tensor,
    state: BatchNormState,
    m: number,
    c: number,
    eps: number,
  ): void;
  batchNormBackward(
    dx: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
    dy: Tensor,
    x: Tensor,
    gamma: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    m: number,
    c: number,
  ): void;

  maxPool(y: Tensor, argmax: Tensor, x: Tensor, shape: ConvShape): void;
  maxPoolBackward(dx: Tensor, dy: Tensor, argmax: Tensor, shape: ConvShape): void;
  avgPool(y: Tensor, x: Tensor, shape: ConvShape): void;
  avgPoolBackward(dx: Tensor, dy: Tensor, shape: ConvShape): void;
  globalAvgPool(y: Tensor, x: Tensor, n: number, hw: number, c: number): void;
  globalAvgPoolBackward(dx: Tensor, dy: Tensor, n: number, hw: number, c: number): void;

  /** stats[0] = mean loss, stats[1] = correct predictions; probs kept for backward. */
  softmaxCrossEntropy(
    stats: Tensor,
    probs: Tensor,
    logits: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
  ): void;
  softmaxCrossEntropyBackward(
    dlogits: Tensor,
    probs: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
    scale: number,
  ): void;

  sgdStep(w: Tensor, momentumBuf: Tensor, grad: Tensor, hyper: SgdHyper): void;

  // ---- INT8: symmetric, levels -127..127; clips s and scales s/127 in f32 tensors ----
  /** y (i8) = quantize(x viewed as [outer, inner]) with clips picked by `layout`. */
  quantizeI8(
    y: Tensor,
    x: Tensor,
    outer: number,
    inner: number,
    clips: Tensor,
    layout: ScaleLayout,
    stochastic: boolean,
    seed: bigint,
  ): void;
  /** One pass over x [rows, channels]: yTensor with clipTensor[0], yChannel with clips[c]. */
  quantizeI8Dual(
    yTensor: Tensor,
    yChannel: Tensor,
    x: Tensor,
    rows: number,
    channels: number,
    clipTensor: Tensor,
    clipsChannel: Tensor,
    stochastic: boolean,
    seed: bigint,
  ): void;
  dequantizeI8(
    y: Tensor,
    q: Tensor,
    outer: number,
    inner: number,
    clips: Tensor,
    layout: ScaleLayout,
  ): void;
  /** out[0] = max |x|. */
  absmax(out: Tensor, x: Tensor): void;
  /** out [4, channels]: max |x|, std, fraction |x| > std, mean of each channel of x [rows, c]. */
  channelStats(out: Tensor, x: Tensor, rows: number, channels: number): void;
  conv2dI8(
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    xScale: Tensor,
    wScale: Tensor,
    wLayout: ScaleLayout,
    shape: ConvShape,
  ): void;
  conv2dDgradI8(
    dx: Tensor,
    dy: Tensor,
    w: Tensor,
    dyScale: Tensor,
    wScale: Tensor,
    shape: ConvShape,
  ): void;
  conv2dWgradI8(
    dw: Tensor,
    x: Tensor,
    dy: Tensor,
    xScale: Tensor,
    dyScale: Tensor,
    dyLayout: ScaleLayout,
    shape: ConvShape,
  ): void;
  /** c (i32) [m, n] = a (i8) [m, k] . b (i8) [n, k]^T. */
  gemmI8(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number): void;
  /** Forces an int8 kernel variant (tests, benchmarks); `auto` = best the CPU has. */
  setInt8Kernel(kernel: Int8Kernel): void;
  /** The int8 kernel variant in use. */
  int8KernelName(): string;
}
