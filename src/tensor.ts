/**
 * Tensors: a shape, a dtype and a backend buffer. Memory is explicit: call `dispose()` (or use
 * `using`) when a tensor is no longer needed; the training loop disposes a step's temporaries
 * through its tape. Reshaped views share their storage, which is freed with the last view.
 *
 * @module
 */
import type { Backend, Storage } from "./backend/backend.ts";

/** Element types a tensor can hold. */
export type DType = "f32" | "i32" | "u8" | "i8";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, i32: 4, u8: 1, i8: 1 };

/** The host typed array of each dtype. */
export type HostArray<D extends DType> = D extends "f32" ? Float32Array
  : D extends "i32" ? Int32Array
  : D extends "u8" ? Uint8Array
  : Int8Array;

/** Number of elements of `shape`; throws a RangeError on a zero, negative or fractional size. */
export function shapeSize(shape: readonly number[], what = "tensor"): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d <= 0) {
      throw new RangeError(
        `Cannot create ${what} of shape [${shape.join(", ")}]: every dimension must be a ` +
          `positive integer, got ${d}`,
      );
    }
    n *= d;
  }
  if (n > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(
      `Cannot create ${what} of shape [${shape.join(", ")}]: ${n} elements is more than ` +
        `${Number.MAX_SAFE_INTEGER}`,
    );
  }
  return n;
}

/** The host typed-array constructor of each dtype. */
const HOST_ARRAYS = {
  f32: Float32Array,
  i32: Int32Array,
  u8: Uint8Array,
  i8: Int8Array,
} as const;

/** A new zeroed host array for `n` elements of `dtype`. */
export function hostArray<D extends DType>(dtype: D, n: number): HostArray<D> {
  return new HOST_ARRAYS[dtype](n) as HostArray<D>;
}

let nextId = 1;

/** A dense, row-major tensor on a backend. */
export class Tensor {
  /** Dimensions, outermost first (activations are NHWC, weights OHWI). */
  readonly shape: readonly number[];
  /** Element type (`f32`, `i32`, `u8`, `i8`). */
  readonly dtype: DType;
  /** Backend whose memory holds the data. */
  readonly backend: Backend;
  /** Number of elements. */
  readonly size: number;
  /** Unique id, stable for the tensor's life (used by the tape). */
  readonly id: number = nextId++;
  #storage: Storage | null;

  /** Wraps `storage` (taking one reference). Use the static constructors instead. */
  constructor(backend: Backend, storage: Storage, shape: readonly number[], dtype: DType) {
    this.size = shapeSize(shape);
    if (this.size * DTYPE_BYTES[dtype] > storage.bytes) {
      throw new RangeError(
        `Cannot create tensor of shape [${shape.join(", ")}] ${dtype}: storage holds only ` +
          `${storage.bytes} bytes`,
      );
    }
    this.backend = backend;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.#storage = storage;
    storage.refs++;
  }

  /**
   * A new uninitialized tensor.
   *
   * @example
   * ```ts
   * import { getBackend } from "./backend/registry.ts";
   * import { Tensor } from "./tensor.ts";
   * const t = Tensor.empty(getBackend("cpu"), [2, 3], "f32");
   * console.assert(t.size === 6);
   * t.dispose();
   * ```
   */
  static empty(backend: Backend, shape: readonly number[], dtype: DType = "f32"): Tensor {
    const bytes = shapeSize(shape) * DTYPE_BYTES[dtype];
    if (bytes > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(
        `Cannot create tensor of shape [${shape.join(", ")}] ${dtype}: ${bytes} bytes is more ` +
          `than ${Number.MAX_SAFE_INTEGER}`,
      );
    }
    return new Tensor(backend, backend.alloc(bytes), shape, dtype);
  }

  /** A new tensor filled with `value` (f32). */
  static full(backend: Backend, shape: readonly number[], value: number): Tensor {
    const t = Tensor.empty(backend, shape, "f32");
    backend.fill(t, value);
    return t;
  }

