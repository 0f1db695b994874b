/**
 * The WebGPU backend against the cpu backend (on Mesa's lavapipe in CI): every op test case of
 * test/ops_test.ts, the int8 GEMMs and convolutions on odd shapes, quantization bit for bit, the
 * quantizer decision, a short daint8 training run, and the limit paths. Skipped, with a
 * message, only when no WebGPU adapter exists at all.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  type QuantDecision,
  type QuantKnobs,
  quantStateWords,
  ScaleLayout,
} from "../src/backend/backend.ts";
import { WebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { getBackend, openAutoBackend, openBackend } from "../src/backend/registry.ts";
import { convShape } from "../src/ops/conv.ts";
import { Rng } from "../src/data/rng.ts";
import { decodeQuantState, SOLVE_TABLE, solveTable } from "../src/quant/int8_gemm.ts";
import { type DType, type HostArray, Tensor } from "../src/tensor.ts";
import { makeStep } from "../bench/step.ts";
import { assertClose, checkOp, cpu } from "./helpers/check_op.ts";
import { adaptiveAvgPool2d, relu6 } from "../src/ops/zoo.ts";
import { defineOpTests } from "./helpers/op_cases.ts";

let gpu: WebGpuBackend | null = null;
try {
  gpu = await WebGpuBackend.open({ allowSoftware: true });
} catch (e) {
  console.warn(`SKIPPING the WebGPU tests: no usable WebGPU adapter (${(e as Error).message})`);
}
const ignore = gpu === null;
const dev = () => gpu!;

defineOpTests("webgpu: ", dev, ignore);

type Host = Float32Array | Int32Array | Int8Array | Uint8Array;
interface In {
  data: Host;
  shape: number[];
  dtype: DType;
}
interface Out {
  shape: number[];
  dtype: DType;
  init?: Host;
}

/** Runs `op` on cpu and on the GPU with the same inputs; returns both backends' outputs. */
async function both(
  ins: In[],
  outs: Out[],
  op: (b: Backend, i: Tensor[], o: Tensor[]) => void,
): Promise<[Host[], Host[]]> {
  const run = async (b: Backend) => {
    const ti = ins.map((x) => Tensor.from(b, x.data as HostArray<DType>, x.shape, x.dtype));
    const to = outs.map((o) =>
      o.init
        ? Tensor.from(b, o.init as HostArray<DType>, o.shape, o.dtype)
        : Tensor.empty(b, o.shape, o.dtype)
    );
    op(b, ti, to);
    const res: Host[] = [];
    for (const t of to) res.push(await t.read() as Host);
    for (const t of [...ti, ...to]) t.dispose();
    return res;
  };
  return [await run(cpu()), await run(dev())];
}

const i8s = (rng: Rng, n: number) => Int8Array.from({ length: n }, () => rng.int(255) - 127);
const f32s = (rng: Rng, n: number, s = 1) =>
  Float32Array.from({ length: n }, () => (2 * rng.next() - 1) * s);
const t = (data: Host, shape: number[], dtype: DType): In => ({ data, shape, dtype });

Deno.test({
  name: "webgpu: gemmI8 int32 accumulators equal the cpu's exactly (odd m, n, k)",
  ignore,
  fn: async () => {
    const rng = new Rng(5);
    for (const [m, n, k] of [[1, 1, 1], [37, 29, 70], [65, 130, 3], [5, 7, 1000]] as const) {
      const [want, got] = await both(
        [t(i8s(rng, m * k), [m, k], "i8"), t(i8s(rng, n * k), [n, k], "i8")],
        [{ shape: [m, n], dtype: "i32" }],
        (b, [a, bb], [c]) => b.gemmI8(c!, a!, bb!, m, n, k),
      );
      assert.deepEqual(got[0], want[0], `gemmI8 ${m}x${n}x${k}`);
    }
    // the bytewise gather (no aligned word loads) gives the same sums
    dev().fastInt8 = false;
    try {
      const [want, got] = await both(
        [t(i8s(rng, 33 * 64), [33, 64], "i8"), t(i8s(rng, 9 * 64), [9, 64], "i8")],
        [{ shape: [33, 9], dtype: "i32" }],
        (b, [a, bb], [c]) => b.gemmI8(c!, a!, bb!, 33, 9, 64),
      );
      assert.deepEqual(got[0], want[0], "gemmI8 bytewise");
    } finally {
      dev().fastInt8 = true;
    }
  },
});

