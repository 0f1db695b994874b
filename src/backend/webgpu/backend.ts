/**
 * The WebGPU backend: every op of `Backend` as a WGSL compute shader on Deno's built-in
 * `navigator.gpu`. Ops only encode work: dispatches accumulate in one command encoder (one
 * compute pass between copies) and are submitted at a read, an upload, `synchronize()` or every
 * `BATCH` dispatches. Parameters of each dispatch go to a 256-byte slot of one uniform buffer
 * (dynamic offsets), so pipelines and bind groups are created once and reused. Reads map a
 * staging buffer (`mapAsync`); there is no blocking read.
 *
 * Limits: a dispatch wider than maxComputeWorkgroupsPerDimension is folded into two dimensions;
 * an operand larger than maxStorageBufferBindingSize, or an allocation above maxBufferSize, is a
 * RangeError naming the limit. Device loss and uncaptured errors (out-of-memory included) are
 * thrown as a `Daint8Error` carrying WebGPU's message at the next op or read.
 *
 * @module
 */
import { Daint8Error } from "../../../ffi/library.ts";
import type {
  Backend,
  BackendCounters,
  BatchNormState,
  ConvShape,
  QuantDecision,
  QuantKnobs,
  ScaleLayout,
  SgdHyper,
  Storage,
} from "../backend.ts";
import type { Tensor } from "../../tensor.ts";
import { openDevice, type OpenedDevice, type WebGpuLimits } from "./device.ts";
import { type KernelSpec, source, WG } from "./wgsl/common.ts";
import * as D from "./wgsl/depthwise.ts";
import * as E from "./wgsl/elementwise.ts";
import * as G from "./wgsl/gemm.ts";
import * as Q from "./wgsl/quant.ts";

/** Storage of the WebGPU backend: one GPUBuffer (its size rounded up to 4 bytes). */
class GpuStorage implements Storage {
  refs = 0;
  live = true;
  constructor(readonly buffer: GPUBuffer, readonly bytes: number, readonly id: number) {}
}

const SLOT_BYTES = 256;
const SLOTS = 2048;
/** Dispatches encoded before a submit at the latest. */
const BATCH = 1024;
/** Exact int32 sums: at most 127 * 127 * this many products per reduction chunk. */
const I8_CHUNK = 131072;
const CLIP_CODES = { max: 0, mcs: 1, "mcs-solve": 2, dsgc: 3 } as const;

type Buf = GPUBuffer;
/** A bound byte range of a buffer. */
interface Range {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}
const whole = (b: Buf | Range): Range =>
  b instanceof GPUBuffer ? { buffer: b, offset: 0, size: b.size } : b;
type Fill = (u: Uint32Array, f: Float32Array, i: Int32Array) => void;

const round4 = (n: number) => Math.ceil(n / 4) * 4;
const cdiv = (a: number, b: number) => Math.ceil(a / b);

/** Options of `WebGpuBackend.open`. */
export interface WebGpuOptions {
  /** Accept a software adapter (lavapipe); `--backend webgpu` does, `auto` does not. */
  allowSoftware?: boolean;
  /**
   * Limits lower than the device's, to exercise the split and refusal paths in tests (a device's
   * limits can only be raised when it is requested).
   */
  limits?: Partial<WebGpuLimits>;
}

/** A backend on one WebGPU device. */
export class WebGpuBackend implements Backend {
  readonly name = "webgpu";
  readonly #dev: GPUDevice;
  readonly #desc: string;
  /** True when the adapter is a software one. */
  readonly software: boolean;
  /**
   * Whether int8 GEMMs load aligned groups of 4 channels as one word (default); false forces the
   * bytewise gather everywhere (tests compare the two).
   */
  fastInt8 = true;
  /** The limits work is split or refused by. */
  readonly limits: WebGpuLimits;
  readonly #count: BackendCounters = { calls: 0, syncs: 0, reads: 0, bytesUp: 0, bytesDown: 0 };
  readonly #pool = new Map<number, GpuStorage[]>();
  readonly #all = new Set<GpuStorage>();
  #nextId = 1;
  readonly #ids = new WeakMap<GPUBuffer, number>();
  readonly #pipelines = new Map<KernelSpec, GPUComputePipeline>();
  readonly #layouts = new Map<string, GPUBindGroupLayout>();
  readonly #groups = new Map<string, GPUBindGroup>();
  readonly #params: GPUBuffer;
  readonly #stage = new ArrayBuffer(SLOTS * SLOT_BYTES);
  #slot = 0;
  #enc: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #pending = 0;
  readonly #temps: GpuStorage[] = [];
  #retiring: GpuStorage[] = [];
  readonly #tempFree = new Map<number, GpuStorage[]>();
  readonly #dummy: GPUBuffer;
  /**
   * The first bad label of a loss call, set on the device: [set, row, value, classes] (u32).
   * Reported as a thrown error by the next read or synchronize (as the cuda backend does).
   */
  readonly #labelFlag: GPUBuffer;
  /** A loss call ran since the flag was last read. */
  #labelPending = false;
  #failure: string | null = null;
  #pooledBytes = 0;
  /** Cached bytes kept at most; beyond this, released storage is destroyed. */
  maxPooledBytes = 1 << 30;
  #closed = false;

