/**
 * `deno task report`: one speed report for every backend present, in one run on one machine.
 * Writes bench/REPORT.md, bench/report.json and bench/report.svg (bar chart of training-step
 * speedups over fp32 per model), and prints the Markdown.
 *
 * - the machine: CPU model, cores, ISA flags, each backend's own description and int8 variant
 *   (a GPU backend's description names its GPU), the load average before and after (a loaded
 *   machine gives noisy numbers: the report says so);
 * - per backend (src/backend/registry.ts BACKEND_NAMES, `auto` aside; a backend that does not
 *   open is listed with its reason): the training step of every model under every preset (median
 *   ms, images/s, speedup over fp32; batch 64 and 28x28x1 inputs for LeNet-5 and ResNet-20, the
 *   zoo models at bench/cases.ts modelInput's), and ResNet-20's 3x3 conv passes in
 *   fp32 and each int8 variant (GOPS = 2 x multiply-adds / s, % of the variant's peak where the
 *   peak of this CPU family is known, kernels/cpu/README.md);
 * - the peers, same models (LeNet-5, ResNet-20 and the zoo's ResNet-18/34/50: what bench/peers
 *   builds), batch, input and threads, in the same run: PyTorch CPU (NCHW and
 *   channels_last), served by one Python process and timed in slices that alternate with ours
 *   (ServedPeer: both see the same machine load), its conv passes on every layer of the set
 *   (each request carries the layer's shape), and PyTorch GPU when torch sees a CUDA device; a
 *   peer that cannot run is listed with the reason.
 *
 * Cases are timed interleaved (one iteration of each in turn, rounds until the budget is spent)
 * so a change of machine load hits all of them alike; the median of the rounds is reported.
 *
 * Flags: --seconds S per group of cases (default 3), --threads N (cpu; default all cores),
 * --python PATH (default /usr/bin/python3), --clock-ghz G (core clock for % of peak; default
 * the clock the cpu backend measures with all threads busy, its device info; else
 * /proc/cpuinfo's MHz, which on a VM is the TSC rate, not the boost clock), --out DIR (default
 * bench/), --no-peers, --models lenet5,resnet20 (any of src/models/registry.ts; empty: no
 * training steps), --layers resnet20|zoo
 * (the conv layer set: ResNet-20's and LeNet-5's, or the zoo's wide ImageNet layers at batch 8),
 * --timer wall|cpu (cpu: this process's CPU
 * time, with --threads 1 only: robust on a machine shared with other jobs; the peers are always
 * timed by the wall clock of their own loop).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { loadavg } from "node:os";
import process from "node:process";
import { isCpuBackend } from "../src/backend/backend.ts";
import {
  backends,
  BATCH,
  convCases,
  int8Variants,
  modelInput,
  MODELS,
  PEER_MODELS,
  type Preset,
  presets,
  stepCase,
  torchInput,
  zooModels,
} from "./cases.ts";
import { LAYER_SETS } from "./conv_fixture.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "3" },
    threads: { type: "string" },
    python: { type: "string", default: "/usr/bin/python3" },
    "clock-ghz": { type: "string" },
    out: { type: "string", default: new URL(".", import.meta.url).pathname },
    "no-peers": { type: "boolean", default: false },
    models: { type: "string", default: MODELS.join(",") },
    timer: { type: "string", default: "wall" },
    layers: { type: "string", default: "resnet20" },
  },
  strict: true,
});
const seconds = Number(values.seconds);
if (!(seconds > 0)) throw new RangeError(`--seconds must be > 0, got "${values.seconds}"`);
const threads = Number(values.threads ?? navigator.hardwareConcurrency);
if (!Number.isInteger(threads) || threads < 1) {
  throw new RangeError(`--threads must be an integer >= 1, got "${values.threads}"`);
}
if (values.timer !== "wall" && values.timer !== "cpu") {
  throw new RangeError(`--timer must be wall or cpu, got "${values.timer}"`);
}
if (values.timer === "cpu" && threads !== 1) {
  throw new RangeError(
    `--timer cpu needs --threads 1 (process CPU time), got --threads ${threads}`,
  );
}
/** ms: wall clock, or (--timer cpu, one thread) this process's CPU time, which time slices
 * given to other processes on a shared machine do not inflate. */