const convs: [string, [number, number, number, number], number, [number, number], object][] = [
  ["3-channel stem 3x3", [2, 8, 8, 3], 16, [3, 3], { padding: 1 }],
  ["c 5, k 7, stride 2", [2, 9, 7, 5], 7, [3, 3], { stride: 2, padding: 1 }],
  ["1x1, c 6", [1, 5, 5, 6], 9, [1, 1], {}],
  ["7x7 stride 2", [1, 15, 13, 3], 8, [7, 7], { stride: 2, padding: 3 }],
  ["1x7", [2, 6, 9, 4], 5, [1, 7], { padding: [0, 3] }],
  ["7x1", [2, 9, 6, 4], 5, [7, 1], { padding: [3, 0] }],
  ["groups 2", [2, 6, 6, 6], 4, [3, 3], { padding: 1, groups: 2 }],
  ["depthwise", [2, 7, 7, 5], 5, [3, 3], { stride: 2, padding: 1, groups: 5 }],
  ["c 17, k 19 (not multiples of 4 or 16)", [3, 6, 5, 17], 19, [3, 3], { padding: 1 }],
  ["batch 1, c 16, k 32, stride 2", [1, 8, 8, 16], 32, [3, 3], { stride: 2, padding: 1 }],
  // the dgrad's stride phases: stride 3 with pad 2; a kernel smaller than its stride in rows
  // (phases without taps) and unequal strides; 1x1 stride 2; grouped and strided
  ["5x5 stride 3, pad 2", [2, 13, 11, 8], 12, [5, 5], { stride: 3, padding: 2 }],
  ["2x3 stride [3, 2], phases without taps", [2, 10, 9, 8], 8, [2, 3], {
    stride: [3, 2],
    padding: [0, 1],
  }],
  ["1x1 stride 2", [2, 8, 8, 8], 12, [1, 1], { stride: 2 }],
  ["groups 2, stride 2, odd size", [1, 9, 9, 8], 8, [3, 3], { stride: 2, padding: 1, groups: 2 }],
  // the direct depthwise kernels (wgsl/depthwise.ts): 25 taps, wgrad over 4 pixel splits; strided
  // with odd sizes
  ["depthwise 5x5, 8 channels", [2, 20, 20, 8], 8, [5, 5], { padding: 2, groups: 8 }],
  ["depthwise 3x3 stride 2, odd size", [1, 11, 9, 12], 12, [3, 3], {
    stride: 2,
    padding: 1,
    groups: 12,
  }],
];

