/**
 * A backend on a daint8 native library (the C ABI of kernels/daint8.h). The same class serves
 * every library (`cpu`, `cuda`), since they export the same symbols. Storage handles stay inside
 * this module (`NativeStorage`); the interface it implements has no FFI types.
 *
 * Memory: freed storage is cached by size and reused, so a training step that allocates the
 * same activations every iteration does not go back to the system allocator.
 *
 * @module
 */
import { Daint8Error, loadLibrary, type NativeLibrary } from "../../ffi/library.ts";
import {
  type BackendCounters,
  type BatchNormState,
  type ConvShape,
  type CpuBackend,
  INT8_KERNELS,
  type Int8Kernel,
  type QuantDecision,
  type QuantKnobs,
  type ScaleLayout,
  type SgdHyper,
  type Storage,
} from "./backend.ts";
import type { Tensor } from "../tensor.ts";

/** Storage of a native backend: a `d8_buffer` handle, private to this module. */
class NativeStorage implements Storage {
  refs = 0;
  /** False once the storage is in the backend's cache or freed. */
  live = true;
  constructor(readonly handle: bigint, readonly bytes: number) {}
}

/** The `d8_buffer` handle of a tensor (0 = NULL, which the library refuses with a message). */
function ptr(t: Tensor): bigint {
  return (t.storage as NativeStorage).handle ?? 0n;
}

