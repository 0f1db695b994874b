/**
 * `deno task bench:report`: training images/s of LeNet-5 and ResNet-20 (batch 64, cpu backend)
 * under fp32 and daint8, side by side with PyTorch CPU (bench/peers/torch_cpu.py, same models,
 * batch and thread count), and fp32 vs INT8 conv-kernel throughput on ResNet-20's layer shapes,
 * in one run on one machine, as Markdown tables with ratios.
 *
 * Flags: --threads N (default: all cores), --seconds S per measurement (default 5),
 * --python PATH (default /usr/bin/python3), --json FILE (also write the rows as JSON).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { NativeBackend } from "../src/backend/native.ts";
import { ScaleLayout } from "../src/backend/backend.ts";
import { convShape } from "../src/ops/conv.ts";
import { Tensor } from "../src/tensor.ts";
import { convLayers, int8ConvFixture } from "./conv_fixture.ts";
import { makeStep } from "./step.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string" },
    seconds: { type: "string", default: "5" },
    python: { type: "string", default: "/usr/bin/python3" },
    json: { type: "string" },
    batch: { type: "string", default: "64" },
  },
  strict: true,
});
const threads = Number(values.threads ?? navigator.hardwareConcurrency);
const seconds = Number(values.seconds);
const batch = Number(values.batch);
const backend = new NativeBackend("cpu");
backend.setThreads(threads);

/** Median step time (ms) of `step` over about `seconds`, after warm-up. */
function measure(step: () => void, budget: number): number {
  for (let i = 0; i < 3; i++) step();
  const times: number[] = [];
  const end = performance.now() + budget * 1000;
  while (performance.now() < end || times.length < 5) {
    const t0 = performance.now();
    step();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

interface PeerRow {
  model: string;
  images_per_s: number;
  channels_last: boolean;
  torch: string;
}

async function peer(model: string): Promise<PeerRow[] | string> {
  const script = new URL("./peers/torch_cpu.py", import.meta.url).pathname;
  try {
    const r = await new Deno.Command(values.python!, {
      args: [
        script,
        "--model",
        model,
        "--batch-size",
        String(batch),
        "--threads",
        String(threads),
        "--seconds",
        String(seconds),
        "--both-layouts",
        "--json",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) return new TextDecoder().decode(r.stderr).trim().split("\n").at(-1) ?? "failed";
    return new TextDecoder().decode(r.stdout).trim().split("\n").map((l) => JSON.parse(l));
  } catch (e) {
    return (e as Error).message;
  }
}

console.log(`device: ${backend.info()}; int8 kernel ${backend.int8KernelName()}`);
console.log(`threads ${threads}; batch ${batch}; ${seconds} s per measurement; median step time\n`);
const rows: Record<string, unknown>[] = [];
console.log(
  "| model | ours fp32 img/s | ours daint8 (INT8) img/s | INT8 / fp32 | " +
    "PyTorch NCHW img/s | PyTorch channels_last img/s | fp32 / best PyTorch |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|");
for (const model of ["lenet5", "resnet20"]) {
  const ips: Record<string, number> = {};
  for (const quant of ["fp32", "daint8"]) {
    const runner = makeStep(backend, model, batch, quant);
    ips[quant] = (batch * 1000) / measure(() => runner.step(), seconds);
    runner.dispose();
  }
  const ours = ips.fp32!, int8 = ips.daint8!;
  const p = await peer(model);
  const nchw = typeof p === "string" ? NaN : p.find((r) => !r.channels_last)?.images_per_s ?? NaN;
  const nhwc = typeof p === "string" ? NaN : p.find((r) => r.channels_last)?.images_per_s ?? NaN;
  const best = Math.max(nchw, nhwc);
  const f = (v: number) => Number.isFinite(v) ? v.toFixed(0) : "n/a";
  console.log(
    `| ${model} | ${f(ours)} | ${f(int8)} | ${(int8 / ours).toFixed(2)}x | ${f(nchw)} | ` +
      `${f(nhwc)} | ${Number.isFinite(best) ? (ours / best).toFixed(2) + "x" : "n/a"} |`,
  );
  if (typeof p === "string") console.log(`(PyTorch not measured: ${p})`);
  rows.push({
    model,
    fp32_images_per_s: ours,
    daint8_images_per_s: int8,
    torch_nchw_images_per_s: nchw,
    torch_channels_last_images_per_s: nhwc,
    fp32_vs_best_torch: ours / best,
    int8_vs_fp32: int8 / ours,
    torch: typeof p === "string" ? null : p[0]?.torch,
  });
}

console.log(
  "\nConv kernels on ResNet-20 layer shapes (batch 64), fp32 vs INT8, G mult-add pairs/s:\n",
);
console.log("| layer | pass | fp32 GFLOP/s | INT8 GOP/s | INT8 / fp32 |");
console.log("|---|---|---:|---:|---:|");
const kernels: Record<string, unknown>[] = [];
for (const l of convLayers(batch)) {
  const s = convShape("bench", l.x, l.k, 3, { stride: l.stride, padding: 1 });
  const f = int8ConvFixture(backend, s);
  const x = Tensor.full(backend, l.x, 0.5), w = Tensor.full(backend, [l.k, 3, 3, l.x[3]], 0.01);
  const y = Tensor.full(backend, [s.n, s.p, s.q, s.k], 0);
  const ops = 2 * s.n * s.p * s.q * s.k * 9 * s.c;
  const budget = Math.min(seconds, 1);
  for (
    const [pass, fp, i8] of [
      [
        "fprop",
        () => backend.conv2d(y, x, w, null, s),
        () => backend.conv2dI8(f.y, f.xq, f.wq, null, f.sx, f.sw, ScaleLayout.tensor, s),
      ],
      [
        "dgrad",
        () => backend.conv2dDgrad(x, y, w, s),
        () => backend.conv2dDgradI8(f.dx, f.dyq, f.wq, f.sdy, f.sw, s),
      ],
      [
        "wgrad",
        () => backend.conv2dWgrad(w, x, y, s),
        () => backend.conv2dWgradI8(f.dw, f.xq, f.dyq, f.sx, f.sdyC, ScaleLayout.inner, s),
      ],
    ] as const
  ) {
    const tf = measure(fp, budget), ti = measure(i8, budget);
    const gf = ops / tf / 1e6, gi = ops / ti / 1e6;
    console.log(
      `| ${l.name} | ${pass} | ${gf.toFixed(1)} | ${gi.toFixed(1)} | ${(gi / gf).toFixed(2)}x |`,
    );
    kernels.push({ layer: l.name, pass, fp32_gflops: gf, int8_gops: gi, ratio: gi / gf });
  }
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ device: backend.info(), threads, batch, rows, kernels }, null, 2),
  );
}
