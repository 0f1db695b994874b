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
}
