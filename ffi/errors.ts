/**
 * The error type of the native layer, shared by the loader, the cache and the FFI calls.
 *
 * @module
 */

/** Status codes of kernels/daint8.h. */
export const STATUS_NAMES: Readonly<Record<number, string>> = {
  1: "invalid argument",
  2: "out of memory",
  3: "unsupported",
  4: "device error",
  5: "internal error",
};

/** An error reported by the native library (non-zero status), or a failure to load it. */
export class Daint8Error extends Error {
  /** The native status code (0 when the library could not be loaded at all). */
  readonly status: number;
  /**
   * An error with `message` and the native `status` (0 for a load failure); `options.cause`
   * carries an underlying error.
   *
   * @example
   * ```ts
   * import { Daint8Error } from "./errors.ts";
   * const e = new Daint8Error("d8_conv2d_fwd: bad shape", 1);
   * console.assert(e.status === 1 && e.name === "Daint8Error");
   * ```
   */
  constructor(message: string, status: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "Daint8Error";
    this.status = status;
  }
}
