/**
 * The device-neutral step: the quantizer decision op against its TypeScript reference, the
 * 32-bit stochastic-rounding hash every backend computes, quantization that writes its own
 * scale, the loss and divergence accumulators, per-context settings, storage safety, and a
 * training step with no blocking sync inside it.
 */
import assert from "node:assert/strict";
import {
  type QuantDecision,
  type QuantKnobs,
  quantStateWords,
  ScaleLayout,
} from "../src/backend/backend.ts";
import { NativeBackend } from "../src/backend/native.ts";
import { Rng } from "../src/data/rng.ts";
import { decodeQuantState, mix32, SOLVE_TABLE, solveTable } from "../src/quant/int8_gemm.ts";
import { Tensor } from "../src/tensor.ts";
import { makeStep } from "../bench/step.ts";
import { cpu } from "./helpers/check_op.ts";
import { decideRef, refState } from "./helpers/decide_ref.ts";

const backend = cpu();

function f32(data: Float32Array | number[], shape: number[]): Tensor {
  return Tensor.from(backend, Float32Array.from(data), shape, "f32");
}

/** dY-like data: per channel a Gaussian or a spiky Laplace body, scaled per channel and step. */
function gradData(rng: Rng, rows: number, c: number, step: number): Float32Array {
  const x = new Float32Array(rows * c);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < c; j++) {
      const s = (1 + j) * (1 + 0.3 * Math.sin(step + j));
      x[i * c + j] = j % 3 === 0
        ? rng.normal(0, s)
        : (rng.next() < 0.5 ? -1 : 1) * Math.log(1 - rng.next()) ** 2 * s;
    }
  }
  return x;
}

function knobsFor(clip: QuantKnobs["clip"], gvq: boolean, c: number, sharp = false): QuantKnobs {
  return {
    channels: c,
    clip,
    gvq,
    statsPeriod: 2,
    dsgcCandidates: 7,
    dsgcMinRatio: 0.3,
    sharpInvertedT: sharp,
    lambda: 0.3,
    k: 1,
    A: 0.8,
    ...(clip === "mcs-solve" ? { table: { ...SOLVE_TABLE } } : {}),
  };
}

const cases: [QuantKnobs["clip"], boolean, boolean][] = [
  ["max", false, false],
  ["max", true, false],
  ["mcs", true, false],
  ["mcs-solve", true, false],
  ["mcs-solve", true, true],
  ["dsgc", true, false],
  ["dsgc", false, false],
];