  private constructor(opened: OpenedDevice, limits: Partial<WebGpuLimits>) {
    const d = opened.device;
    this.#dev = d;
    this.#desc = opened.description;
    this.software = opened.software;
    this.limits = {
      maxStorageBufferBindingSize: Math.min(
        d.limits.maxStorageBufferBindingSize,
        limits.maxStorageBufferBindingSize ?? Infinity,
      ),
      maxBufferSize: Math.min(d.limits.maxBufferSize, limits.maxBufferSize ?? Infinity),
      maxComputeWorkgroupsPerDimension: Math.min(
        d.limits.maxComputeWorkgroupsPerDimension,
        limits.maxComputeWorkgroupsPerDimension ?? Infinity,
      ),
    };
    d.addEventListener("uncapturederror", (e) => {
      this.#failure ??= (e as GPUUncapturedErrorEvent).error.message;
    });
    d.lost.then((info) => {
      if (!this.#closed) this.#failure ??= `the device was lost (${info.reason}): ${info.message}`;
    });
    this.#params = d.createBuffer({
      size: SLOTS * SLOT_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.#dummy = d.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    this.#labelFlag = d.createBuffer({
      size: 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
  }

  /**
   * Opens the first WebGPU adapter (a software one only with `allowSoftware`).
   *
   * @example
   * ```ts ignore
   * import { WebGpuBackend } from "./backend.ts";
   * const gpu = await WebGpuBackend.open({ allowSoftware: true });
   * console.log(gpu.info());
   * gpu.close();
   * ```
   */
  static async open(options: WebGpuOptions = {}): Promise<WebGpuBackend> {
    const opened = await openDevice(options.allowSoftware ?? false);
    return new WebGpuBackend(opened, options.limits ?? {});
  }

  /**
   * A backend on a device the caller opened (it must have the limits `openDevice` requests when
   * the ops need them, e.g. 9 storage buffers per stage). The backend owns the device from now on:
   * `close()` destroys it.
   */
  static fromDevice(
    device: GPUDevice,
    description = "WebGPU device",
    options: WebGpuOptions = {},
  ): WebGpuBackend {
    const opened = { adapter: null as unknown as GPUAdapter, device, description, software: false };
    return new WebGpuBackend(opened, options.limits ?? {});
  }

  info(): string {
    return this.#desc;
  }

  counters(): BackendCounters {
    return { ...this.#count };
  }

  #live(): void {
    if (this.#closed) throw new Error("The webgpu backend was closed");
    if (this.#failure !== null) {
      throw new Daint8Error(`WebGPU device failure: ${this.#failure}`, 4);
    }
  }

  /** Submits the encoded work and resolves when the queue has done it. */
  async synchronize(): Promise<void> {
    this.#live();
    this.#count.syncs++;
    if (this.#labelPending) {
      await this.#readBack(null, null); // the flag's read waits for the queue too
      return;
    }
    this.#flush();
    await this.#dev.queue.onSubmittedWorkDone();
    this.#live(); // a device lost meanwhile
  }

  /**
   * Copies `src` (and the label flag when a loss ran since its last read) into one staging
   * buffer, submits, waits and copies the bytes of `src` into `dst`; throws for a bad label found.
   */
  async #readBack(src: Tensor | null, dst: Uint8Array | null): Promise<void> {
    const size = src ? round4(src.bytes) : 0;
    const flag = this.#labelPending;
    const staging = this.#dev.createBuffer({
      size: size + (flag ? 16 : 0),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#endPass();
    if (src) this.#encoder().copyBufferToBuffer(buf(src), 0, staging, 0, size);
    if (flag) this.#encoder().copyBufferToBuffer(this.#labelFlag, 0, staging, size, 16);
    this.#flush();
    this.#labelPending = false;
    let bad: Uint32Array | null = null;
    try {
      await staging.mapAsync(GPUMapMode.READ);
      const range = staging.getMappedRange();
      if (src && dst) dst.set(new Uint8Array(range, 0, src.bytes));
      if (flag) bad = new Uint32Array(range, size, 4).slice();
      staging.unmap();
    } catch (e) {
      this.#failure ??= (e as Error).message;
    } finally {
      staging.destroy();
    }
    this.#live();
    if (bad && bad[0] !== 0) {
      this.#dev.queue.writeBuffer(this.#labelFlag, 0, new Uint32Array(4));
      throw new Daint8Error(
        `softmaxCrossEntropy: labels[${bad[1]}] = ${bad[2]! | 0} is outside [0, ${bad[3]}) ` +
          `(found on the device by a loss call before this read)`,
        1,
      );
    }
  }

  close(): void {
    if (this.#closed) return;
    try {
      this.#flush();
    } catch { /* closing anyway */ }
    this.#closed = true;
    for (const st of this.#all) st.buffer.destroy();
    for (const st of [...this.#temps, ...this.#retiring]) st.buffer.destroy();
    for (const list of this.#tempFree.values()) for (const st of list) st.buffer.destroy();
    this.#all.clear();
    this.#pool.clear();
    this.#pooledBytes = 0;
    this.#groups.clear();
    this.#params.destroy();
    this.#dummy.destroy();
    this.#labelFlag.destroy();
    this.#dev.destroy();
    if (this.#failure !== null) {
      throw new Daint8Error(`Closing the webgpu backend: ${this.#failure}`, 4);
    }
  }

  #create(bytes: number): GpuStorage {
    const size = round4(bytes);
    if (size > this.limits.maxBufferSize) {
      throw new RangeError(
        `Cannot allocate ${bytes} bytes on WebGPU: more than the device's maxBufferSize ` +
          `(${this.limits.maxBufferSize} bytes)`,
      );
    }
    this.#dev.pushErrorScope("out-of-memory");
    const buffer = this.#dev.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.#dev.popErrorScope().then((e) => {
      if (e) this.#failure ??= `allocating ${bytes} bytes: ${e.message}`;
    });
    const id = this.#nextId++;
    this.#ids.set(buffer, id);
    return new GpuStorage(buffer, bytes, id);
  }

  alloc(bytes: number): Storage {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(
        `Cannot allocate ${bytes} bytes: the size must be a positive integer below 2^53`,
      );
    }
    this.#live();
    const cached = this.#pool.get(bytes)?.pop();
    if (cached) {
      this.#pooledBytes -= bytes;
      cached.refs = 0;
      cached.live = true;
      return cached;
    }
    const st = this.#create(bytes);
    this.#all.add(st);
    return st;
  }

  release(storage: Storage): void {
    if (this.#closed) return;
    const st = storage as GpuStorage;
    if (!this.#all.has(st)) {
      throw new Error(
        `Cannot release storage of ${storage.bytes} bytes: it is not live storage of this ` +
          `webgpu backend (released twice, or from another backend)`,
      );
    }
    if (!st.live) throw new Error(`Cannot release storage of ${storage.bytes} bytes twice`);
    if (st.refs > 0) {
      throw new Error(
        `Cannot release storage of ${storage.bytes} bytes: ${st.refs} tensor view(s) still use it`,
      );
    }
    st.live = false;
    if (this.#pooledBytes + st.bytes > this.maxPooledBytes) {
      this.#flush(); // commands encoded so far may still use it: submit them first
      this.#all.delete(st);
      st.buffer.destroy();
      return;
    }
    let list = this.#pool.get(st.bytes);
    if (!list) this.#pool.set(st.bytes, list = []);
    list.push(st);
    this.#pooledBytes += st.bytes;
  }

  /** A scratch buffer valid until the next submit. */
  #temp(bytes: number): GPUBuffer {
    const size = round4(Math.max(bytes, 4));
    const st = this.#tempFree.get(size)?.pop() ?? this.#create(size);
    this.#temps.push(st);
    return st.buffer;
  }

  #flush(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (!this.#enc) return;
    if (this.#slot > 0) {
      this.#dev.queue.writeBuffer(this.#params, 0, this.#stage, 0, this.#slot * SLOT_BYTES);
    }
    this.#dev.queue.submit([this.#enc.finish()]);
    this.#enc = null;
    this.#slot = 0;
    this.#pending = 0;
    // Scratch of this batch is reused only after the next submit: an op whose dispatches span
    // this submit still holds its scratch in the next batch.
    for (const st of this.#retiring) {
      const size = st.buffer.size;
      let list = this.#tempFree.get(size);
      if (!list) this.#tempFree.set(size, list = []);
      list.push(st);
    }
    this.#retiring = this.#temps.splice(0);
  }

  #encoder(): GPUCommandEncoder {
    return this.#enc ??= this.#dev.createCommandEncoder();
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  #copyBuffers(dst: Buf, src: Buf, bytes: number): void {
    this.#endPass();
    this.#encoder().copyBufferToBuffer(src, 0, dst, 0, round4(bytes));
    this.#count.calls++;
  }

