/**
 * Finds a native library, and gets one into the per-user cache when the module was imported
 * by URL. The order, for backend `<name>` (`cpu`, `cuda`):
 *
 * 1. `DAINT8_<NAME>_LIB`: a path to the library (used as is; never downloaded or built);
 * 2. a local build beside the module, `build/libdaint8_<name>.so` of the checkout (file URL
 *    imports only; `deno task build` makes it);
 * 3. the cache: `<cache>/<version>/abi<ABI>/<os>-<arch>/<name>/libdaint8_<name>.so`, with
 *    `<cache>` = `$DAINT8_CACHE`, else `$XDG_CACHE_HOME/daint8`, else `$HOME/.cache/daint8`;
 * 4. (`ensureLibrary` only, module imported over http(s), `DAINT8_OFFLINE` not `1`) the prebuilt
 *    library of this platform from the release location (ffi/release.ts), checked against the
 *    SHA-256 of the manifest published with the module, else a build from the kernel sources
 *    beside the module URL with the local compiler (g++, or `$CXX`), into the cache.
 *
 * Cache entries are produced in a temporary directory next to their final place and renamed
 * into it in one step, with a stamp (size, SHA-256); an entry whose file does not match its
 * stamp is never loaded (it is replaced). Concurrent first runs each produce an entry; the
 * first rename wins and the others use it.
 *
 * @module
 */
import { ABI_VERSION } from "./symbols.ts";
import { Daint8Error } from "./errors.ts";
import { isPermissionError, permissionError, readEnv, withPermission } from "./env.ts";
import { elfProblem, libraryProblem, makeStamp, sha256Hex, stampPath } from "./integrity.ts";
import {
  type Manifest,
  manifestUrl,
  parseManifest,
  platform,
  platformKey,
  releaseUrl,
  VERSION,
} from "./release.ts";
import { KERNEL_SOURCES } from "./sources.ts";
import { cpuFlags, findCxx } from "./build.ts";

/** Backends that have a native library. */
export const NATIVE_BACKENDS: readonly string[] = ["cpu", "cuda"];