for (const [name, x, k, kernel, opts] of convs) {
  Deno.test({
    name: `webgpu: int8 conv fprop, dgrad and wgrad match cpu: ${name}`,
    ignore,
    fn: async () => {
      const rng = new Rng(x[1] * 7 + k);
      const s = convShape("test", x, k, kernel, opts);
      const cg = s.c / s.groups;
      const nx = x[0] * x[1] * x[2] * x[3], nw = k * s.r * s.s * cg, ny = s.n * s.p * s.q * k;
      const xs = t(Float32Array.of(0.013), [1], "f32");
      const wsT = t(Float32Array.of(0.021), [1], "f32");
      const wsO = t(f32s(rng, k, 0.03).map(Math.abs), [k], "f32");
      const bias = t(f32s(rng, k), [k], "f32");
      const xq = t(i8s(rng, nx), [...x], "i8");
      const wq = t(i8s(rng, nw), [k, s.r, s.s, cg], "i8");
      const dyq = t(i8s(rng, ny), [s.n, s.p, s.q, k], "i8");
      const tol = { atol: 1e-6, rtol: 1e-6 };
      for (const layout of [ScaleLayout.tensor, ScaleLayout.outer]) {
        const [want, got] = await both(
          [xq, wq, bias, xs, layout === ScaleLayout.tensor ? wsT : wsO],
          [{ shape: [s.n, s.p, s.q, k], dtype: "f32" }],
          (b, [xx, ww, bb, sx, sw], [y]) => b.conv2dI8(y!, xx!, ww!, bb!, sx!, sw!, layout, s),
        );
        assertClose(`fprop layout ${layout}`, got[0]!, want[0]!, [s.n, s.p, s.q, k], tol);
      }
      const [wd, gd] = await both(
        [dyq, wq, xs, wsT],
        [{ shape: [...x], dtype: "f32" }],
        (b, [dy, ww, sd, sw], [dx]) => b.conv2dDgradI8(dx!, dy!, ww!, sd!, sw!, s),
      );
      // The cpu's scatter dgrad (chosen by cost for some shapes) adds per-tap products in f32.
      assertClose("dgrad", gd[0]!, wd[0]!, [...x], { atol: 1e-5, rtol: 1e-5 });
      const [wa, ga] = await both(
        [dyq, wq, xs, wsT, t(f32s(rng, nx), [...x], "f32")],
        [{ shape: [...x], dtype: "f32" }],
        (b, [dy, ww, sd, sw, d0], [dx]) => {
          b.copy(dx!, d0!);
          b.conv2dDgradI8(dx!, dy!, ww!, sd!, sw!, s, true);
        },
      );
      assertClose("dgrad, accumulating", ga[0]!, wa[0]!, [...x], { atol: 1e-5, rtol: 1e-5 });
      for (const layout of [ScaleLayout.tensor, ScaleLayout.inner]) {
        const [ww, gw] = await both(
          [xq, dyq, xs, layout === ScaleLayout.tensor ? wsT : wsO],
          [{ shape: [k, s.r, s.s, cg], dtype: "f32" }],
          (b, [xx, dy, sx, sd], [dw]) => b.conv2dWgradI8(dw!, xx!, dy!, sx!, sd!, layout, s),
        );
        assertClose(`wgrad layout ${layout}`, gw[0]!, ww[0]!, [k, s.r, s.s, cg], {
          atol: 1e-6,
          rtol: 1e-5,
        });
      }
    },
  });
}

Deno.test({
  name: "webgpu: int8 wgrad with a reduction over several exact int32 chunks matches cpu",
  ignore,
  fn: async () => {
    // 2 x 96 x 96 = 18,432 output pixels per tap: split reductions summed in f32.
    const rng = new Rng(9);
    const s = convShape("test", [2, 96, 96, 4], 4, [3, 3], { padding: 1 });
    const [want, got] = await both(
      [
        t(i8s(rng, 2 * 96 * 96 * 4), [2, 96, 96, 4], "i8"),
        t(i8s(rng, 2 * 96 * 96 * 4), [2, 96, 96, 4], "i8"),
        t(Float32Array.of(0.01), [1], "f32"),
        t(Float32Array.of(0.02), [1], "f32"),
      ],
      [{ shape: [4, 3, 3, 4], dtype: "f32" }],
      (b, [x, dy, sx, sd], [dw]) => b.conv2dWgradI8(dw!, x!, dy!, sx!, sd!, 0, s),
    );
    assertClose("wgrad", got[0]!, want[0]!, [4, 3, 3, 4], { atol: 1e-5, rtol: 1e-5 });
  },
});

/** f32 data with the awkward values: NaN, infinities, zeros, exact halves of a 1/127 grid. */
function awkward(rng: Rng, n: number): Float32Array {
  const x = f32s(rng, n, 3);
  const special = [NaN, Infinity, -Infinity, 0, -0, 0.5 / 127, -1.5 / 127, 1e-30, 3, -3];
  for (let i = 0; i < special.length && i < n; i++) x[i * 7 % n] = special[i]!;
  return x;
}

