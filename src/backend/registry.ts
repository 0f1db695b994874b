/**
 * Backends by name. `cpu` and `cuda` open a native library through FFI; `webgpu` has no
 * implementation in this release. `auto` tries each GPU backend in order (cuda, then a hardware
 * WebGPU adapter) and falls back to cpu, keeping the reason it passed over each, so the CLI can
 * say why it did not pick a GPU. No other module branches on a backend's name.
 *
 * @module
 */
import type { Backend } from "./backend.ts";
import { NativeBackend } from "./native.ts";

/** Backend names `getBackend` accepts. */
export const BACKEND_NAMES = ["cpu", "cuda", "webgpu", "auto"] as const;

/** Opens a backend (a `registerBackend` entry). */
export type BackendFactory = () => Backend;

const factories = new Map<string, BackendFactory>([
  ["cpu", () => new NativeBackend("cpu")],
  ["cuda", () => new NativeBackend("cuda")],
  ["webgpu", () => {
    throw new Error("This release has no WebGPU backend (it is the next milestone)");
  }],
]);

const opened = new Map<string, Backend>();

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