  upload(dst: Tensor, src: ArrayBufferView): void {
    if (src.byteLength !== dst.bytes) {
      throw new TypeError(`Cannot upload ${src.byteLength} bytes into ${dst} (${dst.bytes} bytes)`);
    }
    this.#live();
    this.#flush();
    let bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    if (bytes.length % 4 !== 0) {
      const padded = new Uint8Array(round4(bytes.length));
      padded.set(bytes);
      bytes = padded;
    }
    this.#dev.queue.writeBuffer(buf(dst), 0, bytes as Uint8Array<ArrayBuffer>);
    this.#count.bytesUp += src.byteLength;
  }

  async read(dst: ArrayBufferView, src: Tensor): Promise<void> {
    if (dst.byteLength !== src.bytes) {
      throw new TypeError(`Cannot read ${src} (${src.bytes} bytes) into ${dst.byteLength} bytes`);
    }
    this.#live();
    this.#count.reads++;
    await this.#readBack(src, new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength));
    this.#count.bytesDown += dst.byteLength;
  }

  copy(dst: Tensor, src: Tensor): void {
    if (dst.bytes !== src.bytes) {
      throw new TypeError(`Cannot copy ${src} into ${dst}: sizes differ`);
    }
    this.#live();
    this.#copyBuffers(buf(dst), buf(src), src.bytes);
    this.#maybeFlush();
  }

  #maybeFlush(): void {
    if (++this.#pending >= BATCH) this.#flush();
  }

