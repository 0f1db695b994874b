/**
 * Builds `build/libdaint8_cuda.so` from kernels/cuda/*.cu with nvcc, as one fat binary: SASS for
 * sm_75, sm_80, sm_86, sm_89 and sm_90 plus compute_90 PTX (for newer GPUs, JIT-compiled by the
 * driver); int8_conv.cu, whose version-4 kernels issue wgmma, builds sm_90a in place of sm_90
 * (arch-specific code, which runs on compute capability 9.0 only). `ffi/build.ts` calls
 * {@link buildCuda} when nvcc is found; the library is rebuilt only
 * when a source, a header or the flags changed (a stamp file next to it, as for the cpu build).
 *
 * Every compile passes `-Xptxas -v`; ptxas' resource report is kept in
 * `build/libdaint8_cuda.ptxas.log`. {@link checkCudaBuild} (`--check`, run by CI) fails when an
 * INT8 kernel spills registers or when the INT8 tensor-core instructions are missing from the
 * PTX (`mma.sync...m16n8k32...s8` and `m8n8k16...s8`; `wgmma.mma_async...s8` in the compute_90a
 * PTX); when `cuobjdump` is installed it also requires IMMA instructions in the sm_80 and sm_90
 * SASS and IGMMA in the sm_90a SASS.
 *
 * `deno run -A ffi/build_cuda.ts [--force] [--verbose] [--check]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ABI_VERSION } from "./symbols.ts";
import { makeStamp, stampPath as integrityStampPath } from "./integrity.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const buildDir = `${root}build`;
const srcDir = `${root}kernels/cuda`;

/** The real-architecture targets of the fat binary, and the PTX target. */
export const CUDA_ARCHS = ["75", "80", "86", "89", "90"] as const;
const PTX_ARCH = "90";
/** Sources built for sm_90a instead of sm_90 (they use wgmma). */
const SM90A_SOURCES = new Set(["int8_conv"]);

function listFiles(dir: string, exts: string[]): string[] {
  const out: string[] = [];
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.isFile && exts.some((e) => entry.name.endsWith(e))) {
        out.push(`${dir}/${entry.name}`);
      }
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

function which(cmd: string): string | undefined {
  try {
    const r = new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "piped" })
      .outputSync();
    const path = new TextDecoder().decode(r.stdout).trim();
    return r.success && path !== "" ? path : undefined;
  } catch {
    return undefined;
  }
}

/** nvcc's path: `$NVCC`, else `nvcc` on PATH, else /usr/local/cuda/bin/nvcc; undefined if none. */
export function findNvcc(): string | undefined {
  const env = Deno.env.get("NVCC");
  if (env) return env;
  const onPath = which("nvcc");
  if (onPath) return onPath;
  try {
    if (Deno.statSync("/usr/local/cuda/bin/nvcc").isFile) return "/usr/local/cuda/bin/nvcc";
  } catch { /* absent */ }
  return undefined;
}

function run(cmd: string, args: string[], verbose: boolean): { ok: boolean; out: string } {
  if (verbose) console.error(`$ ${cmd} ${args.join(" ")}`);
  const r = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  const dec = new TextDecoder();
  return { ok: r.success, out: dec.decode(r.stderr) + dec.decode(r.stdout) };
}

function gencode(source?: string): string[] {
  const flags: string[] = [];
  for (const a of CUDA_ARCHS) {
    const arch = a === "90" && source && SM90A_SOURCES.has(source) ? "90a" : a;
    flags.push("-gencode", `arch=compute_${arch},code=sm_${arch}`);
  }
  flags.push("-gencode", `arch=compute_${PTX_ARCH},code=compute_${PTX_ARCH}`);
  return flags;
}

function baseFlags(): string[] {
  return [
    "-std=c++17",
    "-O3",
    "-lineinfo", // source lines for compute-sanitizer and ncu (gpu_check's triage); no run-time cost
    "-Xcompiler",
    "-fPIC,-Wall,-Wextra,-fvisibility=hidden",
    "-Xptxas",
    "-v",
    `-I${root}kernels`,
  ];
}

/**
 * Builds the cuda library when stale; returns its path. Throws with nvcc's output on failure.
 * Warnings from nvcc or the host compiler are printed (the sources are meant to build clean).
 */
