/**
 * `deno task bench:report`: training images/s of LeNet-5 and ResNet-20 (batch 64, fp32, cpu
 * backend) side by side with PyTorch CPU (bench/peers/torch_cpu.py, same models, batch and
 * thread count) in one run on one machine, as a Markdown table with ratios.
 *
 * Flags: --threads N (default: all cores), --seconds S per measurement (default 5),
 * --python PATH (default /usr/bin/python3), --json FILE (also write the rows as JSON).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { getBackend } from "../src/backend/native.ts";
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
const backend = getBackend("cpu");
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

console.log(`device: ${backend.info()}; threads ${threads}; batch ${batch}; ${seconds} s each\n`);
const rows: Record<string, unknown>[] = [];
console.log(
  "| model | daint8 fp32 img/s | PyTorch NCHW img/s | PyTorch channels_last img/s | daint8 / best PyTorch |",
);
console.log("|---|---:|---:|---:|---:|");
for (const model of ["lenet5", "resnet20"]) {
  const runner = makeStep(backend, model, batch);
  const ms = measure(() => runner.step(), seconds);
  runner.dispose();
  const ours = (batch * 1000) / ms;
  const p = await peer(model);
  if (typeof p === "string") {
    console.log(`| ${model} | ${ours.toFixed(0)} | n/a | n/a | n/a (PyTorch: ${p}) |`);
    rows.push({ model, daint8_images_per_s: ours, peer_error: p });
    continue;
  }
  const nchw = p.find((r) => !r.channels_last)?.images_per_s ?? NaN;
  const nhwc = p.find((r) => r.channels_last)?.images_per_s ?? NaN;
  const best = Math.max(nchw, nhwc);
  console.log(
    `| ${model} | ${ours.toFixed(0)} | ${nchw.toFixed(0)} | ${nhwc.toFixed(0)} | ` +
      `${(ours / best).toFixed(2)}x |`,
  );
  rows.push({
    model,
    daint8_images_per_s: ours,
    torch_nchw_images_per_s: nchw,
    torch_channels_last_images_per_s: nhwc,
    ratio_vs_best_torch: ours / best,
    torch: p[0]?.torch,
  });
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ device: backend.info(), threads, batch, rows }, null, 2),
  );
}
