/**
 * The GPU speed reports, checked without a GPU: the goal ratios of bench/gpu/ratios.ts from
 * fixed benchmark outputs, the step benchmark's measuring loop on the cpu backend, and what
 * gpu_check does when something fails (the triage's reading of `deno test` output, the INT8
 * benchmark's version list and merge).
 */
import assert from "node:assert/strict";
import { computeRatios, ratiosMarkdown } from "../bench/gpu/ratios.ts";
import { benchModel, STEP_PRESETS } from "../bench/gpu/step_bench.ts";
import { benchLayers, mergeRows, parseVersions, type Row } from "../bench/gpu/conv_int8_bench.ts";
import { exactFilter, failedTests, testSummary, triageReport } from "../bench/gpu/triage.ts";
import { cpu } from "./helpers/check_op.ts";

const int8 = {
  device: "Test GPU",
  rows: [
    { layer: "3x3 64->64 56", version: 1, op: "fprop", ms: 9, tops: 1 },
    { layer: "3x3 64->64 56", version: 2, op: "fprop", ms: 2, tops: 1 },
    { layer: "3x3 64->64 56", version: 3, op: "fprop", ms: 0.5, tops: 1 },
    { layer: "3x3 64->64 56", version: 3, op: "dgrad", ms: 0.5, tops: 1 },
    { layer: "3x3 64->64 56", version: 3, op: "wgrad", ms: 1, tops: 1 },
    { layer: "1x1 256->64 56", version: 3, op: "fprop", ms: 1, tops: 1 },
    { layer: "1x1 256->64 56", version: 3, op: "dgrad", ms: 1, tops: 1 },
    { layer: "1x1 256->64 56", version: 3, op: "wgrad", ms: 1, tops: 1 },
    { layer: "7x7 missing in torch", version: 3, op: "fprop", ms: 1, tops: 1 },
    // a depthwise layer: v1, the dp4a kernels as v2, our fp32 kernels as version 0
    { layer: "dw3x3 144 56", version: 1, op: "fprop", ms: 5, tops: 1 },
    { layer: "dw3x3 144 56", version: 2, op: "fprop", ms: 0.125, tops: 1 },
    { layer: "dw3x3 144 56", version: 2, op: "dgrad", ms: 0.125, tops: 1 },
    { layer: "dw3x3 144 56", version: 2, op: "wgrad", ms: 0.25, tops: 1 },
    { layer: "dw3x3 144 56", version: 0, op: "fprop", ms: 0.5, tops: 1 },
    { layer: "dw3x3 144 56", version: 0, op: "dgrad", ms: 0.5, tops: 1 },
    { layer: "dw3x3 144 56", version: 0, op: "wgrad", ms: 1, tops: 1 },
  ],
};
const torchConvs = {
  rows: [
    { layer: "3x3 64->64 56", dtype: "fp32", ms_fwd: 5, ms_fwd_bwd: 20 },
    { layer: "3x3 64->64 56", dtype: "fp16", ms_fwd: 1, ms_fwd_bwd: 4 },
    { layer: "1x1 256->64 56", dtype: "fp16", ms_fwd: 1, ms_fwd_bwd: 3 },
    { layer: "dw3x3 144 56", dtype: "fp16", ms_fwd: 0.25, ms_fwd_bwd: 0.625 },
  ],
};
const steps = {
  rows: [
    { model: "resnet50", preset: "fp32", ms: 300 },
    { model: "resnet50", preset: "daint8", ms: 100 },
    { model: "resnet20", preset: "fp32", ms: 10 },
    { model: "resnet20", preset: "daint8", ms: 8 },
  ],
};
const torchSteps = {
  rows: [
    { model: "resnet50", mode: "fp32", ms: 320 },
    { model: "resnet50", mode: "bf16-autocast", ms: 90 },
    { model: "resnet20", mode: "fp32", ms: 12 },
  ],
};

