/**
 * `deno task gpu:check DIR`: everything that needs a GPU, in one go, with logs and a JSON summary
 * in DIR (meant for one short session on a GPU machine, under 8 minutes on an H200):
 *   1. builds what is missing or stale (cpu and cuda libraries, ffi/build.ts + ffi/build_cuda.ts)
 *      and runs the cuda build check (no INT8 spills, mma.sync in the PTX, IMMA in the SASS when
 *      cuobjdump exists);
 *   2. `deno test test/gpu/` (the cuda library against the cpu library); when it fails, the
 *      triage (bench/gpu/triage.ts): each failed test again alone, in its own process (a sticky
 *      CUDA fault fails every test after it), the first that fails alone under compute-sanitizer
 *      memcheck (triage.md);
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
import { TEST_PERMISSIONS } from "../../test/helpers/child_tests.ts";
import { writeRatios } from "./ratios.ts";
import { exactFilter, failedTests, type Isolated, testSummary, triageReport } from "./triage.ts";

const root = decodeURIComponent(new URL("../../", import.meta.url).pathname);

interface Step {
  name: string;
  status: "passed" | "failed" | "skipped";
  seconds: number;
  detail: string;
  log?: string;
}

// The environment of every child: plain test output (the triage reads its FAILURES section); the
// GPU tests run only when a device answered here, so one that does not load in the child is a
// failure, not a skip. DAINT8_CUDA_NO_WGMMA is added when a version-4 test failed.
const childEnv: Record<string, string> = { NO_COLOR: "1", DAINT8_REQUIRE_CUDA: "1" };

async function runLogged(
  cmd: string,
  args: string[],
  logPath: string,
  timeoutS: number,
): Promise<{ ok: boolean; out: string; timedOut: boolean }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: childEnv,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    try {
      timedOut = true;
      child.kill("SIGKILL");
    } catch { /* already done */ }
  }, timeoutS * 1000);
  const r = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  const out = dec.decode(r.stdout) + dec.decode(r.stderr);
  Deno.writeTextFileSync(logPath, out);
  return { ok: r.success, out, timedOut };
}