const now = values.timer === "cpu"
  ? () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
  : () => performance.now();
if (!Object.hasOwn(LAYER_SETS, values.layers)) {
  throw new RangeError(
    `Unknown layer set "${values.layers}" in --layers: expected ${
      Object.keys(LAYER_SETS).join(", ")
    }`,
  );
}
const layerSet = values.layers as keyof typeof LAYER_SETS;
const models = zooModels(values.models, "--models");

// ---- the machine -------------------------------------------------------------------------------

/** /proc/cpuinfo: Deno 2.9 reads /proc only under --allow-all, so through `cat` (--allow-run). */
function procCpuinfo(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    const r = new Deno.Command("cat", { args: ["/proc/cpuinfo"], stderr: "null" }).outputSync();
    if (!r.success) throw new Error("cannot read /proc/cpuinfo");
    return new TextDecoder().decode(r.stdout);
  }
}

function cpuInfo(): {
  model: string;
  family: number;
  modelNo: number;
  mhz: number;
  flags: string[];
} {
  try {
    const t = procCpuinfo();
    const field = (k: string) => t.match(new RegExp(`^${k}\\s*:\\s*(.*)$`, "m"))?.[1] ?? "";
    return {
      model: field("model name") || "unknown",
      family: Number(field("cpu family")) || 0,
      modelNo: Number(field("model")) || 0,
      mhz: Number(field("cpu MHz")) || 0,
      flags: field("flags").split(/\s+/),
    };
  } catch {
    return { model: navigator.userAgent, family: 0, modelNo: 0, mhz: 0, flags: [] };
  }
}
const cpu = cpuInfo();
const ISA = [
  "sse4_2",
  "avx",
  "avx2",
  "fma",
  "avx512f",
  "avx512bw",
  "avx512_vnni",
  "avx_vnni",
  "amx_int8",
]
  .filter((f) => cpu.flags.includes(f));
const vendorAmd = /AMD/i.test(cpu.model);
/** The AMD core generation from family / model (null: Intel or unknown). */
const amdCore: string | null = !vendorAmd
  ? null
  : cpu.family === 23
  ? "Zen 2"
  : cpu.family === 25
  ? ((cpu.modelNo >= 0x10 && cpu.modelNo <= 0x1f) || (cpu.modelNo >= 0x60 && cpu.modelNo <= 0x7f) ||
      (cpu.modelNo >= 0xa0 && cpu.modelNo <= 0xaf)
    ? "Zen 4"
    : "Zen 3")
  : cpu.family === 26
  ? "Zen 5"
  : `AMD family ${cpu.family}`;
/** The core clock for % of peak: --clock-ghz, else the cpu backend's measured clock (read from
 * its device info once it is open), else /proc/cpuinfo (on a VM, the TSC rate). */
let clockGhz = Number(values["clock-ghz"] ?? cpu.mhz / 1000);
let clockSource = values["clock-ghz"] ? "--clock-ghz" : "/proc/cpuinfo; on a VM the TSC rate";

/**
 * Multiply-adds per core clock the instruction mix of each kernel allows on this CPU family
 * (kernels/cpu/README.md "Peaks": measured with bench/ports/x86_ports.cpp on Zen 3, Zen 4 and
 * Zen 5, published port tables for Intel); null where not modelled (AMD cores not measured;
 * avx-vnni on a core without the instruction, where it runs emulated).
 */
