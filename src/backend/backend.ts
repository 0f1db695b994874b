/**
 * The backend interface: every op a model needs, on tensors that live on the backend. It is
 * device-neutral: storage is opaque (no FFI types), every op only enqueues work on the device's
 * stream, and reads to the host are Promises taken at step edges, so an FFI backend (`cpu`,
 * `cuda`) and an asynchronous one (`webgpu`, buffer mapping) implement the same interface. Knobs
 * that only a CPU has (threads, the int8 inner-loop variant) live in `CpuBackend`. Models never
 * branch on the backend. Shapes are checked by the ops in src/ops before they get here; the
 * native library checks them again and reports a `Daint8Error`.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";

/**
 * A block of backend memory, opaque outside its backend. `refs` counts the tensor views using
 * it.
 */
export interface Storage {
  /** Size of the allocation in bytes; a tensor on it may use fewer (`Tensor.bytes` <= this). */
  readonly bytes: number;
  /**
   * Live tensor views on this storage; the last `Tensor.dispose()` (refs back to 0) hands it to
   * `Backend.release`.
   */
  refs: number;
}

/** Work counters of a backend since it was opened (differences give per-step figures). */
export interface BackendCounters {
  /** Calls into the device library (or commands encoded, for WebGPU). */
  calls: number;
  /** Blocking host-device synchronizations: synchronous reads and `synchronize()`. */
  syncs: number;
  /** Asynchronous reads to the host (`read`), taken at step edges. */
  reads: number;
  /** Bytes copied host to device. */
  bytesUp: number;
  /** Bytes copied device to host. */
  bytesDown: number;
}

/** The quantizer decision's knobs for one layer (kernels/daint8.h `d8_quant_knobs`). */
export interface QuantKnobs {
  /** Channels of dY (the layer's output channels). */
  channels: number;
  /** dY clipping rule: `max`, `mcs`, `mcs-solve` or `dsgc`. */
  clip: "max" | "mcs" | "mcs-solve" | "dsgc";
  /** Per-channel dY clips and scales (GVQ) besides the per-tensor one. */
  gvq: boolean;
  /** Steps between classifications / DSGC searches. */
  statsPeriod: number;
  /** DSGC: candidate clips between dsgcMinRatio and 1 of max |dY|. */
  dsgcCandidates: number;
  /** DSGC: the smallest candidate as a fraction of max |dY|. */
  dsgcMinRatio: number;
  /** mcs-solve: model sharp channels with the inverted-T family instead of Laplace. */
  sharpInvertedT: boolean;
  /** MCS classifier threshold on P(|g| > sigma). */
  lambda: number;
  /** MCS EMA: s_t = (1 - k A) s_(t-1) + A max_t. */
  k: number;
  /** MCS EMA weight of the current max. */
  A: number;
  /** mcs-solve table: entries per family row, the largest max/sigma and the grid step. */
  table?: { size: number; max: number; step: number };
}

/** The device buffers one quantizer decision reads and writes (kernels/daint8.h). */
export interface QuantDecision {
  /** Layer state, u32/f32 words (`quantStateWords(channels)`), zero when fresh. */
  state: Tensor;
  /** [1] per-tensor dY clip. */
  clipTensor: Tensor;
  /** [1] per-tensor dY scale (clip / 127). */
  scaleTensor: Tensor;
  /** [channels] per-channel clips (GVQ), else null. */
  clipsChannel: Tensor | null;
  /** [channels] per-channel scales (GVQ), else null. */
  scalesChannel: Tensor | null;
  /** [8] log record (tensor clip, channel clip mean/min/max, max, bell share, DSGC distance, error). */
  record: Tensor;
}

/** Words of a layer's quantizer state for `channels` channels (D8_QSTATE_HEADER + 2c). */
export function quantStateWords(channels: number): number {
  return 16 + 2 * channels;
}

