/**
 * `deno task build`: builds the native libraries into build/ when they are missing or older
 * than their sources (or were built with other flags). The train, test and bench tasks depend
 * on it, so a fresh checkout builds itself.
 *
 * - cpu: `build/libdaint8_cpu.so` from kernels/cpu/*.cpp with the system C++ compiler
 *   (`$CXX`, else g++, else clang++), OpenMP when the compiler supports it, `-march=native`
 *   unless `DAINT8_PORTABLE=1`.
 * - cuda: `build/libdaint8_cuda.so` when nvcc is found (ffi/build_cuda.ts).
 *
 * Flags: `--force` rebuilds regardless of timestamps; `--verbose` prints the commands.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { buildCuda, findNvcc } from "./build_cuda.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const buildDir = `${root}build`;

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

function which(cmd: string): boolean {
  try {
    const r = new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .outputSync();
    return r.success;
  } catch {
    return false;
  }
}

function run(cmd: string, args: string[], verbose: boolean): { ok: boolean; stderr: string } {
  if (verbose) console.error(`$ ${cmd} ${args.join(" ")}`);
  const r = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  const dec = new TextDecoder();
  return { ok: r.success, stderr: dec.decode(r.stderr) + dec.decode(r.stdout) };
}

/** Probes whether `cxx` accepts `flag` by compiling and linking a tiny OpenMP program. */
function supportsOpenMP(cxx: string): boolean {
  const dir = Deno.makeTempDirSync({ prefix: "daint8-omp-" });
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

/** Builds the cpu library when stale; returns its path. Throws with the compiler output. */
export function buildCpu(opts: { force?: boolean; verbose?: boolean } = {}): string {
  const out = `${buildDir}/libdaint8_cpu.so`;
  const sources = listFiles(`${root}kernels/cpu`, [".cpp"]);
  const headers = [`${root}kernels/daint8.h`, ...listFiles(`${root}kernels/cpu`, [".h"])];
  if (sources.length === 0) throw new Error(`No C++ sources in ${root}kernels/cpu`);
  const cxx = Deno.env.get("CXX") ?? (which("g++") ? "g++" : which("clang++") ? "clang++" : "");
  if (cxx === "") {
    throw new Error(
      "No C++ compiler found: install g++ (e.g. `apt-get install g++`) or set CXX",
    );
  }
  const portable = Deno.env.get("DAINT8_PORTABLE") === "1";
  const flags = ["-std=c++17", "-O3", "-fPIC", "-shared", "-Wall", "-Wextra"];
  if (!portable) flags.push("-march=native");
  const stampPath = `${buildDir}/libdaint8_cpu.flags`;
  const wantStamp = JSON.stringify({
    cxx,
    portable,
    sources: sources.map((s) => s.slice(root.length)),
  });
  let stamp = "";
  try {
    stamp = Deno.readTextFileSync(stampPath);
  } catch { /* first build */ }
  const newest = Math.max(...[...sources, ...headers].map(mtime));
  if (!opts.force && stamp === wantStamp && mtime(out) > newest) return out;

  if (supportsOpenMP(cxx)) flags.push("-fopenmp");
  Deno.mkdirSync(buildDir, { recursive: true });
  const tmp = `${out}.tmp-${Deno.pid}`;
  const t0 = performance.now();
  console.error(`daint8: building ${out.slice(root.length)} with ${cxx} ...`);
  const r = run(cxx, [...flags, `-I${root}kernels`, ...sources, "-o", tmp], opts.verbose ?? false);
  if (!r.ok) {
    try {
      Deno.removeSync(tmp);
    } catch { /* nothing written */ }
    throw new Error(`Building the cpu library failed:\n${r.stderr}`);
  }
  if (r.stderr.trim() !== "") console.error(r.stderr);
  Deno.renameSync(tmp, out); // atomic: a running process keeps its mapping
  Deno.writeTextFileSync(stampPath, wantStamp);
  console.error(`daint8: built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { force: { type: "boolean" }, verbose: { type: "boolean" } },
    strict: true,
  });
  try {
    buildCpu({ force: values.force, verbose: values.verbose });
    // cuda: only where nvcc exists (ffi/build_cuda.ts); DAINT8_NO_CUDA=1 skips it.
    const nvcc = Deno.env.get("DAINT8_NO_CUDA") === "1" ? undefined : findNvcc();
    if (nvcc) await buildCuda({ force: values.force, verbose: values.verbose, nvcc });
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