  /**
   * A new tensor holding a copy of `data`; its length must match the shape and its array type
   * the dtype (a TypeError otherwise: bits are never reinterpreted).
   *
   * @example
   * ```ts
   * import { getBackend } from "./backend/registry.ts";
   * import { Tensor } from "./tensor.ts";
   * using t = Tensor.from(getBackend("cpu"), Float32Array.of(1, 2), [2], "f32");
   * console.assert((await t.read())[1] === 2);
   * ```
   */
  static from<D extends DType>(
    backend: Backend,
    data: HostArray<D>,
    shape: readonly number[],
    dtype: D,
  ): Tensor {
    if (!(data instanceof HOST_ARRAYS[dtype])) {
      throw new TypeError(
        `Cannot create a ${dtype} tensor from a ${data?.constructor?.name ?? typeof data}: ` +
          `pass a ${HOST_ARRAYS[dtype].name}`,
      );
    }
    const n = shapeSize(shape);
    if (data.length !== n) {
      throw new TypeError(
        `Cannot create tensor of shape [${shape.join(", ")}] from ${data.length} values ` +
          `(needs ${n})`,
      );
    }
    const t = Tensor.empty(backend, shape, dtype);
    backend.upload(t, data);
    return t;
  }

  /** The backend storage; throws when the tensor was disposed. */
  get storage(): Storage {
    if (this.#storage === null) {
      throw new Error(`Tensor #${this.id} [${this.shape.join(", ")}] was already disposed`);
    }
    return this.#storage;
  }

  /** Whether `dispose()` was called. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** Bytes of the tensor's elements. */
  get bytes(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  /** A view with another shape of the same number of elements, sharing storage. */
  reshape(shape: readonly number[]): Tensor {
    const n = shapeSize(shape);
    if (n !== this.size) {
      throw new TypeError(
        `Cannot reshape [${this.shape.join(", ")}] (${this.size} elements) to ` +
          `[${shape.join(", ")}] (${n} elements)`,
      );
    }
    return new Tensor(this.backend, this.storage, shape, this.dtype);
  }

  /**
   * Copies the elements to a new host typed array once the device work before it is done: the
   * read every backend has (take it at step edges).
   */
  async read(): Promise<Float32Array | Int32Array | Uint8Array | Int8Array> {
    const out = hostArray(this.dtype, this.size);
    await this.backend.read(out, this);
    return out;
  }

  /**
   * Copies the elements to a new host typed array, blocking until the device is done (a sync;
   * tests and tools). Throws a TypeError on a backend without blocking reads (WebGPU: use
   * `await read()`).
   */
  toArray(): Float32Array | Int32Array | Uint8Array | Int8Array {
    const b = this.backend;
    if (!b.readSync) {
      throw new TypeError(
        `Cannot read ${this} synchronously on the ${b.name} backend: use await tensor.read()`,
      );
    }
    const out = hostArray(this.dtype, this.size);
    b.readSync(out, this);
    return out;
  }

  /** Float32 elements (blocking, as `toArray`); throws unless the dtype is f32. */
  toFloat32(): Float32Array {
    if (this.dtype !== "f32") {
      throw new TypeError(`Cannot read a ${this.dtype} tensor as Float32Array`);
    }
    return this.toArray() as Float32Array;
  }

  /** Releases this view; the storage returns to the backend with its last view. Idempotent. */
  dispose(): void {
    const s = this.#storage;
    if (s === null) return;
    this.#storage = null;
    if (--s.refs === 0) this.backend.release(s);
  }

  /** Calls `dispose()`, so `using t = ...` releases the view at scope exit. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** `Tensor#3 [64, 28, 28, 1] f32` */
  toString(): string {
    return `Tensor#${this.id} [${this.shape.join(", ")}] ${this.dtype}`;
  }
}