/** Convolution / pooling geometry (kernels/daint8.h `d8_conv_shape`). */
export interface ConvShape {
  /** Batch size (input [n, h, w, c], output [n, p, q, k]). */
  n: number;
  /** Input height in pixels. */
  h: number;
  /** Input width in pixels. */
  w: number;
  /** Input channels, all groups together. */
  c: number;
  /** Output channels (the weight's first dimension); equal to `c` for pools. */
  k: number;
  /** Kernel (window) height. */
  r: number;
  /** Kernel (window) width. */
  s: number;
  /**
   * Channel groups: each output channel reads `c / groups` input channels (weight [k, r, s,
   * c/groups]); `c` for pools.
   */
  groups: number;
  /** Vertical stride in input rows. */
  strideH: number;
  /** Horizontal stride in input columns. */
  strideW: number;
  /** Zero padding added above and below the input, in rows. */
  padH: number;
  /** Zero padding added left and right of the input, in columns. */
  padW: number;
  /** Output height: floor((h + 2 * padH - r) / strideH) + 1. */
  p: number;
  /** Output width: floor((w + 2 * padW - s) / strideW) + 1. */
  q: number;
}

/** Batch-norm tensors of one layer: affine parameters and running statistics, all [c]. */
export interface BatchNormState {
  /** Per-channel scale [c] (the layer's trained `weight` parameter). */
  gamma: Tensor;
  /** Per-channel shift [c] (the layer's trained `bias` parameter). */
  beta: Tensor;
  /** Running mean [c]: updated in place by training-mode passes, used in evaluation mode. */
  runningMean: Tensor;
  /**
   * Running unbiased variance [c]: updated in place by training-mode passes, used in evaluation
   * mode.
   */
  runningVar: Tensor;
}

/** Hyper-parameters of one SGD update. */
export interface SgdHyper {
  /** Learning rate: the step is `w -= lr * g`. */
  lr: number;
  /** Momentum factor (0 = plain SGD); dampening is 0, as in PyTorch. */
  momentum: number;
  /** L2 penalty: `weightDecay * w` is added to the gradient before the momentum update. */
  weightDecay: number;
  /** Nesterov momentum: step with `g + momentum * buf` instead of `buf`. */
  nesterov: boolean;
}

/** Which index picks a clip or scale (kernels/daint8.h D8_SCALE_*). */
export const ScaleLayout = { tensor: 0, inner: 1, outer: 2 } as const;
/** A clip / scale layout value. */
export type ScaleLayout = typeof ScaleLayout[keyof typeof ScaleLayout];

/** The int8 inner-loop variants of the cpu backend (kernels/daint8.h d8_set_int8_kernel). */
export const INT8_KERNELS = ["auto", "portable", "avx2", "avx512-vnni", "avx-vnni", "amx"] as const;
/** An int8 kernel variant. */
export type Int8Kernel = typeof INT8_KERNELS[number];

/** Everything a model, an optimizer and the trainer ask of a device. */
export interface Backend {
  /** `cpu`, `cuda` or `webgpu`. */
  readonly name: string;
  /** A description of the device (CPU features and threads, or GPU name). */
  info(): string;
  /**
   * Resolves once all work enqueued on the backend's stream has finished (counted as a sync; the
   * cpu backend runs every op synchronously, so it resolves at once). Benchmarks await it inside
   * the timed function; a training step never does.
   */
  synchronize(): Promise<void>;
  /**
   * Frees every buffer of the backend (cached and still referenced: live tensors become
   * unusable) and the context; the backend is unusable afterwards. Throws a `Daint8Error` when
   * the device reports a failure, after freeing everything it can.
   */
  close(): void;
  /** Work counters since the backend was opened (for --profile and the sync test). */
  counters(): BackendCounters;

