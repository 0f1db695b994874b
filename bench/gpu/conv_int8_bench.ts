/**
 * INT8 convolution throughput on the GPU: fprop, dgrad and wgrad on ResNet-50 layer shapes at
 * batch 128 (the 7x7 stem, the 3x3 layers of every stage, the 1x1 layers, the stride-2 3x3 and
 * 1x1 downsampling layers of v1.5), for each cuda kernel version; and MobileNetV2's depthwise 3x3
 * layers, where versions 2-4 all run the dp4a depthwise kernels (measured once, as version 2)
 * beside our fp32 depthwise kernels (rows with version 0), the issue's "INT8 with dp4a or float:
 * measure and say". Before timing, every version's output is checked against version 1 (the simple kernel,
 * itself checked against the cpu backend by test/gpu/ops_gpu_test.ts): wgrad bit for bit, fprop
 * and dgrad within 1e-6 relative. Timing: each op enqueued `reps` times with inputs rotated over
 * 3 sets, d8_synchronize, median of `trials` such runs. TOPS = 2 x the conv's multiply-adds
 * (N*P*Q * K * R*S*C/G, the same count for all three passes) / s: a stride-2 dgrad is credited
 * with the conv's work, not with the zero taps a kernel might multiply.
 *
 * `deno run -A bench/gpu/conv_int8_bench.ts [--json out.json] [--quick] [--versions 1,2,3,4]
 * [--merge]`: `--merge` keeps the rows of the versions not measured now from the JSON already at
 * `--json` (gpu_check's rerun after a version faulted). A kernel call that fails is recorded and
 * the run goes on; when the CUDA context no longer answers after it, the run stops and the JSON
 * (written after every layer) says where ("aborted").
 *
 * @module
 */
import { parseArgs } from "node:util";
import { depthwiseName, MOBILENET_V2_DEPTHWISE } from "../conv_fixture.ts";
import {
  assertClose,
  assertEqualArrays,
  type Conv,
  convShape,
  cudaAvailable,
  int8Versions,
  Lib,
  median,
  Rand,
} from "../../test/gpu/harness.ts";

interface Layer {
  name: string;
  conv: Conv;
}

/** ResNet-50 (v1.5) layer shapes at batch `n` (bench/peers/torch_gpu.py has the same names). */
export function resnet50Layers(n: number): Layer[] {
  const L: Layer[] = [
    {
      name: "stem 7x7/2 3->64 224",
      conv: { n, h: 224, w: 224, c: 3, k: 64, r: 7, s: 7, stride: [2, 2], pad: [3, 3] },
    },
  ];
  for (const [c, hw] of [[64, 56], [128, 28], [256, 14], [512, 7]] as const) {
    L.push({
      name: `3x3 ${c}->${c} ${hw}`,
      conv: { n, h: hw, w: hw, c, k: c, r: 3, s: 3, pad: [1, 1] },
    });
    L.push({
      name: `1x1 ${4 * c}->${c} ${hw}`,
      conv: { n, h: hw, w: hw, c: 4 * c, k: c, r: 1, s: 1 },
    });
    L.push({
      name: `1x1 ${c}->${4 * c} ${hw}`,
      conv: { n, h: hw, w: hw, c, k: 4 * c, r: 1, s: 1 },
    });
  }
  // the first block of stages 2-4: its 3x3 conv at stride 2 and the 1x1 stride-2 projection
  for (const [c, hw] of [[128, 56], [256, 28], [512, 14]] as const) {
    L.push({
      name: `3x3/2 ${c}->${c} ${hw}`,
      conv: { n, h: hw, w: hw, c, k: c, r: 3, s: 3, stride: [2, 2], pad: [1, 1] },
    });
    L.push({
      name: `1x1/2 ${2 * c}->${4 * c} ${hw}`,
      conv: { n, h: hw, w: hw, c: 2 * c, k: 4 * c, r: 1, s: 1, stride: [2, 2] },
    });
  }
  return L;
}

/** MobileNetV2's depthwise 3x3 layers (224 x 224 input, the expanded channels) at batch `n`
 * (bench/peers/torch_gpu.py has the same names). */
export function mobilenetV2DepthwiseLayers(n: number): Layer[] {
  return MOBILENET_V2_DEPTHWISE.map(([c, hw, st]) => ({
    name: depthwiseName(c, hw, st),
    conv: { n, h: hw, w: hw, c, k: c, r: 3, s: 3, groups: c, stride: [st, st], pad: [1, 1] },
  }));
}

/** Every layer the benchmark measures (and bench/peers/torch_gpu.py's `layers`). */
export function benchLayers(n: number): Layer[] {
  return [...resnet50Layers(n), ...mobilenetV2DepthwiseLayers(n)];
}

export interface Row {
  layer: string;
  version: number;
  op: string;
  ms: number;
  tops: number;
}

/** The kernel versions of `--versions` ("1,2,3,4"): 1 (the reference the others are checked
 * against) must be among them. */