function opt(t: Tensor | null): bigint {
  return t === null ? 0n : ptr(t);
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

const CLIP_CODES = { max: 0, mcs: 1, "mcs-solve": 2, dsgc: 3 } as const;

/** A backend running on one native library and one context of it. */
export class NativeBackend implements CpuBackend {
  readonly name: string;
  readonly #lib: NativeLibrary;
  #ctx = 0n; // 0n once closed
  readonly #pool = new Map<number, NativeStorage[]>();
  /** The pooled storage in release order, oldest first: evicted first when the pool is full. */
  readonly #lru = new Set<NativeStorage>();
  readonly #all = new Set<NativeStorage>();
  readonly #shape = new Int32Array(16);
  readonly #knobs = new ArrayBuffer(64); // d8_quant_knobs: 8 x int32, then 8 x f32
  readonly #knobsI32 = new Int32Array(this.#knobs);
  readonly #knobsF32 = new Float32Array(this.#knobs);
  readonly #knobsBytes = new Uint8Array(this.#knobs);
  readonly #count: BackendCounters = { calls: 0, syncs: 0, reads: 0, bytesUp: 0, bytesDown: 0 };
  #pooledBytes = 0;
  /** Cached bytes kept at most; beyond this, released storage is freed. */
  maxPooledBytes = 1 << 30;

  /**
   * Opens backend `name` (`cpu`, `cuda`) on device `device`.
   *
   * @example
   * ```ts
   * import { NativeBackend } from "./native.ts";
   * const cpu = new NativeBackend("cpu");
   * console.assert(cpu.info().length > 0);
   * cpu.close();
   * ```
   */
  constructor(name: string, device = 0) {
    this.#lib = loadLibrary(name);
    this.name = this.#lib.backend;
    const out = new BigUint64Array(1);
    this.#lib.check(this.#lib.symbols.d8_context_create(bytesOf(out), device));
    this.#ctx = out[0]!;
  }

  get #s() {
    if (this.#ctx === 0n) throw new Error(`The ${this.name} backend was closed`);
    return this.#lib.symbols;
  }

  #check(status: number): void {
    this.#count.calls++;
    if (status !== 0) this.#lib.check(status);
  }

  /** The d8_conv_shape struct of `shape`; `flags` is D8_CONV_ACCUMULATE (1) or 0. */
  #conv(shape: ConvShape, flags = 0): Int32Array {
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
    a[14] = flags;
    a[15] = 0;
    return a;
  }

  info(): string {
    const out = new Uint8Array(512);
    this.#check(this.#s.d8_device_info(this.#ctx, out, out.length));
    return new TextDecoder().decode(out.subarray(0, out.indexOf(0)));
  }

  counters(): BackendCounters {
    return { ...this.#count };
  }

  setThreads(threads: number): void {
    if (!Number.isInteger(threads) || threads < 0 || threads > 0x7fffffff) {
      throw new RangeError(
        `Thread count must be an integer in [0, 2^31 - 1] (0 = all cores; the library caps ` +
          `large ones), got ${threads}`,
      );
    }
    this.#check(this.#s.d8_set_num_threads(this.#ctx, threads));
  }

  synchronize(): Promise<void> {
    try {
      this.#count.syncs++;
      this.#check(this.#s.d8_synchronize(this.#ctx));
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  close(): void {
    if (this.#ctx === 0n) return;
    const s = this.#lib.symbols;
    const failures: string[] = [];
    for (const st of this.#all) {
      st.live = false;
      const status = s.d8_buffer_free(st.handle);
      if (status !== 0) failures.push(this.#message(status));
    }
    this.#all.clear();
    this.#pool.clear();
    this.#lru.clear();
    this.#pooledBytes = 0;
    const status = s.d8_context_destroy(this.#ctx);
    this.#ctx = 0n;
    if (status !== 0) failures.push(this.#message(status));
    if (failures.length > 0) {
      throw new Daint8Error(
        `Closing the ${this.name} backend failed: ${failures.join("; ")}`,
        failures.length,
      );
    }
  }

  #message(status: number): string {
    try {
      this.#lib.check(status);
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  }

  alloc(bytes: number): Storage {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(
        `Cannot allocate ${bytes} bytes: the size must be a positive integer below 2^53`,
      );
    }
    const cached = this.#pool.get(bytes)?.pop();
    if (cached) {
      this.#lru.delete(cached);
      this.#pooledBytes -= bytes;
      cached.refs = 0;
      cached.live = true;
      return cached;
    }
    const out = new BigUint64Array(1);
    this.#check(this.#s.d8_buffer_alloc(bytesOf(out), this.#ctx, BigInt(bytes)));
    const st = new NativeStorage(out[0]!, bytes);
    this.#all.add(st);
    return st;
  }

  release(storage: Storage): void {
    if (this.#ctx === 0n) return;
    const st = storage as NativeStorage;
    if (!this.#all.has(st)) {
      throw new Error(
        `Cannot release storage of ${storage.bytes} bytes: it is not live storage of this ` +
          `${this.name} backend (released twice, or from another backend)`,
      );
    }
    if (!st.live) {
      throw new Error(`Cannot release storage of ${storage.bytes} bytes twice`);
    }
    if (st.refs > 0) {
      throw new Error(
        `Cannot release storage of ${storage.bytes} bytes: ${st.refs} tensor view(s) still use it`,
      );
    }
    st.live = false;
    if (st.bytes > this.maxPooledBytes) return this.#free(st);
    // Full: the longest-pooled storage goes first. (Freeing the newcomer instead, as before, let
    // sizes nobody asks for any more, left by an earlier model, hold the pool while every step
    // of the next one freed and re-allocated its own: fresh pages each step. On the Zen 5 guest,
    // whose first touch of a page runs at 0.37 GB/s, VGG-16 after the other zoo models in one
    // report: 1080 ms a step against 305 ms alone.)
    for (const old of this.#lru) {
      if (this.#pooledBytes + st.bytes <= this.maxPooledBytes) break;
      const list = this.#pool.get(old.bytes)!;
      list.splice(list.indexOf(old), 1);
      this.#lru.delete(old);
      this.#pooledBytes -= old.bytes;
      this.#free(old);
    }
    let list = this.#pool.get(st.bytes);
    if (!list) this.#pool.set(st.bytes, list = []);
    list.push(st);
    this.#lru.add(st);
    this.#pooledBytes += st.bytes;
  }

  #free(st: NativeStorage): void {
    this.#all.delete(st);
    this.#check(this.#s.d8_buffer_free(st.handle));
  }

  upload(dst: Tensor, src: ArrayBufferView): void {
    if (src.byteLength !== dst.bytes) {
      throw new TypeError(
        `Cannot upload ${src.byteLength} bytes into ${dst} (${dst.bytes} bytes)`,
      );
    }
    this.#count.bytesUp += src.byteLength;
    this.#check(this.#s.d8_buffer_upload(ptr(dst), 0n, bytesOf(src), BigInt(src.byteLength)));
  }

  #download(dst: ArrayBufferView, src: Tensor): void {
    if (dst.byteLength !== src.bytes) {
      throw new TypeError(
        `Cannot read ${src} (${src.bytes} bytes) into ${dst.byteLength} bytes`,
      );
    }
    this.#count.bytesDown += dst.byteLength;
    this.#check(this.#s.d8_buffer_download(bytesOf(dst), ptr(src), 0n, BigInt(dst.byteLength)));
  }

  readSync(dst: ArrayBufferView, src: Tensor): void {
    this.#count.syncs++;
    this.#download(dst, src);
  }

  read(dst: ArrayBufferView, src: Tensor): Promise<void> {
    try {
      this.#count.reads++;
      this.#download(dst, src);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
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

  reluMask(y: Tensor, mask: Tensor, x: Tensor): void {
    this.#check(this.#s.d8_relu_fwd_mask(ptr(y), ptr(mask), ptr(x), BigInt(x.size)));
  }

  reluMaskBackward(dx: Tensor, dy: Tensor, mask: Tensor): void {
    this.#check(this.#s.d8_relu_bwd_mask(ptr(dx), ptr(dy), ptr(mask), BigInt(dx.size)));
  }

  concatChannels(y: Tensor, a: Tensor, b: Tensor, rows: number, ca: number, cb: number): void {
    this.#check(this.#s.d8_concat_channels(ptr(y), ptr(a), ptr(b), BigInt(rows), ca, cb));
  }

  splitChannels(da: Tensor, db: Tensor, dy: Tensor, rows: number, ca: number, cb: number): void {
    this.#check(this.#s.d8_split_channels(ptr(da), ptr(db), ptr(dy), BigInt(rows), ca, cb));
  }

  conv2d(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, shape: ConvShape): void {
    this.#check(
      this.#s.d8_conv2d_fwd(ptr(y), ptr(x), ptr(w), opt(bias), this.#conv(shape)),
    );
  }

  conv2dDgrad(dx: Tensor, dy: Tensor, w: Tensor, shape: ConvShape, accumulate = false): void {
    this.#check(
      this.#s.d8_conv2d_dgrad(ptr(dx), ptr(dy), ptr(w), this.#conv(shape, accumulate ? 1 : 0)),
    );
  }

  conv2dWgrad(dw: Tensor, x: Tensor, dy: Tensor, shape: ConvShape): void {
    this.#check(this.#s.d8_conv2d_wgrad(ptr(dw), ptr(x), ptr(dy), this.#conv(shape)));
  }

  biasGrad(db: Tensor, dy: Tensor, m: number, n: number): void {
    this.#check(this.#s.d8_bias_grad(ptr(db), ptr(dy), BigInt(m), n));
  }

  linear(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, m: number, n: number, k: number) {
    this.#check(
      this.#s.d8_linear_fwd(ptr(y), ptr(x), ptr(w), opt(bias), BigInt(m), n, k),
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

  batchNormReluTrain(
    y: Tensor,
    mask: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    x: Tensor,
    residual: Tensor | null,
    st: BatchNormState,
    m: number,
    c: number,
    momentum: number,
    eps: number,
    cap = 0,
  ): void {
    this.#check(
      this.#s.d8_batchnorm_relu_fwd_train(
        ptr(y),
        ptr(mask),
        ptr(saveMean),
        ptr(saveInvStd),
        ptr(st.runningMean),
        ptr(st.runningVar),
        ptr(x),
        opt(residual),
        ptr(st.gamma),
        ptr(st.beta),
        BigInt(m),
        c,
        momentum,
        eps,
        cap,
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
  ): void {
    this.#check(
      this.#s.d8_batchnorm_relu_bwd(
        ptr(dx),
        opt(dresidual),
        ptr(dgamma),
        ptr(dbeta),
        ptr(dy),
        ptr(mask),
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
    accum: Tensor | null,
    logits: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
  ): void {
    this.#check(
      this.#s.d8_softmax_xent_fwd(
        ptr(stats),
        ptr(probs),
        opt(accum),
        ptr(logits),
        ptr(labels),
        n,
        classes,
      ),
    );
  }

  softmaxCrossEntropyBackward(
    dlogits: Tensor,
    probs: Tensor,
    labels: Tensor,
    seed: Tensor | null,
    n: number,
    classes: number,
    scale: number,
  ): void {
    this.#check(
      this.#s.d8_softmax_xent_bwd(
        ptr(dlogits),
        ptr(probs),
        ptr(labels),
        opt(seed),
        n,
        classes,
        scale,
      ),
    );
  }

  sgdStep(w: Tensor, momentumBuf: Tensor, grad: Tensor, h: SgdHyper, nonfinite: Tensor | null) {
    this.#check(
      this.#s.d8_sgd_step(
        ptr(w),
        ptr(momentumBuf),
        opt(nonfinite),
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
    seed: number,
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
        seed >>> 0,
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
    seed: number,
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
        seed >>> 0,
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

  quantizeI8MaxScale(
    y: Tensor,
    scale: Tensor,
    x: Tensor,
    outer: number,
    inner: number,
    layout: ScaleLayout,
  ): void {
    this.#check(
      this.#s.d8_quantize_i8_maxscale(ptr(y), ptr(scale), ptr(x), BigInt(outer), inner, layout),
    );
  }

  quantDecide(
    out: QuantDecision,
    stats: Tensor,
    dy: Tensor,
    table: Tensor | null,
    rows: number,
    kn: QuantKnobs,
  ): void {
    const i = this.#knobsI32, f = this.#knobsF32;
    i[0] = kn.channels;
    i[1] = CLIP_CODES[kn.clip];
    i[2] = kn.gvq ? 1 : 0;
    i[3] = kn.statsPeriod;
    i[4] = kn.dsgcCandidates;
    i[5] = kn.sharpInvertedT ? 1 : 0;
    i[6] = kn.table?.size ?? 0;
    i[7] = 0;
    f[8] = kn.lambda;
    f[9] = kn.k;
    f[10] = kn.A;
    f[11] = kn.dsgcMinRatio;
    f[12] = kn.table?.max ?? 0;
    f[13] = kn.table?.step ?? 0;
    f[14] = 0;
    f[15] = 0;
    this.#check(
      this.#s.d8_quant_decide(
        ptr(out.state),
        ptr(out.clipTensor),
        ptr(out.scaleTensor),
        opt(out.clipsChannel),
        opt(out.scalesChannel),
        ptr(out.record),
        ptr(stats),
        ptr(dy),
        opt(table),
        BigInt(rows),
        this.#knobsBytes,
      ),
    );
  }

  quantError(
    record: Tensor,
    x: Tensor,
    q: Tensor,
    clips: Tensor,
    rows: number,
    channels: number,
    layout: ScaleLayout,
  ): void {
    this.#check(
      this.#s.d8_quant_error(
        ptr(record),
        ptr(x),
        ptr(q),
        ptr(clips),
        BigInt(rows),
        channels,
        layout,
      ),
    );
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
        opt(bias),
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
    accumulate = false,
  ): void {
    this.#check(
      this.#s.d8_conv2d_dgrad_i8(
        ptr(dx),
        ptr(dy),
        ptr(w),
        ptr(dyScale),
        ptr(wScale),
        this.#conv(shape, accumulate ? 1 : 0),
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
    this.#check(this.#s.d8_set_int8_kernel(this.#ctx, v));
  }

  int8KernelName(): string {
    const out = new Uint8Array(64);
    this.#check(this.#s.d8_int8_kernel_name(this.#ctx, out, out.length));
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