for (const [clip, gvq, sharp] of cases) {
  Deno.test(`quantDecide() equals the TypeScript decision over 5 steps: ${clip}, gvq ${gvq}${sharp ? ", inverted-T" : ""}`, async () => {
    const rows = 300, c = 7, rng = new Rng(11);
    const kn = knobsFor(clip, gvq, c, sharp);
    const tableHost = clip === "mcs-solve" ? solveTable(0, sharp) : null;
    using table = tableHost ? f32(tableHost, [3, SOLVE_TABLE.size]) : null;
    using state = Tensor.from(
      backend,
      new Int32Array(quantStateWords(c)),
      [quantStateWords(c)],
      "i32",
    );
    using clipT = Tensor.empty(backend, [1]);
    using scaleT = Tensor.empty(backend, [1]);
    using clipsC = Tensor.empty(backend, [c]);
    using scalesC = Tensor.empty(backend, [c]);
    using record = Tensor.full(backend, [8], 0);
    const out: QuantDecision = {
      state,
      clipTensor: clipT,
      scaleTensor: scaleT,
      clipsChannel: gvq ? clipsC : null,
      scalesChannel: gvq ? scalesC : null,
      record,
    };
    const ref = refState(c);
    for (let t = 0; t < 5; t++) {
      const g = gradData(rng, rows, c, t);
      using dy = f32(g, [rows, c]);
      using stats = Tensor.empty(backend, [4, c]);
      backend.channelStats(stats, dy, rows, c);
      const hostStats = (await stats.read()) as Float32Array;
      using stats2 = Tensor.empty(backend, [4, c]);
      backend.quantDecide(out, stats2, dy, table, rows, kn);
      assert.deepEqual(await stats2.read(), hostStats, "the decision measures the same statistics");
      const want = decideRef(ref, hostStats, kn, g, tableHost);
      const got = (await record.read()) as Float32Array;
      const what = `${clip} step ${t}`;
      assert.equal(
        ((await clipT.read()) as Float32Array)[0],
        want.clipTensor,
        `${what}: tensor clip`,
      );
      assert.equal(((await scaleT.read()) as Float32Array)[0], Math.fround(want.clipTensor / 127));
      if (gvq) assert.deepEqual(await clipsC.read(), want.clipsChannel, `${what}: channel clips`);
      for (let i = 0; i < 8; i++) {
        if (i === 6) assert.ok(Math.abs(got[6]! - want.record[6]!) < 1e-6, `${what}: distance`);
        else assert.equal(got[i], want.record[i], `${what}: record[${i}]`);
      }
      const st = decodeQuantState(new Uint32Array(((await state.read()) as Int32Array).buffer), c);
      assert.equal(st.step, ref.step);
      assert.deepEqual(st.ema, ref.ema, `${what}: EMA`);
      assert.deepEqual(st.bell, ref.bell, `${what}: classes`);
      assert.equal(st.bellChannels, ref.bellChannels);
      assert.equal(st.classifiedChannels, ref.classified);
      assert.equal(st.dsgcRatio, ref.ratio > 0 ? ref.ratio : 1);
    }
  });
}

Deno.test("quantDecide() refuses bad knobs with a message naming them", () => {
  using state = Tensor.from(
    backend,
    new Int32Array(quantStateWords(2)),
    [quantStateWords(2)],
    "i32",
  );
  using one = Tensor.empty(backend, [1]);
  using rec = Tensor.empty(backend, [8]);
  using stats = Tensor.full(backend, [4, 2], 1);
  using dy = Tensor.full(backend, [4, 2], 1);
  const out = {
    state,
    clipTensor: one,
    scaleTensor: one,
    clipsChannel: null,
    scalesChannel: null,
    record: rec,
  };
  assert.throws(
    () =>
      backend.quantDecide(out, stats, dy, null, 4, {
        ...knobsFor("max", false, 2),
        statsPeriod: 0,
      }),
    {
      message:
        /^d8_quant_decide: stats_period must be >= 1 \(channels=2,clip=0,gvq=0,stats_period=0\)/,
    },
  );
  assert.throws(
    () => backend.quantDecide(out, stats, dy, null, 4, knobsFor("mcs-solve", true, 2)),
    { message: /^d8_quant_decide: clips_channel is null/ },
  );
  assert.throws(
    () => backend.quantDecide(out, stats, dy, null, 5, knobsFor("max", false, 2)),
    { message: /^d8_quant_decide: dy holds 32 bytes, shape needs 40/ },
  );
});

/** The stochastic-rounding hash of kernels/daint8.h, written out in 32-bit TypeScript. */
function stochasticQ(x: number, clip: number, seed: number, i: number): number {
  const k0 = mix32((seed ^ 0x9e3779b9) >>> 0);
  const k1 = mix32((k0 + Math.imul(Math.floor(i / 2 ** 32), 0x85ebca6b) + 0x632be5ab) >>> 0);
  const h = mix32((mix32((i ^ k0) >>> 0) + k1) >>> 0);
  const u = Math.fround((h >>> 8) * 2 ** -24);
  const inv = Math.fround(127 / clip);
  let v = Math.fround(x * inv);
  v = Math.min(Math.max(v, -127), 127);
  return Math.min(Math.floor(Math.fround(v + u)), 127);
}