  #pipeline(spec: KernelSpec): GPUComputePipeline {
    let p = this.#pipelines.get(spec);
    if (p) return p;
    const sig = spec.bindings.map((b) => b.write ? "w" : "r").join("");
    let layout = this.#layouts.get(sig);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [{
        binding: 0,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: SLOT_BYTES },
      }];
      spec.bindings.forEach((b, i) =>
        entries.push({
          binding: i + 1,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: b.write ? "storage" : "read-only-storage" },
        })
      );
      layout = this.#dev.createBindGroupLayout({ entries });
      this.#layouts.set(sig, layout);
    }
    const module = this.#dev.createShaderModule({ code: source(spec), label: spec.name });
    p = this.#dev.createComputePipeline({
      label: spec.name,
      layout: this.#dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    this.#pipelines.set(spec, p);
    return p;
  }

  /** Workgroup counts for `count` groups in one dimension, folded into two when needed. */
  #fold(count: number, what: string): [number, number, number] {
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (count <= max) return [Math.max(count, 1), 1, 1];
    const y = cdiv(count, max);
    if (y > max) {
      throw new RangeError(
        `${what}: ${count} workgroups exceed maxComputeWorkgroupsPerDimension squared ` +
          `(${max} per dimension)`,
      );
    }
    return [max, y, 1];
  }

  /** Encodes one dispatch of `spec` over `bufs` (in binding order) with parameters from `fill`. */
  #dispatch(
    spec: KernelSpec,
    bufs: (Buf | Range)[],
    groups: [number, number, number],
    fill: Fill,
  ): void {
    this.#live();
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    for (const g of groups) {
      if (g > max) {
        throw new RangeError(
          `${spec.name}: ${g} workgroups in one dimension exceed the device's ` +
            `maxComputeWorkgroupsPerDimension (${max})`,
        );
      }
    }
    const ranges = bufs.map(whole);
    this.#bindable(spec, ranges);
    // A buffer read and written by one dispatch would be two conflicting bindings: read a copy.
    const bound = ranges.slice();
    spec.bindings.forEach((b, i) => {
      if (b.write) return;
      const src = bound[i]!;
      if (spec.bindings.some((o, j) => o.write && ranges[j]!.buffer === src.buffer)) {
        const t = this.#temp(src.size);
        this.#endPass();
        this.#encoder().copyBufferToBuffer(src.buffer, src.offset, t, 0, round4(src.size));
        this.#count.calls++;
        bound[i] = { buffer: t, offset: 0, size: src.size };
      }
    });
    if (this.#slot >= SLOTS) this.#flush();
    const off = this.#slot * SLOT_BYTES;
    const u = new Uint32Array(this.#stage, off, SLOT_BYTES / 4);
    u.fill(0);
    fill(
      u,
      new Float32Array(this.#stage, off, SLOT_BYTES / 4),
      new Int32Array(this.#stage, off, 64),
    );
    u[63] = 0;
    this.#slot++;
    const pipeline = this.#pipeline(spec);
    const ids = bound.map((b) =>
      `${this.#ids.get(b.buffer) ?? this.#idOf(b.buffer)}:${b.offset}:${b.size}`
    );
    const key = `${spec.name}|${ids.join(",")}`;
    let group = this.#groups.get(key);
    if (!group) {
      if (this.#groups.size > 8192) this.#groups.clear();
      group = this.#dev.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: this.#params, offset: 0, size: SLOT_BYTES } },
          ...bound.map((b, i) => ({
            binding: i + 1,
            resource: { buffer: b.buffer, offset: b.offset, size: b.size },
          })),
        ],
      });
      this.#groups.set(key, group);
    }
    if (!this.#pass) this.#pass = this.#encoder().beginComputePass();
    this.#pass.setPipeline(pipeline);
    this.#pass.setBindGroup(0, group, [off]);
    this.#pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
    this.#count.calls++;
    this.#maybeFlush();
  }

  /** Throws a RangeError when an operand is larger than one binding may be. */
  #bindable(spec: KernelSpec, bufs: (Buf | Range)[]): void {
    const lim = this.limits.maxStorageBufferBindingSize;
    for (const b of bufs) {
      const size = whole(b).size;
      if (size > lim) {
        throw new RangeError(
          `${spec.name}: an operand of ${size} bytes exceeds the device's ` +
            `maxStorageBufferBindingSize (${lim} bytes)`,
        );
      }
    }
  }

  #idOf(b: GPUBuffer): number {
    const id = this.#nextId++;
    this.#ids.set(b, id);
    return id;
  }

  /** One thread per item (word 0 = items). */
  #linear(spec: KernelSpec, bufs: Buf[], items: number, fill: Fill = () => {}): void {
    if (items <= 0) return;
    if (items >= 2 ** 32) throw new RangeError(`${spec.name}: ${items} items exceed 2^32`);
    const lim = this.limits.maxStorageBufferBindingSize;
    if (spec.elementwise && bufs.some((b) => b.size > lim)) {
      // Binding-sized chunks of elements, each range starting on the offset alignment.
      const align = this.#dev.limits.minStorageBufferOffsetAlignment;
      const per = Math.floor(lim / align) * (align / 4);
      if (per <= 0) throw new RangeError(`${spec.name}: maxStorageBufferBindingSize is too small`);
      for (let start = 0; start < items; start += per) {
        const count = Math.min(per, items - start);
        const ranges = bufs.map((buffer) => ({ buffer, offset: start * 4, size: count * 4 }));
        this.#dispatch(spec, ranges, this.#fold(cdiv(count, WG), spec.name), (u, f, i) => {
          fill(u, f, i);
          u[0] = count;
        });
      }
      return;
    }
    this.#bindable(spec, bufs);
    this.#dispatch(spec, bufs, this.#fold(cdiv(items, WG), spec.name), (u, f, i) => {
      fill(u, f, i);
      u[0] = items;
    });
  }

  /** One workgroup per item. */
  #perGroup(spec: KernelSpec, bufs: Buf[], items: number, fill: Fill): void {
    if (items <= 0) return;
    this.#bindable(spec, bufs);
    this.#dispatch(spec, bufs, this.#fold(items, spec.name), fill);
  }

  #opt(t: Tensor | null): Buf {
    return t === null ? this.#dummy : buf(t);
  }

  // ---- elementwise ----
  fill(y: Tensor, value: number): void {
    this.#linear(E.FILL, [buf(y)], y.size, (_u, f) => f[1] = value);
  }
  add(y: Tensor, a: Tensor, b: Tensor): void {
    this.#linear(E.ADD, [buf(y), buf(a), buf(b)], y.size);
  }
  axpy(y: Tensor, alpha: number, x: Tensor): void {
    this.#linear(E.AXPY, [buf(y), buf(x)], y.size, (_u, f) => f[1] = alpha);
  }
  u8ToF32(y: Tensor, x: Tensor, scale: number, shift: number): void {
    this.#linear(E.U8_TO_F32, [buf(y), buf(x)], y.size, (_u, f) => {
      f[1] = scale;
      f[2] = shift;
    });
  }
  relu(y: Tensor, x: Tensor): void {
    this.#linear(E.RELU, [buf(y), buf(x)], y.size);
  }
  reluBackward(dx: Tensor, dy: Tensor, y: Tensor): void {
    this.#linear(E.RELU_BWD, [buf(dx), buf(dy), buf(y)], dx.size);
  }
  reluMask(y: Tensor, mask: Tensor, x: Tensor): void {
    const n = x.size;
    this.#linear(E.RELU_MASK, [buf(y), buf(mask), buf(x)], cdiv(n, 32), (u, f) => {
      u[1] = n;
      f[2] = 0; // no cap: the plain ReLU
    });
  }
  reluMaskBackward(dx: Tensor, dy: Tensor, mask: Tensor): void {
    this.#linear(E.RELU_MASK_BWD, [buf(dx), buf(dy), buf(mask)], dx.size);
  }
  concatChannels(y: Tensor, a: Tensor, b: Tensor, rows: number, ca: number, cb: number): void {
    this.#linear(E.CONCAT, [buf(y), buf(a), buf(b)], rows * (ca + cb), (u) => {
      u[1] = ca;
      u[2] = cb;
    });
  }
  splitChannels(da: Tensor, db: Tensor, dy: Tensor, rows: number, ca: number, cb: number): void {
    this.#linear(E.SPLIT, [buf(da), buf(db), buf(dy)], rows * (ca + cb), (u) => {
      u[1] = ca;
      u[2] = cb;
    });
  }

  // ---- model-zoo ops ----
  mul(y: Tensor, a: Tensor, b: Tensor): void {
    this.#linear(E.MUL, [buf(y), buf(a), buf(b)], y.size);
  }
  relu6(y: Tensor, x: Tensor): void {
    this.#linear(E.RELU6, [buf(y), buf(x)], y.size);
  }
  relu6Backward(dx: Tensor, dy: Tensor, y: Tensor): void {
    this.#linear(E.RELU6_BWD, [buf(dx), buf(dy), buf(y)], dx.size);
  }
  adaptiveAvgPool(y: Tensor, x: Tensor, n: number, h: number, w: number, c: number): void {
    const [, p = 0, q = 0] = y.shape;
    this.#adaptive(E.ADAPTIVE_AVGPOOL, y, x, n * p * q * c, [n, h, w, c, p, q]);
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
    this.#adaptive(E.ADAPTIVE_AVGPOOL_BWD, dx, dy, n * h * w * c, [n, h, w, c, p, q]);
  }
  #adaptive(spec: KernelSpec, out: Tensor, inp: Tensor, items: number, dims: number[]): void {
    const [n, h, w, c, p, q] = dims as [number, number, number, number, number, number];
    if (![n, h, w, c, p, q].every((v) => Number.isInteger(v) && v >= 1)) {
      throw new RangeError(`${spec.name}: n, h, w, c, p, q must be positive, got ${dims}`);
    }
    need(spec.name, null, [[spec === E.ADAPTIVE_AVGPOOL ? "y" : "dx", out, items * 4], [
      spec === E.ADAPTIVE_AVGPOOL ? "x" : "dy",
      inp,
      (spec === E.ADAPTIVE_AVGPOOL ? n * h * w * c : n * p * q * c) * 4,
    ]]);
    this.#linear(spec, [buf(out), buf(inp)], items, (u) => u.set(dims, 1));
  }

  // ---- GEMMs ----
  #gemm(
    spec: KernelSpec,
    bufs: Buf[],
    m: number,
    n: number,
    k: number,
    z: number,
    splits: number,
    chunk: number,
    fill: Fill,
  ): void {
    if (m <= 0 || n <= 0) return;
    this.#dispatch(spec, bufs, [cdiv(n, G.TILE), cdiv(m, G.TILE), z * splits], (u, f, i) => {
      fill(u, f, i);
      u[0] = m;
      u[1] = n;
      u[2] = k;
      u[3] = chunk;
      u[4] = splits;
    });
  }

  /** Reduction splits: enough workgroups to fill the device, int8 chunks short enough to be exact. */
  #splits(m: number, n: number, z: number, red: number, i8: boolean): [number, number] {
    const tiles = cdiv(m, G.TILE) * cdiv(n, G.TILE) * z;
    let splits = Math.max(1, Math.min(cdiv(256, tiles), cdiv(red, 512)));
    if (i8) splits = Math.max(splits, cdiv(red, I8_CHUNK));
    const step = i8 ? G.TK_I8 : G.TK_F32;
    const chunk = Math.max(step, cdiv(cdiv(red, splits), step) * step);
    return [cdiv(red, chunk), chunk];
  }

  conv2d(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, s: ConvShape): void {
    need("conv2d", s, [["y", y, ny(s) * 4], ["x", x, nx(s) * 4], ["w", w, nw(s) * 4], [
      "bias",
      bias,
      s.k * 4,
    ]]);
    if (depthwise(s)) {
      const quads = s.c % 4 === 0;
      const bufs = [buf(y), buf(x), quads ? this.#dwPack(w, s, false) : buf(w), this.#opt(bias)];
      const items = quads ? ny(s) / 4 : ny(s);
      this.#linear(quads ? D.DW_F32_4 : D.DW_F32, bufs, items, (u, _f, i) => {
        geom(i, s);
        u[5] = bias ? 1 : 0;
      });
      return;
    }
    const g = s.groups, kg = s.k / g, K = s.r * s.s * (s.c / g);
    this.#gemm(
      G.CONV_F32,
      [buf(y), buf(x), buf(w), this.#opt(bias)],
      s.n * s.p * s.q,
      kg,
      K,
      g,
      1,
      K,
      (u, _f, i) => {
        geom(i, s);
        u[5] = bias ? 1 : 0;
      },
    );
  }

  conv2dDgrad(dx: Tensor, dy: Tensor, w: Tensor, s: ConvShape, accumulate = false): void {
    need("conv2dDgrad", s, [["dx", dx, nx(s) * 4], ["dy", dy, ny(s) * 4], ["w", w, nw(s) * 4]]);
    if (accumulate) distinctFromInputs("conv2dDgrad", dx, dy, w);
    if (depthwise(s)) {
      const quads = s.c % 4 === 0;
      const bufs = [buf(dx), buf(dy), quads ? this.#dwPack(w, s, false) : buf(w)];
      const items = quads ? nx(s) / 4 : nx(s);
      this.#linear(quads ? D.DW_DGRAD_F32_4 : D.DW_DGRAD_F32, bufs, items, (u, _f, i) => {
        geom(i, s);
        u[5] = accumulate ? 1 : 0;
      });
      return;
    }
    this.#dgradPhases(G.DGRAD_F32, [buf(dx), buf(dy), buf(w)], s, (u) => {
      u[5] = accumulate ? 1 : 0; // the store adds into dx
    });
  }

  /**
   * A dgrad as one GEMM per stride phase (rr, ss): the input pixels (h0 + i*sh, w0 + j*sw) with
   * h0 = (rr - pad_h) mod sh take exactly the taps (rr + a*sh, ss + b*sw), so no reduction element
   * is a structural zero (the mapping of kernels/cuda/int8_conv.cu; stride 1: one phase). A phase
   * without taps (a kernel smaller than its stride) has an empty reduction: 0 there, or dx kept.
   */
  #dgradPhases(spec: KernelSpec, bufs: Buf[], s: ConvShape, fill: (u: Uint32Array) => void): void {
    const g = s.groups, kg = s.k / g, sh = s.strideH, sw = s.strideW;
    const taps = (x: number, extent: number, st: number) =>
      x < extent ? Math.ceil((extent - x) / st) : 0;
    for (let rr = 0; rr < sh; rr++) {
      for (let ss = 0; ss < sw; ss++) {
        const h0 = ((rr - s.padH) % sh + sh) % sh, w0 = ((ss - s.padW) % sw + sw) % sw;
        const hp = taps(h0, s.h, sh), wp = taps(w0, s.w, sw);
        if (hp === 0 || wp === 0) continue; // no input pixel in this phase
        const nr = taps(rr, s.r, sh), ns = taps(ss, s.s, sw), K = nr * ns * kg;
        this.#gemm(spec, bufs, s.n * hp * wp, s.c / g, K, g, 1, K, (u, _f, i) => {
          geom(i, s);
          fill(u);
          u[24] = h0;
          u[25] = w0;
          u[26] = hp;
          u[27] = wp;
          u[28] = (h0 + s.padH - rr) / sh; // exact, >= 0
          u[29] = (w0 + s.padW - ss) / sw;
          u[30] = rr;
          u[31] = ss;
          u[32] = ns;
        });
      }
    }
  }

  #wgrad(
    spec: KernelSpec,
    dw: Tensor,
    x: Tensor,
    dy: Tensor,
    s: ConvShape,
    scales: [Buf, Buf, boolean] | null,
  ): void {
    const g = s.groups, kg = s.k / g, cols = s.r * s.s * (s.c / g), red = s.n * s.p * s.q;
    const items = s.k * cols;
    if (depthwise(s)) {
      // one thread per (split, tap, channel): enough of them to fill a device, int8 splits short
      // enough to be exact
      let splits = Math.max(1, Math.min(cdiv(red, 256), cdiv(16384, items)));
      if (scales) splits = Math.max(splits, cdiv(red, I8_CHUNK));
      const chunk = cdiv(red, splits);
      splits = cdiv(red, chunk);
      const part = this.#temp(splits * items * 4);
      const quads = scales ? this.#dwQuads(s) : s.c % 4 === 0;
      const dspec = scales
        ? (quads ? D.DW_WGRAD_I8_4 : D.DW_WGRAD_I8)
        : (quads ? D.DW_WGRAD_F32_4 : D.DW_WGRAD_F32);
      const threads = quads ? splits * items / 4 : splits * items;
      this.#linear(dspec, [part, buf(x), buf(dy)], threads, (u, _f, i) => {
        geom(i, s);
        u[24] = chunk;
      });
      this.#wgradSum(dw, part, splits, items, cols, scales);
      return;
    }
    const [splits, chunk] = this.#splits(kg, cols, g, red, scales !== null);
    const part = this.#temp(splits * items * 4);
    this.#gemm(
      spec,
      [part, buf(x), buf(dy)],
      kg,
      cols,
      red,
      g,
      splits,
      chunk,
      (_u, _f, i) => geom(i, s),
    );
    this.#wgradSum(dw, part, splits, items, cols, scales);
  }

  /** int8 depthwise: whether 4 channels a thread (words of NHWC pixels) apply. */
  #dwQuads(s: ConvShape): boolean {
    return s.c % 4 === 0 && this.fastInt8;
  }

  /**
   * Depthwise weights [C, taps] re-laid as [taps][C] for the 4-channel kernels (int8: words of 4
   * channels of a tap; f32: vec4s), in a temporary buffer.
   */
  #dwPack(w: Tensor, s: ConvShape, i8: boolean): Buf {
    const n = s.r * s.s * s.c; // elements; the int8 kernel writes one word per 4
    const wq = this.#temp(i8 ? n : 4 * n);
    const spec = i8 ? D.DW_PACK_I8 : D.DW_PACK_F32;
    this.#linear(spec, [wq, buf(w)], i8 ? n / 4 : n, (_u, _f, i) => geom(i, s));
    return wq;
  }

  /** dw = the wgrad partials [splits][items] summed over the splits (and scaled, int8). */
  #wgradSum(
    dw: Tensor,
    part: Buf,
    splits: number,
    items: number,
    cols: number,
    scales: [Buf, Buf, boolean] | null,
  ): void {
    this.#linear(
      G.WGRAD_SUM,
      [
        buf(dw),
        part,
        scales?.[0] ?? this.#dummy,
        scales?.[1] ?? this.#dummy,
      ],
      items,
      (u) => {
        u[1] = splits;
        u[3] = cols;
        u[4] = scales ? 1 : 0;
        u[5] = scales?.[2] ? 1 : 0;
      },
    );
  }

  conv2dWgrad(dw: Tensor, x: Tensor, dy: Tensor, s: ConvShape): void {
    need("conv2dWgrad", s, [["dw", dw, nw(s) * 4], ["x", x, nx(s) * 4], ["dy", dy, ny(s) * 4]]);
    this.#wgrad(G.WGRAD_F32, dw, x, dy, s, null);
  }

  biasGrad(db: Tensor, dy: Tensor, m: number, n: number): void {
    this.#perGroup(E.BIAS_GRAD, [buf(db), buf(dy)], n, (u) => {
      u[0] = n;
      u[1] = m;
    });
  }

  linear(y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, m: number, n: number, k: number) {
    need("linear", null, [["y", y, m * n * 4], ["x", x, m * k * 4], ["w", w, n * k * 4], [
      "bias",
      bias,
      n * 4,
    ]]);
    this.#gemm(G.LINEAR, [buf(y), buf(x), buf(w), this.#opt(bias)], m, n, k, 1, 1, k, (u) => {
      u[5] = bias ? 1 : 0;
      u[8] = m;
      u[9] = n;
      u[10] = k;
    });
  }

  linearDgrad(dx: Tensor, dy: Tensor, w: Tensor, m: number, n: number, k: number): void {
    need("linearDgrad", null, [["dx", dx, m * k * 4], ["dy", dy, m * n * 4], ["w", w, n * k * 4]]);
    this.#gemm(G.LINEAR_DGRAD, [buf(dx), buf(dy), buf(w)], m, k, n, 1, 1, n, (u) => {
      u[8] = m;
      u[9] = n;
      u[10] = k;
    });
  }

  linearWgrad(dw: Tensor, x: Tensor, dy: Tensor, m: number, n: number, k: number): void {
    need("linearWgrad", null, [["dw", dw, n * k * 4], ["x", x, m * k * 4], ["dy", dy, m * n * 4]]);
    const [splits, chunk] = this.#splits(n, k, 1, m, false);
    const part = this.#temp(splits * n * k * 4);
    this.#gemm(G.LINEAR_WGRAD, [part, buf(x), buf(dy)], n, k, m, 1, splits, chunk, (u) => {
      u[8] = m;
      u[9] = n;
      u[10] = k;
    });
    this.#linear(G.WGRAD_SUM, [buf(dw), part, this.#dummy, this.#dummy], n * k, (u) => {
      u[1] = splits;
      u[3] = k;
    });
  }

  // ---- batch norm ----
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
    this.#bnTrain(buf(y), saveMean, saveInvStd, x, st, m, c, momentum, eps);
  }

  // Composed from the batch-norm, add and masked-ReLU shaders (not yet one fused shader).
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
    if (!(cap >= 0 && cap < Infinity)) {
      throw new RangeError(
        `batchNormReluTrain: cap must be 0 (ReLU) or a finite clamp > 0, got ${cap}`,
      );
    }
    const n = m * c;
    let pre = this.#temp(n * 4);
    this.#bnTrain(pre, saveMean, saveInvStd, x, st, m, c, momentum, eps);
    if (residual) {
      const sum = this.#temp(n * 4);
      this.#linear(E.ADD, [sum, pre, buf(residual)], n);
      pre = sum;
    }
    this.#linear(E.RELU_MASK, [buf(y), buf(mask), pre], cdiv(n, 32), (u, f) => {
      u[1] = n;
      f[2] = cap;
    });
  }

  #bnTrain(
    y: Buf,
    saveMean: Tensor,
    saveInvStd: Tensor,
    x: Tensor,
    st: BatchNormState,
    m: number,
    c: number,
    momentum: number,
    eps: number,
  ): void {
    this.#perGroup(
      E.BN_TRAIN,
      [
        y,
        buf(saveMean),
        buf(saveInvStd),
        buf(st.runningMean),
        buf(st.runningVar),
        buf(x),
        buf(st.gamma),
        buf(st.beta),
      ],
      c,
      (u, f) => {
        u[0] = c;
        u[1] = m;
        f[2] = momentum;
        f[3] = eps;
      },
    );
  }

  batchNormInfer(y: Tensor, x: Tensor, st: BatchNormState, m: number, c: number, eps: number) {
    this.#linear(
      E.BN_INFER,
      [
        buf(y),
        buf(x),
        buf(st.gamma),
        buf(st.beta),
        buf(st.runningMean),
        buf(st.runningVar),
      ],
      m * c,
      (u, f) => {
        u[1] = c;
        f[2] = eps;
      },
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
    this.#bnBackward(dx, dgamma, dbeta, buf(dy), x, gamma, saveMean, saveInvStd, m, c);
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
    const g = dresidual ? buf(dresidual) : this.#temp(m * c * 4);
    this.#linear(E.RELU_MASK_BWD, [g, buf(dy), buf(mask)], m * c);
    this.#bnBackward(dx, dgamma, dbeta, g, x, gamma, saveMean, saveInvStd, m, c);
  }

  #bnBackward(
    dx: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
    dy: Buf,
    x: Tensor,
    gamma: Tensor,
    saveMean: Tensor,
    saveInvStd: Tensor,
    m: number,
    c: number,
  ): void {
    this.#perGroup(
      E.BN_BWD,
      [
        buf(dx),
        buf(dgamma),
        buf(dbeta),
        dy,
        buf(x),
        buf(gamma),
        buf(saveMean),
        buf(saveInvStd),
      ],
      c,
      (u) => {
        u[0] = c;
        u[1] = m;
      },
    );
  }

  // ---- pools ----
  maxPool(y: Tensor, argmax: Tensor, x: Tensor, s: ConvShape): void {
    this.#linear(
      E.MAXPOOL,
      [buf(y), buf(argmax), buf(x)],
      s.n * s.p * s.q * s.c,
      (_u, _f, i) => geom(i, s),
    );
  }
  maxPoolBackward(dx: Tensor, dy: Tensor, argmax: Tensor, s: ConvShape): void {
    this.#linear(E.MAXPOOL_BWD, [buf(dx), buf(dy), buf(argmax)], s.n * s.h * s.w * s.c, (
      _u,
      _f,
      i,
    ) => geom(i, s));
  }
  avgPool(y: Tensor, x: Tensor, s: ConvShape): void {
    this.#linear(E.AVGPOOL, [buf(y), buf(x)], s.n * s.p * s.q * s.c, (_u, _f, i) => geom(i, s));
  }
  avgPoolBackward(dx: Tensor, dy: Tensor, s: ConvShape): void {
    this.#linear(
      E.AVGPOOL_BWD,
      [buf(dx), buf(dy)],
      s.n * s.h * s.w * s.c,
      (_u, _f, i) => geom(i, s),
    );
  }
  globalAvgPool(y: Tensor, x: Tensor, n: number, hw: number, c: number): void {
    this.#linear(E.GAP, [buf(y), buf(x)], n * c, (u) => {
      u[1] = hw;
      u[2] = c;
    });
  }
  globalAvgPoolBackward(dx: Tensor, dy: Tensor, n: number, hw: number, c: number): void {
    this.#linear(E.GAP_BWD, [buf(dx), buf(dy)], n * hw * c, (u) => {
      u[1] = hw;
      u[2] = c;
    });
  }

  // ---- loss, optimizer ----
  softmaxCrossEntropy(
    stats: Tensor,
    probs: Tensor,
    accum: Tensor | null,
    logits: Tensor,
    labels: Tensor,
    n: number,
    classes: number,
  ): void {
    this.#dispatch(
      E.XENT,
      [
        buf(stats),
        buf(probs),
        this.#opt(accum),
        buf(logits),
        buf(labels),
        this.#labelFlag,
      ],
      [1, 1, 1],
      (u) => {
        u[0] = n;
        u[1] = classes;
        u[2] = accum ? 1 : 0;
      },
    );
    this.#labelPending = true;
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
    this.#linear(
      E.XENT_BWD,
      [buf(dlogits), buf(probs), buf(labels), this.#opt(seed)],
      n * classes,
      (u, f) => {
        u[1] = classes;
        f[2] = scale;
        u[3] = seed ? 1 : 0;
      },
    );
  }

  sgdStep(w: Tensor, mb: Tensor, grad: Tensor, h: SgdHyper, nonfinite: Tensor | null): void {
    this.#linear(E.SGD, [buf(w), buf(mb), this.#opt(nonfinite), buf(grad)], w.size, (u, f) => {
      f[1] = h.lr;
      f[2] = h.momentum;
      f[3] = h.weightDecay;
      u[4] = h.nesterov ? 1 : 0;
      u[5] = nonfinite ? 1 : 0;
    });
  }

  // ---- INT8 ----
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
    need("quantizeI8", null, [["y", y, outer * inner], ["x", x, outer * inner * 4], [
      "clips",
      clips,
      (layout === 0 ? 1 : layout === 1 ? inner : outer) * 4,
    ]]);
    const n = outer * inner;
    this.#linear(Q.QUANTIZE, [buf(y), buf(x), buf(clips)], cdiv(n, 4), (u) => {
      u[1] = n;
      u[2] = inner;
      u[3] = layout;
      u[4] = stochastic ? 1 : 0;
      u[5] = seed >>> 0;
    });
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
    need("quantizeI8Dual", null, [
      ["yTensor", yTensor, rows * channels],
      ["yChannel", yChannel, rows * channels],
      ["x", x, rows * channels * 4],
      ["clipsChannel", clipsChannel, channels * 4],
    ]);
    const n = rows * channels;
    this.#linear(
      Q.QUANTIZE_DUAL,
      [
        buf(yTensor),
        buf(yChannel),
        buf(x),
        buf(clipTensor),
        buf(clipsChannel),
      ],
      cdiv(n, 4),
      (u) => {
        u[1] = n;
        u[2] = channels;
        u[4] = stochastic ? 1 : 0;
        u[5] = seed >>> 0;
      },
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
    need("dequantizeI8", null, [["y", y, outer * inner * 4], ["q", q, outer * inner], [
      "clips",
      clips,
      (layout === 0 ? 1 : layout === 1 ? inner : outer) * 4,
    ]]);
    this.#linear(Q.DEQUANTIZE, [buf(y), buf(q), buf(clips)], outer * inner, (u) => {
      u[2] = inner;
      u[3] = layout;
    });
  }

  absmax(out: Tensor, x: Tensor): void {
    this.#perGroup(Q.ROW_MAX, [buf(out), this.#dummy, buf(x)], 1, (u) => {
      u[0] = 1;
      u[1] = x.size;
    });
  }

  quantizeI8MaxScale(
    y: Tensor,
    scale: Tensor,
    x: Tensor,
    outer: number,
    inner: number,
    layout: ScaleLayout,
  ): void {
    if (layout === 1) {
      throw new RangeError(`quantizeI8MaxScale: layout must be tensor (0) or outer (2), got 1`);
    }
    const rows = layout === 0 ? 1 : outer;
    const clips = this.#temp(rows * 4);
    this.#perGroup(Q.ROW_MAX, [clips, buf(scale), buf(x)], rows, (u) => {
      u[0] = rows;
      u[1] = (outer * inner) / rows;
      u[2] = 1;
    });
    const n = outer * inner;
    this.#linear(Q.QUANTIZE, [buf(y), buf(x), clips], cdiv(n, 4), (u) => {
      u[1] = n;
      u[2] = inner;
      u[3] = layout;
    });
  }

  channelStats(out: Tensor, x: Tensor, rows: number, channels: number): void {
    this.#perGroup(Q.CHANNEL_STATS, [buf(out), buf(x)], channels, (u) => {
      u[0] = channels;
      u[1] = rows;
    });
  }

  quantDecide(
    out: QuantDecision,
    stats: Tensor,
    dy: Tensor,
    table: Tensor | null,
    rows: number,
    kn: QuantKnobs,
  ): void {
    const c = kn.channels;
    if (kn.clip === "dsgc" && (kn.dsgcCandidates < 1 || kn.dsgcCandidates > 64)) {
      throw new RangeError(`dsgcCandidates must be in [1, 64], got ${kn.dsgcCandidates}`);
    }
    if (kn.clip === "mcs-solve" && (!table || !kn.table || kn.table.size < 2)) {
      throw new RangeError("mcs-solve needs its table (size >= 2)");
    }
    if (!Number.isInteger(kn.statsPeriod) || kn.statsPeriod < 1) {
      throw new RangeError(`statsPeriod must be an integer >= 1, got ${kn.statsPeriod}`);
    }
    this.channelStats(stats, dy, rows, c);
    const knobs: Fill = (u, f) => {
      u[1] = rows;
      u[16] = c;
      u[17] = CLIP_CODES[kn.clip];
      u[18] = kn.gvq ? 1 : 0;
      u[19] = kn.statsPeriod;
      u[20] = kn.dsgcCandidates;
      u[21] = kn.sharpInvertedT ? 1 : 0;
      u[22] = kn.table?.size ?? 0;
      f[24] = kn.lambda;
      f[25] = kn.k;
      f[26] = kn.A;
      f[27] = kn.dsgcMinRatio;
      f[28] = kn.table?.max ?? 0;
      f[29] = kn.table?.step ?? 0;
    };
    const dist = this.#temp(64 * 4);
    if (kn.clip === "dsgc") {
      this.#perGroup(Q.DSGC, [dist, buf(out.state), buf(stats), buf(dy)], kn.dsgcCandidates, knobs);
    }
    this.#dispatch(
      Q.DECIDE,
      [
        buf(out.state),
        buf(out.clipTensor),
        buf(out.scaleTensor),
        out.clipsChannel ? buf(out.clipsChannel) : this.#temp(c * 4),
        out.scalesChannel ? buf(out.scalesChannel) : this.#temp(c * 4),
        buf(out.record),
        buf(stats),
        dist,
        this.#opt(table),
      ],
      [1, 1, 1],
      knobs,
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
    this.#dispatch(Q.QUANT_ERROR, [buf(record), buf(x), buf(q), buf(clips)], [1, 1, 1], (u) => {
      u[0] = rows * channels;
      u[2] = channels;
      u[3] = layout;
    });
  }

  conv2dI8(
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    xScale: Tensor,
    wScale: Tensor,
    wLayout: ScaleLayout,
    s: ConvShape,
  ): void {
    need("conv2dI8", s, [["y", y, ny(s) * 4], ["x", x, nx(s)], ["w", w, nw(s)], [
      "bias",
      bias,
      s.k * 4,
    ], ["wScale", wScale, wLayout === 2 ? s.k * 4 : 4]]);
    if (depthwise(s)) {
      const quads = this.#dwQuads(s);
      const bufs = [buf(y), buf(x), quads ? this.#dwPack(w, s, true) : buf(w), this.#opt(bias)];
      bufs.push(buf(xScale), buf(wScale));
      const items = quads ? s.n * s.p * s.q * (s.c / 4) : ny(s);
      this.#linear(quads ? D.DW_I8_4 : D.DW_I8, bufs, items, (u, _f, i) => {
        geom(i, s);
        u[5] = bias ? 1 : 0;
        u[6] = wLayout;
      });
      return;
    }
    const g = s.groups, kg = s.k / g, K = s.r * s.s * (s.c / g);
    this.#gemm(
      G.CONV_I8,
      [
        buf(y),
        buf(x),
        buf(w),
        this.#opt(bias),
        buf(xScale),
        buf(wScale),
      ],
      s.n * s.p * s.q,
      kg,
      K,
      g,
      1,
      K,
      (u, _f, i) => {
        geom(i, s);
        u[5] = bias ? 1 : 0;
        u[6] = wLayout;
        // channels of a group in whole aligned words: 4 taps' bytes are one word of x and of w
        u[7] = s.c % 4 === 0 && (s.c / g) % 4 === 0 && this.fastInt8 ? 3 : 0;
      },
    );
  }

  conv2dDgradI8(
    dx: Tensor,
    dy: Tensor,
    w: Tensor,
    dyScale: Tensor,
    wScale: Tensor,
    s: ConvShape,
    accumulate = false,
  ): void {
    need("conv2dDgradI8", s, [["dx", dx, nx(s) * 4], ["dy", dy, ny(s)], ["w", w, nw(s)]]);
    if (accumulate) distinctFromInputs("conv2dDgradI8", dx, dy, w);
    if (depthwise(s)) {
      const quads = this.#dwQuads(s);
      const bufs = [buf(dx), buf(dy), quads ? this.#dwPack(w, s, true) : buf(w)];
      bufs.push(buf(dyScale), buf(wScale));
      const items = quads ? s.n * s.h * s.w * (s.c / 4) : nx(s);
      this.#linear(quads ? D.DW_DGRAD_I8_4 : D.DW_DGRAD_I8, bufs, items, (u, _f, i) => {
        geom(i, s);
        u[5] = accumulate ? 1 : 0;
      });
      return;
    }
    const kg = s.k / s.groups;
    this.#dgradPhases(
      G.DGRAD_I8,
      [buf(dx), buf(dy), buf(w), buf(dyScale), buf(wScale)],
      s,
      (u) => {
        // output channels of a group in whole aligned words of dy (w is gathered bytewise)
        u[7] = s.k % 4 === 0 && kg % 4 === 0 && this.fastInt8 ? 1 : 0;
        u[5] = accumulate ? 1 : 0; // the store adds into dx
      },
    );
  }

  conv2dWgradI8(
    dw: Tensor,
    x: Tensor,
    dy: Tensor,
    xScale: Tensor,
    dyScale: Tensor,
    dyLayout: ScaleLayout,
    s: ConvShape,
  ): void {
    need("conv2dWgradI8", s, [["dw", dw, nw(s) * 4], ["x", x, nx(s)], ["dy", dy, ny(s)], [
      "dyScale",
      dyScale,
      dyLayout === 1 ? s.k * 4 : 4,
    ]]);
    this.#wgrad(G.WGRAD_I8, dw, x, dy, s, [buf(xScale), buf(dyScale), dyLayout === 1]);
  }

  gemmI8(c: Tensor, a: Tensor, b: Tensor, m: number, n: number, k: number): void {
    need("gemmI8", null, [["c", c, m * n * 4], ["a", a, m * k], ["b", b, n * k]]);
    // k % 4 == 0: every row starts on a word, 4 reduction elements are one aligned word
    this.#gemm(G.GEMM_I8, [buf(c), buf(a), buf(b)], m, n, k, 1, 1, k, (u) => {
      u[7] = k % 4 === 0 && this.fastInt8 ? 3 : 0;
    });
  }
}