Deno.test({
  name: "webgpu: quantizeI8 is bit-identical to cpu (nearest and stochastic, every layout)",
  ignore,
  fn: async () => {
    const rng = new Rng(3);
    const outer = 37, inner = 13, n = outer * inner;
    const x = t(awkward(rng, n), [outer, inner], "f32");
    const clipsFor = (layout: ScaleLayout) => {
      const c = layout === 0 ? 1 : layout === 1 ? inner : outer;
      const v = f32s(rng, c, 2).map(Math.abs);
      v[0] = c > 1 ? 0 : v[0]!; // an all-zero channel's clip
      return t(v, [c], "f32");
    };
    for (const layout of [0, 1, 2] as ScaleLayout[]) {
      const clips = clipsFor(layout);
      for (const stochastic of [false, true]) {
        const [want, got] = await both(
          [x, clips],
          [{ shape: [outer, inner], dtype: "i8" }, { shape: [outer, inner], dtype: "f32" }],
          (b, [xx, cl], [y, d]) => {
            b.quantizeI8(y!, xx!, outer, inner, cl!, layout, stochastic, 0xdeadbeef);
            b.dequantizeI8(d!, y!, outer, inner, cl!, layout);
          },
        );
        assert.deepEqual(got[0], want[0], `layout ${layout}, stochastic ${stochastic}`);
        assert.deepEqual(got[1], want[1], `dequantize layout ${layout}`);
      }
    }
    const [want, got] = await both(
      [x, t(Float32Array.of(1.7), [1], "f32"), clipsFor(1)],
      [{ shape: [outer, inner], dtype: "i8" }, { shape: [outer, inner], dtype: "i8" }],
      (b, [xx, ct, cc], [yt, yc]) =>
        b.quantizeI8Dual(yt!, yc!, xx!, outer, inner, ct!, cc!, true, 77),
    );
    assert.deepEqual(got, want, "dual");
  },
});

Deno.test({
  name: "webgpu: max-scale quantization, absmax, channel stats and quant error match cpu",
  ignore,
  fn: async () => {
    const rng = new Rng(4);
    const outer = 19, inner = 45, n = outer * inner;
    const x = t(f32s(rng, n, 2), [outer, inner], "f32");
    for (const layout of [0, 2] as ScaleLayout[]) {
      const [want, got] = await both(
        [x],
        [{ shape: [outer, inner], dtype: "i8" }, {
          shape: [layout === 0 ? 1 : outer],
          dtype: "f32",
        }],
        (b, [xx], [y, sc]) => b.quantizeI8MaxScale(y!, sc!, xx!, outer, inner, layout),
      );
      assert.deepEqual(got, want, `max-scale layout ${layout}`);
    }
    const [want, got] = await both(
      [x, t(Float32Array.from({ length: inner }, (_, i) => 0.5 + i / 20), [inner], "f32")],
      [{ shape: [1], dtype: "f32" }, { shape: [4, inner], dtype: "f32" }, {
        shape: [outer, inner],
        dtype: "i8",
      }, { shape: [8], dtype: "f32", init: new Float32Array(8) }],
      (b, [xx, cl], [mx, st, q, rec]) => {
        b.absmax(mx!, xx!);
        b.channelStats(st!, xx!, outer, inner);
        b.quantizeI8(q!, xx!, outer, inner, cl!, 1, false, 0);
        b.quantError(rec!, xx!, q!, cl!, outer, inner, 1);
      },
    );
    assert.deepEqual(got[0], want[0], "absmax");
    const [wm, gm] = [want[1] as Float32Array, got[1] as Float32Array];
    assert.deepEqual(gm.subarray(0, inner), wm.subarray(0, inner), "channel max");
    assertClose("channel std, share, mean", gm.subarray(inner), wm.subarray(inner), [3, inner], {
      atol: 1e-6,
      rtol: 1e-5,
    });
    assertClose("quant error", got[3]!, want[3]!, [8], { atol: 1e-7, rtol: 1e-5 });
  },
});

function knobs(clip: QuantKnobs["clip"], gvq: boolean, c: number): QuantKnobs {
  return {
    channels: c,
    clip,
    gvq,
    statsPeriod: 2,
    dsgcCandidates: 7,
    dsgcMinRatio: 0.3,
    sharpInvertedT: true,
    lambda: 0.3,
    k: 1,
    A: 0.8,
    ...(clip === "mcs-solve" ? { table: { ...SOLVE_TABLE } } : {}),
  };
}