function peakMacsPerClock(kernel: string): number | null {
  const hasVnniYmm = cpu.flags.includes("avx_vnni");
  switch (kernel) {
    case "fp32":
      if (!cpu.flags.includes("fma")) return 8;
      // Zen 4 splits a zmm FMA into two 256-bit halves: 16 MACs per clock in both widths; Zen 5
      // issues two full zmm FMAs a clock
      return cpu.flags.includes("avx512f") && (!vendorAmd || amdCore === "Zen 5") ? 32 : 16;
    case "avx2":
      return vendorAmd
        ? ({ "Zen 2": 16, "Zen 3": 24, "Zen 4": 21, "Zen 5": 28 } as Record<string, number>)[
          amdCore!
        ] ?? null
        : 21.3;
    case "avx-vnni":
      return hasVnniYmm && (!vendorAmd || amdCore === "Zen 5") ? 64 : null;
    case "amx":
      // tdpbusd 16 x 16 x 64 every 19 core clocks, measured on Sapphire Rapids (bench/ports)
      return cpu.flags.includes("amx_int8") && !vendorAmd ? 860 : null;
    case "avx512-vnni":
      return !cpu.flags.includes("avx512_vnni")
        ? null
        : vendorAmd
        ? ({ "Zen 4": 64, "Zen 5": 128 } as Record<string, number>)[amdCore!] ?? null
        : 128;
    default:
      return null;
  }
}
const pct = (gops: number, kernel: string) => {
  const p = peakMacsPerClock(kernel);
  return p && clockGhz > 0 ? (100 * gops) / (2 * p * clockGhz * threads) : NaN;
};

// ---- timing ------------------------------------------------------------------------------------

/**
 * Interleaved rounds of one call each until `budget` s (at least 3 rounds); medians in ms. With
 * `between`, the budget is cut into `slices` and `between` runs after each slice (the served
 * peer's turn: its measurements and ours alternate over the whole budget).
 */
async function measure(
  fns: (() => Promise<void>)[],
  budget: number,
  between?: () => Promise<void>,
  slices = 1,
): Promise<{ median: number; min: number }[]> {
  for (const f of fns) await f(); // warm-up
  const times = fns.map(() => [] as number[]);
  let r = 0;
  for (let sl = 0; sl < slices; sl++) {
    const end = performance.now() + (budget * 1000) / slices;
    for (; r < 3 || performance.now() < end; r++) {
      for (const [i, f] of fns.entries()) {
        const t0 = now();
        await f();
        times[i]!.push(now() - t0);
      }
      if (r > 1000 * (sl + 1)) break;
    }
    if (between) await between();
  }
  return times.map((t) => {
    t.sort((a, b) => a - b);
    return { median: t[Math.floor(t.length / 2)]!, min: t[0]! };
  });
}

// ---- peers -------------------------------------------------------------------------------------

interface PeerRow {
  peer: string;
  device: string;
  model: string;
  channels_last: boolean;
  ms_per_step: number;
  images_per_s: number;
  torch: string;
}

interface PeerConvRow {
  peer: string;
  layer: string;
  pass: string;
  channels_last: boolean;
  ms: number;
}

/**
 * The one-shot PyTorch peer on `device` (the GPU one; the CPU peer is ServedPeer): training steps
 * of `model`, or (model null) the conv passes.
 */
async function peer<T>(device: string, model: string | null): Promise<T[] | string> {
  const script = new URL("./peers/torch_cpu.py", import.meta.url).pathname;
  const input = model ? modelInput(model) : null;
  const args = [script, "--batch-size", String(input?.batch ?? BATCH), "--threads"];
  args.push(String(threads), "--seconds", String(seconds), "--json", "--device", device);
  if (input) args.push("--input", torchInput(input));
  args.push(...(model ? ["--model", model] : ["--convs"]));
  if (values.timer === "cpu") args.push("--cpu-time");
  try {
    const r = await new Deno.Command(values.python!, {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { OMP_WAIT_POLICY: Deno.env.get("OMP_WAIT_POLICY") ?? "passive" },
    }).output();
    if (!r.success) {
      const msg = new TextDecoder().decode(r.stderr).trim().split("\n").at(-1) ?? "";
      return `exit status ${r.code}: ${msg}`;
    }
    return new TextDecoder().decode(r.stdout).trim().split("\n").map((l) => JSON.parse(l));
  } catch (e) {
    return (e as Error).message;
  }
}

/** Slices of each group's budget: ours and the served peer's measurements alternate this often. */
const PAIRED_SLICES = 4;
/** Why a model outside PEER_MODELS has no PyTorch row. */
const NO_PEER = `bench/peers/torch_cpu.py builds ${PEER_MODELS.join(", ")} only (the rest of ` +
  "the zoo has no PyTorch twin in the peer)";