  /**
   * Allocates `bytes` (a positive integer) of backend memory, 64-byte aligned, contents undefined,
   * possibly reusing released storage; the result has `refs` 0. Throws a RangeError on a bad size,
   * a `Daint8Error` when the native allocation fails.
   */
  alloc(bytes: number): Storage;
  /**
   * Returns storage whose last view was disposed (it may be cached for reuse). Throws an Error
   * when a tensor still uses it or it was already released (two tensors would share memory).
   */
  release(storage: Storage): void;
  /**
   * Enqueues a copy of the host bytes of `src` into `dst` (no dtype conversion; `src` may be
   * reused at once). Throws a TypeError unless `src.byteLength` equals `dst.bytes`.
   */
  upload(dst: Tensor, src: ArrayBufferView): void;
  /**
   * Copies the bytes of `src` into host memory `dst` once the work enqueued before it is done
   * (no dtype conversion): the one way to the host every backend has. Take it at step edges.
   * Rejects with a TypeError unless `dst.byteLength` equals `src.bytes`.
   */
  read(dst: ArrayBufferView, src: Tensor): Promise<void>;
  /**
   * A blocking `read` (waits for the device; counted as a sync), where the device allows it
   * (cpu, cuda; not webgpu). Tests and tools use it; a training step never does.
   */
  readSync?(dst: ArrayBufferView, src: Tensor): void;
  /**
   * Copies `src` into `dst` byte for byte, whatever the dtypes. Throws a TypeError unless both have
   * the same byte size.
   */
  copy(dst: Tensor, src: Tensor): void;

  /** Sets every element of the f32 tensor `y` to `value`. */
  fill(y: Tensor, value: number): void;
  /** y = a + b elementwise over `y.size` f32 elements (overwritten); `y` may alias `a` or `b`. */
  add(y: Tensor, a: Tensor, b: Tensor): void;
  /**
   * y += alpha * x elementwise over `y.size` f32 elements (accumulated into `y`, e.g. gradient
   * sums).
   */
  axpy(y: Tensor, alpha: number, x: Tensor): void;
  /**
   * y (f32) = x (u8) * scale + shift elementwise over `y.size` elements: decodes and normalizes
   * images.
   */
  u8ToF32(y: Tensor, x: Tensor, scale: number, shift: number): void;
  /** y = max(x, 0) elementwise (f32, overwritten); `y` may alias `x`. */
  relu(y: Tensor, x: Tensor): void;
  /** dx = dy * (y > 0) from the forward output `y` (f32, overwritten); `dx` may alias `dy`. */
  reluBackward(dx: Tensor, dy: Tensor, y: Tensor): void;
  /**
   * y = max(x, 0) over `x.size` elements, and the bit mask (u8 [ceil(size / 8)], LSB first) of
   * x > 0 that `reluMaskBackward` needs instead of y.
   */
  reluMask(y: Tensor, mask: Tensor, x: Tensor): void;
  /** dx = mask ? dy : 0 over `dx.size` elements; `dx` may alias `dy`. */
  reluMaskBackward(dx: Tensor, dy: Tensor, mask: Tensor): void;
  /**
   * Channel concatenation of NHWC tensors viewed as rows (rows = n * h * w): y [rows, ca + cb] = [a
   * [rows, ca], b [rows, cb]], f32, overwritten.
   */
  concatChannels(y: Tensor, a: Tensor, b: Tensor, rows: number, ca: number, cb: number): void;
  /**
   * Backward of `concatChannels`: splits dy [rows, ca + cb] into da [rows, ca] and db [rows, cb]
   * (both overwritten).
   */
  splitChannels(da: Tensor, db: Tensor, dy: Tensor, rows: number, ca: number, cb: number): void;

  /**
   * fp32 convolution: y [n, p, q, k] (overwritten) from x [n, h, w, c] (NHWC) and w [k, r, s,
   * c/groups] (OHWI), plus bias [k] unless `bias` is null.
   */
  conv2d(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, shape: ConvShape): void;
  /**
   * fp32 input gradient of `conv2d`: dx [n, h, w, c] (overwritten) from dy [n, p, q, k] and w [k,
   * r, s, c/groups]. With `accumulate` the gradient is added into dx instead (dx += ...), so a
   * tensor read by several layers takes its gradients without a separate `add`; dx must then be
   * neither dy nor w.
   */
  conv2dDgrad(dx: Tensor, dy: Tensor, w: Tensor, shape: ConvShape, accumulate?: boolean): void;
  /**
   * fp32 weight gradient of `conv2d`: dw [k, r, s, c/groups] (overwritten, not accumulated) from x
   * [n, h, w, c] and dy [n, p, q, k].
   */
  conv2dWgrad(dw: Tensor, x: Tensor, dy: Tensor, shape: ConvShape): void;
  /**
   * Bias gradient of conv and linear: db[j] = sum over rows i < m of dy[i, j], for dy viewed as [m,
   * n] (db [n], overwritten).
   */
  biasGrad(db: Tensor, dy: Tensor, m: number, n: number): void;