for (
  const [clip, gvq] of [["max", false], ["max", true], ["mcs", true], ["mcs-solve", true], [
    "dsgc",
    true,
  ]] as const
) {
  Deno.test({
    name: `webgpu: quantDecide() follows cpu over 6 steps: ${clip}, gvq ${gvq}`,
    ignore,
    fn: async () => {
      const rows = 300, c = 7;
      const kn = knobs(clip, gvq, c);
      const run = async (b: Backend) => {
        const rng = new Rng(11);
        const table = clip === "mcs-solve"
          ? Tensor.from(b, solveTable(0, true), [3, SOLVE_TABLE.size], "f32")
          : null;
        const words = quantStateWords(c);
        const out: QuantDecision = {
          state: Tensor.from(b, new Int32Array(words), [words], "i32"),
          clipTensor: Tensor.empty(b, [1]),
          scaleTensor: Tensor.empty(b, [1]),
          clipsChannel: gvq ? Tensor.empty(b, [c]) : null,
          scalesChannel: gvq ? Tensor.empty(b, [c]) : null,
          record: Tensor.full(b, [8], 0),
        };
        const steps = [];
        for (let s = 0; s < 6; s++) {
          const g = new Float32Array(rows * c).map((_, i) =>
            (i % c % 3 === 0 ? rng.normal(0, 1) : Math.log(1 - rng.next()) ** 2) * (1 + (i % c)) *
            (1 + 0.3 * Math.sin(s))
          );
          using dy = Tensor.from(b, g, [rows, c], "f32");
          using stats = Tensor.empty(b, [4, c]);
          b.quantDecide(out, stats, dy, table, rows, kn);
          steps.push({
            clip: (await out.clipTensor.read())[0]!,
            scale: (await out.scaleTensor.read())[0]!,
            clips: gvq ? await out.clipsChannel!.read() as Float32Array : null,
            record: await out.record.read() as Float32Array,
            state: decodeQuantState(new Uint32Array((await out.state.read()).buffer), c),
          });
        }
        for (const t of Object.values(out)) t?.dispose();
        table?.dispose();
        return steps;
      };
      const want = await run(cpu()), got = await run(dev());
      const exact = clip === "max" || clip === "mcs";
      for (let s = 0; s < 6; s++) {
        const w = want[s]!, g = got[s]!, what = `${clip} step ${s}`;
        assert.equal(g.state.step, w.state.step, what);
        assert.deepEqual(g.state.bell, w.state.bell, `${what}: classes`);
        assert.equal(g.state.bellChannels, w.state.bellChannels);
        assert.deepEqual(g.state.ema, w.state.ema, `${what}: EMA`);
        if (exact) {
          assert.equal(g.clip, w.clip, `${what}: tensor clip`);
          assert.equal(g.scale, w.scale);
          if (gvq) assert.deepEqual(g.clips, w.clips, `${what}: channel clips`);
          for (const i of [0, 2, 3, 4, 5]) assert.equal(g.record[i], w.record[i], `record ${i}`);
        } else {
          // mcs-solve reads the f32 std (cpu: f64 sums); dsgc sums its distances in f32.
          assertClose(`${what}: tensor clip`, [g.clip], [w.clip], [1], { atol: 0, rtol: 1e-5 });
          if (gvq) assertClose(`${what}: clips`, g.clips!, w.clips!, [c], { atol: 0, rtol: 1e-4 });
        }
        assertClose(`${what}: record`, g.record, w.record, [8], { atol: 1e-6, rtol: 1e-4 });
      }
    },
  });
}

Deno.test({
  name: "webgpu: a daint8 LeNet-5 training run follows the cpu run's loss",
  ignore,
  fn: async () => {
    const losses = async (b: Backend) => {
      const r = makeStep(b, "lenet5", 8, "daint8");
      const out: number[] = [];
      for (let s = 0; s < 8; s++) {
        await r.step();
        out.push(await r.loss());
      }
      r.dispose();
      return out;
    };
    const want = await losses(cpu()), got = await losses(dev());
    for (let s = 0; s < want.length; s++) {
      assert.ok(
        // observed on lavapipe: at most 1.2e-4 relative after 8 steps (f32 sums in other orders)
        Math.abs(got[s]! - want[s]!) <= 0.002 * Math.abs(want[s]!),
        `step ${s}: webgpu loss ${got[s]} vs cpu ${want[s]} (all: ${got} vs ${want})`,
      );
    }
  },
});

