/**
 * A backend on a daint8 native library (the C ABI of kernels/daint8.h). The same class serves
 * every library (`cpu`, later `cuda`), since they export the same symbols.
 *
 * Memory: freed storage is cached by size and reused, so a training step that allocates the
 * same activations every iteration does not go back to the system allocator.
 *
 * @module
 */
import { loadLibrary, type NativeLibrary } from "../../ffi/library.ts";
import {
  type Backend,
  type BatchNormState,
  type ConvShape,
  INT8_KERNELS,
  type Int8Kernel,
  type ScaleLayout,
  type SgdHyper,
  type Storage,
} from "./backend.ts";
import type { Tensor } from "../tensor.ts";

function ptr(t: Tensor): Deno.PointerValue {
  return t.storage.handle;
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** A backend running on one native library and one context of it. */
export class NativeBackend implements Backend {
  readonly name: string;
  readonly #lib: NativeLibrary;
  #ctx: Deno.PointerValue;
  readonly #pool = new Map<number, Storage[]>();
  readonly #shape = new Int32Array(16);
  #pooledBytes = 0;
  /** Cached bytes kept at most; beyond this, released storage is freed. */
  maxPooledBytes = 1 << 30;

  /**
   * Opens backend `name` (`cpu`, `cuda`) on device `device`.
   *
   * @example
   * ```ts ignore
   * const cpu = new NativeBackend("cpu");
   * console.log(cpu.info());
   * cpu.close();
   * ```
   */
  constructor(name: string, device = 0) {
    this.#lib = loadLibrary(name);
    this.name = this.#lib.backend;
    const out = new BigUint64Array(1);
    this.#lib.check(this.#lib.symbols.d8_context_create(bytesOf(out), device));
    this.#ctx = Deno.UnsafePointer.create(out[0]!);
  }

  get #s() {
    if (this.#ctx === null) throw new Error(`The ${this.name} backend was closed`);
    return this.#lib.symbols;
  }

  #check(status: number): void {
    if (status !== 0) this.#lib.check(status);
  }

  #conv(shape: ConvShape): Int32Array {
    const a = this.#shape;
    a[0] = shape.n;
    a[1] = shape.h;
    a[2] = shape.w;
    a[3] = shape.c;
    a[4] = shape.k;
    a[5] = shape.r;
    a[6] = shape.s;
    a[7] = shape.groups;
    a[8] = shape.strideH;
    a[9] = shape.strideW;
    a[10] = shape.padH;
    a[11] = shape.padW;
    a[12] = shape.p;
    a[13] = shape.q;
    a[14] = 0;
    a[15] = 0;
    return a;
  }

  info(): string {
    const out = new Uint8Array(512);
    this.#check(this.#s.d8_device_info(this.#ctx, out, out.length));
    return new TextDecoder().decode(out.subarray(0, out.indexOf(0)));
  }

  setThreads(threads: number): void {
    if (!Number.isInteger(threads) || threads < 0) {
      throw new RangeError(`Thread count must be a non-negative integer, got ${threads}`);
    }
    this.#check(this.#s.d8_set_num_threads(this.#ctx, threads));
  }

  synchronize(): void {
    this.#check(this.#s.d8_synchronize(this.#ctx));
  }

  close(): void {
    if (this.#ctx === null) return;
    for (const list of this.#pool.values()) {
      for (const s of list) this.#s.d8_buffer_free(s.handle);
    }
    this.#pool.clear();
    this.#pooledBytes = 0;
    this.#check(this.#s.d8_context_destroy(this.#ctx));
    this.#ctx = null;
  }

  alloc(bytes: number): Storage {
    if (!Number.isInteger(bytes) || bytes <= 0) {
      throw new RangeError(`Cannot allocate ${bytes} bytes: the size must be a positive integer`);
    }
    const cached = this.#pool.get(bytes)?.pop();
    if (cached) {
      this.#pooledBytes -= bytes;
      cached.refs = 0;
      return cached;
    }
    const out = new BigUint64Array(1);
    this.#check(this.#s.d8_buffer_alloc(bytesOf(out), this.#ctx, BigInt(bytes)));
    return { handle: Deno.UnsafePointer.create(out[0]!), bytes, refs: 0 };
  }

  release(storage: Storage): void {
    if (this.#ctx === null) return;
    if (this.#pooledBytes + storage.bytes > this.maxPooledBytes) {
      this.#check(this.#s.d8_buffer_free(storage.handle));
      return;
    }
    let list = this.#pool.get(storage.bytes);
    if (!list) this.#pool.set(storage.bytes, list = []);
    list.push(storage);
    this.#pooledBytes += storage.bytes;
  }

  upload(dst: Tensor, src: ArrayBufferView): void {
    if (src.byteLength !== dst.bytes) {
      throw new TypeError(
        `Cannot upload ${src.byteLength} bytes into ${dst} (${dst.bytes} bytes)`,
      );
    }
    this.#check(this.#s.d8_buffer_upload(ptr(dst), 0n, bytesOf(src), BigInt(src.byteLength)));
  }

  download(dst: ArrayBufferView, src: Tensor): void {
    if (dst.byteLength !== src.bytes) {
      throw new TypeError(
        `Cannot download ${src} (${src.bytes} bytes) into ${dst.byteLength} bytes`,
      );
    }
    this.#check(this.#s.d8_buffer_download(bytesOf(dst), ptr(src), 0n, BigInt(dst.byteLength)));
  }

  copy(dst: Tensor, src: Tensor): void {
    if (dst.bytes !== src.bytes) {
      throw new TypeError(`Cannot copy ${src} into ${dst}: sizes differ`);
    }
    this.#check(this.#s.d8_buffer_copy(ptr(dst), 0n, ptr(src), 0n, BigInt(src.bytes)));
  }

  fill(y: Tensor, value: number): void {
    this.#check(this.#s.d8_fill_f32(ptr(y), BigInt(y.size), value));
  }

  add(y: Tensor, a: Tensor, b: Tensor): void {
    this.#check(this.#s.d8_add_f32(ptr(y), ptr(a), ptr(b), BigInt(y.size)));
  }

  axpy(y: Tensor, alpha: number, x: Tensor): void {
    this.#check(this.#s.d8_axpy_f32(ptr(y), alpha, ptr(x), BigInt(y.size)));
  }

  u8ToF32(y: Tensor, x: Tensor, scale: number, shift: number): void {
    this.#check(this.#s.d8_u8_to_f32(ptr(y), ptr(x), BigInt(y.size), scale, shift));
  }

  relu(y: Tensor, x: Tensor): void {
    this.#check(this.#s.d8_relu_fwd(ptr(y), ptr(x), BigInt(y.size)));
  }

  reluBackward(dx: Tensor, dy: Tensor, y: Tensor): void {
    this.#check(this.#s.d8_relu_bwd(ptr(dx), ptr(dy), ptr(y), BigInt(dx.size)));
  }

  concatChannels(y: Tensor, a: Tensor, b: Tensor, rows: number, ca: number, cb: number): void {
    this.#check(this.#s.d8_concat_channels(ptr(y), ptr(a), ptr(b), BigInt(rows), ca, cb));
  }

  splitChannels(da: Tensor, db: Tensor, dy: Tensor, rows: number, ca: number, cb: number): void {
    this.#check(this.#s.d8_split_channels(ptr(da), ptr(db), ptr(dy), BigInt(rows), ca, cb));
  }

  conv2d(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, shape: ConvShape): void {
    this.#check(
      this.#s.d8_conv2d_fwd(ptr(y), ptr(x), ptr(w), bias ? ptr(bias) : null, this.#conv(shape)),
    );
  }

  conv2dDgrad(dx: Tensor, dy: Tensor, w: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_conv2d_dgrad(ptr(dx), ptr(dy), ptr(w), this.#conv(shape)));
  }

  conv2dWgrad(dw: Tensor, x: Tensor, dy: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_conv2d_wgrad(ptr(dw), ptr(x), ptr(dy), this.#conv(shape)));
  }

  biasGrad(db: Tensor, dy: Tensor, m: number, n: number): void {
    this.#check(this.#s.d8_bias_grad(ptr(db), ptr(dy), BigInt(m), n));
  }

  linear(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, m: number, n: number, k: number) {
    this.#check(
      this.#s.d8_linear_fwd(ptr(y), ptr(x), ptr(w), bias ? ptr(bias) : null, BigInt(m), n, k),
    );
  }

  linearDgrad(dx: Tensor, dy: Tensor, w: Tensor, m: number, n: number, k: number): void {
    this.#check(this.#s.d8_linear_dgrad(ptr(dx), ptr(dy), ptr(w), BigInt(m), n, k));
  }

  linearWgrad(dw: Tensor, x: Tensor, dy: Tensor, m: number, n: number, k: number): void {
    this.#check(this.#s.d8_linear_wgrad(ptr(dw), ptr(x), ptr(dy), BigInt(m), n, k));
  }

  batchNormTrain(
    y: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    x: Tensor,
    st: BatchNormState,
    m: number,
    c: number,
    momentum: number,
    eps: number,
  ): void {
    this.#check(
      this.#s.d8_batchnorm_fwd_train(
        ptr(y),
        ptr(saveMean),
        ptr(saveInvStd),
        ptr(st.runningMean),
        ptr(st.runningVar),
        ptr(x),
        ptr(st.gamma),
        ptr(st.beta),
        BigInt(m),
        c,
        momentum,
        eps,
      ),
    );
  }

  batchNormInfer(y: Tensor, x: Tensor, st: BatchNormState, m: number, c: number, eps: number) {
    this.#check(
      this.#s.d8_batchnorm_fwd_infer(
        ptr(y),
        ptr(x),
        ptr(st.gamma),
        ptr(st.beta),
        ptr(st.runningMean),
        ptr(st.runningVar),
        BigInt(m),
        c,
        eps,
      ),
    );
  }

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
  ): void {
    this.#check(
      this.#s.d8_batchnorm_bwd(
        ptr(dx),
        ptr(dgamma),
        ptr(dbeta),
        ptr(dy),
        ptr(x),
        ptr(gamma),
        ptr(saveMean),
        ptr(saveInvStd),
        BigInt(m),
        c,
      ),
    );
  }

  maxPool(y: Tensor, argmax: Tensor, x: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_maxpool_fwd(ptr(y), ptr(argmax), ptr(x), this.#conv(shape)));
  }

  maxPoolBackward(dx: Tensor, dy: Tensor, argmax: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_maxpool_bwd(ptr(dx), ptr(dy), ptr(argmax), this.#conv(shape)));
  }

  avgPool(y: Tensor, x: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_avgpool_fwd(ptr(y), ptr(x), this.#conv(shape)));
  }

  avgPoolBackward(dx: Tensor, dy: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_avgpool_bwd(ptr(dx), ptr(dy), this.#conv(shape)));
  }

  globalAvgPool(y: Tensor, x: Tensor, n: number, hw: number, c: number): void {
    this.#check(this.#s.d8_global_avgpool_fwd(ptr(y), ptr(x), n, hw, c));
  }

  globalAvgPoolBackward(dx: Tensor, dy: Tensor, n: number, hw: number, c: number): void {
    this.#check(this.#s.d8_global_avgpool_bwd(ptr(dx), ptr(dy), n, hw, c));
  }

  softmaxCrossEntropy(
    stats: Tensor,
    probs: Tensor,
    logits: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
  ): void {
    this.#check(
      this.#s.d8_softmax_xent_fwd(ptr(stats), ptr(probs), ptr(logits), ptr(labels), n, classes),
    );
  }

  softmaxCrossEntropyBackward(
    dlogits: Tensor,
    probs: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
    scale: number,
  ): void {
    this.#check(
      this.#s.d8_softmax_xent_bwd(ptr(dlogits), ptr(probs), ptr(labels), n, classes, scale),
    );
  }

  sgdStep(w: Tensor, momentumBuf: Tensor, grad: Tensor, h: SgdHyper): void {
    this.#check(
      this.#s.d8_sgd_step(
        ptr(w),
        ptr(momentumBuf),
        ptr(grad),
        BigInt(w.size),
        h.lr,
        h.momentum,
        h.weightDecay,
        h.nesterov ? 1 : 0,
      ),
    );
  }

  quantizeI8(
    y: Tensor,
    x: Tensor,
    outer: number,
    inner: number,
    clips: Tensor,
    layout: ScaleLayout,
    stochastic: boolean,
    seed: bigint,
  ): void {
    this.#check(
      this.#s.d8_quantize_i8(
        ptr(y),
        ptr(x),
        BigInt(outer),
        inner,
        ptr(clips),
        layout,
        stochastic ? 1 : 0,
        seed,
      ),
    );
  }

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
  ): void {
    this.#check(
      this.#s.d8_quantize_i8_dual(
        ptr(yTensor),
        ptr(yChannel),
        ptr(x),
        BigInt(rows),
        channels,
        ptr(clipTensor),
        ptr(clipsChannel),
        stochastic ? 1 : 0,
        seed,
      ),
    );
  }

  dequantizeI8(
    y: Tensor,
    q: Tensor,
    outer: number,
    inner: number,
    clips: Tensor,
    layout: ScaleLayout,
  ): void {
    this.#check(
      this.#s.d8_dequantize_i8(ptr(y), ptr(q), BigInt(outer), inner, ptr(clips), layout),
    );
  }

  absmax(out: Tensor, x: Tensor): void {
    this.#check(this.#s.d8_absmax_f32(ptr(out), ptr(x), BigInt(x.size)));
  }

  channelStats(out: Tensor, x: Tensor, rows: number, channels: number): void {
    this.#check(this.#s.d8_channel_stats_f32(ptr(out), ptr(x), BigInt(rows), channels));
  }

  conv2dI8(
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    xScale: Tensor,
    wScale: Tensor,
    wLayout: ScaleLayout,
    shape: ConvShape,
  ): void {
    this.#check(
      this.#s.d8_conv2d_fwd_i8(
        ptr(y),
        ptr(x),
        ptr(w),
        bias ? ptr(bias) : null,
        ptr(xScale),
        ptr(wScale),
        wLayout,
        this.#conv(shape),
      ),
    );
  }

  conv2dDgradI8(
    dx: Tensor,
    dy: Tensor,
    w: Tensor,
    dyScale: Tensor,
    wScale: Tensor,
    shape: ConvShape,
  ): void {
    this.#check(
      this.#s.d8_conv2d_dgrad_i8(
        ptr(dx),
        ptr(dy),
        ptr(w),
        ptr(dyScale),
        ptr(wScale),
        this.#conv(shape),
      ),
    );
  }

  conv2dWgradI8(
    dw: Tensor,
    x: Tensor,
    dy: Tensor,
    xScale: Tensor,
    dyScale: Tensor,
    dyLayout: ScaleLayout,
    shape: ConvShape,
  ): void {
    this.#check(
      this.#s.d8_conv2d_wgrad_i8(
        ptr(dw),
        ptr(x),
        ptr(dy),
        ptr(xScale),
        ptr(dyScale),
        dyLayout,
        this.#conv(shape),
      ),
    );
  }

  gemmI8(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number): void {
    this.#check(this.#s.d8_gemm_i8(ptr(c), ptr(a), ptr(b), BigInt(m), n, k));
  }

  setInt8Kernel(kernel: Int8Kernel): void {
    const v = INT8_KERNELS.indexOf(kernel);
    if (v < 0) {
      throw new RangeError(
        `Unknown int8 kernel "${kernel}": expected one of ${INT8_KERNELS.join(", ")}`,
      );
    }
    this.#check(this.#s.d8_set_int8_kernel(v));
  }

  int8KernelName(): string {
    const out = new Uint8Array(64);
    this.#check(this.#s.d8_int8_kernel_name(out, out.length));
    return new TextDecoder().decode(out.subarray(0, out.indexOf(0)));
  }

  // ---- model-zoo ops (kernels/cpu/zoo_ops.cpp) ----
  mul(y: Tensor, a: Tensor, b: Tensor): void {
    this.#check(this.#s.d8_mul_f32(ptr(y), ptr(a), ptr(b), BigInt(y.size)));
  }

  relu6(y: Tensor, x: Tensor): void {
    this.#check(this.#s.d8_relu6_fwd(ptr(y), ptr(x), BigInt(y.size)));
  }

  relu6Backward(dx: Tensor, dy: Tensor, y: Tensor): void {
    this.#check(this.#s.d8_relu6_bwd(ptr(dx), ptr(dy), ptr(y), BigInt(dx.size)));
  }

  adaptiveAvgPool(y: Tensor, x: Tensor, n: number, h: number, w: number, c: number): void {
    const [, p = 0, q = 0] = y.shape;
    this.#check(this.#s.d8_adaptive_avgpool_fwd(ptr(y), ptr(x), n, h, w, c, p, q));
  }

  adaptiveAvgPoolBackward(
    dx: Tensor,
    dy: Tensor,
    n: number,
    h: number,
    w: number,
    c: number,
  ): void {
    const [, p = 0, q = 0] = dy.shape;
    this.#check(this.#s.d8_adaptive_avgpool_bwd(ptr(dx), ptr(dy), n, h, w, c, p, q));
  }
}

const opened = new Map<string, NativeBackend>();

/**
 * The shared backend of `name`: `cpu`, `cuda`, or `auto` (cuda when its library loads and a
 * device answers, else cpu). Opened once per process.
 */
export function getBackend(name: string): NativeBackend {
  if (name === "auto") {
    try {
      return getBackend("cuda");
    } catch {
      return getBackend("cpu");
    }
  }
  if (name !== "cpu" && name !== "cuda") {
    throw new RangeError(`Unknown backend "${name}": expected cpu, cuda or auto`);
  }
  let b = opened.get(name);
  if (!b) opened.set(name, b = new NativeBackend(name));
  return b;
}