  /**
   * fp32 fully connected layer: y [m, n] = x [m, k] . w [n, k]^T, plus bias [n] unless `bias` is
   * null (overwritten).
   */
  linear(
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    m: number,
    n: number,
    k: number,
  ): void;
  /** Input gradient of `linear`: dx [m, k] = dy [m, n] . w [n, k] (overwritten). */
  linearDgrad(dx: Tensor, dy: Tensor, w: Tensor, m: number, n: number, k: number): void;
  /**
   * Weight gradient of `linear`: dw [n, k] = dy [m, n]^T . x [m, k] (overwritten, not accumulated).
   */
  linearWgrad(dw: Tensor, x: Tensor, dy: Tensor, m: number, n: number, k: number): void;

  /**
   * Training-mode batch norm over x viewed as [m, c] (m = n * h * w): normalizes with the batch
   * mean and biased variance into y, writes saveMean [c] and saveInvStd = 1 / sqrt(var + eps) [c]
   * for the backward pass, and updates `state.runningMean` / `state.runningVar` in place as running
   * = (1 - momentum) * running + momentum * batch (unbiased variance for the running one).
   */
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
  /**
   * `batchNormTrain` fused with the ReLU after it (and a residual add before that when `residual`
   * is not null): y = max(bn(x) + residual, 0), and `mask` [ceil(m * c / 8)] u8 gets the bits of
   * y > 0 exactly as `reluMask` writes them. One pass over x instead of three ops. `cap` > 0
   * (finite) clamps instead, y = min(max(v, 0), cap), with mask bits 0 < v < cap: `cap` 6 is
   * MobileNetV2's ReLU6 (the values and gradient rule of `relu6`); 0 (the default) is the ReLU.
   */
  batchNormReluTrain(
    y: Tensor,
    mask: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    x: Tensor,
    residual: Tensor | null,
    state: BatchNormState,
    m: number,
    c: number,
    momentum: number,
    eps: number,
    cap?: number,
  ): void;
  /**
   * Evaluation-mode batch norm over x viewed as [m, c]: y = gamma * (x - runningMean) /
   * sqrt(runningVar + eps) + beta (overwritten); `state` is not changed.
   */
  batchNormInfer(
    y: Tensor,
    x: Tensor,
    state: BatchNormState,
    m: number,
    c: number,
    eps: number,
  ): void;
  /**
   * Backward of `batchNormTrain` from its saveMean and saveInvStd: writes dx [m, c], dgamma [c] and
   * dbeta [c] (all overwritten, not accumulated).
   */
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
  /**
   * Backward of `batchNormReluTrain`: g = dy where `mask` is set, else 0; `dresidual` = g when not
   * null; dx, dgamma and dbeta as `batchNormBackward` of g (all overwritten).
   */
  batchNormReluBackward(
    dx: Tensor,
    dresidual: Tensor | null,
    dgamma: Tensor,
    dbeta: Tensor,
    dy: Tensor,
    mask: Tensor,
    x: Tensor,
    gamma: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    m: number,
    c: number,
  ): void;