Deno.test({
  name: "webgpu: dispatches beyond maxComputeWorkgroupsPerDimension fold into 2-D; operands " +
    "beyond maxStorageBufferBindingSize are split (elementwise) or refused naming the limit",
  ignore,
  fn: async () => {
    const small = await WebGpuBackend.open({
      allowSoftware: true,
      limits: { maxComputeWorkgroupsPerDimension: 5, maxStorageBufferBindingSize: 1 << 14 },
    });
    try {
      const n = 5000; // 20 workgroups of 256 threads: folded into 5 x 4
      const rng = new Rng(1);
      const a = f32s(rng, n), c = f32s(rng, n);
      using ta = Tensor.from(small, a, [n], "f32");
      using tc = Tensor.from(small, c, [n], "f32");
      using y = Tensor.empty(small, [n]);
      small.add(y, ta, tc);
      const got = await y.read();
      assert.deepEqual(got, a.map((v, i) => Math.fround(v + c[i]!)));
      // elementwise ops on operands beyond the binding limit run in binding-sized chunks
      const nb = 40000; // 160,000 bytes: ten chunks of at most 16,384
      const ba = f32s(rng, nb), bc = f32s(rng, nb);
      using xa = Tensor.from(small, ba, [nb], "f32");
      using xc = Tensor.from(small, bc, [nb], "f32");
      using xy = Tensor.empty(small, [nb]);
      small.add(xy, xa, xc);
      small.axpy(xy, 2, xa);
      small.relu(xy, xy);
      const want = ba.map((v, i) =>
        Math.max(Math.fround(Math.fround(v + bc[i]!) + Math.fround(2 * v)), 0)
      );
      assert.deepEqual(await xy.read(), want);
      // other ops refuse such operands, naming the limit
      using big = Tensor.empty(small, [1 << 15]);
      using q = Tensor.empty(small, [1 << 15], "i8");
      using clip = Tensor.full(small, [1], 1);
      assert.throws(
        () => small.quantizeI8(q, big, 1 << 15, 1, clip, 0, false, 0),
        (e: Error) =>
          e instanceof RangeError && /maxStorageBufferBindingSize \(16384 bytes\)/.test(e.message),
      );
      using m = Tensor.empty(small, [400, 4]);
      using w = Tensor.empty(small, [4, 4]);
      using yy = Tensor.empty(small, [400, 4]);
      assert.throws(
        () => small.linear(yy, m, w, null, 400, 4, 4),
        (e: Error) =>
          e instanceof RangeError && /maxComputeWorkgroupsPerDimension \(5\)/.test(e.message),
      );
    } finally {
      small.close();
    }
  },
});

Deno.test({
  name: "webgpu: a step encodes work without blocking syncs or reads",
  ignore,
  fn: async () => {
    const r = makeStep(dev(), "lenet5", 4, "daint8");
    r.trainStep.run(() => [r.x, r.y], 0.01);
    const p = r.trainStep.profile!;
    assert.equal(p.syncs, 0);
    assert.equal(p.reads, 0);
    assert.ok(p.calls > 20, `${p.calls} dispatches`);
    assert.ok(Number.isFinite(await r.loss()));
    r.dispose();
  },
});

Deno.test({
  name: "webgpu: a label out of range is a Daint8Error at the next read or sync, then work goes on",
  ignore,
  fn: async () => {
    const g = dev();
    using logits = Tensor.from(g, Float32Array.from([1, 2, 3, 3, 2, 1]), [2, 3], "f32");
    using good = Tensor.from(g, Int32Array.from([2, 0]), [2], "i32");
    using bad = Tensor.from(g, Int32Array.from([2, 7]), [2], "i32");
    using stats = Tensor.empty(g, [2], "f32");
    using probs = Tensor.empty(g, [2, 3], "f32");
    g.softmaxCrossEntropy(stats, probs, null, logits, bad, 2, 3);
    g.softmaxCrossEntropy(stats, probs, null, logits, good, 2, 3); // the first bad call is kept
    const message = /^softmaxCrossEntropy: labels\[1\] = 7 is outside \[0, 3\)/;
    const reported = (e: Error) => {
      assert.equal(e.name, "Daint8Error");
      assert.match(e.message, message);
      return true;
    };
    await assert.rejects(() => stats.read(), reported);
    // Reported once; good labels then read normally, and a sync reports a bad one too.
    g.softmaxCrossEntropy(stats, probs, null, logits, good, 2, 3);
    const s = await stats.read() as Float32Array;
    const want = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3;
    assert.ok(Math.abs(s[0]! - want) < 1e-5 && s[1] === 2, `${s}`);
    g.softmaxCrossEntropy(stats, probs, null, logits, bad, 2, 3);
    await assert.rejects(() => g.synchronize(), reported);
    await g.synchronize();
  },
});