Deno.test("quantizeI8() stochastic rounding follows the documented 32-bit hash bit for bit", async () => {
  const n = 5000, rng = new Rng(12);
  const x = new Float32Array(n).map(() => (2 * rng.next() - 1) * 1.3);
  using xt = f32(x, [n]);
  using clip = f32([1], [1]);
  using q = Tensor.empty(backend, [n], "i8");
  for (const seed of [0, 1, 0xdeadbeef, 0xffffffff]) {
    backend.quantizeI8(q, xt, n, 1, clip, ScaleLayout.tensor, true, seed);
    const got = (await q.read()) as Int8Array;
    for (let i = 0; i < n; i++) {
      assert.equal(got[i], stochasticQ(x[i]!, 1, seed, i), `seed ${seed}, element ${i}`);
    }
  }
});

Deno.test("quantizeI8MaxScale() equals absmax, then quantize, and writes clip / 127", async () => {
  const rng = new Rng(13), k = 5, inner = 37;
  const w = new Float32Array(k * inner).map((_, i) => rng.normal(0, 1 + (i % k)));
  using wt = f32(w, [k, inner]);
  for (const layout of [ScaleLayout.tensor, ScaleLayout.outer] as const) {
    const clips = new Float32Array(layout === ScaleLayout.tensor ? 1 : k);
    for (let i = 0; i < w.length; i++) {
      const o = layout === ScaleLayout.tensor ? 0 : Math.floor(i / inner);
      clips[o] = Math.max(clips[o]!, Math.abs(w[i]!));
    }
    using q = Tensor.empty(backend, [k, inner], "i8");
    using ref = Tensor.empty(backend, [k, inner], "i8");
    using scale = Tensor.empty(backend, [clips.length]);
    using clipT = f32(clips, [clips.length]);
    backend.quantizeI8MaxScale(q, scale, wt, k, inner, layout);
    backend.quantizeI8(ref, wt, k, inner, clipT, layout, false, 0);
    assert.deepEqual(await q.read(), await ref.read());
    assert.deepEqual(await scale.read(), clips.map((c) => Math.fround(c / 127)));
  }
});

Deno.test("absmax(), channelStats() and quantizeI8MaxScale() ignore NaN and keep an infinity", async () => {
  // 19 elements: a vector block of 16 and a scalar tail, NaN and +-Infinity in both
  const x = new Float32Array(19).map((_, i) => (i % 5) - 2);
  x[3] = NaN, x[17] = NaN, x[7] = -9;
  using xt = f32(x, [19]);
  using mx = Tensor.empty(backend, [1]);
  backend.absmax(mx, xt);
  assert.deepEqual([...(await mx.read())], [9]);
  const y = Float32Array.of(NaN, NaN, -0, 0.5, -Infinity, 2);
  using yt = f32(y, [6]);
  using my = Tensor.empty(backend, [1]);
  backend.absmax(my, yt);
  assert.deepEqual([...(await my.read())], [Infinity]);
  using q = Tensor.empty(backend, [19], "i8");
  using sc = Tensor.empty(backend, [1]);
  backend.quantizeI8MaxScale(q, sc, xt, 1, 19, ScaleLayout.tensor);
  assert.deepEqual([...(await sc.read())], [Math.fround(9 / 127)]);
  // channel maxima: 3 rows x 2 channels, NaN in channel 0, -Infinity in channel 1
  using st = Tensor.empty(backend, [8]);
  using zt = f32(Float32Array.of(NaN, 1, -4, -Infinity, 3, 2), [3, 2]);
  backend.channelStats(st, zt, 3, 2);
  assert.deepEqual([...(await st.read()).subarray(0, 2)], [4, Infinity]);
});

