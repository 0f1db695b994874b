/**
 * `deno task dist`: the release files, in dist/ (gitignored).
 *
 * - `dist/libdaint8_cpu-<os>-<arch>.so`: the cpu library built with `DAINT8_PORTABLE=1`
 *   (baseline x86-64; the hot loops choose their AVX2 / AVX-512 VNNI variants at run time), so
 *   it runs on any CPU of the architecture.
 * - `dist/libdaint8_cuda-<os>-<arch>.so`: the CUDA library, when kernels/cuda/ exists, nvcc runs
 *   and `deno task build` builds it (its cuda step should build a fat binary under
 *   `DAINT8_PORTABLE=1`).
 * - `dist/manifest.json`: version, ABI version, and per file its size and SHA-256 (the format
 *   of ffi/release.ts).
 *
 * Publishing: upload the `.so` files to the release location (`RELEASE_URL` in ffi/release.ts)
 * and publish `dist/manifest.json` with the module (it is what downloads are checked against).
 *
 * @module
 */
import { ABI_VERSION } from "./symbols.ts";
import { libraryProblem, sha256Hex } from "./integrity.ts";
import { type Manifest, platformKey, prebuiltName, VERSION } from "./release.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const dist = `${root}dist`;
const buildDir = `${dist}/.build`;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function runs(cmd: string): boolean {
  try {
    return new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** The manifest of prebuilt files `libs` (backend -> file bytes) for this platform. */
export function manifestFor(libs: Record<string, Uint8Array>): Manifest {
  const manifest: Manifest = {
    name: "@daint8/daint8",
    version: VERSION,
    abi: ABI_VERSION,
    files: {},
  };
  for (const [backend, bytes] of Object.entries(libs)) {
    manifest.files[platformKey(backend)] = {
      file: prebuiltName(backend),
      size: bytes.length,
      sha256: sha256Hex(bytes),
    };
  }
  return manifest;
}

/** Builds the release libraries into dist/ and writes dist/manifest.json; returns the manifest. */
export function makeDist(): Manifest {
  const pkg = JSON.parse(Deno.readTextFileSync(`${root}deno.json`)) as { version?: string };
  if (pkg.version !== VERSION) {
    throw new Error(
      `deno.json has version ${pkg.version}, ffi/release.ts VERSION is ${VERSION}: make them equal`,
    );
  }
  Deno.mkdirSync(buildDir, { recursive: true });
  const r = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      `${root}ffi/build.ts`,
      "--force",
    ],
    env: { DAINT8_PORTABLE: "1", DAINT8_BUILD_DIR: buildDir },
    stdout: "inherit",
    stderr: "inherit",
  }).outputSync();
  if (!r.success) throw new Error("deno task build failed (see above)");

  const libs: Record<string, Uint8Array> = {};
  const wantCuda = exists(`${root}kernels/cuda`) && runs("nvcc");
  for (const backend of ["cpu", "cuda"]) {
    const lib = `${buildDir}/libdaint8_${backend}.so`;
    if (!exists(lib)) {
      if (backend === "cpu") throw new Error(`The build wrote no ${lib}`);
      console.error(
        wantCuda
          ? "daint8 dist: warning: kernels/cuda and nvcc exist but the build wrote no cuda library"
          : `daint8 dist: cuda skipped (${
            exists(`${root}kernels/cuda`) ? "no nvcc" : "no kernels/cuda"
          })`,
      );
      continue;
    }
    const problem = libraryProblem(lib); // ELF structure, and the stamp when there is one
    if (problem !== undefined) throw new Error(`The built ${lib} is damaged: ${problem}`);
    const bytes = Deno.readFileSync(lib);
    const file = prebuiltName(backend);
    Deno.writeFileSync(`${dist}/${file}.tmp`, bytes);
    Deno.renameSync(`${dist}/${file}.tmp`, `${dist}/${file}`);
    libs[backend] = bytes;
    console.error(`daint8 dist: ${file} (${bytes.length} bytes)`);
  }
  const manifest = manifestFor(libs);
  Deno.writeTextFileSync(`${dist}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
  console.error(
    `daint8 dist: wrote ${dist}/manifest.json. Upload dist/*.so to the release location ` +
      "(ffi/release.ts) and publish dist/manifest.json with the module.",
  );
  return manifest;
}

if (import.meta.main) {
  try {
    makeDist();
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