function buf(t: Tensor): GPUBuffer {
  const st = t.storage as GpuStorage;
  if (!(st instanceof GpuStorage)) {
    throw new TypeError(`${t} does not live on the webgpu backend`);
  }
  return st.buffer;
}

/** An accumulating dgrad reads dx: it must be neither input (a RangeError, as on cpu and cuda). */
function distinctFromInputs(op: string, dx: Tensor, dy: Tensor, w: Tensor): void {
  for (const [name, t] of [["dy", dy], ["w", w]] as const) {
    if (dx.storage === t.storage) {
      throw new RangeError(`${op}: dx must not be the same buffer as ${name} when accumulating`);
    }
  }
}

const nx = (s: ConvShape) => s.n * s.h * s.w * s.c;
const ny = (s: ConvShape) => s.n * s.p * s.q * s.k;
/** One channel per group: the direct depthwise kernels (wgsl/depthwise.ts) instead of GEMMs. */
const depthwise = (s: ConvShape) => s.groups > 1 && s.groups === s.c && s.groups === s.k;
const nw = (s: ConvShape) => s.k * s.r * s.s * (s.c / s.groups);

/**
 * Throws unless every tensor holds the bytes its shape needs (a TypeError naming the operand) and
 * the conv shape `s` is whole (a RangeError): the device would clamp out-of-range reads.
 */
function need(op: string, s: ConvShape | null, list: [string, Tensor | null, number][]): void {
  if (s && (s.c % s.groups !== 0 || s.k % s.groups !== 0 || s.p < 1 || s.q < 1)) {
    throw new RangeError(
      `${op}: groups ${s.groups} must divide c ${s.c} and k ${s.k}, and the output must be ` +
        `non-empty (p ${s.p}, q ${s.q})`,
    );
  }
  for (const [name, t, bytes] of list) {
    if (t && t.bytes < bytes) {
      throw new TypeError(`${op}: ${name} holds ${t.bytes} bytes, the shape needs ${bytes}`);
    }
  }
}

function geom(i: Int32Array, s: ConvShape): void {
  i[8] = s.n;
  i[9] = s.h;
  i[10] = s.w;
  i[11] = s.c;
  i[12] = s.k;
  i[13] = s.r;
  i[14] = s.s;
  i[15] = s.groups;
  i[16] = s.strideH;
  i[17] = s.strideW;
  i[18] = s.padH;
  i[19] = s.padW;
  i[20] = s.p;
  i[21] = s.q;
  i[22] = s.c / s.groups;
  i[23] = s.k / s.groups;
}