/** compute-sanitizer beside nvcc, or on PATH. */
function findSanitizer(nvcc: string | undefined): string | undefined {
  const candidates = nvcc ? [nvcc.replace(/nvcc$/, "compute-sanitizer")] : [];
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir) candidates.push(`${dir}/compute-sanitizer`);
  }
  for (const c of candidates) {
    try {
      if (Deno.statSync(c).isFile) return c;
    } catch { /* absent */ }
  }
  return undefined;
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: deno task gpu:check DIR");
    Deno.exit(2);
  }
  Deno.mkdirSync(dir, { recursive: true });
  const steps: Step[] = [];
  const device = { state: "not asked yet" }; // summary.json's "gpu", once asked
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
    writeSummary(false);
  };
  // summary.json after every step: a run cut off by the machine's time limit keeps its verdicts
  const writeSummary = (done: boolean) =>
    Deno.writeTextFileSync(
      `${dir}/summary.json`,
      JSON.stringify(
        {
          when: new Date().toISOString(),
          nvcc: nvcc ?? null,
          gpu: device.state,
          complete: done,
          steps,
        },
        null,
        1,
      ) + "\n",
    );

  const nvcc = findNvcc();
  await step("build", async () => {
    await buildCpu();
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
  device.state = gpu.ok ? "available" : gpu.reason;
  const noGpu = (what: string) => ({
    status: "skipped" as const,
    detail: `${what}: ${gpu.reason}`,
  });

  let testOut = "";
  await step("test:gpu", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    const r = await runLogged(
      Deno.execPath(),
      ["test", ...TEST_PERMISSIONS, "test/gpu/"],
      `${dir}/test_gpu.log`,
      240,
    );
    testOut = r.out;
    let summary = testSummary(r.out) ?? "no summary (timed out?)";
    // a failed version-4 (wgmma) case: the benchmarks' auto choice stays on version 3
    if (failedTests(r.out).some((t) => /, v4$/.test(t))) {
      childEnv.DAINT8_CUDA_NO_WGMMA = "1";
      summary += "; a v4 (wgmma) case failed: the benchmarks run with DAINT8_CUDA_NO_WGMMA=1";
    }
    return { status: r.ok ? "passed" : "failed", detail: summary, log: "test_gpu.log" };
  });

  await step("triage", async () => {
    if (!gpu.ok) return noGpu("no GPU");
    const failed = failedTests(testOut);
    if (failed.length === 0) {
      return { status: "skipped", detail: "no failed test named in test_gpu.log" };
    }
    const isolated: Isolated[] = [];
    const t0 = performance.now();
    for (const [i, name] of failed.entries()) {
      if (performance.now() - t0 > 90_000) break; // the session's minutes go to the benchmarks
      const s0 = performance.now();
      const r = await runLogged(
        Deno.execPath(),
        ["test", ...TEST_PERMISSIONS, "--filter", exactFilter(name), "test/gpu/"],
        `${dir}/triage_${i}.log`,
        60,
      );
      isolated.push({
        name,
        verdict: r.timedOut ? "timed out" : r.ok ? "passes alone" : "fails",
        seconds: Math.round((performance.now() - s0) / 100) / 10,
      });
    }
    const first = isolated.find((t) => t.verdict === "fails");
    const sanitizer = findSanitizer(nvcc);
    let san: { test: string; out: string } | undefined;
    if (first && sanitizer) {
      const r = await runLogged(
        sanitizer,
        [
          "--tool",
          "memcheck",
          "--print-limit",
          "30",
          Deno.execPath(),
          "test",
          ...TEST_PERMISSIONS,
          "--filter",
          exactFilter(first.name),
          "test/gpu/",
        ],
        `${dir}/sanitizer.log`,
        150,
      );
      san = { test: first.name, out: r.out };
    }
    Deno.writeTextFileSync(`${dir}/triage.md`, triageReport(isolated, san));
    const alone = isolated.filter((t) => t.verdict === "fails").length;
    return {
      status: alone > 0 ? "failed" : "passed",
      detail: `${alone} of ${isolated.length} failed tests fail alone` +
        (first && !sanitizer ? "; no compute-sanitizer" : ""),
      log: "triage.md",
    };
  });

  // One of our GPU benchmarks: `deno run -A SCRIPT --json DIR/<name>.json [extra]`.
  const denoBench = async (
    name: string,
    script: string,
    timeoutS: number,
    extra: string[] = [],
    log = `${name}.log`,
  ) => {
    if (!gpu.ok) return noGpu("no GPU");
    const r = await runLogged(
      Deno.execPath(),
      ["run", "-A", script, "--json", `${dir}/${name}.json`, ...extra],
      `${dir}/${log}`,
      timeoutS,
    );
    return {
      status: r.ok ? "passed" as const : "failed" as const,
      detail: r.ok ? `see ${name}.json` : r.out.slice(-400),
      log,
    };
  };
  await step("bench:int8", () => denoBench("bench_int8", "bench/gpu/conv_int8_bench.ts", 180));
  // a version whose fault stopped the run: the other versions again, their rows merged in
  let abortedAt: { version?: number; layer?: string } | undefined;
  try {
    abortedAt = JSON.parse(Deno.readTextFileSync(`${dir}/bench_int8.json`)).aborted;
  } catch { /* no JSON: nothing measured to go on from */ }
  if (abortedAt?.version && abortedAt.version !== 1) {
    const others = [1, 2, 3, 4].filter((v) => v !== abortedAt!.version).join(",");
    await step(
      `bench:int8 versions ${others} (v${abortedAt.version} faulted at ${abortedAt.layer})`,
      () =>
        denoBench(
          "bench_int8",
          "bench/gpu/conv_int8_bench.ts",
          150,
          ["--versions", others, "--merge"],
          "bench_int8_rerun.log",
        ),
    );
  }
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

  writeSummary(true);
  console.log(`gpu:check: summary in ${dir}/summary.json`);
  Deno.exit(steps.some((s) => s.status === "failed") ? 1 : 0);
}