/**
 * The PyTorch CPU peer as one served process (`torch_cpu.py --serve`): asked for a slice of
 * timings between slices of ours, so both see the same machine. On a shared host the speed drifts
 * by tens of percent over seconds; measured minutes apart the comparison would carry that drift.
 */
class ServedPeer {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;
  dead: string | null = null;
  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    let buf = "";
    const split = new TransformStream<string, string>({
      transform(chunk, ctl) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          ctl.enqueue(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      },
    });
    this.#lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(split)[
      Symbol.asyncIterator
    ]();
  }
  /** The started peer, or why it could not start. */
  static async start(): Promise<ServedPeer | string> {
    const script = new URL("./peers/torch_cpu.py", import.meta.url).pathname;
    const args = [script, "--serve", "--batch-size", String(BATCH), "--threads", String(threads)];
    if (values.timer === "cpu") args.push("--cpu-time");
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(values.python!, {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        env: { OMP_WAIT_POLICY: Deno.env.get("OMP_WAIT_POLICY") ?? "passive" },
      }).spawn();
    } catch (e) {
      return (e as Error).message;
    }
    const p = new ServedPeer(child);
    const first = await p.#lines.next();
    if (first.done) {
      const st = await child.status;
      const err = await new Response(child.stderr).text();
      return `exit status ${st.code}: ${err.trim().split("\n").at(-1) ?? ""}`;
    }
    child.stderr.cancel().catch(() => {});
    return p;
  }
  /** One answer (a row plus times_ms), or the reason there is none. */
  async ask<T>(req: Record<string, unknown>): Promise<(T & { times_ms: number[] }) | string> {
    if (this.dead) return this.dead;
    try {
      await this.#writer.write(new TextEncoder().encode(JSON.stringify(req) + "\n"));
      const r = await this.#lines.next();
      if (r.done) return (this.dead = "the served peer exited");
      const row = JSON.parse(r.value);
      return row.error ? `peer error: ${row.error}` : row;
    } catch (e) {
      return (this.dead = `the served peer failed: ${(e as Error).message}`);
    }
  }
  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

/** Pooled times of one peer measurement across slices; the row of the last answer (no times). */
class PeerPool<T> {
  times: number[] = [];
  row: T | null = null;
  reason: string | null = null;
  add(a: (T & { times_ms: number[] }) | string): void {
    if (typeof a === "string") {
      this.reason ??= a;
      return;
    }
    const { times_ms, ...row } = a;
    this.times.push(...times_ms);
    this.row = row as T;
  }
  median(): number {
    const t = [...this.times].sort((a, b) => a - b);
    return t[Math.floor(t.length / 2)]!;
  }
}

// ---- run ---------------------------------------------------------------------------------------

interface StepRow {
  backend: string;
  model: string;
  /** The step's batch and input (batch x HxWxC, bench/cases.ts modelInput). */
  batch: number;
  input: string;
  preset: string;
  ms: number;
  min_ms: number;
  images_per_s: number;
  speedup_vs_fp32: number;
}
interface ConvRow {
  backend: string;
  layer: string;
  pass: string;
  kernel: string;
  ms: number;
  gops: number;
  pct_of_peak: number | null;
  /** The fastest round (ms) and its % of peak: what the kernel does when no other tenant of the
   * host shares the core's caches or SIMD units (the median above is what a run gets). */
  best_ms: number;
  pct_of_peak_best: number | null;
  peak_macs_per_clock: number | null;
  speedup_vs_fp32: number;
}

const load0 = loadavg();
const started = new Date().toISOString();
const machine = {
  cpu: cpu.model,
  cpu_family: cpu.family,
  cpu_model_number: cpu.modelNo,
  cpu_core: amdCore,
  cores: navigator.hardwareConcurrency,
  isa: ISA,
  clock_ghz: clockGhz,
  threads,
  deno: Deno.version.deno,
};
const backendRows: {
  name: string;
  info: string | null;
  int8: string | null;
  skipped: string | null;
}[] = [];
const steps: StepRow[] = [];
const convs: ConvRow[] = [];
const f1 = (v: number) => Number.isFinite(v) ? v.toFixed(1) : "n/a";
const f2 = (v: number) => Number.isFinite(v) ? v.toFixed(2) : "n/a";

