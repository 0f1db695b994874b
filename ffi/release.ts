/**
 * Where prebuilt native libraries come from: the one place that configures the release
 * location, the platform naming and the manifest format. `deno task dist` (ffi/dist.ts) writes
 * the files this describes; the loader (ffi/cache.ts) reads them.
 *
 * - Prebuilt files: `<release>/libdaint8_<backend>-<os>-<arch>.so`, with `<release>` =
 *   `DAINT8_RELEASE_URL` when set, else `RELEASE_URL`.
 * - The manifest: `dist/manifest.json` beside the module (published with it, so a release host
 *   cannot change both a file and its checksum): `{ name, version, abi, files: { "<backend>-<os>-
 *   <arch>": { file, size, sha256 } } }`.
 *
 * @module
 */
import { readEnv } from "./env.ts";

/** Version of this module (deno.json `version`): the first part of the cache key. */
export const VERSION = "0.1.0";

/** Default release location of the prebuilt libraries of this version (a directory URL). */
export const RELEASE_URL = `https://github.com/daint8/daint8/releases/download/v${VERSION}/`;

/** The release location in effect: `DAINT8_RELEASE_URL` (a mirror, a test) or `RELEASE_URL`. */
export function releaseUrl(): string {
  const url = readEnv("DAINT8_RELEASE_URL") ?? RELEASE_URL;
  return url.endsWith("/") ? url : `${url}/`;
}

/** URL of the manifest published with this module. */
export function manifestUrl(): URL {
  return new URL("../dist/manifest.json", import.meta.url);
}

/** `<os>-<arch>` of this process, e.g. `linux-x86_64`. */
export function platform(): string {
  return `${Deno.build.os}-${Deno.build.arch}`;
}

/** Manifest key of `backend` on this platform, e.g. `cpu-linux-x86_64`. */
export function platformKey(backend: string): string {
  return `${backend}-${platform()}`;
}

/** File name of the prebuilt library of `backend` on this platform. */
export function prebuiltName(backend: string): string {
  return `libdaint8_${platformKey(backend)}.so`;
}

/** One prebuilt file in the manifest. */
export interface ManifestFile {
  /** File name under the release location. */
  file: string;
  /** Size in bytes. */
  size: number;
  /** SHA-256, lowercase hex. */
  sha256: string;
}

/** The manifest of one release (dist/manifest.json). */
export interface Manifest {
  /** Package name. */
  name: string;
  /** Module version (`VERSION`). */
  version: string;
  /** ABI version of the libraries (D8_ABI_VERSION). */
  abi: number;
  /** Prebuilt files by `platformKey`. */
  files: Record<string, ManifestFile>;
}

/** Checks the shape of a parsed manifest; throws a TypeError naming the first bad field. */
export function parseManifest(value: unknown, where: string): Manifest {
  const m = value as Partial<Manifest>;
  const bad = (field: string) => new TypeError(`Bad manifest ${where}: ${field}`);
  if (typeof m !== "object" || m === null) throw bad("not a JSON object");
  if (typeof m.version !== "string") throw bad("no version");
  if (typeof m.abi !== "number") throw bad("no abi");
  if (typeof m.files !== "object" || m.files === null) throw bad("no files");
  for (const [key, f] of Object.entries(m.files)) {
    if (
      typeof f?.file !== "string" || typeof f.size !== "number" ||
      typeof f.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(f.sha256) ||
      f.file.includes("/")
    ) {
      throw bad(`files["${key}"] needs file (a plain name), size and a hex sha256`);
    }
  }
  return m as Manifest;
}
