/**
 * `deno task build`: builds the native libraries into build/ when they are missing, older
 * than their sources, built with other flags, or damaged (size or SHA-256 differ from the stamp
 * the build wrote, or the ELF file is truncated). The train, test and bench tasks depend on it,
 * so a fresh checkout builds itself.
 *
 * - cpu: `build/libdaint8_cpu.so` from kernels/cpu/*.cpp with the system C++ compiler
 *   (`$CXX`, else g++, else clang++), OpenMP when the compiler supports it, `-march=native`
 *   unless `DAINT8_PORTABLE=1` (then baseline x86-64: the hot loops still pick AVX2 / AVX-512
 *   VNNI variants at run time), extra flags from `DAINT8_CXXFLAGS` (appended). The library is
 *   linked with `-z nodelete`, so unloading it never unmaps code an OpenMP worker still runs.
 *   Next to it, `build/libdaint8_cpu.stamp.json` records flags, size and SHA-256.
 * - `DAINT8_BUILD_DIR` puts the output elsewhere (ffi/dist.ts uses it).
 * - cuda: `build/libdaint8_cuda.so` when nvcc is found (ffi/build_cuda.ts).
 *
 * Flags: `--force` rebuilds regardless; `--verbose` prints the commands; `--dry-run` only says
 * whether (and why) it would rebuild.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ABI_VERSION } from "./symbols.ts";
import { libraryProblem, makeStamp, readStamp, stampPath } from "./integrity.ts";
import { buildCuda, findNvcc, runPool } from "./build_cuda.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const buildDir = (() => {
  try {
    return Deno.env.get("DAINT8_BUILD_DIR") || `${root}build`;
  } catch {
    return `${root}build`;
  }
})();

function listFiles(dir: string, exts: string[]): string[] {
  const out: string[] = [];
  try {
    for (const entry of Deno.readDirSync(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) out.push(...listFiles(path, exts));
      else if (exts.some((e) => entry.name.endsWith(e))) out.push(path);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

function mtime(path: string): number {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

function run(cmd: string, args: string[], verbose: boolean): { ok: boolean; stderr: string } {
  if (verbose) console.error(`$ ${cmd} ${args.join(" ")}`);
  const r = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  const dec = new TextDecoder();
  return { ok: r.success, stderr: dec.decode(r.stderr) + dec.decode(r.stdout) };
}

/** True when `cmd --version` runs (the compiler exists and may be run). */
function runs(cmd: string): boolean {
  try {
    return new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e; // say which permission is missing
    return false;
  }
}

/** The C++ compiler to use: `$CXX`, else g++, else clang++; "" when there is none. */
export function findCxx(): string {
  let cxx: string | undefined;
  try {
    cxx = Deno.env.get("CXX") || undefined;
  } catch { /* no env permission: look on PATH */ }
  if (cxx !== undefined) return runs(cxx) ? cxx : "";
  return runs("g++") ? "g++" : runs("clang++") ? "clang++" : "";
}

/**
 * Probes whether `cxx` compiles and links a tiny OpenMP program, in a new directory under
 * `scratch` (default: the system's temporary directory).
 */