export async function buildCuda(
  opts: { force?: boolean; verbose?: boolean; nvcc?: string } = {},
): Promise<string> {
  const nvcc = opts.nvcc ?? findNvcc();
  if (!nvcc) throw new Error("nvcc not found: install the CUDA toolkit or set NVCC");
  const out = `${buildDir}/libdaint8_cuda.so`;
  const sources = listFiles(srcDir, [".cu"]);
  const headers = [
    `${root}kernels/daint8.h`,
    `${root}kernels/arg_checks.inc`,
    ...listFiles(srcDir, [".cuh", ".h"]),
  ];
  if (sources.length === 0) throw new Error(`No CUDA sources in ${srcDir}`);
  const version = run(nvcc, ["--version"], false).out.trim().split("\n").pop() ?? "";
  const flags = [
    ...baseFlags(),
    ...gencode(),
    ...[...SM90A_SOURCES].map((s) => `sm_90a:${s}`),
  ];
  const stampPath = `${buildDir}/libdaint8_cuda.flags`;
  // The newest source time is part of the stamp: an edit made while a build runs still triggers
  // the next build (the library's own mtime is later than that edit).
  const newest = Math.max(...[...sources, ...headers].map(mtime));
  const wantStamp = JSON.stringify({
    nvcc,
    version,
    flags,
    sources: sources.map((s) => s.slice(root.length)),
    newest,
  });
  let stamp = "";
  try {
    stamp = Deno.readTextFileSync(stampPath);
  } catch { /* first build */ }
  if (!opts.force && stamp === wantStamp && mtime(out) > newest) return out;

  Deno.mkdirSync(`${buildDir}/cuda-obj`, { recursive: true });
  const t0 = performance.now();
  console.error(`daint8: building ${out.slice(root.length)} with ${nvcc} (${version}) ...`);
  const objs: string[] = [];
  let log = "";
  const warnings: string[] = [];
  // One nvcc process per file, as many at a time as there are cores, and the cores left over
  // shared by each process's targets (nvcc --threads compiles the fat binary's architectures in
  // parallel): the 16-core GPU machine builds in a fraction of the 2-core time, which its short
  // sessions need. (--threads does not change the output: it stays out of the stamp.)
  const cores = Math.max(1, navigator.hardwareConcurrency || 1);
  const width = Math.min(sources.length, cores);
  const threads = ["--threads", String(Math.max(1, Math.floor(cores / width)))];
  const results = await runPool(
    sources.map((src) => {
      const name = src.slice(srcDir.length + 1).replace(/\.cu$/, "");
      const obj = `${buildDir}/cuda-obj/${name}.o`;
      objs.push(obj);
      const args = [...baseFlags(), ...gencode(name), ...threads, "-c", src, "-o", obj];
      return { name, cmd: nvcc, args };
    }),
    width,
    opts.verbose ?? false,
  );
  for (const r of results) {
    log += `### ${r.name}.cu\n${r.out}\n`;
    for (const line of r.out.split("\n")) {
      if (/warning/i.test(line)) warnings.push(`${r.name}.cu: ${line}`);
    }
  }
  const failed = results.find((r) => !r.ok);
  if (failed) {
    Deno.writeTextFileSync(`${buildDir}/libdaint8_cuda.ptxas.log`, log);
    throw new Error(`Building the cuda library failed (${failed.name}.cu):\n${failed.out}`);
  }
  const tmp = `${out}.tmp-${Deno.pid}`;
  const link = run(
    nvcc,
    [
      "-shared",
      ...gencode(),
      "-Xlinker",
      "-znodelete", // as the cpu library: unloading never unmaps code a CUDA thread still runs
      "-o",
      tmp,
      ...objs,
      "-lcudart_static",
      "-lrt",
      "-ldl",
      "-lpthread",
    ],
    opts.verbose ?? false,
  );
  if (!link.ok) {
    try {
      Deno.removeSync(tmp);
    } catch { /* nothing written */ }
    throw new Error(`Linking the cuda library failed:\n${link.out}`);
  }
  Deno.writeTextFileSync(`${buildDir}/libdaint8_cuda.ptxas.log`, log);
  if (warnings.length > 0) console.error(warnings.join("\n"));
  Deno.renameSync(tmp, out);
  Deno.writeTextFileSync(stampPath, wantStamp);
  // Size and SHA-256 for the loader's integrity check (ffi/integrity.ts), as the cpu build does.
  Deno.writeTextFileSync(
    integrityStampPath(out),
    JSON.stringify(makeStamp(Deno.readFileSync(out), "cuda", ABI_VERSION, "local build", {
      nvcc: version,
      archs: CUDA_ARCHS,
    })) + "\n",
  );
  console.error(
    `daint8: built the cuda library in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return out;
}

/** One compiler run of a parallel build. */
export interface Job {
  name: string;
  cmd: string;
  args: string[];
}

/** Runs the jobs, `width` at a time; results in job order. */
export async function runPool(
  jobs: Job[],
  width: number,
  verbose: boolean,
): Promise<{ name: string; ok: boolean; out: string }[]> {
  const results: { name: string; ok: boolean; out: string }[] = new Array(jobs.length);
  let next = 0;
  const dec = new TextDecoder();
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const job = jobs[i]!;
      if (verbose) console.error(`$ ${job.cmd} ${job.args.join(" ")}`);
      const t0 = performance.now();
      const r = await new Deno.Command(job.cmd, {
        args: job.args,
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      if (verbose) {
        console.error(`  ${job.name}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
      results[i] = {
        name: job.name,
        ok: r.success,
        out: dec.decode(r.stderr) + dec.decode(r.stdout),
      };
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
  return results;
}

/** One kernel's ptxas report. */
export interface KernelResources {
  /** Mangled kernel name. */
  kernel: string;
  /** Target, e.g. `sm_90`. */
  arch: string;
  /** Registers per thread. */
  registers: number;
  /** Bytes of spill stores and loads. */
  spillStores: number;
  /** Bytes of spill loads. */
  spillLoads: number;
}

/** Parses `ptxas -v` output into one entry per (kernel, arch). */
export function parsePtxasLog(log: string): KernelResources[] {
  const out: KernelResources[] = [];
  let cur: KernelResources | undefined;
  for (const line of log.split("\n")) {
    const entry = line.match(/Compiling entry function '([^']+)' for '(sm_\d+a?)'/);
    if (entry) {
      cur = { kernel: entry[1]!, arch: entry[2]!, registers: 0, spillStores: 0, spillLoads: 0 };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const spill = line.match(/(\d+) bytes spill stores, (\d+) bytes spill loads/);
    if (spill) {
      cur.spillStores = Number(spill[1]);
      cur.spillLoads = Number(spill[2]);
    }
    const regs = line.match(/Used (\d+) registers/);
    if (regs) cur.registers = Number(regs[1]);
  }
  return out;
}

/**
 * Checks the built library: no undefined symbols of its own, no INT8 kernel spills (from the ptxas
 * log of the last build), the PTX
 * of int8_conv.cu contains both INT8 mma shapes, and, when cuobjdump exists, the sm_80 / sm_90
 * SASS contains IMMA. Returns the problems found (empty = pass) and a short report.
 */
export function checkCudaBuild(
  nvcc: string,
  verbose = false,
): { problems: string[]; report: string } {
  const problems: string[] = [];
  const lines: string[] = [];
  const notes: string[] = []; // spills of non-INT8 kernels: reported, not failures
  let log = "";
  try {
    log = Deno.readTextFileSync(`${buildDir}/libdaint8_cuda.ptxas.log`);
  } catch {
    problems.push("no ptxas log: build the cuda library first");
  }
  const res = parsePtxasLog(log);
  const int8 = res.filter((r) => /imma_k|simple_k|gemm_simple/.test(r.kernel));
  if (log !== "" && int8.length === 0) problems.push("the ptxas log lists no INT8 kernels");
  for (const r of res) {
    if (r.spillStores > 0 || r.spillLoads > 0) {
      const msg = `${r.kernel} (${r.arch}): ${r.spillStores} bytes spill stores, ` +
        `${r.spillLoads} bytes spill loads, ${r.registers} registers`;
      if (int8.includes(r)) problems.push(`INT8 kernel spills: ${msg}`);
      else notes.push(`note: ${msg}`);
    }
  }
  const imma = int8.filter((r) => r.kernel.includes("imma_k"));
  const maxRegs = Math.max(0, ...imma.map((r) => r.registers));
  lines.push(
    `ptxas: ${res.length} kernel builds, ${int8.length} INT8 (${imma.length} tensor-core), ` +
      `max ${maxRegs} registers in the tensor-core kernels, no spills in INT8 kernels: ` +
      `${problems.every((p) => !p.startsWith("INT8 kernel spills"))}`,
  );
  // Every symbol of the library's own must be defined in it: a function declared in a namespace
  // but defined outside it still links (a shared library may leave symbols undefined) and would
  // fail only when the loader resolves it on a GPU machine.
  const nm = which("nm");
  if (nm) {
    const r = run(nm, ["-D", "--undefined-only", `${buildDir}/libdaint8_cuda.so`], verbose);
    const own = r.out.split("\n").filter((l) => /d8cuda|\bd8_/.test(l)).map((l) => l.trim());
    lines.push(`nm: ${own.length} undefined symbols of the library's own`);
    for (const s of own) problems.push(`undefined symbol of the library's own: ${s}`);
  } else {
    lines.push("nm: not installed, undefined symbols not checked");
  }
  // PTX of the INT8 file for sm_80 (both shapes) and sm_75 (m8n8k16 only).
  const dir = Deno.makeTempDirSync({ prefix: "daint8-ptx-" });
  try {
    const targets = [
      ["90a", ["wgmma"]],
      ["80", ["m16n8k32", "m8n8k16"]],
      ["75", ["m8n8k16"]],
    ] as const;
    for (const [arch, want] of targets) {
      const ptx = `${dir}/int8_${arch}.ptx`;
      const r = run(nvcc, [
        "-std=c++17",
        "-O3",
        `-I${root}kernels`,
        `-arch=compute_${arch}`,
        "-ptx",
        `${srcDir}/int8_conv.cu`,
        "-o",
        ptx,
      ], verbose);
      if (!r.ok) {
        problems.push(`nvcc -ptx for compute_${arch} failed:\n${r.out}`);
        continue;
      }
      const text = Deno.readTextFileSync(ptx);
      if (arch === "90a") {
        for (const n of [256, 128, 64]) {
          const re = new RegExp(
            `wgmma\\.mma_async\\.sync\\.aligned\\.m64n${n}k32\\.s32\\.s8\\.s8`,
            "g",
          );
          const count = (text.match(re) ?? []).length;
          lines.push(`PTX compute_90a: ${count} x wgmma m64n${n}k32 s8`);
          if (count === 0) problems.push(`PTX for compute_90a has no wgmma m64n${n}k32 s8`);
        }
        const fp = (text.match(/fence\.proxy\.async\.shared::cta/g) ?? []).length;
        if (fp === 0) problems.push("PTX for compute_90a lacks fence.proxy.async.shared::cta");
        continue;
      }
      for (const shape of want) {
        const re = new RegExp(
          `mma\\.sync\\.aligned\\.${shape}\\.row\\.col\\.s32\\.s8\\.s8\\.s32`,
          "g",
        );
        const n = (text.match(re) ?? []).length;
        lines.push(`PTX compute_${arch}: ${n} x mma.sync ${shape} s8`);
        if (n === 0) problems.push(`PTX for compute_${arch} has no INT8 mma.sync ${shape}`);
      }
      if (arch === "80") {
        const cp = (text.match(/cp\.async\.cg\.shared\.global/g) ?? []).length;
        const lm = (text.match(/ldmatrix\.sync\.aligned/g) ?? []).length;
        lines.push(`PTX compute_80: ${cp} x cp.async, ${lm} x ldmatrix`);
        if (cp === 0 || lm === 0) problems.push("PTX for compute_80 lacks cp.async or ldmatrix");
      }
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  const cuobjdump = which("cuobjdump");
  if (cuobjdump) {
    for (const arch of ["80", "90a"]) {
      const r = run(
        cuobjdump,
        ["-sass", "-arch", `sm_${arch}`, `${buildDir}/libdaint8_cuda.so`],
        verbose,
      );
      const n = (r.out.match(/\bIMMA\b/g) ?? []).length;
      const g = (r.out.match(/\bIGMMA\b/g) ?? []).length;
      lines.push(`SASS sm_${arch}: ${n} x IMMA, ${g} x IGMMA`);
      if (n === 0) problems.push(`SASS for sm_${arch} has no IMMA instruction`);
      if (arch === "90a" && g === 0) problems.push("SASS for sm_90a has no IGMMA instruction");
    }
  } else {
    lines.push("SASS: cuobjdump not installed, IMMA checked in the PTX only");
  }
  return { problems, report: [...lines, ...notes].join("\n") };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      force: { type: "boolean" },
      verbose: { type: "boolean" },
      check: { type: "boolean" },
    },
    strict: true,
  });
  const nvcc = findNvcc();
  if (!nvcc) {
    console.error("daint8: nvcc not found, the cuda library is not built");
    Deno.exit(values.check ? 1 : 0);
  }
  try {
    await buildCuda({ force: values.force, verbose: values.verbose, nvcc });
    if (values.check) {
      const { problems, report } = checkCudaBuild(nvcc, values.verbose);
      console.error(report);
      if (problems.length > 0) {
        console.error(`cuda build check FAILED:\n  ${problems.join("\n  ")}`);
        Deno.exit(1);
      }
      console.error("cuda build check passed");
    }
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