  /**
   * Max pooling (shape.k = shape.groups = shape.c): y [n, p, q, c] f32 and argmax (i32, same shape)
   * holding the flat input position h * W + w of each maximum, or -1 (with y = 0) for a window
   * lying entirely in padding.
   */
  maxPool(y: Tensor, argmax: Tensor, x: Tensor, shape: ConvShape): void;
  /**
   * Backward of `maxPool`: dx [n, h, w, c] is zeroed, then each dy [n, p, q, c] element is added at
   * its argmax position (overlapping windows accumulate).
   */
  maxPoolBackward(dx: Tensor, dy: Tensor, argmax: Tensor, shape: ConvShape): void;
  /**
   * Average pooling: y [n, p, q, c] (overwritten); padding counts in the divisor r * s (PyTorch's
   * count_include_pad = true).
   */
  avgPool(y: Tensor, x: Tensor, shape: ConvShape): void;
  /**
   * Backward of `avgPool`: dx [n, h, w, c] (overwritten) gets each window's dy / (r * s) spread
   * over its input positions.
   */
  avgPoolBackward(dx: Tensor, dy: Tensor, shape: ConvShape): void;
  /** Global average pooling: y [n, c] = mean over the hw spatial positions of x [n, hw, c]. */
  globalAvgPool(y: Tensor, x: Tensor, n: number, hw: number, c: number): void;
  /**
   * Backward of `globalAvgPool`: dx [n, hw, c] = dy [n, c] / hw at every position (overwritten).
   */
  globalAvgPoolBackward(dx: Tensor, dy: Tensor, n: number, hw: number, c: number): void;

  /**
   * stats[0] = mean loss, stats[1] = correct predictions; probs kept for backward; `accum` [4]
   * (or null) += [sum of losses, correct, rows, 1], read by the trainer at step edges.
   */
  softmaxCrossEntropy(
    stats: Tensor,
    probs: Tensor,
    accum: Tensor | null,
    logits: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
  ): void;
  /**
   * dlogits [n, classes] = scale * seed[0] * (probs - onehot(labels)) (overwritten), from the
   * `probs` the forward pass kept and i32 labels [n]; `seed` is the loss gradient on the device
   * (null: 1); scale is usually 1 / n for a mean loss.
   */
  softmaxCrossEntropyBackward(
    dlogits: Tensor,
    probs: Tensor,
    labels: Tensor,
    seed: Tensor | null,
    n: number,
    classes: number,
    scale: number,
  ): void;

  /**
   * One in-place SGD step on `w` and its momentum buffer `momentumBuf` (same size, zero before the
   * first step), PyTorch semantics: g = grad + weightDecay * w; buf = momentum * buf + g; g =
   * nesterov ? g + momentum * buf : buf; w -= lr * g. `nonfinite` (u32 [1] or null) is set to 1
   * when the gradient or the updated weight holds a NaN or an infinity.
   */
  sgdStep(
    w: Tensor,
    momentumBuf: Tensor,
    grad: Tensor,
    hyper: SgdHyper,
    nonfinite: Tensor | null,
  ): void;