Deno.test({
  name: "webgpu: device loss and uncaptured device errors are thrown at the next op or read",
  ignore,
  fn: async () => {
    const open = async () => {
      const adapter = (await navigator.gpu.requestAdapter())!;
      return await adapter.requestDevice({
        requiredLimits: { maxStorageBuffersPerShaderStage: 9 },
      });
    };
    const d1 = await open();
    const lost = WebGpuBackend.fromDevice(d1, "test device");
    using a = Tensor.full(lost, [8], 1);
    assert.deepEqual(await a.read(), new Float32Array(8).fill(1));
    d1.destroy();
    await d1.lost;
    assert.throws(
      () => lost.fill(a, 2),
      /WebGPU device failure: the device was lost \(destroyed\)/,
    );
    assert.throws(() => lost.close(), /device was lost/);

    const d2 = await open();
    const bad = WebGpuBackend.fromDevice(d2, "test device");
    using b = Tensor.full(bad, [8], 1);
    d2.createBuffer({ size: 4, usage: 0 }); // invalid usage: an uncaptured validation error
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(
      () => b.read(),
      (e: Error) => e.name === "Daint8Error" && /WebGPU device failure: .*usage/i.test(e.message),
    );
    assert.throws(() => bad.close(), /Closing the webgpu backend/);
  },
});

Deno.test({
  name: "webgpu: openBackend opens it by name; auto never takes a software adapter",
  ignore,
  fn: async () => {
    const b = await openBackend("webgpu");
    assert.equal(b.name, "webgpu");
    assert.equal(await openBackend("webgpu"), b, "opened once per process");
    assert.equal(getBackend("webgpu"), b, "once open, getBackend returns it too");
    const { backend, passedOver } = await openAutoBackend();
    if (dev().software) {
      // this machine's only adapter is a software one: auto falls back (cuda is not built here)
      assert.notEqual(backend.name, "webgpu");
      const why = passedOver.find((p) => p.backend === "webgpu");
      assert.match(why?.reason ?? "", /software/);
    }
  },
});

Deno.test({
  name: "webgpu: operands too small for the shape are a TypeError naming them",
  ignore,
  fn: () => {
    const g = dev();
    const s = convShape("test", [1, 4, 4, 4], 8, [3, 3], { padding: 1 });
    using x = Tensor.empty(g, [1, 4, 4, 4], "i8");
    using w = Tensor.empty(g, [8, 3, 3, 4], "i8");
    using y = Tensor.empty(g, [1, 4, 4, 4]); // needs k = 8 channels
    using sc = Tensor.full(g, [1], 1);
    assert.throws(
      () => g.conv2dI8(y, x, w, null, sc, sc, ScaleLayout.tensor, s),
      (e: Error) =>
        e instanceof TypeError && e.message === "conv2dI8: y holds 256 bytes, the shape needs 512",
    );
    assert.throws(
      () => g.gemmI8(y, x, w, 8, 8, 72),
      (e: Error) =>
        e instanceof TypeError && /gemmI8: a holds 64 bytes, the shape needs 576/.test(e.message),
    );
  },
});

Deno.test({
  name:
    "webgpu: scales (clip / 127, integer long division) are correctly rounded over all exponents",
  ignore,
  fn: async () => {
    const rng = new Rng(8), n = 4096;
    const clips = Float32Array.from(
      { length: n },
      () => (1 + rng.next()) * 2 ** (rng.int(244) - 117), // quotients stay normal
    );
    const [want, got] = await both(
      [t(new Int8Array(n).fill(1), [1, n], "i8"), t(clips, [n], "f32")],
      [{ shape: [1, n], dtype: "f32" }],
      (b, [q, c], [y]) => b.dequantizeI8(y!, q!, 1, n, c!, ScaleLayout.inner),
    );
    assert.deepEqual(got[0], want[0]);
    assert.deepEqual(got[0], clips.map((c) => Math.fround(c / 127)));
  },
});