Deno.test("softmaxCrossEntropy() accumulates on the device and backward scales by the device seed", async () => {
  const n = 3, classes = 4;
  using logits = f32([1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 5, 0], [n, classes]);
  using labels = Tensor.from(backend, Int32Array.of(3, 0, 1), [n], "i32");
  using stats = Tensor.empty(backend, [2]);
  using probs = Tensor.empty(backend, [n, classes]);
  using accum = Tensor.full(backend, [4], 0);
  backend.softmaxCrossEntropy(stats, probs, accum, logits, labels, n, classes);
  backend.softmaxCrossEntropy(stats, probs, accum, logits, labels, n, classes);
  const s = (await stats.read()) as Float32Array, a = (await accum.read()) as Float32Array;
  assert.ok(Math.abs(a[0]! - 2 * n * s[0]!) < 1e-5, `loss sum ${a[0]} vs ${2 * n * s[0]!}`);
  assert.deepEqual([...a.subarray(1)], [4, 6, 2]); // 2 of 3 correct per batch, rows, batches
  using d1 = Tensor.empty(backend, [n, classes]);
  using d2 = Tensor.empty(backend, [n, classes]);
  using seed = f32([2.5, 0], [2]);
  backend.softmaxCrossEntropyBackward(d1, probs, labels, null, n, classes, 1 / n);
  backend.softmaxCrossEntropyBackward(d2, probs, labels, seed, n, classes, 1 / n);
  const g1 = (await d1.read()) as Float32Array, g2 = (await d2.read()) as Float32Array;
  for (let i = 0; i < g1.length; i++) assert.ok(Math.abs(g2[i]! - 2.5 * g1[i]!) < 1e-6);
});

Deno.test("sgdStep() raises the non-finite flag for a NaN gradient or an overflowing weight", async () => {
  using w = f32([1, 2, 3], [3]);
  using buf = Tensor.full(backend, [3], 0);
  using flag = Tensor.from(backend, new Int32Array(1), [1], "i32");
  const h = { lr: 0.1, momentum: 0.9, weightDecay: 0, nesterov: false };
  using g = f32([1, 1, 1], [3]);
  backend.sgdStep(w, buf, g, h, flag);
  assert.equal(((await flag.read()) as Int32Array)[0], 0, "finite step");
  using bad = f32([1, NaN, 1], [3]);
  backend.sgdStep(w, buf, bad, h, flag);
  assert.equal(((await flag.read()) as Int32Array)[0], 1, "NaN gradient");
  using w2 = f32([3e38], [1]);
  using b2 = Tensor.full(backend, [1], 0);
  using g2 = f32([-3e38], [1]);
  using flag2 = Tensor.from(backend, new Int32Array(1), [1], "i32");
  backend.sgdStep(w2, b2, g2, { lr: 10, momentum: 0, weightDecay: 0, nesterov: false }, flag2);
  assert.equal(((await flag2.read()) as Int32Array)[0], 1, "weight overflows to infinity");
});

Deno.test("the int8 kernel variant and thread count belong to a context, not to the process", () => {
  const other = new NativeBackend("cpu");
  try {
    other.setInt8Kernel("portable");
    other.setThreads(1);
    assert.equal(other.int8KernelName(), "portable");
    assert.notEqual(backend.int8KernelName(), "portable", "the shared context keeps auto");
    assert.match(other.info(), /1 thread\b/);
  } finally {
    other.close();
  }
});

Deno.test("the buffer pool keeps the latest released storage: a full pool evicts its oldest sizes first", () => {
  const b = new NativeBackend("cpu");
  try {
    b.maxPooledBytes = 1000;
    const a = b.alloc(600);
    b.release(a);
    assert.equal(b.alloc(600), a, "a released size is handed out again");
    b.release(a);
    // a size nobody asks for any more must not keep the next one out of the pool
    const c = b.alloc(608);
    b.release(c);
    assert.equal(b.alloc(608), c, "the newcomer was pooled, the stale 600 bytes evicted");
    assert.notEqual(b.alloc(600), a, "the evicted storage was freed, not handed out");
    const big = b.alloc(2000); // larger than the whole pool: freed on release
    b.release(big);
    assert.notEqual(b.alloc(2000), big);
  } finally {
    b.close();
  }
});