  // ---- INT8: symmetric, levels -127..127; clips s and scales s/127 in f32 tensors ----
  /**
   * y (i8) = quantize(x viewed as [outer, inner]) with clips picked by `layout`; `seed` (u32)
   * keys the stochastic-rounding hash.
   */
  quantizeI8(
    y: Tensor,
    x: Tensor,
    outer: number,
    inner: number,
    clips: Tensor,
    layout: ScaleLayout,
    stochastic: boolean,
    seed: number,
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
    seed: number,
  ): void;
  /**
   * y (f32) = q (i8) * clip / 127 for q viewed as [outer, inner], clips picked by `layout` as in
   * `quantizeI8` (tests, error measurement, analysis).
   */
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
  /**
   * Max-clip quantization writing its own scale: y (i8) from x viewed as [outer, inner], with
   * scale[0] = max |x| / 127 (`ScaleLayout.tensor`) or scale[o] = max |x[o, :]| / 127
   * (`ScaleLayout.outer`), nearest rounding.
   */
  quantizeI8MaxScale(
    y: Tensor,
    scale: Tensor,
    x: Tensor,
    outer: number,
    inner: number,
    layout: ScaleLayout,
  ): void;
  /**
   * The quantizer decision of one layer and step on the device (kernels/daint8.h
   * d8_quant_decide): measures dY's channel statistics into `stats` [4, c], and from them (and
   * dY itself for DSGC, the mcs-solve table [3, size] for mcs-solve) updates `out.state` and
   * writes every clip and scale of `out`.
   */
  quantDecide(
    out: QuantDecision,
    stats: Tensor,
    dy: Tensor,
    table: Tensor | null,
    rows: number,
    knobs: QuantKnobs,
  ): void;
  /**
   * record[7] = relative L2 error of q (i8 [rows, channels], clips by `layout`: tensor or inner)
   * against x (f32).
   */
  quantError(
    record: Tensor,
    x: Tensor,
    q: Tensor,
    clips: Tensor,
    rows: number,
    channels: number,
    layout: ScaleLayout,
  ): void;
  /** out [4, channels]: max |x|, std, fraction |x| > std, mean of each channel of x [rows, c]. */
  channelStats(out: Tensor, x: Tensor, rows: number, channels: number): void;
  /**
   * int8 convolution: x (i8, NHWC) and w (i8, OHWI) multiplied with int32 accumulation, then y [n,
   * p, q, k] f32 (overwritten) = sum * xScale[0] * wScale[k or 0], plus f32 bias [k] unless null.
   * Scales are f32 tensors of clip / 127; `wLayout` is `ScaleLayout.tensor` or `ScaleLayout.outer`.
   * Operands must lie in [-127, 127].
   */
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
  /**
   * int8 input gradient: dx [n, h, w, c] f32 (overwritten) = sum over k of dy (i8) * w (i8), times
   * dyScale[0] * wScale[0]. Both scales are per tensor since the output channel is the reduction
   * dimension: fold a per-channel weight scale into dy before quantizing it. With `accumulate`
   * the gradient is added into dx (dx += ...), as in `conv2dDgrad`.
   */
  conv2dDgradI8(
    dx: Tensor,
    dy: Tensor,
    w: Tensor,
    dyScale: Tensor,
    wScale: Tensor,
    shape: ConvShape,
    accumulate?: boolean,
  ): void;
  /**
   * int8 weight gradient: dw [k, r, s, c/groups] f32 (overwritten) = sum over the n * p * q rows of
   * dy (i8) times the unfolded x (i8), times dyScale[k or 0] * xScale[0]. `dyLayout` is
   * `ScaleLayout.tensor` or `ScaleLayout.inner` (per output channel: GVQ). The reduction runs in
   * int32 chunks short enough not to overflow, summed in double.
   */
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

  // ---- model-zoo ops (kernels/cpu/zoo_ops.cpp) ----
  /** y = a * b elementwise over `y.size` f32 elements; `y` may alias `a` or `b` (dropout). */
  mul(y: Tensor, a: Tensor, b: Tensor): void;
  /** y = min(max(x, 0), 6) elementwise (f32, overwritten). */
  relu6(y: Tensor, x: Tensor): void;
  /** dx = dy where 0 < y < 6, else 0, from the forward output `y` (f32, overwritten). */
  relu6Backward(dx: Tensor, dy: Tensor, y: Tensor): void;
  /**
   * Adaptive average pooling x [n, h, w, c] -> y [n, p, q, c] with PyTorch's windows (rows
   * floor(i h / p) to ceil((i + 1) h / p)), f32, overwritten.
   */
  adaptiveAvgPool(y: Tensor, x: Tensor, n: number, h: number, w: number, c: number): void;
  /** Backward of `adaptiveAvgPool`: dx [n, h, w, c] (overwritten) from dy [n, p, q, c]. */
  adaptiveAvgPoolBackward(
    dx: Tensor,
    dy: Tensor,
    n: number,
    h: number,
    w: number,
    c: number,
  ): void;
}

/** The knobs only the cpu backend has, per backend context. */
export interface CpuBackend extends Backend {
  /** Sets this context's worker thread count; 0 = all cores. */
  setThreads(threads: number): void;
  /** Forces this context's int8 kernel variant (tests, benchmarks); `auto` = best the CPU has. */
  setInt8Kernel(kernel: Int8Kernel): void;
  /** This context's int8 kernel variant in use. */
  int8KernelName(): string;
}

/** Whether `b` has the cpu-only knobs. */
export function isCpuBackend(b: Backend): b is CpuBackend {
  return typeof (b as Partial<CpuBackend>).setThreads === "function" &&
    typeof (b as Partial<CpuBackend>).setInt8Kernel === "function";
}
