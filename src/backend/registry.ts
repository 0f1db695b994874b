/**
 * Backends by name. `cpu` and `cuda` open a native library through FFI, synchronously
 * (`getBackend`); `webgpu` (src/backend/webgpu/) needs `await navigator.gpu.requestAdapter()`,
 * so it opens through `openBackend`, which serves every name. `auto` tries each GPU backend in
 * order (cuda, then a hardware WebGPU adapter: never a software one such as lavapipe, which
 * `webgpu` by name accepts) and falls back to cpu, keeping the reason it passed over each, so the
 * CLI can say why it did not pick a GPU. No other module branches on a backend's name.
 *
 * @module
 */
import type { Backend } from "./backend.ts";
import { NativeBackend } from "./native.ts";
import { ensureLibrary } from "../../ffi/cache.ts";
import type { WebGpuBackend } from "./webgpu/backend.ts";

/** The WebGPU backend module, loaded on first use (cpu-only users never fetch it). */
const webgpu = () => import("./webgpu/backend.ts").then((m) => m.WebGpuBackend);

/** Backend names `getBackend` accepts. */
export const BACKEND_NAMES = ["cpu", "cuda", "webgpu", "auto"] as const;

/** Opens a backend (a `registerBackend` entry). */
export type BackendFactory = () => Backend;

const factories = new Map<string, BackendFactory>([
  ["cpu", () => new NativeBackend("cpu")],
  ["cuda", () => new NativeBackend("cuda")],
  ["webgpu", () => {
    throw new Error(
      'The webgpu backend opens asynchronously: use openBackend("webgpu") (or openAutoBackend)',
    );
  }],
]);

const opened = new Map<string, Backend>();
/** Names whose factory a caller replaced (`registerBackend`): `openBackend` uses it as is. */
const registered = new Set<string>();

/** Why `auto` passed over a GPU backend: its name and the error it gave. */
export interface PassedOver {
  /** The backend tried (`cuda`, `webgpu`). */
  backend: string;
  /** Why it was not used (the loader's or the device's message). */
  reason: string;
}

/** Makes `factory` the way to open backend `name` (tests, out-of-tree backends). */
export function registerBackend(name: string, factory: BackendFactory): void {
  factories.set(name, factory);
  registered.add(name);
  opened.delete(name);
}

/**
 * `auto`: the first GPU backend that opens (cuda, then webgpu), else cpu, with the reasons the
 * GPU backends were passed over.
 */
export function autoBackend(): { backend: Backend; passedOver: PassedOver[] } {
  const passedOver: PassedOver[] = [];
  for (const name of ["cuda", "webgpu"]) {
    try {
      return { backend: getBackend(name), passedOver };
    } catch (e) {
      passedOver.push({ backend: name, reason: (e as Error).message });
    }
  }
  return { backend: getBackend("cpu"), passedOver };
}

/**
 * The shared backend of `name` (`cpu`, `cuda`, `webgpu`, or `auto`: see `autoBackend`), opened
 * once per process. Throws a RangeError for an unknown name and the backend's own error (a
 * `Daint8Error` for a native library that cannot load) when it cannot open.
 *
 * @example
 * ```ts
 * import { getBackend } from "./registry.ts";
 * const cpu = getBackend("cpu");
 * console.assert(cpu.name === "cpu");
 * ```
 */
export function getBackend(name: string): Backend {
  if (name === "auto") return autoBackend().backend;
  const factory = factories.get(name);
  if (!factory) {
    throw new RangeError(
      `Unknown backend "${name}": expected one of ${BACKEND_NAMES.join(", ")}`,
    );
  }
  let b = opened.get(name);
  if (!b) opened.set(name, b = factory());
  return b;
}

/**
 * `auto`, asynchronously: cuda, then a hardware WebGPU adapter (a software adapter is passed
 * over), else cpu, with the reasons the GPU backends were passed over.
 */
export async function openAutoBackend(): Promise<{ backend: Backend; passedOver: PassedOver[] }> {
  const passedOver: PassedOver[] = [];
  try {
    return { backend: getBackend("cuda"), passedOver };
  } catch (e) {
    passedOver.push({ backend: "cuda", reason: (e as Error).message });
  }
  try {
    let b = opened.get("webgpu");
    if (!b || (b as Partial<WebGpuBackend>).software) {
      b = await (await webgpu()).open({ allowSoftware: false });
      opened.set("webgpu", b);
    }
    return { backend: b, passedOver };
  } catch (e) {
    passedOver.push({ backend: "webgpu", reason: (e as Error).message });
  }
  return { backend: getBackend("cpu"), passedOver };
}

/**
 * The shared backend of `name`, opened once per process, for every name `getBackend` takes and
 * `webgpu` (any adapter, software included: Mesa's lavapipe runs the tests). Rejects with a
 * RangeError for an unknown name and the backend's own error when it cannot open.
 *
 * @example
 * ```ts
 * import { openBackend } from "./registry.ts";
 * const cpu = await openBackend("cpu");
 * console.assert(cpu.name === "cpu");
 * ```
 */
export async function openBackend(name: string): Promise<Backend> {
  if (name === "auto") return (await openAutoBackend()).backend;
  if (name === "webgpu" && !registered.has(name)) {
    let b = opened.get(name);
    if (!b) opened.set(name, b = await (await webgpu()).open({ allowSoftware: true }));
    return b;
  }
  // A native backend of a module imported by URL: fetch (or build) its library into the cache
  // first; from a checkout or with the library cached this finds it at once.
  if ((name === "cpu" || name === "cuda") && !registered.has(name) && !opened.has(name)) {
    await ensureLibrary(name);
  }
  return getBackend(name);
}