function supportsOpenMP(cxx: string, scratch?: string): boolean {
  const dir = Deno.makeTempDirSync({ prefix: "daint8-omp-", dir: scratch });
  try {
    Deno.writeTextFileSync(
      `${dir}/t.cpp`,
      "#include <omp.h>\nint main(){return omp_get_max_threads()>0?0:1;}\n",
    );
    return run(cxx, ["-fopenmp", `${dir}/t.cpp`, "-o", `${dir}/t`], false).ok;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/**
 * Compiler flags of the cpu library (without sources and output); probes OpenMP in a temporary
 * directory under `scratch` (default: the system's).
 */
export function cpuFlags(cxx: string, portable: boolean, scratch?: string): string[] {
  const flags = ["-std=c++17", "-O3", "-fPIC", "-shared", "-Wall", "-Wextra", "-Wl,-z,nodelete"];
  if (!portable) flags.push("-march=native");
  if (supportsOpenMP(cxx, scratch)) flags.push("-fopenmp");
  let extra = "";
  try {
    extra = Deno.env.get("DAINT8_CXXFLAGS") ?? "";
  } catch { /* no env permission: no extra flags */ }
  flags.push(...extra.split(/\s+/).filter((f) => f !== ""));
  return flags;
}

/** The C++ sources of the cpu library under `kernelsDir` (sorted). */
export function cpuSources(kernelsDir: string): string[] {
  return listFiles(`${kernelsDir}/cpu`, [".cpp"]);
}

/**
 * Why the library `out` needs rebuilding (missing, damaged, other flags, older than a source),
 * or undefined when it is up to date. `want` is the flag record the build would write.
 */
export function staleReason(out: string, want: unknown, newestSource: number): string | undefined {
  const problem = libraryProblem(out, true);
  if (problem !== undefined) return problem;
  const stamp = readStamp(out);
  if (JSON.stringify(stamp?.detail) !== JSON.stringify(want)) {
    return "it was built with other flags";
  }
  if (mtime(out) <= newestSource) return "a source is newer";
  return undefined;
}

/**
 * Builds the cpu library when stale; returns its path. Throws with the compiler output. Each
 * source compiles in its own compiler process, as many at a time as there are cores, then one
 * link (a single compiler run over every source took 25 s on 2 cores, all of it serial).
 */
export async function buildCpu(
  opts: { force?: boolean; verbose?: boolean; dryRun?: boolean } = {},
): Promise<string> {
  const out = `${buildDir}/libdaint8_cpu.so`;
  const sources = cpuSources(`${root}kernels`);
  const headers = [
    `${root}kernels/daint8.h`,
    `${root}kernels/arg_checks.inc`,
    ...listFiles(`${root}kernels/cpu`, [".h"]),
  ];
  if (sources.length === 0) throw new Error(`No C++ sources in ${root}kernels/cpu`);
  const cxx = findCxx();
  if (cxx === "") {
    throw new Error(
      "No C++ compiler found: install g++ (e.g. `apt-get install g++`) or set CXX",
    );
  }
  let portable = false;
  try {
    portable = Deno.env.get("DAINT8_PORTABLE") === "1";
  } catch { /* no env permission */ }
  const flags = cpuFlags(cxx, portable);
  const want = { cxx, flags, sources: sources.map((s) => s.slice(root.length)) };
  const newest = Math.max(...[...sources, ...headers].map(mtime));
  const reason = opts.force ? "--force" : staleReason(out, want, newest);
  if (opts.dryRun) {
    console.log(reason === undefined ? `${out} is up to date` : `would rebuild ${out}: ${reason}`);
    return out;
  }
  if (reason === undefined) return out;

  Deno.mkdirSync(buildDir, { recursive: true });
  const tmp = `${out}.tmp-${Deno.pid}`;
  const t0 = performance.now();
  console.error(`daint8: building ${out} with ${cxx} (${reason}) ...`);
  // objects in a folder of this process's own: two builds at once do not share them
  const objDir = `${buildDir}/cpu-obj-${Deno.pid}`;
  Deno.mkdirSync(objDir, { recursive: true });
  let r: { ok: boolean; stderr: string };
  try {
    const objs = sources.map((src) => `${objDir}/${src.slice(src.lastIndexOf("/") + 1)}.o`);
    const cores = Math.max(1, navigator.hardwareConcurrency || 1);
    const compiled = await runPool(
      sources.map((src, i) => ({
        name: src.slice(root.length),
        cmd: cxx,
        args: [...flags, `-I${root}kernels`, "-c", src, "-o", objs[i]!],
      })),
      Math.min(sources.length, cores),
      opts.verbose ?? false,
    );
    const failed = compiled.filter((c) => !c.ok);
    const log = compiled.map((c) => c.out).filter((o) => o.trim() !== "").join("\n");
    r = failed.length > 0
      ? { ok: false, stderr: log }
      : run(cxx, [...flags, ...objs, "-o", tmp], opts.verbose ?? false);
    if (r.ok && log !== "") r = { ok: true, stderr: log + r.stderr };
  } finally {
    Deno.removeSync(objDir, { recursive: true });
  }
  if (!r.ok) {
    try {
      Deno.removeSync(tmp);
    } catch { /* nothing written */ }
    throw new Error(`Building the cpu library failed:\n${r.stderr}`);
  }
  if (r.stderr.trim() !== "") console.error(r.stderr);
  const stamp = makeStamp(Deno.readFileSync(tmp), "cpu", ABI_VERSION, "build", want);
  // Stamp first, then the atomic rename: a running process keeps its mapping, and a library
  // whose stamp does not match (interrupted build) reads as damaged and is rebuilt.
  Deno.writeTextFileSync(stampPath(out), JSON.stringify(stamp, null, 1) + "\n");
  Deno.renameSync(tmp, out);
  try {
    Deno.removeSync(`${buildDir}/libdaint8_cpu.flags`); // the stamp of earlier builds
  } catch { /* none */ }
  console.error(`daint8: built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      force: { type: "boolean" },
      verbose: { type: "boolean" },
      "dry-run": { type: "boolean" },
    },
    strict: true,
  });
  try {
    await buildCpu({ force: values.force, verbose: values.verbose, dryRun: values["dry-run"] });
    // cuda: only where nvcc exists (ffi/build_cuda.ts); DAINT8_NO_CUDA=1 skips it.
    const nvcc = Deno.env.get("DAINT8_NO_CUDA") === "1" ? undefined : findNvcc();
    if (nvcc && !values["dry-run"]) {
      await buildCuda({ force: values.force, verbose: values.verbose, nvcc });
    }
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