const peers: PeerRow[] = [];
const peerConvs: PeerConvRow[] = [];
const skippedPeers: { peer: string; reason: string }[] = [];
// The CPU peer runs paired with the cpu backend (ServedPeer); a GPU peer runs on its own below.
const served = values["no-peers"] ? null : await ServedPeer.start();
const LAYOUTS = [false, true];

/** `between` for measure(): one slice of the peer for each layout of `req`, into `pools`. */
function peerTurn<T>(
  peer: ServedPeer | null,
  req: Record<string, unknown>,
  pools: PeerPool<T>[],
): (() => Promise<void>) | undefined {
  if (!peer) return undefined;
  return async () => {
    for (const [i, cl] of LAYOUTS.entries()) {
      pools[i]!.add(await peer.ask<T>({ ...req, channels_last: cl }));
    }
  };
}

for (const { name, backend: b, reason } of await backends()) {
  if (!b) {
    backendRows.push({ name, info: null, int8: null, skipped: reason });
    console.error(`report: backend ${name} skipped: ${reason}`);
    continue;
  }
  if (isCpuBackend(b)) {
    b.setThreads(threads);
    const measured = b.info().match(/core clock ([0-9.]+) GHz \(measured\)/);
    if (measured && !values["clock-ghz"]) {
      clockGhz = Number(measured[1]);
      clockSource = `measured by the cpu backend with ${threads} thread(s) busy`;
      machine.clock_ghz = clockGhz;
    }
  }
  const variants = int8Variants(b);
  // the served CPU peer is timed beside the cpu backend only
  const paired = isCpuBackend(b) && served instanceof ServedPeer ? served : null;
  backendRows.push({
    name,
    info: b.info(),
    int8: isCpuBackend(b) ? `${b.int8KernelName()} (runs here: ${variants.join(", ")})` : "device",
    skipped: null,
  });
  for (const model of models) {
    console.error(`report: ${name} ${model} training steps`);
    const ps: Preset[] = presets(model);
    const input = modelInput(model);
    const cs = [];
    for (const p of ps) cs.push(await stepCase(b, model, p));
    const pools = LAYOUTS.map(() => new PeerPool<PeerRow>());
    const peered = paired && PEER_MODELS.includes(model) ? paired : null;
    if (paired && !peered) skippedPeers.push({ peer: `pytorch-cpu ${model}`, reason: NO_PEER });
    const turn = peerTurn(peered, {
      model,
      seconds: seconds / PAIRED_SLICES,
      batch: input.batch,
      input: torchInput(input),
    }, pools);
    const t = await measure(cs.map((c) => c.run), seconds * ps.length, turn, PAIRED_SLICES);
    cs.forEach((c) => c.dispose());
    for (const pool of peered ? pools : []) {
      if (pool.row) {
        const ms = pool.median();
        peers.push({ ...pool.row, ms_per_step: ms, images_per_s: (input.batch * 1000) / ms });
      } else skippedPeers.push({ peer: `pytorch-cpu ${model}`, reason: pool.reason ?? "" });
    }
    ps.forEach((p, i) => {
      steps.push({
        backend: name,
        model,
        batch: input.batch,
        input: `${input.size}x${input.size}x${input.channels}`,
        preset: p.label,
        ms: t[i]!.median,
        min_ms: t[i]!.min,
        images_per_s: (input.batch * 1000) / t[i]!.median,
        speedup_vs_fp32: t[0]!.median / t[i]!.median,
      });
    });
  }
  console.error(`report: ${name} conv kernels`);
  const layers = LAYER_SETS[layerSet](BATCH);
  const { cases, dispose } = convCases(b, layers);
  for (const c of cases) {
    const fns = [c.fp32];
    for (const v of variants) {
      fns.push(
        isCpuBackend(b)
          ? () => {
            b.setInt8Kernel(v as Parameters<typeof b.setInt8Kernel>[0]);
            return c.int8();
          }
          : c.int8,
      );
    }
    const pools = LAYOUTS.map(() => new PeerPool<PeerConvRow>());
    // the shape goes with the name, so the peer times any layer set (bench/peers/torch_cpu.py)
    const l = layers.find((l) => l.name === c.layer)!;
    const shape = {
      n: l.x[0],
      h: l.x[1],
      w: l.x[2],
      c: l.x[3],
      k: l.k,
      stride: l.stride,
      r: l.r,
      pad: l.pad,
    };
    const req = {
      layer: c.layer,
      pass: c.pass,
      shape,
      seconds: Math.min(seconds, 2) / PAIRED_SLICES,
    };
    const t = await measure(fns, Math.min(seconds, 2), peerTurn(paired, req, pools), PAIRED_SLICES);
    if (isCpuBackend(b)) b.setInt8Kernel("auto");
    for (const pool of paired ? pools : []) {
      if (pool.row) {
        peerConvs.push({ ...pool.row, ms: pool.median() });
      } else {
        skippedPeers.push({ peer: `pytorch-cpu ${c.layer} ${c.pass}`, reason: pool.reason ?? "" });
      }
    }
    ["fp32", ...variants].forEach((kernel, i) => {
      const gops = (2 * c.macs) / t[i]!.median / 1e6;
      const peak = kernel === "device" ? null : peakMacsPerClock(kernel);
      convs.push({
        backend: name,
        layer: c.layer,
        pass: c.pass,
        kernel,
        ms: t[i]!.median,
        gops,
        pct_of_peak: peak ? pct(gops, kernel) : null,
        best_ms: t[i]!.min,
        pct_of_peak_best: peak ? pct((2 * c.macs) / t[i]!.min / 1e6, kernel) : null,
        peak_macs_per_clock: peak,
        speedup_vs_fp32: t[0]!.median / t[i]!.median,
      });
    });
  }
  dispose();
}