export function parseVersions(text: string): number[] {
  const vs = [...new Set(text.split(",").filter((v) => v !== "").map(Number))];
  for (const v of vs) {
    if (![1, 2, 3, 4].includes(v)) {
      throw new RangeError(`--versions: ${v} is not a version (1, 2, 3, 4)`);
    }
  }
  if (!vs.includes(1)) {
    throw new RangeError(`--versions: include 1, the reference the others are checked against`);
  }
  return vs.sort();
}

/** `--merge`: the rows of an earlier run for versions not measured now (nor measured again now:
 * the depthwise layers' version-2 and fp32 rows), then this run's rows. */
export function mergeRows(earlier: Row[], now: Row[], versions: number[]): Row[] {
  const again = new Set(now.map((r) => `${r.layer}|${r.version}|${r.op}`));
  return [
    ...earlier.filter((r) =>
      !versions.includes(r.version) && !again.has(`${r.layer}|${r.version}|${r.op}`)
    ),
    ...now,
  ];
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "string" },
      quick: { type: "boolean" },
      batch: { type: "string" },
      versions: { type: "string", default: "1,2,3,4" },
      merge: { type: "boolean", default: false },
    },
    strict: true,
  });
  const versions = parseVersions(values.versions!);
  const gpu = cudaAvailable();
  if (!gpu.ok) {
    console.log(`bench/gpu: skipped: ${gpu.reason}`);
    if (values.json) {
      Deno.writeTextFileSync(values.json, JSON.stringify({ skipped: gpu.reason }) + "\n");
    }
    Deno.exit(0);
  }
  const batch = Number(values.batch ?? 128);
  const reps = values.quick ? 3 : 10, trials = values.quick ? 3 : 7;
  let earlier: Row[] = [];
  if (values.merge && values.json) {
    try {
      earlier = (JSON.parse(Deno.readTextFileSync(values.json)).rows ?? []) as Row[];
    } catch { /* nothing to merge */ }
  }
  const cuda = new Lib("cuda");
  const info = new Uint8Array(512);
  cuda.check(cuda.s.d8_device_info(cuda.ctx, info, info.length));
  const device = new TextDecoder().decode(info.subarray(0, info.indexOf(0)));
  console.log(device);
  const rows: Row[] = [];
  const failures: string[] = [];
  // versions this device cannot run (mma-m16n8k32 below compute capability 8.0): said, not failed
  const probe = int8Versions(cuda, versions), skippedVersions = probe.refused;
  for (const r of skippedVersions) console.log(`skipped ${r}`);
  // A CUDA error in a kernel call (thrown by check) is recorded; when the context no longer
  // answers afterwards (a sticky fault), the run stops there and says so ("aborted"): the JSON,
  // written after every layer, keeps what was measured, and gpu_check reruns the other versions.
  let aborted: { layer: string; version: number; op: string; error: string } | undefined;
  const write = () => {
    if (!values.json) return;
    const all = mergeRows(earlier, rows, versions);
    const tmp = `${values.json}.tmp`;
    Deno.writeTextFileSync(
      tmp,
      JSON.stringify(
        // (`skipped` alone means the whole run was: no device)
        {
          device,
          batch,
          versions,
          rows: all,
          failures,
          skipped_versions: skippedVersions,
          aborted,
        },
        null,
        1,
      ) +
        "\n",
    );
    Deno.renameSync(tmp, values.json);
  };
  const alive = () => {
    try {
      cuda.check(cuda.s.d8_synchronize(cuda.ctx));
      return true;
    } catch {
      return false;
    }
  };
  // Times op (inputs rotated over the 3 sets): one call for the reference (version 1), else the
  // median of `trials` runs of `reps` calls, each run ended by a synchronize.
  const timeOp = (run: (i: number) => number, once: boolean) => {
    const times: number[] = [];
    for (let t = 0; t < (once ? 1 : trials); t++) {
      const t0 = performance.now();
      for (let r = 0; r < (once ? 1 : reps); r++) cuda.check(run(r % 3));
      cuda.check(cuda.s.d8_synchronize(cuda.ctx));
      times.push((performance.now() - t0) / (once ? 1 : reps));
    }
    return median(times);
  };
  const OPS = ["fprop", "dgrad", "wgrad"] as const;
  for (const { name, conv } of benchLayers(batch)) {
    if (aborted) break;
    const sh = convShape(conv);
    const depthwise = (conv.groups ?? 1) === conv.c && conv.c === conv.k;
    const rnd = new Rand(sh.w);
    const sets = [0, 1, 2].map(() => ({
      x: cuda.buf(sh.x, rnd.i8(sh.x)),
      w: cuda.buf(sh.w, rnd.i8(sh.w)),
      dy: cuda.buf(sh.y, rnd.i8(sh.y)),
    }));
    const xs = cuda.buf(4, new Float32Array([0.01]));
    const ks = cuda.buf(4 * conv.k, new Float32Array(conv.k).fill(0.02));
    const y = cuda.buf(4 * sh.y), dx = cuda.buf(4 * sh.x), dw = cuda.buf(4 * sh.w);
    const m = sh.y / conv.k, kd = sh.w / conv.k;
    const macs = m * conv.k * kd; // the conv's multiply-adds, credited to all three passes
    const record = (version: number, op: string, ms: number) => {
      const row = { layer: name, version, op, ms, tops: 2 * macs / (ms * 1e-3) / 1e12 };
      rows.push(row);
      console.log(
        `${name.padEnd(24)} ${version === 0 ? "fp32" : `v${version}`} ${op}: ${ms.toFixed(3)} ms, ${
          row.tops.toFixed(1)
        } TOPS`,
      );
    };
    const ops = {
      fprop: (i: number) =>
        cuda.s.d8_conv2d_fwd_i8(y, sets[i]!.x, sets[i]!.w, 0n, xs, ks, 2, sh.bytes),
      dgrad: (i: number) =>
        cuda.s.d8_conv2d_dgrad_i8(dx, sets[i]!.dy, sets[i]!.w, xs, xs, sh.bytes),
      wgrad: (i: number) =>
        cuda.s.d8_conv2d_wgrad_i8(dw, sets[i]!.x, sets[i]!.dy, xs, ks, 1, sh.bytes),
    };
    const outs = {
      fprop: () => cuda.f32(y, sh.y),
      dgrad: () => cuda.f32(dx, sh.x),
      wgrad: () => cuda.f32(dw, sh.w),
    };
    // depthwise: versions 2-4 run one kernel (the dp4a depthwise kernels), measured as version 2
    const versions = depthwise ? probe.ok.filter((v) => v <= 2) : probe.ok;
    const ref: Record<string, Float32Array> = {};
    // A failed call is recorded; false when the CUDA context no longer answers (run stops).
    const attempt = (what: string, version: number, op: string, fn: () => void) => {
      try {
        fn();
        return true;
      } catch (e) {
        const error = (e as Error).message.split("\n")[0]!;
        failures.push(`${what}: ${error}`);
        console.log(`${what}: FAILED: ${error}`);
        if (alive()) return true;
        aborted = { layer: name, version, op, error };
        console.log(`the CUDA context no longer answers: stopping (${what})`);
        return false;
      }
    };
    for (const version of versions) {
      if (aborted) break;
      cuda.check(cuda.s.d8_set_int8_kernel(cuda.ctx, version));
      for (const op of OPS) {
        if (name.startsWith("stem") && op === "dgrad") continue; // no input gradient for the stem
        if (version !== 1 && !ref[op]) continue; // the reference failed: nothing to check against
        const what = `${name} v${version} ${op}`;
        const ok = attempt(what, version, op, () => {
          cuda.check(ops[op](0));
          const out = outs[op]();
          if (version === 1) ref[op] = out;
          else {
            try {
              if (op === "wgrad") assertEqualArrays(what, out, ref[op]!);
              else assertClose(what, out, ref[op]!, { atol: 0, rtol: 1e-6 });
            } catch (e) {
              failures.push((e as Error).message.split("\n")[0]!);
              return;
            }
          }
          record(version, op, timeOp(ops[op], version === 1));
        });
        if (!ok) break;
      }
    }
    if (depthwise && !aborted) {
      // our fp32 depthwise kernels on the same shapes (checked against the cpu by test:gpu)
      // (one random set uploaded thrice: the rotation is over addresses, and these tensors are
      // far larger than the L2)
      const fx = rnd.f32(sh.x), fw = rnd.f32(sh.w), fdy = rnd.f32(sh.y);
      const f = [0, 1, 2].map(() => ({
        x: cuda.buf(4 * sh.x, fx),
        w: cuda.buf(4 * sh.w, fw),
        dy: cuda.buf(4 * sh.y, fdy),
      }));
      const fops = {
        fprop: (i: number) => cuda.s.d8_conv2d_fwd(y, f[i]!.x, f[i]!.w, 0n, sh.bytes),
        dgrad: (i: number) => cuda.s.d8_conv2d_dgrad(dx, f[i]!.dy, f[i]!.w, sh.bytes),
        wgrad: (i: number) => cuda.s.d8_conv2d_wgrad(dw, f[i]!.x, f[i]!.dy, sh.bytes),
      };
      for (const op of OPS) {
        if (!attempt(`${name} fp32 ${op}`, 0, op, () => record(0, op, timeOp(fops[op], false)))) {
          break;
        }
      }
    }
    if (!aborted) {
      cuda.check(cuda.s.d8_set_int8_kernel(cuda.ctx, 0));
      cuda.freeAll();
    }
    write();
  }
  if (!aborted) cuda.close(); // (the JSON was written after the last layer)
  if (failures.length > 0) {
    console.log(`FAILED:\n  ${failures.join("\n  ")}`);
    Deno.exit(1);
  }
}