Deno.test("gpu ratios: INT8 forward+backward of auto's version against cuDNN FP16, steps against PyTorch", () => {
  const r = computeRatios(int8, torchConvs, steps, torchSteps);
  assert.deepEqual(
    r.layers.map((l) => [l.layer, l.version, l.int8_ms, l.speedup, l.goal_met, l.vs_our_fp32]),
    [
      ["3x3 64->64 56", 3, 2, 2, true, null], // (0.5 + 0.5 + 1) ms against 4 ms
      ["1x1 256->64 56", 3, 3, 1, false, null],
      // the dp4a depthwise kernels (v2, 0.5 ms) against cuDNN (0.625) and our fp32 (2 ms)
      ["dw3x3 144 56", 2, 0.5, 1.25, false, 4],
    ],
  );
  assert.deepEqual(r.missing, ["7x7 missing in torch: no fp16 row in torch_gpu.json"]);
  const r50 = r.steps.find((s) => s.model === "resnet50")!;
  assert.equal(r50.vs_our_fp32, 3);
  assert.equal(r50.vs_torch_fp32, 3.2);
  assert.equal(r50.vs_torch_bf16, 0.9);
  assert.equal(r50.goal_met, false, "slower than BF16 autocast");
  const r20 = r.steps.find((s) => s.model === "resnet20")!;
  assert.equal(r20.vs_torch_bf16, null);
  assert.equal(r20.goal_met, null, "the step goals are ResNet-50's");
  const md = ratiosMarkdown(r, "Test GPU");
  assert.match(md, /\| 3x3 64->64 56 \| v3 \| 2\.000 \| 4\.000 \| 2\.00x \| met \| - \|/);
  assert.match(md, /\| dw3x3 144 56 \| v2 \| 0\.500 \| 0\.625 \| 1\.25x \| not met \| 4\.00x \|/);
  assert.match(md, /\| resnet50 \| 100\.00 \| 3\.00x \| 3\.20x \| 0\.90x \| not met \|/);
});

Deno.test("gpu ratios: a skipped or absent benchmark is listed with its reason", () => {
  const r = computeRatios({ skipped: "no GPU" }, null, null, { skipped: "torch sees no CUDA" });
  assert.deepEqual(r.layers, []);
  assert.deepEqual(r.steps, []);
  assert.deepEqual(r.missing, [
    "bench_int8.json: skipped (no GPU)",
    "bench_step.json: not found",
  ]);
  const withSteps = computeRatios(null, null, steps, { skipped: "torch sees no CUDA" });
  assert.ok(withSteps.missing.includes("torch_gpu_step.json: skipped (torch sees no CUDA)"));
  assert.equal(withSteps.steps.find((s) => s.model === "resnet50")!.vs_torch_fp32, null);
});

Deno.test("step bench: every preset timed interleaved, validated (finite loss, no sync inside)", async () => {
  const { rows, failures } = await benchModel(
    cpu(),
    "resnet20",
    { channels: 3, size: 8, batch: 2 },
    { warmup: 1, trials: 2, reps: 1 },
  );
  assert.deepEqual(failures, []);
  assert.deepEqual(rows.map((r) => r.preset), [...STEP_PRESETS]);
  assert.equal(rows[0]!.speedup_vs_fp32, 1);
  for (const r of rows) {
    assert.ok(r.ms > 0 && r.min_ms <= r.ms && Number.isFinite(r.loss), JSON.stringify(r));
    assert.equal(r.syncs, 0);
    assert.equal(r.input, "3x8x8");
  }
  assert.ok(rows[2]!.calls > rows[0]!.calls, "daint8 adds quantize and decision calls");
});

// A test file whose names carry the characters the cuda tests' names do: the triage must name
// the failed ones from real `deno test` output and rerun each alone.
const TRIAGE_TESTS = `
Deno.test("cuda: int8 conv fprop / dgrad / wgrad, 3x3 32 -> 48 (v3) * 2", () => { throw new Error("x"); });
Deno.test("cuda: int8 conv fprop / dgrad / wgrad, 3x3 32 -> 48 (v3) * 2 stride 2", () => {});
Deno.test("cuda: [a.b] $c ^d", () => { throw new Error("y"); });
`;

async function denoTest(file: string, ...args: string[]): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--no-check", ...args, file],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return dec.decode(r.stdout) + dec.decode(r.stderr);
}