if (values["no-peers"]) {
  skippedPeers.push({ peer: "pytorch", reason: "--no-peers" });
} else {
  if (typeof served === "string") skippedPeers.push({ peer: "pytorch-cpu", reason: served });
  else await served?.close();
  for (const model of models.filter((m) => PEER_MODELS.includes(m))) {
    console.error(`report: PyTorch cuda ${model}`);
    const p = await peer<PeerRow>("cuda", model);
    if (typeof p === "string") {
      skippedPeers.push({ peer: `pytorch-cuda ${model}`, reason: p });
      break; // the same reason for every model
    }
    peers.push(...p);
  }
  console.error("report: PyTorch cuda conv passes");
  const c = await peer<PeerConvRow>("cuda", null);
  if (typeof c === "string") skippedPeers.push({ peer: "pytorch-cuda convs", reason: c });
  else peerConvs.push(...c);
}
const load1 = loadavg();

// ---- outputs -----------------------------------------------------------------------------------

const md: string[] = [];
md.push("# daint8 speed report", "");
md.push(
  `Generated by \`deno task report\` on ${started}. ${threads} thread(s), median of interleaved rounds (${seconds} s per group), timer: ` +
    (values.timer === "cpu" ? "process CPU time (peers: wall clock)" : "wall clock") + ".",
  "",
);
md.push("## Machine", "");
md.push(
  `- CPU: ${cpu.model} (family ${cpu.family}, model ${cpu.modelNo}${
    amdCore ? `: ${amdCore}` : ""
  }), ${machine.cores} logical cores`,
);
md.push(`- ISA: ${ISA.join(", ") || "unknown"}`);
md.push(
  `- Clock used for % of peak: ${clockGhz.toFixed(2)} GHz (${clockSource})`,
);
md.push(
  `- Load average (1 min) before / after: ${load0[0]!.toFixed(2)} / ${load1[0]!.toFixed(2)}` +
    // before the run: other work; after it, the run's own threads count too
    (load0[0]! > machine.cores * 0.5 || load1[0]! > machine.cores + 0.5
      ? ` — the machine was shared with other work: the figures are noisy (compare the ratios, ` +
        `measured interleaved, rather than the absolute times)`
      : ""),
);
md.push("", "| backend | device | int8 kernel |", "|---|---|---|");
for (const r of backendRows) {
  md.push(
    r.skipped ? `| ${r.name} | skipped: ${r.skipped} | |` : `| ${r.name} | ${r.info} | ${r.int8} |`,
  );
}
md.push("", "## Training step", "");
md.push("| backend | model | batch x input | preset | ms / step | images / s | speedup vs fp32 |");
md.push("|---|---|---|---|---:|---:|---:|");
for (const s of steps) {
  md.push(
    `| ${s.backend} | ${s.model} | ${s.batch} x ${s.input} | ${s.preset} | ${f2(s.ms)} | ` +
      `${s.images_per_s.toFixed(0)} | ${f2(s.speedup_vs_fp32)}x |`,
  );
}
md.push(
  "",
  "Peers, same models, batch, input and thread count, same run (the CPU peer timed in " +
    `${PAIRED_SLICES} slices alternating with ours, so both see the same machine load):`,
  "",
);
md.push("| peer | device | model | layout | ms / step | images / s | our fp32 speedup over it |");
md.push("|---|---|---|---|---:|---:|---:|");
for (const p of peers) {
  const ours = steps.find((s) => s.backend === "cpu" && s.model === p.model && s.preset === "fp32");
  md.push(
    `| ${p.peer} ${p.torch} | ${p.device} | ${p.model} | ` +
      `${p.channels_last ? "channels_last" : "NCHW"} | ${f2(p.ms_per_step)} | ` +
      `${p.images_per_s.toFixed(0)} | ${ours ? f2(p.ms_per_step / ours.ms) + "x" : "n/a"} |`,
  );
}
for (const s of skippedPeers) md.push(`| ${s.peer} | skipped: ${s.reason} | | | | | |`);
md.push(
  "",
  layerSet === "zoo"
    ? "## Conv kernels (the zoo's wide ImageNet layers, batch 8)"
    : `## Conv kernels (ResNet-20's 3x3 pad-1 layers, LeNet-5's conv2; batch ${BATCH})`,
  "",
);
md.push(
  "GOPS = 2 x multiply-adds / s, counting every nominal multiply-add of the conv (padding taps " +
    "included, as libraries report them): a kernel that skips the padding taps (the cpu fp32 " +
    "forward and stride-1 dgrad, and PyTorch's oneDNN) can read above 100% of peak on small maps, " +
    "where the padding holds much of the nominal work (18% on 7x7 maps with a 3x3 kernel). INT8 " +
    "times cover the GEMM with its im2col and epilogue (no " +
    "quantization). % of peak = GOPS / (2 x peak MACs per clock x clock x threads), the peak of " +
    "each kernel's instruction mix on this CPU family (kernels/cpu/README.md); n/a where not " +
    'modelled. ms and the first % are medians; "best" is the fastest round, what the kernel ' +
    "does when no other tenant of the host shares the core (on a shared VM the two differ).",
  "",
);
md.push(
  "| backend | layer | pass | kernel | ms | GOPS | peak MACs/clk | % of peak | best ms | % of peak (best) | vs fp32 |",
);
md.push("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
for (const c of convs) {
  md.push(
    `| ${c.backend} | ${c.layer} | ${c.pass} | ${c.kernel} | ${f2(c.ms)} | ${f1(c.gops)} | ` +
      `${c.peak_macs_per_clock ?? "n/a"} | ${
        c.pct_of_peak === null ? "n/a" : f1(c.pct_of_peak)
      } | ${f2(c.best_ms)} | ${c.pct_of_peak_best === null ? "n/a" : f1(c.pct_of_peak_best)} | ` +
      `${f2(c.speedup_vs_fp32)}x |`,
  );
}
md.push("", "### fp32 conv kernels vs PyTorch (same shapes, same run)", "");
md.push(
  "| layer | pass | our fp32 ms | peer | PyTorch NCHW ms | PyTorch channels_last ms | our speedup over the faster |",
);
md.push("|---|---|---:|---|---:|---:|---:|");
for (const c of convs.filter((c) => c.backend === "cpu" && c.kernel === "fp32")) {
  for (const name of [...new Set(peerConvs.map((p) => p.peer))]) {
    const pick = (cl: boolean) =>
      peerConvs.find((p) =>
        p.peer === name && p.layer === c.layer && p.pass === c.pass && p.channels_last === cl
      )?.ms ?? NaN;
    const nchw = pick(false), nhwc = pick(true);
    const best = Math.min(...[nchw, nhwc].filter(Number.isFinite));
    md.push(
      `| ${c.layer} | ${c.pass} | ${f2(c.ms)} | ${name} | ${f2(nchw)} | ${f2(nhwc)} | ` +
        `${Number.isFinite(best) ? f2(best / c.ms) + "x" : "n/a"} |`,
    );
  }
}
if (peerConvs.length === 0) {
  md.push("| (no PyTorch conv figures: see the skipped peers above) | | | | | | |");
}
md.push("", "![training-step speedup over fp32](report.svg)", "");

/** Bar chart: per backend and model, each preset's step speedup over fp32 (and PyTorch's). */
function svg(): string {
  const groups = new Map<string, { label: string; v: number }[]>();
  for (const s of steps) {
    const key = `${s.backend} ${s.model}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push({ label: s.preset, v: s.speedup_vs_fp32 });
  }
  for (const p of peers) {
    const ours = steps.find((s) =>
      s.backend === "cpu" && s.model === p.model && s.preset === "fp32"
    );
    const g = groups.get(`cpu ${p.model}`);
    if (ours && g) {
      g.push({
        label: `${p.peer} ${p.channels_last ? "NHWC" : "NCHW"}`,
        v: ours.ms / p.ms_per_step,
      });
    }
  }
  const bars = [...groups.values()].reduce((n, g) => n + g.length, 0);
  const rowH = 18, gap = 26, left = 230, width = 760;
  const vmax = Math.max(1.5, ...[...groups.values()].flat().map((b) => b.v));
  const scale = (width - left - 60) / vmax;
  const height = 40 + bars * rowH + groups.size * gap;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="12">`,
    `<text x="10" y="18" font-size="14">Training-step speedup over our fp32 (` +
    `${threads} thread${threads === 1 ? "" : "s"}; 1 = fp32)</text>`,
  ];
  let y = 34;
  for (const [key, g] of groups) {
    out.push(`<text x="10" y="${y + 12}" font-weight="bold">${key}</text>`);
    y += gap - 8;
    for (const b of g) {
      const w = Math.max(1, b.v * scale);
      const color = b.label.startsWith("pytorch")
        ? "#999"
        : b.label === "fp32"
        ? "#4c72b0"
        : "#dd8452";
      out.push(
        `<text x="${left - 6}" y="${y + 12}" text-anchor="end">${b.label}</text>`,
        `<rect x="${left}" y="${y + 2}" width="${w.toFixed(1)}" height="${
          rowH - 4
        }" fill="${color}"/>`,
        `<text x="${left + w + 4}" y="${y + 12}">${b.v.toFixed(2)}x</text>`,
      );
      y += rowH;
    }
    y += 8;
  }
  const x1 = left + scale;
  out.push(
    `<line x1="${x1}" y1="30" x2="${x1}" y2="${height - 4}" stroke="#333" stroke-dasharray="3,3"/>`,
    "</svg>",
  );
  return out.join("\n") + "\n";
}

const dir = values.out.endsWith("/") ? values.out : values.out + "/";
await Deno.mkdir(dir, { recursive: true });
await Deno.writeTextFile(`${dir}REPORT.md`, md.join("\n") + "\n");
await Deno.writeTextFile(
  `${dir}report.json`,
  JSON.stringify(
    {
      started,
      machine,
      load_average: { before: load0, after: load1 },
      backends: backendRows,
      steps,
      convs,
      peers,
      peer_convs: peerConvs,
      skipped_peers: skippedPeers,
    },
    null,
    2,
  ) + "\n",
);
await Deno.writeTextFile(`${dir}report.svg`, svg());
console.log(md.join("\n"));
console.error(`report: wrote ${dir}REPORT.md, ${dir}report.json, ${dir}report.svg`);
