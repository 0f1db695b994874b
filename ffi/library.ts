/**
 * Loads and checks a daint8 native library, and turns its status codes into thrown errors.
 * Nothing else in the project calls `Deno.dlopen`.
 *
 * Loader order for backend `name` (`cpu`, `cuda`), see ffi/cache.ts:
 * 1. the environment variable `DAINT8_<NAME>_LIB` (e.g. `DAINT8_CPU_LIB=/opt/libdaint8_cpu.so`);
 * 2. the repository's build output `build/libdaint8_<name>.so` next to this module's checkout;
 * 3. the per-user cache (`$DAINT8_CACHE`, `$XDG_CACHE_HOME/daint8` or `~/.cache/daint8`), which
 *    `ensureLibrary(name)` fills by download or source build when the module came by URL.
 *
 * Before mapping a file, the loader checks its ELF structure and, when it has a stamp, its size
 * and SHA-256 (ffi/integrity.ts): a truncated or corrupted file gets a message instead of a
 * SIGBUS. Libraries are linked with `-z nodelete` and never unloaded at exit, so OpenMP workers
 * that are still winding down never run unmapped code.
 *
 * @module
 */
import { ABI_VERSION, SYMBOLS, type Symbols } from "./symbols.ts";
import { Daint8Error, STATUS_NAMES } from "./errors.ts";
import { withPermission } from "./env.ts";
import { buildHint, cacheDir, cachedLibraryPath, damaged, locateLibrary } from "./cache.ts";
import { libraryProblem } from "./integrity.ts";

export { Daint8Error, STATUS_NAMES } from "./errors.ts";
export {
  cacheDir,
  cacheRoot,
  defaultLibraryPath,
  ensureLibrary,
  localRoot,
  locateLibrary,
} from "./cache.ts";
export type { LocatedLibrary } from "./cache.ts";

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
   * Drops the library from the process cache (the next `loadLibrary` opens it again) and closes
   * Deno's handle; its symbols must not be called afterwards. The code stays mapped (the
   * library is linked with `-z nodelete`), so threads it started may finish safely.
   */
  close(): void;
}

const REBUILD_HINT = "Rebuild it with `deno task build` (needs a C++17 compiler such as g++)";

const cache = new Map<string, NativeLibrary>();

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/**
 * Loads (once per process) the native library of `backend` and checks its ABI version: from
 * `path` when given, else by the loader order (environment override, local build, cache).
 * Throws a `Daint8Error` that says how to get the library when it is missing, damaged or stale;
 * when the module was imported by URL and the cache is empty, call `await ensureLibrary(backend)`
 * first.
 */
export function loadLibrary(backend: string, path?: string): NativeLibrary {
  const cached = cache.get(backend);
  if (cached && (path === undefined || cached.path === path)) return cached;
  if (path === undefined) {
    const found = locateLibrary(backend);
    if (found === undefined) {
      let where = "";
      try {
        const cached = cachedLibraryPath(backend);
        const problem = libraryProblem(cached, true);
        where = problem === "it does not exist"
          ? ` It is not in the cache (${cacheDir(backend)}).`
          : ` The cached copy ${cached} is damaged (${problem}) and was not loaded.`;
      } catch { /* the cache cannot be located or read: say nothing about it */ }
      throw new Daint8Error(
        `Cannot find the ${backend} library for this module (${import.meta.url}).${where} ` +
          `${buildHint(backend)}.`,
        0,
      );
    }
    path = found.path;
  } else {
    const file = path;
    const problem = withPermission(
      `read the native library ${file}`,
      `--allow-read=${dirOf(file)}`,
      () => libraryProblem(file),
    );
    if (problem === "it does not exist") {
      throw new Daint8Error(`Cannot find the ${backend} library at "${path}".`, 0);
    }
    if (problem !== undefined) throw damaged(backend, path, problem, REBUILD_HINT);
  }
  const file = path;
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = withPermission(
      `load the native library ${file}`,
      `--allow-ffi=${dirOf(file)}`,
      () => Deno.dlopen(file, SYMBOLS),
    );
  } catch (cause) {
    if (cause instanceof Daint8Error) throw cause;
    throw new Daint8Error(
      `Cannot load the ${backend} library "${path}": ${(cause as Error).message}. ` +
        `It may be stale or built for another machine: ${REBUILD_HINT}.`,
      0,
      { cause },
    );
  }
  const version = lib.symbols.d8_abi_version();
  if (version !== ABI_VERSION) {
    lib.close();
    throw new Daint8Error(
      `The ${backend} library "${path}" has ABI version ${version}, this module needs ` +
        `${ABI_VERSION}: it is stale. ${REBUILD_HINT}.`,
      0,
    );
  }
  const symbols = lib.symbols;
  const name = new Uint8Array(32);
  const text = new Uint8Array(1024);
  const check = (status: number): void => {
    if (status === 0) return;
    const len = symbols.d8_last_error_copy(text, text.length);
    const message = len > 0
      ? new TextDecoder().decode(text.subarray(0, Math.min(len, text.length - 1)))
      : "unknown error";
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
      if (cache.get(backend) === loaded) cache.delete(backend);
      lib.close();
    },
  };
  cache.set(backend, loaded);
  return loaded;
}