Deno.test("gpu triage: failed tests named from deno test's output, each rerun alone by an exact filter", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/t_test.ts`;
    Deno.writeTextFileSync(file, TRIAGE_TESTS);
    const out = await denoTest(file);
    const failed = failedTests(out);
    assert.deepEqual(failed, [
      "cuda: int8 conv fprop / dgrad / wgrad, 3x3 32 -> 48 (v3) * 2",
      "cuda: [a.b] $c ^d",
    ]);
    assert.match(testSummary(out)!, /^FAILED \| 1 passed \| 2 failed/);
    // the first name is a prefix of the passing test's: the filter must select it alone
    const alone = await denoTest(file, "--filter", exactFilter(failed[0]!));
    assert.match(testSummary(alone)!, /^FAILED \| 0 passed \| 1 failed \| 2 filtered out/);
    const other = await denoTest(file, "--filter", exactFilter(failed[1]!));
    assert.match(testSummary(other)!, /^FAILED \| 0 passed \| 1 failed \| 2 filtered out/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  assert.deepEqual(failedTests("ok | 3 passed | 0 failed (1s)"), []);
});

Deno.test("gpu triage: the report gives each test's verdict and the sanitizer's error lines", () => {
  const md = triageReport(
    [
      { name: "cuda: a", verdict: "fails", seconds: 2.5 },
      { name: "cuda: b", verdict: "passes alone", seconds: 1 },
    ],
    {
      test: "cuda: a",
      out: "noise\n========= Invalid __global__ read of size 4\n=========     at k()+0x10\nmore",
    },
  );
  assert.match(md, /- fails: cuda: a \(2.5 s alone\)/);
  assert.match(md, /- passes alone: cuda: b/);
  assert.match(
    md,
    /========= Invalid __global__ read of size 4\n=========\s{5}at k\(\)\+0x10\n```/,
  );
  assert.doesNotMatch(md, /noise|more/);
});

Deno.test("gpu int8 bench: --versions needs the reference version, --merge keeps the other versions' rows", () => {
  assert.deepEqual(parseVersions("3,1"), [1, 3]);
  assert.deepEqual(parseVersions("1,2,3"), [1, 2, 3]);
  assert.deepEqual(parseVersions("4,1"), [1, 4]);
  assert.throws(() => parseVersions("2,3"), /include 1, the reference/);
  assert.throws(() => parseVersions("1,5"), /5 is not a version/);
  const row = (version: number, ms: number): Row => ({
    layer: "3x3 64->64 56",
    version,
    op: "fprop",
    ms,
    tops: 1,
  });
  // v3 faulted after one layer; the rerun measured 1 and 2 again
  assert.deepEqual(
    mergeRows([row(1, 9), row(2, 2), row(3, 0.5)], [row(1, 8), row(2, 1.5)], [1, 2]),
    [row(3, 0.5), row(1, 8), row(2, 1.5)],
  );
  // a depthwise layer's fp32 rows (version 0) measured again replace the earlier ones
  assert.deepEqual(
    mergeRows([row(0, 4), row(3, 0.5)], [row(1, 8), row(0, 3)], [1]),
    [row(3, 0.5), row(1, 8), row(0, 3)],
  );
});

// bench/gpu/ratios.ts pairs the INT8 rows with PyTorch's by layer name: both lists must agree.
const python = (() => {
  try {
    return new Deno.Command("python3", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();
if (!python) console.warn("SKIPPING the ResNet-50 layer-name check: no python3");
Deno.test({
  name:
    "gpu int8 bench and the PyTorch GPU peer measure the same layers (ResNet-50, MobileNetV2 depthwise)",
  ignore: !python,
  fn() {
    const peers = new URL("../bench/peers/", import.meta.url).pathname;
    const r = new Deno.Command("python3", {
      args: [
        "-c",
        "import json, sys; sys.path.insert(0, sys.argv[1]); import torch_gpu; " +
        "print(json.dumps([[n, L['c'], L['k'], L['r'], L['stride'], L.get('groups', 1)] " +
        "for n, L in torch_gpu.layers(2)]))",
        peers,
      ],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    const torch = JSON.parse(new TextDecoder().decode(r.stdout));
    const ours = benchLayers(2).map(({ name, conv }) => [
      name,
      conv.c,
      conv.k,
      conv.r,
      conv.stride?.[0] ?? 1,
      conv.groups ?? 1,
    ]);
    assert.deepEqual(ours, torch);
  },
});