Deno.test({
  name: "webgpu: released storage beyond the pool cap is destroyed after the work using it",
  ignore,
  fn: async () => {
    const g = await WebGpuBackend.open({ allowSoftware: true });
    try {
      g.maxPooledBytes = 0;
      using y = Tensor.full(g, [64], 0);
      for (let i = 0; i < 3; i++) {
        const x = Tensor.full(g, [64], i + 1); // enqueued, then released before it runs
        g.axpy(y, 1, x);
        x.dispose();
      }
      assert.deepEqual(await y.read(), new Float32Array(64).fill(6));
    } finally {
      g.close();
    }
  },
});

for (const [p, q] of [[3, 4], [9, 9], [1, 1]] as const) {
  Deno.test({
    name: `webgpu: adaptive average pooling to ${p}x${q} matches the reference, FD and cpu`,
    ignore,
    fn: async () => {
      await checkOp({
        inputs: { x: [2, 5, 7, 3] },
        native: (tape, t) => adaptiveAvgPool2d(tape, t.x!, [p, q]),
        reference: (a) => {
          const y = new Float64Array(2 * p * q * 3);
          for (let n = 0; n < 2; n++) {
            for (let i = 0; i < p; i++) {
              for (let j = 0; j < q; j++) {
                const h0 = Math.floor(i * 5 / p), h1 = Math.ceil((i + 1) * 5 / p);
                const w0 = Math.floor(j * 7 / q), w1 = Math.ceil((j + 1) * 7 / q);
                for (let c = 0; c < 3; c++) {
                  let s = 0;
                  for (let r = h0; r < h1; r++) {
                    for (let b = w0; b < w1; b++) s += a.x![((n * 5 + r) * 7 + b) * 3 + c]!;
                  }
                  y[((n * p + i) * q + j) * 3 + c] = s / ((h1 - h0) * (w1 - w0));
                }
              }
            }
          }
          return y;
        },
      }, dev());
    },
  });
}

Deno.test({
  name: "webgpu: relu6 and mul match the reference, FD and cpu",
  ignore,
  fn: async () => {
    await checkOp({
      inputs: { x: [2, 3, 4, 5] },
      scale: { x: 8 },
      native: (tape, t) => relu6(tape, t.x!),
      reference: (a) => a.x!.map((v) => Math.min(Math.max(v, 0), 6)),
    }, dev());
    const rng = new Rng(6);
    const [want, got] = await both(
      [t(f32s(rng, 999), [999], "f32"), t(f32s(rng, 999), [999], "f32")],
      [{ shape: [999], dtype: "f32" }],
      (b, [a, c], [y]) => {
        b.mul(y!, a!, c!);
        b.mul(y!, y!, a!); // y may alias an input
      },
    );
    assert.deepEqual(got[0], want[0]);
  },
});

Deno.test({
  name: "webgpu: `train --backend webgpu` trains daint8 LeNet-5 and matches the cpu run's numbers",
  ignore,
  fn: async () => {
    const script = new URL("../src/cli/train.ts", import.meta.url).pathname;
    const tmp = await Deno.makeTempDir();
    const run = async (backend: string) => {
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, "--backend", backend, "--quant", "daint8", "--limit", "64"]
          .concat(["--batch-size", "32", "--test-limit", "32", "--out", `${tmp}/${backend}`]),
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(r.stdout);
      assert.equal(r.code, 0, `${backend}: ${out}\n${new TextDecoder().decode(r.stderr)}`);
      const line = out.split("\n").find((l) => l.includes("train loss")) ?? "";
      const m = line.match(
        /train loss ([\d.]+)\s+acc ([\d.]+)%\s+test loss ([\d.]+)\s+acc ([\d.]+)%/,
      );
      assert.ok(m, `${backend}: no epoch line in ${out}`);
      return m.slice(1).map(Number);
    };
    try {
      const [gl, ga, gtl, gta] = await run("webgpu"), [cl, ca, ctl, cta] = await run("cpu");
      // the same run to float rounding: losses within 1e-3, accuracies within one image
      assert.ok(
        Math.abs(gl! - cl!) <= 1e-3 && Math.abs(gtl! - ctl!) <= 1e-3,
        `${gl} ${gtl} vs ${cl} ${ctl}`,
      );
      assert.ok(Math.abs(ga! - ca!) <= 100 / 64 && Math.abs(gta! - cta!) <= 100 / 32);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
