/**
 * `deno task gpu:check DIR`: everything that needs a GPU, in one go, with logs and a JSON summary
 * in DIR (meant for one short session on a GPU machine, under 8 minutes on an H200):
 *   1. builds what is missing or stale (cpu and cuda libraries, ffi/build.ts + ffi/build_cuda.ts)
 *      and runs the cuda build check (no INT8 spills, mma.sync in the PTX, IMMA in the SASS when
 *      cuobjdump exists);
 *   2. `deno test test/gpu/` (the cuda library against the cpu library);
 *   3. the INT8 convolution benchmark (bench/gpu/conv_int8_bench.ts, validated before timing);
 *   4. the training-step benchmark (bench/gpu/step_bench.ts: ResNet-20 and ResNet-50 at batch
 *      128, fp32 / int8-naive / daint8);
 *   5. the PyTorch peers (bench/peers/torch_gpu.py: cuDNN conv layers; torch_gpu_step.py: the
 *      same training steps in FP32, TF32 and BF16 autocast), when python3 and torch are present;
 *   6. the goals as ratios from this one run (bench/gpu/ratios.ts: ratios.md, ratios.json).
 * Without a GPU (or without nvcc) each step that needs one is reported as skipped with the
 * reason, so the script dry-runs anywhere. Exit status 1 when a step that ran failed.
 *
 * @module
 */
import { buildCpu } from "../../ffi/build.ts";
import { buildCuda, checkCudaBuild, findNvcc } from "../../ffi/build_cuda.ts";
import { cudaAvailable } from "../../test/gpu/harness.ts";
import { writeRatios } from "./ratios.ts";

const root = decodeURIComponent(new URL("../../", import.meta.url).pathname);

interface Step {
  name: string;
  status: "passed" | "failed" | "skipped";
  seconds: number;
  detail: string;
  log?: string;
}

