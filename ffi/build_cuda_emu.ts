/**
 * Builds `build/libdaint8_cuda_emu.so`: the cuda backend (kernels/cuda/*.cu, unchanged) compiled
 * with g++ for the CPU, against the emulated CUDA of kernels/cuda/emu (kernels/cuda/emu/README.md).
 * Each .cu file is rewritten into build/cuda-emu/*.cpp first: a launch `k<<<cfg>>>(args)` becomes
 * `::emu::launch(cfg)(k, args)`, and `extern __shared__ T name[];` a pointer to the block's
 * emulated shared memory; everything else compiles as it is (the emulated cuda_runtime.h
 * supplies the qualifiers, built-ins, warp-level instructions and runtime API).
 *
 * With `DAINT8_CUDA_LIB=build/libdaint8_cuda_emu.so`, the GPU tests (`deno task test:gpu`) run the
 * cuda backend's every kernel against the cpu backend on a machine without a GPU.
 *
 * `deno run -A ffi/build_cuda_emu.ts [--force] [--verbose]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { runPool } from "./build_cuda.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const srcDir = `${root}kernels/cuda`;
const emuDir = `${srcDir}/emu`;

/** The library the emulation builds (under DAINT8_BUILD_DIR, else build/). */
export function emuLibraryPath(buildDir = `${root}build`): string {
  return `${buildDir}/libdaint8_cuda_emu.so`;
}

/**
 * A .cu file's text for the host compiler: launches as calls, dynamic shared memory as a pointer.
 * Throws when a launch is not of the form `kernel<<<config>>>(` (what the rewrite understands).
 */
export function emuSource(text: string, name = "source"): string {
  let out = text.replace(
    /extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][\w\s:]*?)\s+(?:__align__\(\d+\)\s+)?([A-Za-z_]\w*)\s*\[\s*\]\s*;/g,
    (_m, type: string, id: string) =>
      `${type}* ${id} = reinterpret_cast<${type}*>(::emu::smem_base());`,
  );
  // (line breaks kept, so that the #line mapping of compiler messages stays exact)
  out = out.replace(
    /\b([A-Za-z_]\w*(?:<[^<>();]*>)?)\s*<<<([\s\S]*?)>>>\s*\((\s*\))?/g,
    (_m, kern: string, cfg: string, empty: string | undefined) =>
      `::emu::launch(${cfg})(${kern}${empty ? ")" : ", "}`,
  );
  if (out.includes("<<<")) throw new Error(`${name}: a kernel launch the emulation cannot rewrite`);
  return out;
}

/** Builds the emulation library; returns its path. Skips when it is newer than every source. */
export async function buildCudaEmu(
  opts: { force?: boolean; verbose?: boolean; buildDir?: string } = {},
): Promise<string> {
  const buildDir = opts.buildDir ?? (Deno.env.get("DAINT8_BUILD_DIR") || `${root}build`);
  const lib = emuLibraryPath(buildDir);
  const outDir = `${buildDir}/cuda-emu`;
  const files = [...Deno.readDirSync(srcDir)].filter((e) => e.isFile).map((e) => e.name).sort();
  const sources = files.filter((f) => f.endsWith(".cu"));
  const inputs = [
    ...files.map((f) => `${srcDir}/${f}`),
    ...[...Deno.readDirSync(emuDir)].filter((e) => e.isFile).map((e) => `${emuDir}/${e.name}`),
    `${root}kernels/daint8.h`,
    `${root}kernels/arg_checks.inc`,
    `${root}ffi/build_cuda_emu.ts`,
  ];
  const mtime = (p: string) => {
    try {
      return Deno.statSync(p).mtime?.getTime() ?? 0;
    } catch {
      return 0;
    }
  };
  const newest = Math.max(...inputs.map(mtime));
  if (!opts.force && mtime(lib) > newest) return lib;
  Deno.mkdirSync(outDir, { recursive: true });
  const cxx = Deno.env.get("CXX") || "g++";
  const flags = [
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-ffp-contract=off", // CUDA's __fmul_rn and friends: single roundings, no FMA contraction
    "-fvisibility=hidden",
    "-w",
    `-I${emuDir}`,
    `-I${srcDir}`,
    `-I${root}kernels`,
  ];
  const objs: string[] = [];
  const jobs = [];
  for (const s of sources) {
    const cpp = `${outDir}/${s.replace(/\.cu$/, ".cpp")}`;
    const text = Deno.readTextFileSync(`${srcDir}/${s}`);
    Deno.writeTextFileSync(cpp, `#line 1 "${srcDir}/${s}"\n${emuSource(text, s)}`);
    const obj = cpp.replace(/\.cpp$/, ".o");
    objs.push(obj);
    jobs.push({ name: s, cmd: cxx, args: [...flags, "-c", cpp, "-o", obj] });
  }
  const emuObj = `${outDir}/emu.o`;
  objs.push(emuObj);
  jobs.push({
    name: "emu.cpp",
    cmd: cxx,
    args: [...flags, "-c", `${emuDir}/emu.cpp`, "-o", emuObj],
  });
  const t0 = performance.now();
  const width = Math.max(1, navigator.hardwareConcurrency || 2);
  for (const r of await runPool(jobs, width, opts.verbose ?? false)) {
    if (!r.ok) throw new Error(`cuda emulation: compiling ${r.name} failed:\n${r.out}`);
  }
  const link = await new Deno.Command(cxx, {
    args: ["-shared", "-o", lib, ...objs, "-Wl,-z,nodelete"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!link.success) {
    throw new Error(`cuda emulation: linking failed:\n${new TextDecoder().decode(link.stderr)}`);
  }
  if (opts.verbose) {
    console.error(
      `cuda emulation: built ${lib} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
  }
  return lib;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { force: { type: "boolean" }, verbose: { type: "boolean" } },
  });
  const lib = await buildCudaEmu({ force: values.force, verbose: values.verbose });
  console.log(lib);
}