Deno.test("release() refuses storage still in use or released twice; Tensor.from() refuses a mismatched array", () => {
  const t = Tensor.empty(backend, [4]);
  assert.throws(() => backend.release(t.storage), {
    message: "Cannot release storage of 16 bytes: 1 tensor view(s) still use it",
  });
  const st = t.storage;
  t.dispose();
  assert.throws(() => backend.release(st), { message: "Cannot release storage of 16 bytes twice" });
  assert.throws(() => Tensor.from(backend, Int32Array.of(1, 2), [2], "f32" as "i32"), {
    name: "TypeError",
    message: "Cannot create a f32 tensor from a Int32Array: pass a Float32Array",
  });
});

for (const model of ["lenet5", "resnet20"]) {
  Deno.test(`a ${model} training step makes no blocking sync and no read for fp32, daint8 and ui8`, async () => {
    const calls: Record<string, number> = {}, saved: Record<string, number> = {};
    for (const quant of ["fp32", "daint8", "ui8", "int8-naive"]) {
      const size = model === "lenet5" ? 28 : 12;
      const r = makeStep(backend, model, 8, quant, { channels: 1, size });
      try {
        for (let i = 0; i < 3; i++) {
          r.trainStep.run(() => [r.x, r.y], 0.01);
          const p = r.trainStep.profile!;
          assert.equal(p.syncs, 0, `${quant} step ${i}: blocking syncs`);
          assert.equal(p.reads, 0, `${quant} step ${i}: reads`);
          assert.equal(p.bytesDown, 0, `${quant} step ${i}: bytes down`);
          await r.trainStep.afterStep(); // the step edge (UI8 reads its search here)
        }
        assert.ok(Number.isFinite(await r.loss()));
        calls[quant] = r.trainStep.profile!.calls;
        saved[quant] = r.trainStep.profile!.savedBytes;
      } finally {
        r.dispose();
      }
    }
    console.log(
      `${model} batch 8: native calls per step ${JSON.stringify(calls)}, saved bytes ${
        JSON.stringify(saved)
      }`,
    );
    // LeNet-5's int8 weight copies (kept for dgrad) outweigh its few activations at batch 8.
    if (model === "resnet20") assert.ok(saved.daint8! < saved.fp32!, "INT8 keeps int8 activations");
  });
}

Deno.test("a resnet20 training step adds the residual gradients in the dgrads: no separate add", () => {
  for (const quant of ["fp32", "daint8"]) {
    const r = makeStep(backend, "resnet20", 4, quant, { channels: 1, size: 12 });
    const add = backend.add, dgrads = { plain: 0, accumulating: 0 };
    const f32 = backend.conv2dDgrad, i8 = backend.conv2dDgradI8;
    let adds = 0;
    try {
      backend.add = (...a: Parameters<typeof add>) => (adds++, add.apply(backend, a));
      backend.conv2dDgrad = (...a: Parameters<typeof f32>) => {
        dgrads[a[4] ? "accumulating" : "plain"]++;
        return f32.apply(backend, a);
      };
      backend.conv2dDgradI8 = (...a: Parameters<typeof i8>) => {
        dgrads[a[6] ? "accumulating" : "plain"]++;
        return i8.apply(backend, a);
      };
      r.trainStep.run(() => [r.x, r.y], 0.01);
    } finally {
      backend.add = add;
      backend.conv2dDgrad = f32;
      backend.conv2dDgradI8 = i8;
      r.dispose();
    }
    assert.equal(adds, 0, `${quant}: separate adds in the step`);
    // 9 blocks: conv1 of each adds into the shortcut's gradient (identity or projection)
    assert.equal(dgrads.accumulating, 9, `${quant}: accumulating dgrads ${JSON.stringify(dgrads)}`);
  }
});