async function runLogged(
  cmd: string,
  args: string[],
  logPath: string,
  timeoutS: number,
): Promise<{ ok: boolean; out: string }> {
  const child = new Deno.Command(cmd, { args, cwd: root, stdout: "piped", stderr: "piped" })
    .spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already done */ }
  }, timeoutS * 1000);
  const r = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  const out = dec.decode(r.stdout) + dec.decode(r.stderr);
  Deno.writeTextFileSync(logPath, out);
  return { ok: r.success, out };
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: deno task gpu:check DIR");
    Deno.exit(2);
  }
  Deno.mkdirSync(dir, { recursive: true });
  const steps: Step[] = [];
  const step = async (name: string, fn: () => Promise<Omit<Step, "name" | "seconds">>) => {
    const t0 = performance.now();
    let s: Omit<Step, "name" | "seconds">;
    try {
      s = await fn();
    } catch (e) {
      s = { status: "failed", detail: (e as Error).message };
    }
    const full = { name, seconds: Math.round((performance.now() - t0) / 100) / 10, ...s };
    steps.push(full);
    console.log(
      `gpu:check ${name}: ${full.status} (${full.seconds} s) ${full.detail.split("\n")[0]}`,
    );
  };

  const nvcc = findNvcc();
  await step("build", async () => {
    buildCpu();
    if (!nvcc) {
      return { status: "skipped", detail: "nvcc not found: the cuda library is not built" };
    }
    await buildCuda({ nvcc });
    const { problems, report } = checkCudaBuild(nvcc);
    Deno.writeTextFileSync(`${dir}/build_check.log`, report + "\n" + problems.join("\n") + "\n");
    return problems.length === 0
      ? { status: "passed", detail: report.split("\n")[0]!, log: "build_check.log" }
      : { status: "failed", detail: problems.join("; "), log: "build_check.log" };
  });

  const gpu = cudaAvailable();
  const noGpu = (what: string) => ({
    status: "skipped" as const,
    detail: `${what}: ${gpu.reason}`,
  });

  await step("test:gpu", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    const r = await runLogged(
      Deno.execPath(),
      [
        "test",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-ffi",
        "--allow-run",
        "test/gpu/",
      ],
      `${dir}/test_gpu.log`,
      240,
    );
    const summary = r.out.match(/(ok|FAILED) \| \d+ passed.*$/m)?.[0] ?? "no summary (timed out?)";
    return { status: r.ok ? "passed" : "failed", detail: summary, log: "test_gpu.log" };
  });

  await step("bench:int8", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    const r = await runLogged(
      Deno.execPath(),
      [
        "run",
        "-A",
        "bench/gpu/conv_int8_bench.ts",
        "--json",
        `${dir}/bench_int8.json`,
      ],
      `${dir}/bench_int8.log`,
      180,
    );
    return {
      status: r.ok ? "passed" : "failed",
      detail: r.ok ? "see bench_int8.json" : r.out.slice(-400),
      log: "bench_int8.log",
    };
  });

  await step("bench:step", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    const r = await runLogged(
      Deno.execPath(),
      ["run", "-A", "bench/gpu/step_bench.ts", "--json", `${dir}/bench_step.json`],
      `${dir}/bench_step.log`,
      200,
    );
    return {
      status: r.ok ? "passed" : "failed",
      detail: r.ok ? "see bench_step.json" : r.out.slice(-400),
      log: "bench_step.log",
    };
  });

  await step("peer:torch", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    let r: { ok: boolean; out: string };
    try {
      r = await runLogged(
        "python3",
        ["bench/peers/torch_gpu.py", "--reps", "5", "--trials", "3"],
        `${dir}/torch_gpu.log`,
        120,
      );
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { status: "skipped", detail: "no python3" };
      throw e;
    }
    const last = r.out.trim().split("\n").filter((l) => l.startsWith("{")).pop() ?? "";
    if (last) Deno.writeTextFileSync(`${dir}/torch_gpu.json`, last + "\n");
    const skipped = last.includes('"skipped"');
    return {
      status: !r.ok ? "failed" : skipped ? "skipped" : "passed",
      detail: skipped ? last : r.ok ? "see torch_gpu.json" : r.out.slice(-400),
      log: "torch_gpu.log",
    };
  });

  await step("peer:torch-step", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    let r: { ok: boolean; out: string };
    try {
      r = await runLogged(
        "python3",
        ["bench/peers/torch_gpu_step.py", "--warmup", "2", "--reps", "3", "--trials", "3"],
        `${dir}/torch_gpu_step.log`,
        150,
      );
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { status: "skipped", detail: "no python3" };
      throw e;
    }
    const last = r.out.trim().split("\n").filter((l) => l.startsWith("{")).pop() ?? "";
    if (last) Deno.writeTextFileSync(`${dir}/torch_gpu_step.json`, last + "\n");
    const skipped = last.includes('"skipped"');
    return {
      status: !r.ok ? "failed" : skipped ? "skipped" : "passed",
      detail: skipped ? last : r.ok ? "see torch_gpu_step.json" : r.out.slice(-400),
      log: "torch_gpu_step.log",
    };
  });

  await step("ratios", () => {
    if (!gpu.ok) return Promise.resolve(noGpu("no GPU"));
    const { ratios, markdown } = writeRatios(dir);
    console.log(markdown);
    const n = ratios.layers.length + ratios.steps.length;
    return Promise.resolve({
      status: n > 0 ? "passed" as const : "skipped" as const,
      detail: `${ratios.layers.filter((l) => l.goal_met).length} of ${ratios.layers.length} ` +
        `layers at 1.5x cuDNN FP16; ${ratios.missing.length} missing; see ratios.md`,
      log: "ratios.md",
    });
  });

  const summary = {
    when: new Date().toISOString(),
    nvcc: nvcc ?? null,
    gpu: gpu.ok ? "available" : gpu.reason,
    steps,
  };
  Deno.writeTextFileSync(`${dir}/summary.json`, JSON.stringify(summary, null, 1) + "\n");
  console.log(`gpu:check: summary in ${dir}/summary.json`);
  Deno.exit(steps.some((s) => s.status === "failed") ? 1 : 0);
}