/** The environment variable that overrides the library path of `backend`. */
export function envName(backend: string): string {
  return `DAINT8_${backend.toUpperCase()}_LIB`;
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

/** True when the module was imported over http(s) (so libraries may be downloaded). */
export function isRemoteModule(): boolean {
  const p = new URL("../", import.meta.url).protocol;
  return p === "http:" || p === "https:";
}

/** True when `DAINT8_OFFLINE=1`: only the cache is used, nothing is downloaded or built. */
export function isOffline(): boolean {
  return readEnv("DAINT8_OFFLINE") === "1";
}

const CACHE_ENV = "DAINT8_CACHE,XDG_CACHE_HOME,HOME";

/**
 * The per-user cache directory: `$DAINT8_CACHE`, else `$XDG_CACHE_HOME/daint8`, else
 * `$HOME/.cache/daint8`. Throws a `Daint8Error` naming the `--allow-env` flag when none of
 * these variables can be read.
 */
export function cacheRoot(): string {
  const own = readEnv("DAINT8_CACHE");
  if (own !== undefined) return own.replace(/\/+$/, "");
  const xdg = readEnv("XDG_CACHE_HOME");
  if (xdg !== undefined) return `${xdg.replace(/\/+$/, "")}/daint8`;
  const home = readEnv("HOME");
  if (home !== undefined) return `${home.replace(/\/+$/, "")}/.cache/daint8`;
  throw new Daint8Error(
    "Cannot locate the daint8 cache: none of DAINT8_CACHE, XDG_CACHE_HOME, HOME is set and " +
      `readable (add --allow-env=${CACHE_ENV}, or set DAINT8_CACHE)`,
    0,
  );
}

/** The cache directory of `backend` for this version, ABI and platform. */
export function cacheDir(backend: string): string {
  return `${cacheRoot()}/${VERSION}/abi${ABI_VERSION}/${platform()}/${backend}`;
}

/** Where the cached library of `backend` lives (whether or not it is there). */
export function cachedLibraryPath(backend: string): string {
  return `${cacheDir(backend)}/libdaint8_${backend}.so`;
}

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** `libraryProblem`, with a refused read turned into an error naming `--allow-read`. */
function problemOf(
  path: string,
  requireStamp: boolean,
  readRoot = dirOf(path),
): string | undefined {
  return withPermission(
    `read the native library ${path}`,
    `--allow-read=${readRoot}`,
    () => libraryProblem(path, requireStamp),
  );
}

/** A library found without network or compiler: where it is and which rule found it. */
export interface LocatedLibrary {
  /** Path of the library file. */
  path: string;
  /** `env` (`DAINT8_<NAME>_LIB`), `build` (the checkout's build/) or `cache`. */
  origin: "env" | "build" | "cache";
}

/**
 * Finds the library of `backend` by rules 1 to 3 (environment override, local build, cache),
 * synchronously, without network or compiler. Returns undefined when none applies; throws a
 * `Daint8Error` when the file a rule names is missing or damaged (the environment override, or a
 * local build whose stamp does not match). A damaged cache entry counts as absent.
 */
export function locateLibrary(backend: string): LocatedLibrary | undefined {
  const env = readEnv(envName(backend));
  if (env !== undefined) {
    const problem = problemOf(env, false);
    if (problem === "it does not exist") {
      throw new Daint8Error(
        `Cannot find the ${backend} library at "${env}" (from ${envName(backend)}). ` +
          `${buildHint(backend)}.`,
        0,
      );
    }
    if (problem !== undefined) throw damaged(backend, env, problem, `fix ${envName(backend)}`);
    return { path: env, origin: "env" };
  }
  const local = defaultLibraryPath(backend);
  if (local !== undefined) {
    const problem = problemOf(local, false, `${localRoot()}build`);
    if (problem === undefined) return { path: local, origin: "build" };
    if (problem !== "it does not exist") {
      throw damaged(backend, local, problem, "rebuild it with `deno task build`");
    }
  }
  let cached: string;
  try {
    cached = cachedLibraryPath(backend);
  } catch (e) {
    if (local !== undefined) return undefined; // a checkout needs no cache
    throw e;
  }
  try {
    if (problemOf(cached, true, cacheRoot()) === undefined) {
      return { path: cached, origin: "cache" };
    }
  } catch (e) {
    if (local === undefined) throw e; // a checkout needs no cache: say how to build instead
  }
  return undefined;
}

/** The error for a library file that must not be loaded. */
export function damaged(backend: string, path: string, problem: string, fix: string): Daint8Error {
  return new Daint8Error(
    `The ${backend} library "${path}" is damaged and was not loaded: ${problem}. ` +
      `${fix[0]!.toUpperCase()}${fix.slice(1)}.`,
    0,
  );
}

/** How to get each backend's library when nothing was found. */
export function buildHint(backend: string): string {
  if (backend === "cuda" && !isRemoteModule()) {
    return "The cuda library is built with `deno task build` where nvcc and kernels/cuda " +
      "exist; else use --backend cpu, or point DAINT8_CUDA_LIB at a libdaint8_cuda.so with " +
      "this ABI";
  }
  return isRemoteModule()
    ? `Call \`await ensureLibrary("${backend}")\` (exported by mod.ts) before opening the ` +
      "backend: it downloads the prebuilt library (or builds it from source) into the cache"
    : "Build it with `deno task build` (needs a C++17 compiler such as g++)";
}

// ---- ensureLibrary ------------------------------------------------------------------------

const pending = new Map<string, Promise<string>>();

/**
 * Makes the native library of `backend` (`cpu`, `cuda`) available and returns its path:
 * `locateLibrary`'s rules, then, for a module imported over http(s), a checked download of
 * the prebuilt library into the cache or a build from source into it. After it resolves,
 * `loadLibrary(backend)` and `getBackend(backend)` find the library synchronously.
 *
 * Throws a `Daint8Error` when no rule gives a library: offline with an empty cache, a prebuilt
 * file whose SHA-256 differs from the manifest (nothing is cached), no prebuilt file and no
 * compiler, or a missing permission (the message names the flag).
 *
 * @example
 * ```ts ignore
 * import * as d8 from "https://example.com/daint8/mod.ts";
 * await d8.ensureLibrary("cpu"); // first run: download (or build) into ~/.cache/daint8
 * const backend = d8.getBackend("cpu");
 * ```
 */
export function ensureLibrary(backend: string): Promise<string> {
  if (!NATIVE_BACKENDS.includes(backend)) {
    return Promise.reject(
      new RangeError(
        `Unknown native backend "${backend}": expected ${NATIVE_BACKENDS.join(" or ")}`,
      ),
    );
  }
  let p = pending.get(backend);
  if (p === undefined) {
    pending.set(backend, p = ensure(backend));
    p.catch(() => pending.delete(backend)); // a later call may try again
  }
  return p;
}

async function ensure(backend: string): Promise<string> {
  const found = locateLibrary(backend);
  if (found !== undefined) return found.path;
  const dir = cacheDir(backend);
  if (isOffline()) {
    throw new Daint8Error(
      `DAINT8_OFFLINE=1 and the ${backend} library is not in the cache (${dir}): run once ` +
        `online, or set ${envName(backend)} to a libdaint8_${backend}.so`,
      0,
    );
  }
  if (!isRemoteModule()) {
    throw new Daint8Error(
      `Cannot find the ${backend} library: not built in this checkout ` +
        `(${defaultLibraryPath(backend) ?? import.meta.url}) and not cached (${dir}). ` +
        `${buildHint(backend)}.`,
      0,
    );
  }
  const manifest = await fetchManifest();
  const entry = manifest?.files[platformKey(backend)];
  if (entry !== undefined) {
    const url = new URL(entry.file, releaseUrl());
    const bytes = await fetchBytes(url, true);
    if (bytes !== undefined) {
      const digest = sha256Hex(bytes);
      if (bytes.length !== entry.size || digest !== entry.sha256) {
        throw new Daint8Error(
          `Refusing the downloaded ${backend} library ${url}: its SHA-256 is ${digest} ` +
            `(${bytes.length} bytes), the manifest ${manifestUrl()} gives ${entry.sha256} ` +
            `(${entry.size} bytes). Nothing was cached; the release or the connection was ` +
            "tampered with or is broken.",
          0,
        );
      }
      const elf = elfProblem(bytes);
      if (elf !== undefined) throw damaged(backend, url.href, elf, "report it to the release");
      return await install(backend, async (tmp) => {
        await Deno.writeFile(`${tmp}/libdaint8_${backend}.so`, bytes);
        return { origin: "download", detail: { url: url.href } };
      });
    }
    console.error(`daint8: ${url} is not there (HTTP 404); building from source instead`);
  }
  return await buildFromSource(
    backend,
    manifest === undefined ? "no manifest" : "no prebuilt file",
  );
}

/** The manifest published with the module; undefined when there is none (HTTP 404). */
async function fetchManifest(): Promise<Manifest | undefined> {
  const url = manifestUrl();
  const bytes = await fetchBytes(url, false);
  if (bytes === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (cause) {
    throw new Daint8Error(`The manifest ${url} is not JSON: ${(cause as Error).message}`, 0, {
      cause,
    });
  }
  const m = parseManifest(value, url.href);
  if (m.abi !== ABI_VERSION) {
    throw new Daint8Error(
      `The manifest ${url} lists libraries of ABI version ${m.abi}, this module needs ` +
        `${ABI_VERSION}: the release is inconsistent`,
      0,
    );
  }
  return m;
}

/** The body of `url`, or undefined on HTTP 404; progress on stderr when `progress`. */
async function fetchBytes(url: URL, progress: boolean): Promise<Uint8Array | undefined> {
  let res: Response;
  try {
    if (progress) console.error(`daint8: downloading ${url} ...`);
    res = await fetch(url);
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(`fetch ${url}`, `--allow-net=${url.host}`, e);
    throw new Daint8Error(`Cannot fetch ${url}: ${(e as Error).message}`, 0, { cause: e });
  }
  if (res.status === 404) {
    await res.body?.cancel();
    return undefined;
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Daint8Error(`Cannot fetch ${url}: HTTP ${res.status} ${res.statusText}`, 0);
  }
  return new Uint8Array(await res.arrayBuffer());
}

/** Fetches the kernel sources from beside the module and builds the library into the cache. */
async function buildFromSource(backend: string, why: string): Promise<string> {
  const sources = KERNEL_SOURCES[backend];
  if (sources === undefined || backend !== "cpu") {
    throw new Daint8Error(
      `No prebuilt ${backend} library for ${platform()} (${why} at ${manifestUrl()}), and ` +
        `building the ${backend} library from source by URL is not supported: clone the ` +
        `repository and run \`deno task build\`, or set ${envName(backend)}`,
      0,
    );
  }
  const cxx = withPermission("run the C++ compiler", "--allow-run=g++", () => findCxx());
  if (cxx === "") {
    throw new Daint8Error(
      `No prebuilt ${backend} library for ${platform()} (${why} at ${manifestUrl()}), and no ` +
        "C++ compiler to build it from source: install g++ (e.g. `apt-get install g++`) or " +
        `set CXX, or set ${envName(backend)} to a libdaint8_${backend}.so`,
      0,
    );
  }
  return await install(backend, async (tmp) => {
    const src = `${tmp}/src`;
    const base = new URL("../", import.meta.url);
    console.error(
      `daint8: no prebuilt ${backend} library for ${platform()} (${why}); building it from ` +
        `the sources at ${base} with ${cxx} into the cache (once, about a minute) ...`,
    );
    const t0 = performance.now();
    await Promise.all(sources.map(async (rel) => {
      const url = new URL(rel, base);
      const bytes = await fetchBytes(url, false);
      if (bytes === undefined) {
        throw new Daint8Error(`Cannot fetch the kernel source ${url}: HTTP 404`, 0);
      }
      const path = `${src}/${rel}`;
      await Deno.mkdir(dirOf(path), { recursive: true });
      await Deno.writeFile(path, bytes);
    }));
    const flags = cpuFlags(cxx, true, tmp);
    const units = sources.filter((s) => s.endsWith(".cpp")).map((s) => `${src}/${s}`);
    const out = `${tmp}/libdaint8_${backend}.so`;
    // One compiler per translation unit, as many at once as there are processors, then a link.
    const objects = units.map((_, i) => `${src}/${i}.o`);
    const queue = units.map((u, i) => [u, objects[i]!] as const);
    const workers = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, queue.length));
    await Promise.all(Array.from({ length: workers }, async () => {
      for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
        await compile(backend, cxx, [...flags, `-I${src}/kernels`, "-c", job[0], "-o", job[1]]);
      }
    }));
    await compile(backend, cxx, [...flags, ...objects, "-o", out]);
    await Deno.remove(src, { recursive: true });
    console.error(`daint8: built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return { origin: "source", detail: { cxx, flags, from: base.href } };
  });
}

/** Runs the compiler; a failure throws a `Daint8Error` with its output. */
async function compile(backend: string, cxx: string, args: string[]): Promise<void> {
  let r: Deno.CommandOutput;
  try {
    r = await new Deno.Command(cxx, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(`run ${cxx}`, `--allow-run=${cxx}`, e);
    throw e;
  }
  if (!r.success) {
    const dec = new TextDecoder();
    throw new Daint8Error(
      `Building the ${backend} library from source failed (${cxx} ${args.join(" ")}):\n` +
        dec.decode(r.stderr) + dec.decode(r.stdout),
      0,
    );
  }
}

/**
 * Produces a cache entry for `backend` in a fresh temporary directory (`produce` writes
 * `libdaint8_<backend>.so` there), stamps it and renames the directory into place. When another
 * process got there first with a sound entry, that one is kept. Returns the library path.
 */
async function install(
  backend: string,
  produce: (tmp: string) => Promise<{ origin: string; detail: unknown }>,
): Promise<string> {
  const dir = cacheDir(backend);
  const root = cacheRoot();
  const lib = `${dir}/libdaint8_${backend}.so`;
  const suffix = `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const tmp = `${dir}.tmp-${suffix}`;
  const flag = `--allow-read=${root} --allow-write=${root}`;
  try {
    await Deno.mkdir(tmp, { recursive: true });
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(`write the cache ${root}`, flag, e);
    throw e;
  }
  try {
    const { origin, detail } = await produce(tmp);
    const file = `${tmp}/libdaint8_${backend}.so`;
    const bytes = await Deno.readFile(file);
    const stamp = makeStamp(bytes, backend, ABI_VERSION, origin, detail);
    await Deno.writeTextFile(stampPath(file), JSON.stringify(stamp, null, 1) + "\n");
    for (let attempt = 0;; attempt++) {
      try {
        await Deno.rename(tmp, dir);
        return lib;
      } catch (e) {
        if (isPermissionError(e)) throw permissionError(`write the cache ${root}`, flag, e);
        // The target exists: another process installed it, or it is damaged.
        if (libraryProblem(lib, true) === undefined) return lib;
        if (attempt >= 3) throw e;
        try {
          await Deno.rename(dir, `${dir}.old-${suffix}`);
          await Deno.remove(`${dir}.old-${suffix}`, { recursive: true });
        } catch { /* another process moved it first */ }
      }
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
