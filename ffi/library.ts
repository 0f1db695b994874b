/**
 * Finds, loads and checks a daint8 native library, and turns its status codes into thrown
 * errors. Nothing else in the project calls `Deno.dlopen`.
 *
 * Loader order for backend `name` (`cpu`, `cuda`):
 * 1. the environment variable `DAINT8_<NAME>_LIB` (e.g. `DAINT8_CPU_LIB=/opt/libdaint8_cpu.so`);
 * 2. the repository's build output `build/libdaint8_<name>.so` next to this module's checkout.
 *
 * @module
 */
import { ABI_VERSION, SYMBOLS, type Symbols } from "./symbols.ts";

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
   * import { Daint8Error } from "./library.ts";
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

/** A loaded native library with its checked symbol table. */
export interface NativeLibrary {
  /** Backend name the library reports (`cpu`, `cuda`). */
  readonly backend: string;
  /** File the library was loaded from. */
  readonly path: string;
  /**
   * The library's FFI functions (kernels/daint8.h), after the ABI version check; call `check` on
   * each returned status.
   */
  readonly symbols: Symbols;
  /** Throws a `Daint8Error` with the library's message when `status` is not 0. */
  check(status: number): void;
  /**
   * Unloads the library and drops it from the process cache (the next `loadLibrary` opens it
   * again); its symbols must not be called afterwards.
   */
  close(): void;
}

const BUILD_HINT = "Build it with `deno task build` (needs a C++17 compiler such as g++)";

/** How to get each backend's library. */
function buildHint(backend: string): string {
  return backend === "cuda"
    ? "This release has no CUDA backend yet (kernels/cuda is the next milestone): use " +
      "--backend cpu, or point DAINT8_CUDA_LIB at a libdaint8_cuda.so with this ABI"
    : BUILD_HINT;
}

/** The repository root when this module runs from a local checkout, else undefined. */
export function localRoot(): string | undefined {
  const url = new URL("../", import.meta.url);
  return url.protocol === "file:" ? decodeURIComponent(url.pathname) : undefined;
}

/** Path where `deno task build` puts the library of `backend`, when running from a checkout. */
export function defaultLibraryPath(backend: string): string | undefined {
  const root = localRoot();
  return root === undefined ? undefined : `${root}build/libdaint8_${backend}.so`;
}

function envName(backend: string): string {
  return `DAINT8_${backend.toUpperCase()}_LIB`;
}

function fileExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

const cache = new Map<string, NativeLibrary>();

/**
 * Loads (once per process) the native library of `backend` and checks its ABI version.
 * Throws a `Daint8Error` that says how to build the library when it is missing or stale.
 */
export function loadLibrary(backend: string): NativeLibrary {
  const cached = cache.get(backend);
  if (cached) return cached;
  const env = Deno.env.get(envName(backend));
  const path = env ?? defaultLibraryPath(backend);
  if (path === undefined) {
    throw new Daint8Error(
      `Cannot find the ${backend} library: set ${envName(backend)} to the path of ` +
        `libdaint8_${backend}.so (this module was imported from ${import.meta.url})`,
      0,
    );
  }
  if (!fileExists(path)) {
    throw new Daint8Error(
      `Cannot find the ${backend} library at "${path}"` +
        (env ? ` (from ${envName(backend)})` : "") + `. ${buildHint(backend)}.`,
      0,
    );
  }
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch (cause) {
    throw new Daint8Error(
      `Cannot load the ${backend} library "${path}": ${(cause as Error).message}. ` +
        `It may be stale or built for another machine: ${BUILD_HINT}.`,
      0,
      { cause },
    );
  }
  const version = lib.symbols.d8_abi_version();
  if (version !== ABI_VERSION) {
    lib.close();
    throw new Daint8Error(
      `The ${backend} library "${path}" has ABI version ${version}, this module needs ` +
        `${ABI_VERSION}: it is stale. ${BUILD_HINT}.`,
      0,
    );
  }
  const symbols = lib.symbols;
  const name = new Uint8Array(32);
  const check = (status: number): void => {
    if (status === 0) return;
    const ptr = symbols.d8_last_error();
    const message = ptr === null ? "unknown error" : Deno.UnsafePointerView.getCString(ptr);
    throw new Daint8Error(
      `${message} (${STATUS_NAMES[status] ?? `status ${status}`})`,
      status,
    );
  };
  check(symbols.d8_backend_name(name, name.length));
  const reported = new TextDecoder().decode(name.subarray(0, name.indexOf(0)));
  const loaded: NativeLibrary = {
    backend: reported,
    path,
    symbols,
    check,
    close() {
      cache.delete(backend);
      lib.close();
    },
  };
  cache.set(backend, loaded);
  return loaded;
}
