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

  // One of our GPU benchmarks: `deno run -A SCRIPT --json DIR/<name>.json`.
  const denoBench = async (name: string, script: string, timeoutS: number) => {
    if (!gpu.ok) return noGpu("no GPU");
    const r = await runLogged(
      Deno.execPath(),
      ["run", "-A", script, "--json", `${dir}/${name}.json`],
      `${dir}/${name}.log`,
      timeoutS,
    );
    return {
      status: r.ok ? "passed" as const : "failed" as const,
      detail: r.ok ? `see ${name}.json` : r.out.slice(-400),
      log: `${name}.log`,
    };
  };
  await step("bench:int8", () => denoBench("bench_int8", "bench/gpu/conv_int8_bench.ts", 180));
  await step("bench:step", () => denoBench("bench_step", "bench/gpu/step_bench.ts", 200));

  // A PyTorch peer: its last JSON line goes to DIR/<name>.json.
  const pythonPeer = async (name: string, args: string[], timeoutS: number) => {
    if (!gpu.ok) return noGpu("no GPU");
    let r: { ok: boolean; out: string };
    try {
      r = await runLogged("python3", args, `${dir}/${name}.log`, timeoutS);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        return { status: "skipped" as const, detail: "no python3" };
      }
      throw e;
    }
    const last = r.out.trim().split("\n").filter((l) => l.startsWith("{")).pop() ?? "";
    if (last) Deno.writeTextFileSync(`${dir}/${name}.json`, last + "\n");
    const skipped = last.includes('"skipped"');
    return {
      status: !r.ok ? "failed" as const : skipped ? "skipped" as const : "passed" as const,
      detail: skipped ? last : r.ok ? `see ${name}.json` : r.out.slice(-400),
      log: `${name}.log`,
    };
  };
  await step(
    "peer:torch",
    () =>
      pythonPeer("torch_gpu", ["bench/peers/torch_gpu.py", "--reps", "5", "--trials", "3"], 120),
  );
  await step("peer:torch-step", () =>
    pythonPeer(
      "torch_gpu_step",
      ["bench/peers/torch_gpu_step.py", "--warmup", "2", "--reps", "3", "--trials", "3"],
      150,
    ));

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
