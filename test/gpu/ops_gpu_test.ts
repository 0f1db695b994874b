/**
 * The cuda library against the cpu library, op by op, on seeded random inputs (`deno task
 * test:gpu`; inside `deno task test` every case skips with a printed reason when no CUDA library
 * or device is present).
 *
 * Exactness: INT8 GEMM int32 accumulators (d8_gemm_i8), the quantizers (nearest and stochastic,
 * every layout, dual) and the INT8 weight gradient (exact int64 sums, then the cpu's formula) must
 * be bit-identical; INT8 fprop outputs within 1e-6 relative (same formula, one rounding), dgrad
 * within 1e-5 of the largest |dx| (the cpu's scatter form rounds per kernel row);
 * float ops within the stated tolerances. Every INT8 case runs under each cuda kernel version
 * (1 simple, 2 mma-m8n8k16, 3 mma-m16n8k32, 4 wgmma-m64nNk32: sm_90 only; its wgrad is version
 * 3's kernel).
 */
import {
  assertClose,
  assertEqualArrays,
  type Conv,
  convShape,
  cudaForTests,
  int8Versions,
  Lib,
  Rand,
} from "./harness.ts";

const gpu = cudaForTests();

function gpuTest(name: string, fn: (cpu: Lib, cuda: Lib) => void, skip = false): void {
  Deno.test({
    name: `cuda: ${name}`,
    ignore: !gpu.ok || skip,
    fn() {
      const cpu = new Lib("cpu"), cuda = new Lib("cuda");
      try {
        fn(cpu, cuda);
      } finally {
        cpu.close();
        cuda.close();
      }
    },
  });
}

const CONVS: [string, Conv][] = [
  ["3-channel stem 3x3", { n: 2, h: 9, w: 9, c: 3, k: 16, r: 3, s: 3, pad: [1, 1] }],
  ["7x7 stride 2 stem", {
    n: 2,
    h: 15,
    w: 15,
    c: 16,
    k: 32,
    r: 7,
    s: 7,
    stride: [2, 2],
    pad: [3, 3],
  }],
  ["3x3 32 -> 48", { n: 2, h: 8, w: 8, c: 32, k: 48, r: 3, s: 3, pad: [1, 1] }],
  ["1x1 64 -> 64, batch 1", { n: 1, h: 7, w: 7, c: 64, k: 64, r: 1, s: 1 }],
  ["1x7", { n: 2, h: 9, w: 11, c: 32, k: 32, r: 1, s: 7, pad: [0, 3] }],
  ["7x1", { n: 2, h: 11, w: 9, c: 32, k: 16, r: 7, s: 1, pad: [3, 0] }],
  ["groups 2", { n: 2, h: 6, w: 6, c: 64, k: 64, r: 3, s: 3, groups: 2, pad: [1, 1] }],
  ["depthwise", {
    n: 2,
    h: 7,
    w: 7,
    c: 16,
    k: 16,
    r: 3,
    s: 3,
    groups: 16,
    stride: [2, 2],
    pad: [1, 1],
  }],
  ["channels not a multiple of 16", { n: 2, h: 6, w: 6, c: 24, k: 40, r: 3, s: 3, pad: [1, 1] }],
  ["tail tiles, 144 outputs", { n: 3, h: 13, w: 13, c: 48, k: 144, r: 3, s: 3, pad: [1, 1] }],
  ["3x3 stride 2", { n: 2, h: 10, w: 10, c: 32, k: 64, r: 3, s: 3, stride: [2, 2], pad: [1, 1] }],
  ["1x1 stride 2 shortcut", { n: 2, h: 8, w: 8, c: 32, k: 64, r: 1, s: 1, stride: [2, 2] }],
  // the dgrad's stride phases (one GEMM per phase): stride 3 with pad 2 and odd sizes; a kernel
  // smaller than its stride in rows (phases without taps, dx 0 there) and unequal strides; a
  // grouped strided conv
  ["5x5 stride 3, pad 2, odd sizes", {
    n: 2,
    h: 13,
    w: 11,
    c: 16,
    k: 32,
    r: 5,
    s: 5,
    stride: [3, 3],
    pad: [2, 2],
  }],
  ["2x3 stride [3, 2], phases without taps", {
    n: 2,
    h: 10,
    w: 9,
    c: 32,
    k: 16,
    r: 2,
    s: 3,
    stride: [3, 2],
    pad: [0, 1],
  }],
  ["groups 2, 3x3 stride 2, odd size", {
    n: 3,
    h: 9,
    w: 9,
    c: 32,
    k: 64,
    r: 3,
    s: 3,
    groups: 2,
    stride: [2, 2],
    pad: [1, 1],
  }],
  // version 4's 128 x 256 tiles (more than 128 columns and at least two waves of them: 9 row
  // tiles on the emulation's 4 SMs), with a partial column tile
  ["1x1 160 -> 160, 1152 pixels", { n: 2, h: 24, w: 24, c: 160, k: 160, r: 1, s: 1 }],
  ["wgrad over 65,536 rows", { n: 2, h: 200, w: 200, c: 16, k: 16, r: 1, s: 1 }],
  // MobileNetV2-like: the direct depthwise kernels with several wgrad pixel chunks, odd channels
  // the dp4a depthwise kernels: 25 taps (three wgrad tap blocks of 9), stride 2, odd sizes; 68
  // channels (17 quads: two wgrad blocks of 16 quads, the second with one); 6 channels (not
  // 4-aligned: version 1 for every setting)
  ["depthwise 5x5 stride 2, 24 channels", {
    n: 3,
    h: 11,
    w: 13,
    c: 24,
    k: 24,
    r: 5,
    s: 5,
    groups: 24,
    stride: [2, 2],
    pad: [2, 2],
  }],
  ["depthwise 68 channels, batch 1", {
    n: 1,
    h: 9,
    w: 9,
    c: 68,
    k: 68,
    r: 3,
    s: 3,
    groups: 68,
    pad: [1, 1],
  }],
  // 132,000 pixels: the wgrad's int32 bound asks for chunks of at most 65,536 pixels
  ["depthwise 132,000 pixels", {
    n: 1,
    h: 66000,
    w: 2,
    c: 4,
    k: 4,
    r: 3,
    s: 3,
    groups: 4,
    pad: [1, 1],
  }],
  ["depthwise 6 channels", { n: 2, h: 7, w: 7, c: 6, k: 6, r: 3, s: 3, groups: 6, pad: [1, 1] }],
  ["depthwise 40 channels, stride 1, 5 wgrad chunks", {
    n: 4,
    h: 24,
    w: 24,
    c: 40,
    k: 40,
    r: 3,
    s: 3,
    groups: 40,
    pad: [1, 1],
  }],
];

const ALL_VERSIONS = [1, 2, 3, 4];
// The kernel versions this device runs (mma-m16n8k32, version 3, needs compute capability 8.0;
// found by the emulation with D8_CUDA_EMU_CC=75, where its cases failed instead of skipping).
const VERSIONS = gpu.ok ? runnableVersions() : ALL_VERSIONS;
function runnableVersions(): number[] {
  const l = new Lib("cuda");
  try {
    const { ok, refused } = int8Versions(l, ALL_VERSIONS);
    for (const r of refused) console.log(`test/gpu: skipping int8 kernel ${r}`);
    return ok;
  } finally {
    l.close();
  }
}

// The kernel version the library's last int8 op ran (cuda-only extension; 0 for the cpu library).
// Opened and closed per call: an open library handle would count as a leaked test resource.
function lastVersion(l: Lib): number {
  if (l.lib.backend !== "cuda") return 0;
  const ext = Deno.dlopen(l.lib.path, {
    d8_cuda_last_int8_version: { parameters: [], result: "i32" },
  });
  try {
    return ext.symbols.d8_cuda_last_int8_version();
  } finally {
    ext.close();
  }
}

function withVersion(cuda: Lib, v: number, fn: () => void): void {
  cuda.check(cuda.s.d8_set_int8_kernel(cuda.ctx, v));
  try {
    fn();
  } finally {
    cuda.check(cuda.s.d8_set_int8_kernel(cuda.ctx, 0));
  }
}

// One test per (version, case), every case of version 1 first, then 2, then 3: a kernel that
// faults (an illegal address is sticky: the process's later CUDA calls fail too) takes down only
// the tests after it, and those of the versions before it have their verdicts (gpu_check's triage
// reruns the failed ones alone).
for (const v of ALL_VERSIONS) {
  for (const [name, conv] of CONVS) {
    gpuTest(`int8 conv fprop / dgrad / wgrad, ${name}, v${v}`, (cpu, cuda) => {
      const sh = convShape(conv), acc = convShape(conv, 1);
      const rnd = new Rand(7 + sh.x);
      const x = rnd.i8(sh.x), w = rnd.i8(sh.w), dy = rnd.i8(sh.y), base = rnd.f32(sh.x);
      const bias = rnd.f32(conv.k);
      const xs = new Float32Array([0.013]),
        ws = rnd.f32(conv.k).map((v) => Math.abs(v) * 0.01 + 1e-3);
      const ds = rnd.f32(conv.k).map((v) => Math.abs(v) * 0.02 + 1e-3);
      const run = (l: Lib) => {
        const bx = l.buf(sh.x, x),
          bw = l.buf(sh.w, w),
          bdy = l.buf(sh.y, dy),
          bb = l.buf(4 * conv.k, bias);
        const bxs = l.buf(4, xs), bws = l.buf(4 * conv.k, ws), bds = l.buf(4 * conv.k, ds);
        const y = l.buf(4 * sh.y),
          dx = l.buf(4 * sh.x),
          dw = l.buf(4 * sh.w),
          dw0 = l.buf(4 * sh.w);
        const ran: number[] = [];
        l.check(l.s.d8_conv2d_fwd_i8(y, bx, bw, bb, bxs, bws, 2, sh.bytes));
        ran.push(lastVersion(l));
        l.check(l.s.d8_conv2d_dgrad_i8(dx, bdy, bw, bds, bxs, sh.bytes));
        ran.push(lastVersion(l));
        const dxa = l.buf(4 * sh.x, base); // dx += the gradient (D8_CONV_ACCUMULATE)
        l.check(l.s.d8_conv2d_dgrad_i8(dxa, bdy, bw, bds, bxs, acc.bytes));
        l.check(l.s.d8_conv2d_wgrad_i8(dw, bx, bdy, bxs, bds, 1, sh.bytes));
        ran.push(lastVersion(l));
        l.check(l.s.d8_conv2d_wgrad_i8(dw0, bx, bdy, bxs, bds, 0, sh.bytes));
        const out = {
          ran,
          y: l.f32(y, sh.y),
          dx: l.f32(dx, sh.x),
          dxa: l.f32(dxa, sh.x),
          dw: l.f32(dw, sh.w),
          dw0: l.f32(dw0, sh.w),
        };
        l.freeAll();
        return out;
      };
      const ref = run(cpu);
      withVersion(cuda, v, () => {
        const got = run(cuda);
        const tol = { atol: 0, rtol: 1e-6 };
        assertClose(`v${v} fprop`, got.y, ref.y, tol);
        // the cuda dgrad scales one exact int32 sum per output; the cpu's scatter form (few input
        // channels: the stem, odd channel counts) adds each kernel row's scaled partial into dx in
        // float, so near-cancelling outputs carry that form's rounding (found by the CPU
        // emulation of the cuda backend: up to 1.5e-6 on outputs of magnitude 0.4)
        const big = ref.dx.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
        const dtol = { atol: 1e-5 * big, rtol: 1e-6 };
        assertClose(`v${v} dgrad`, got.dx, ref.dx, dtol);
        assertClose(`v${v} dgrad, accumulating`, got.dxa, ref.dxa, {
          atol: Math.max(1e-6, dtol.atol),
          rtol: 1e-6,
        });
        assertEqualArrays(`v${v} wgrad (per-channel dY scale)`, got.dw, ref.dw);
        assertEqualArrays(`v${v} wgrad (tensor dY scale)`, got.dw0, ref.dw0);
        // the tensor-core versions must really run where valid() allows them (no silent fallback)
        // (depthwise convs with 4-aligned channels: the dp4a depthwise kernels, reported as 2)
        const g = conv.groups ?? 1, cg = conv.c / g, kg = conv.k / g;
        const dw = g > 1 && cg === 1 && kg === 1 && conv.c % 4 === 0;
        const want = [cg % 16 === 0, kg % 16 === 0, cg % 16 === 0 && kg % 16 === 0].map((ok) =>
          v === 1 ? 1 : dw ? 2 : ok ? v : 1
        );
        assertEqualArrays(`v${v} versions run (fprop, dgrad, wgrad)`, got.ran, want);
      });
    }, !VERSIONS.includes(v));
  }
}

gpuTest("int8 wgrad sums past int32 exactly (200,000 rows of 127 * 127)", (cpu, cuda) => {
  const conv: Conv = { n: 1, h: 400, w: 500, c: 16, k: 16, r: 1, s: 1 };
  const sh = convShape(conv);
  const x = new Int8Array(sh.x).fill(127), dy = new Int8Array(sh.y).fill(127);
  for (const v of VERSIONS) {
    withVersion(cuda, v, () => {
      const outs = [cpu, cuda].map((l) => {
        const dw = l.buf(4 * sh.w);
        l.check(
          l.s.d8_conv2d_wgrad_i8(
            dw,
            l.buf(sh.x, x),
            l.buf(sh.y, dy),
            l.buf(4, new Float32Array([1])),
            l.buf(4, new Float32Array([1])),
            0,
            sh.bytes,
          ),
        );
        const r = l.f32(dw, sh.w);
        l.freeAll();
        return r;
      });
      assertEqualArrays(`v${v} dw`, outs[1]!, outs[0]!);
      if (outs[1]![0] !== Math.fround(200000 * 127 * 127)) {
        throw new Error(`v${v}: dw[0] = ${outs[1]![0]}`);
      }
    });
  }
});

gpuTest("gemm_i8 int32 accumulators exactly equal", (cpu, cuda) => {
  const rnd = new Rand(3);
  for (
    const [m, n, k] of [[1, 1, 1], [37, 19, 13], [130, 70, 64], [256, 128, 1152], [129, 200, 48]]
  ) {
    const a = rnd.i8(m! * k!), b = rnd.i8(n! * k!);
    const run = (l: Lib) => {
      const c = l.buf(4 * m! * n!);
      l.check(l.s.d8_gemm_i8(c, l.buf(m! * k!, a), l.buf(n! * k!, b), BigInt(m!), n!, k!));
      const r = l.i32(c, m! * n!);
      l.freeAll();
      return r;
    };
    const ref = run(cpu);
    for (const v of VERSIONS) {
      withVersion(cuda, v, () => assertEqualArrays(`v${v} ${m}x${n}x${k}`, run(cuda), ref));
    }
  }
});

gpuTest(
  "quantize (nearest, stochastic; tensor, inner, outer), dual, dequantize: bit-identical",
  (cpu, cuda) => {
    const rnd = new Rand(11);
    const outer = 333, inner = 37, n = outer * inner;
    const x = rnd.f32(n, 3);
    x[5] = NaN;
    x[6] = Infinity;
    const clipsI = rnd.f32(inner).map((v) => Math.abs(v) * 2);
    clipsI[0] = 0;
    const clipsO = rnd.f32(outer).map((v) => Math.abs(v) * 2);
    const clipT = new Float32Array([1.7]);
    for (const rounding of [0, 1]) {
      for (const [layout, clips] of [[0, clipT], [1, clipsI], [2, clipsO]] as const) {
        const seed = 0x9abc_def1;
        const run = (l: Lib) => {
          const y = l.buf(n), dq = l.buf(4 * n);
          const bc = l.buf(4 * clips.length, clips);
          l.check(
            l.s.d8_quantize_i8(
              y,
              l.buf(4 * n, x),
              BigInt(outer),
              inner,
              bc,
              layout,
              rounding,
              seed,
            ),
          );
          l.check(l.s.d8_dequantize_i8(dq, y, BigInt(outer), inner, bc, layout));
          const r = { q: l.i8(y, n), d: l.f32(dq, n) };
          l.freeAll();
          return r;
        };
        const ref = run(cpu), got = run(cuda);
        assertEqualArrays(`quantize rounding ${rounding} layout ${layout}`, got.q, ref.q);
        assertEqualArrays(`dequantize layout ${layout}`, got.d, ref.d);
      }
      const runDual = (l: Lib) => {
        const yt = l.buf(n), yc = l.buf(n);
        l.check(
          l.s.d8_quantize_i8_dual(
            yt,
            yc,
            l.buf(4 * n, x),
            BigInt(outer),
            inner,
            l.buf(4, clipT),
            l.buf(4 * inner, clipsI),
            rounding,
            99,
          ),
        );
        const r = { t: l.i8(yt, n), c: l.i8(yc, n) };
        l.freeAll();
        return r;
      };
      const ref = runDual(cpu), got = runDual(cuda);
      assertEqualArrays(`dual tensor rounding ${rounding}`, got.t, ref.t);
      assertEqualArrays(`dual channel rounding ${rounding}`, got.c, ref.c);
    }
  },
);

gpuTest("absmax and channel statistics", (cpu, cuda) => {
  const rnd = new Rand(5);
  const rows = 5000, ch = 45, x = rnd.f32(rows * ch, 2);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + (i % ch) * 0.1;
  const run = (l: Lib) => {
    const bx = l.buf(4 * x.length, x), am = l.buf(4), st = l.buf(16 * ch);
    l.check(l.s.d8_absmax_f32(am, bx, BigInt(x.length)));
    l.check(l.s.d8_channel_stats_f32(st, bx, BigInt(rows), ch));
    const r = { am: l.f32(am, 1), st: l.f32(st, 4 * ch) };
    l.freeAll();
    return r;
  };
  const ref = run(cpu), got = run(cuda);
  assertEqualArrays("absmax", got.am, ref.am);
  assertClose("channel stats", got.st, ref.st, { atol: 1e-6, rtol: 1e-5 });
});

// every conv case but the two long ones (the 65,536-row wgrad, the 5-chunk depthwise)
const FP32_CONVS = CONVS.filter(([n]) =>
  !n.startsWith("wgrad over") && !n.startsWith("depthwise 40")
);
for (const [name, conv] of FP32_CONVS) {
  gpuTest(`fp32 conv fprop / dgrad / wgrad + bias grad, ${name}`, (cpu, cuda) => {
    const sh = convShape(conv), acc = convShape(conv, 1);
    const rnd = new Rand(17 + sh.w);
    const x = rnd.f32(sh.x), w = rnd.f32(sh.w), dy = rnd.f32(sh.y), bias = rnd.f32(conv.k);
    const base = rnd.f32(sh.x);
    const run = (l: Lib) => {
      const bx = l.buf(4 * sh.x, x), bw = l.buf(4 * sh.w, w), bdy = l.buf(4 * sh.y, dy);
      const y = l.buf(4 * sh.y), dx = l.buf(4 * sh.x), dw = l.buf(4 * sh.w), db = l.buf(4 * conv.k);
      l.check(l.s.d8_conv2d_fwd(y, bx, bw, l.buf(4 * conv.k, bias), sh.bytes));
      l.check(l.s.d8_conv2d_dgrad(dx, bdy, bw, sh.bytes));
      const dxa = l.buf(4 * sh.x, base); // dx += the gradient (D8_CONV_ACCUMULATE)
      l.check(l.s.d8_conv2d_dgrad(dxa, bdy, bw, acc.bytes));
      l.check(l.s.d8_conv2d_wgrad(dw, bx, bdy, sh.bytes));
      l.check(l.s.d8_bias_grad(db, bdy, BigInt(sh.y / conv.k), conv.k));
      const r = {
        y: l.f32(y, sh.y),
        dx: l.f32(dx, sh.x),
        dxa: l.f32(dxa, sh.x),
        dw: l.f32(dw, sh.w),
        db: l.f32(db, conv.k),
      };
      l.freeAll();
      return r;
    };
    const ref = run(cpu), got = run(cuda);
    const tol = { atol: 1e-4, rtol: 1e-4 };
    assertClose("fprop", got.y, ref.y, tol);
    assertClose("dgrad", got.dx, ref.dx, tol);
    assertClose("dgrad, accumulating", got.dxa, ref.dxa, tol);
    assertClose("wgrad", got.dw, ref.dw, { atol: 2e-3, rtol: 1e-4 });
    assertClose("bias grad", got.db, ref.db, { atol: 2e-3, rtol: 1e-5 });
  });
}

gpuTest("linear fwd / dgrad / wgrad", (cpu, cuda) => {
  const rnd = new Rand(23);
  for (const [m, n, k] of [[1, 10, 84], [64, 120, 400], [300, 7, 65]]) {
    const x = rnd.f32(m! * k!), w = rnd.f32(n! * k!), dy = rnd.f32(m! * n!), b = rnd.f32(n!);
    const run = (l: Lib) => {
      const bx = l.buf(4 * m! * k!, x), bw = l.buf(4 * n! * k!, w), bdy = l.buf(4 * m! * n!, dy);
      const y = l.buf(4 * m! * n!), dx = l.buf(4 * m! * k!), dw = l.buf(4 * n! * k!);
      l.check(l.s.d8_linear_fwd(y, bx, bw, l.buf(4 * n!, b), BigInt(m!), n!, k!));
      l.check(l.s.d8_linear_dgrad(dx, bdy, bw, BigInt(m!), n!, k!));
      l.check(l.s.d8_linear_wgrad(dw, bx, bdy, BigInt(m!), n!, k!));
      const r = { y: l.f32(y, m! * n!), dx: l.f32(dx, m! * k!), dw: l.f32(dw, n! * k!) };
      l.freeAll();
      return r;
    };
    const ref = run(cpu), got = run(cuda);
    const tol = { atol: 2e-4, rtol: 1e-4 };
    assertClose(`linear fwd ${m}x${n}x${k}`, got.y, ref.y, tol);
    assertClose(`linear dgrad ${m}x${n}x${k}`, got.dx, ref.dx, tol);
    assertClose(`linear wgrad ${m}x${n}x${k}`, got.dw, ref.dw, tol);
  }
});

gpuTest("batch norm, pools, softmax cross-entropy, SGD, elementwise", (cpu, cuda) => {
  const rnd = new Rand(29);
  const m = 2 * 9 * 9,
    c = 12,
    x = rnd.f32(m * c, 2),
    dy = rnd.f32(m * c),
    g = rnd.f32(c),
    b = rnd.f32(c);
  const pool = convShape({
    n: 2,
    h: 9,
    w: 9,
    c,
    k: c,
    r: 3,
    s: 3,
    groups: c,
    stride: [2, 2],
    pad: [1, 1],
  });
  const logits = rnd.f32(37 * 10, 4), labels = new Int32Array(37).map((_, i) => (i * 7) % 10);
  // drawn once, outside run(): a draw inside gave the cpu and the cuda run different pool
  // gradients (found by the CPU emulation of the cuda backend)
  const pooldy = rnd.f32(pool.y);
  const run = (l: Lib) => {
    const bx = l.buf(4 * m * c, x),
      bdy = l.buf(4 * m * c, dy),
      bg = l.buf(4 * c, g),
      bb = l.buf(4 * c, b);
    const y = l.buf(4 * m * c),
      sm = l.buf(4 * c),
      si = l.buf(4 * c),
      rm = l.buf(4 * c, new Float32Array(c));
    const rv = l.buf(4 * c, new Float32Array(c).fill(1)),
      dx = l.buf(4 * m * c),
      dg = l.buf(4 * c),
      db = l.buf(4 * c);
    l.check(l.s.d8_batchnorm_fwd_train(y, sm, si, rm, rv, bx, bg, bb, BigInt(m), c, 0.1, 1e-5));
    l.check(l.s.d8_batchnorm_bwd(dx, dg, db, bdy, bx, bg, sm, si, BigInt(m), c));
    const yi = l.buf(4 * m * c);
    l.check(l.s.d8_batchnorm_fwd_infer(yi, bx, bg, bb, rm, rv, BigInt(m), c, 1e-5));
    const py = l.buf(4 * pool.y), arg = l.buf(4 * pool.y), pdx = l.buf(4 * pool.x);
    const pdy = l.buf(4 * pool.y, pooldy);
    l.check(l.s.d8_maxpool_fwd(py, arg, bx, pool.bytes));
    l.check(l.s.d8_maxpool_bwd(pdx, pdy, arg, pool.bytes));
    const ay = l.buf(4 * pool.y), adx = l.buf(4 * pool.x);
    l.check(l.s.d8_avgpool_fwd(ay, bx, pool.bytes));
    l.check(l.s.d8_avgpool_bwd(adx, pdy, pool.bytes));
    const gy = l.buf(4 * 2 * c), gdx = l.buf(4 * m * c);
    l.check(l.s.d8_global_avgpool_fwd(gy, bx, 2, 81, c));
    l.check(l.s.d8_global_avgpool_bwd(gdx, gy, 2, 81, c));
    const st = l.buf(8), pr = l.buf(4 * 370), dl = l.buf(4 * 370), bl = l.buf(4 * 37, labels);
    const acc = l.buf(16, new Float32Array([1, 2, 3, 4])),
      seedG = l.buf(4, new Float32Array([0.5]));
    l.check(l.s.d8_softmax_xent_fwd(st, pr, acc, l.buf(4 * 370, logits), bl, 37, 10));
    l.check(l.s.d8_softmax_xent_bwd(dl, pr, bl, seedG, 37, 10, 1 / 37));
    const wv = l.buf(4 * m * c, x), mom = l.buf(4 * m * c, new Float32Array(m * c));
    const nf = l.buf(4, new Uint32Array([0]));
    l.check(l.s.d8_sgd_step(wv, mom, nf, bdy, BigInt(m * c), 0.1, 0.9, 5e-4, 1));
    l.check(l.s.d8_sgd_step(wv, mom, 0n, bdy, BigInt(m * c), 0.1, 0.9, 5e-4, 0));
    const wbad = l.buf(16, new Float32Array([1, 2, 3, 4])), nf2 = l.buf(4, new Uint32Array([0]));
    l.check(
      l.s.d8_sgd_step(
        wbad,
        0n,
        nf2,
        l.buf(16, new Float32Array([0, NaN, 0, 0])),
        4n,
        0.1,
        0,
        0,
        0,
      ),
    );
    const mk = l.buf(Math.ceil((m * c) / 8)), ym = l.buf(4 * m * c), dm = l.buf(4 * m * c);
    l.check(l.s.d8_relu_fwd_mask(ym, mk, bx, BigInt(m * c)));
    l.check(l.s.d8_relu_bwd_mask(dm, bdy, mk, BigInt(m * c)));
    const ew = l.buf(4 * m * c),
      cat = l.buf(8 * m * c),
      sa = l.buf(4 * m * c),
      sb = l.buf(4 * m * c);
    l.check(l.s.d8_add_f32(ew, bx, bdy, BigInt(m * c)));
    l.check(l.s.d8_axpy_f32(ew, 0.5, bx, BigInt(m * c)));
    l.check(l.s.d8_relu_fwd(ew, ew, BigInt(m * c)));
    l.check(l.s.d8_relu_bwd(sa, bdy, ew, BigInt(m * c)));
    l.check(l.s.d8_concat_channels(cat, bx, sa, BigInt(m), c, c));
    l.check(l.s.d8_split_channels(sb, sa, cat, BigInt(m), c, c));
    const r = {
      bn: [...l.f32(y, m * c), ...l.f32(sm, c), ...l.f32(si, c), ...l.f32(rm, c), ...l.f32(rv, c)],
      bnb: [...l.f32(dx, m * c), ...l.f32(dg, c), ...l.f32(db, c)],
      bni: l.f32(yi, m * c),
      maxp: [...l.f32(py, pool.y), ...l.i32(arg, pool.y), ...l.f32(pdx, pool.x)],
      avgp: [
        ...l.f32(ay, pool.y),
        ...l.f32(adx, pool.x),
        ...l.f32(gy, 2 * c),
        ...l.f32(gdx, m * c),
      ],
      xent: [...l.f32(st, 2), ...l.f32(pr, 370), ...l.f32(dl, 370), ...l.f32(acc, 4)],
      sgd: [...l.f32(wv, m * c), ...l.f32(mom, m * c), ...l.i32(nf, 1), ...l.i32(nf2, 1)],
      mask: [...l.get(mk, Math.ceil((m * c) / 8)), ...l.f32(ym, m * c), ...l.f32(dm, m * c)],
      ew: [...l.f32(ew, m * c), ...l.f32(cat, 2 * m * c), ...l.f32(sb, m * c), ...l.f32(sa, m * c)],
    };
    l.freeAll();
    return r;
  };
  const ref = run(cpu), got = run(cuda);
  const tol = { atol: 1e-5, rtol: 1e-5 };
  for (const key of Object.keys(ref) as (keyof typeof ref)[]) {
    assertClose(key, got[key], ref[key], tol);
  }
});

gpuTest(
  "errors: bad shapes and labels are statuses with messages; out of memory is survivable",
  (_cpu, cuda) => {
    const bad = convShape({ n: 1, h: 4, w: 4, c: 16, k: 16, r: 3, s: 3 });
    new Int32Array(bad.bytes.buffer)[12] = 5; // wrong p
    const y = cuda.buf(4096),
      x = cuda.buf(4096),
      w = cuda.buf(4096),
      s = cuda.buf(64, new Float32Array(16).fill(1));
    const st = cuda.s.d8_conv2d_fwd_i8(y, x, w, 0n, s, s, 0, bad.bytes);
    if (st !== 1) throw new Error(`bad shape gave status ${st}`);
    const msg = cuda.lastError();
    if (!msg.includes("output is")) throw new Error(`unexpected message: ${msg}`);
    const small = convShape({ n: 1, h: 64, w: 64, c: 16, k: 16, r: 3, s: 3, pad: [1, 1] });
    if (cuda.s.d8_conv2d_fwd_i8(y, x, w, 0n, s, s, 0, small.bytes) !== 1) {
      throw new Error(
        "small buffer accepted",
      );
    }
    const labels = cuda.buf(16, new Int32Array([0, 1, 12, 2])),
      pr = cuda.buf(160),
      stats = cuda.buf(8);
    const before = cuda.f32(pr, 40);
    // checked on the device: the op returns at once, the next synchronizing call reports it
    cuda.check(cuda.s.d8_softmax_xent_fwd(stats, pr, 0n, cuda.buf(160), labels, 4, 10));
    if (cuda.s.d8_synchronize(cuda.ctx) !== 1) throw new Error("bad label not reported");
    const lmsg = cuda.lastError();
    if (!lmsg.includes("labels[2] = 12")) throw new Error(`unexpected message: ${lmsg}`);
    cuda.check(cuda.s.d8_synchronize(cuda.ctx)); // reported once
    assertEqualArrays("probs untouched after a bad label", cuda.f32(pr, 40), before);
    const out = new BigUint64Array(1);
    const oom = cuda.s.d8_buffer_alloc(new Uint8Array(out.buffer), cuda.ctx, 1n << 45n);
    if (oom !== 2) throw new Error(`a 32 TiB allocation gave status ${oom}`);
    cuda.check(cuda.s.d8_fill_f32(y, 1024n, 2)); // the process and the context still work
    cuda.check(cuda.s.d8_synchronize(cuda.ctx));
    if (cuda.f32(y, 1)[0] !== 2) throw new Error("context unusable after OOM");
  },
);

gpuTest("device memory in use stays flat over 100 training-like steps", (_cpu, cuda) => {
  const ext = Deno.dlopen(cuda.lib.path, {
    d8_cuda_memory_stats: { parameters: ["u64", "buffer", "buffer"], result: "i32" },
  });
  try {
    const conv = convShape({ n: 4, h: 16, w: 16, c: 32, k: 32, r: 3, s: 3, pad: [1, 1] });
    const rnd = new Rand(31);
    const inUse: number[] = [];
    for (let step = 0; step < 100; step++) {
      const x = cuda.buf(conv.x, rnd.i8(conv.x)), w = cuda.buf(conv.w, rnd.i8(conv.w));
      const dy = cuda.buf(conv.y, rnd.i8(conv.y)),
        s = cuda.buf(128, new Float32Array(32).fill(0.01));
      const y = cuda.buf(4 * conv.y), dx = cuda.buf(4 * conv.x), dw = cuda.buf(4 * conv.w);
      cuda.check(cuda.s.d8_conv2d_fwd_i8(y, x, w, 0n, s, s, 2, conv.bytes));
      cuda.check(cuda.s.d8_conv2d_dgrad_i8(dx, dy, w, s, s, conv.bytes));
      cuda.check(cuda.s.d8_conv2d_wgrad_i8(dw, x, dy, s, s, 1, conv.bytes));
      cuda.freeAll();
      const a = new BigInt64Array(1), b = new BigInt64Array(1);
      cuda.check(
        ext.symbols.d8_cuda_memory_stats(
          cuda.ctx,
          new Uint8Array(a.buffer),
          new Uint8Array(b.buffer),
        ),
      );
      inUse.push(Number(a[0]) + Number(b[0]));
    }
    if (inUse[99] !== inUse[1]) {
      throw new Error(`device memory grew: ${inUse[1]} -> ${inUse[99]} bytes`);
    }
  } finally {
    ext.close();
  }
});

gpuTest("quantize_i8_maxscale (tensor, outer) and quant_error: bit-identical", (cpu, cuda) => {
  const rnd = new Rand(41);
  const outer = 70, inner = 300, n = outer * inner, x = rnd.f32(n, 5);
  for (let i = 0; i < inner; i++) x[3 * inner + i] = 0; // an all-zero row
  for (const layout of [0, 2]) {
    const run = (l: Lib) => {
      const y = l.buf(n), sc = l.buf(4 * outer), rec = l.buf(32, new Float32Array(8));
      const bx = l.buf(4 * n, x);
      l.check(l.s.d8_quantize_i8_maxscale(y, sc, bx, BigInt(outer), inner, layout));
      const cl = l.buf(4 * inner, rnd2.f32(inner).map((v) => Math.abs(v) * 4));
      l.check(l.s.d8_quant_error(rec, bx, y, cl, BigInt(outer), inner, 1));
      const r = { y: l.i8(y, n), s: l.f32(sc, layout === 0 ? 1 : outer), rec: l.f32(rec, 8) };
      l.freeAll();
      return r;
    };
    let rnd2 = new Rand(5);
    const ref = run(cpu);
    rnd2 = new Rand(5);
    const got = run(cuda);
    assertEqualArrays(`maxscale y layout ${layout}`, got.y, ref.y);
    assertEqualArrays(`maxscale scale layout ${layout}`, got.s, ref.s);
    assertClose(`quant_error layout ${layout}`, got.rec, ref.rec, { atol: 0, rtol: 1e-6 });
  }
});

gpuTest(
  "quant_decide: every clip mode over 12 steps, state and outputs as the cpu",
  (cpu, cuda) => {
    const C = 40, rows = 2000, size = 64;
    const rnd = new Rand(43);
    const table = new Float32Array(3 * size).map((_, i) =>
      0.5 + (i % size) * 0.05 + Math.floor(i / size) * 0.1
    );
    for (const clip of [0, 1, 2, 3]) {
      for (const gvq of [0, 1]) {
        const knobs = new Uint8Array(64);
        const ki = new Int32Array(knobs.buffer), kf = new Float32Array(knobs.buffer);
        ki[0] = C, ki[1] = clip, ki[2] = gvq, ki[3] = 3, ki[4] = 9, ki[5] = 1, ki[6] = size;
        kf[8] = 0.3, kf[9] = 0.5, kf[10] = 0.2, kf[11] = 0.4, kf[12] = 3.1, kf[13] = 0.05;
        const libs = [cpu, cuda].map((l) => ({
          l,
          state: l.buf(4 * (16 + 2 * C), new Uint32Array(16 + 2 * C)),
          ct: l.buf(4),
          st: l.buf(4),
          cc: l.buf(4 * C),
          sc: l.buf(4 * C),
          rec: l.buf(32),
          stats: l.buf(16 * C),
          tab: l.buf(4 * 3 * size, table),
          dy: l.buf(4 * rows * C),
        }));
        for (let step = 0; step < 12; step++) {
          const dy = rnd.f32(rows * C, 1 + step * 0.1);
          for (let i = 0; i < dy.length; i += 7) dy[i] = dy[i]! * ((i / 7) % 5 === 0 ? 8 : 1); // heavy tails
          const outs = libs.map((b) => {
            const { l } = b;
            l.check(
              l.s.d8_buffer_upload(b.dy, 0n, new Uint8Array(dy.buffer), BigInt(dy.byteLength)),
            );
            l.check(
              l.s.d8_quant_decide(
                b.state,
                b.ct,
                b.st,
                gvq ? b.cc : 0n,
                gvq ? b.sc : 0n,
                b.rec,
                b.stats,
                b.dy,
                b.tab,
                BigInt(rows),
                knobs,
              ),
            );
            return {
              state: l.i32(b.state, 16 + 2 * C),
              ct: l.f32(b.ct, 1),
              cc: gvq ? l.f32(b.cc, C) : new Float32Array(0),
              rec: l.f32(b.rec, 7),
              stats: l.f32(b.stats, 4 * C),
            };
          });
          const [ref, got] = outs as [typeof outs[0], typeof outs[0]];
          const what = `clip ${clip} gvq ${gvq} step ${step}`;
          assertClose(`${what} stats`, got.stats, ref.stats, { atol: 1e-7, rtol: 1e-5 });
          // max and mcs depend only on exact statistics (max, share classes) and f32 formulas
          const exact = clip === 0 || clip === 1;
          const tol = exact ? { atol: 0, rtol: 0 } : { atol: 1e-6, rtol: 1e-4 };
          assertClose(`${what} clip_tensor`, got.ct, ref.ct, tol);
          assertClose(`${what} clips_channel`, got.cc, ref.cc, tol);
          assertClose(`${what} record`, got.rec, ref.rec, {
            atol: 1e-6,
            rtol: exact ? 1e-6 : 1e-4,
          });
          if (exact) assertEqualArrays(`${what} state`, got.state, ref.state);
        }
        for (const b of libs) b.l.freeAll();
      }
    }
  },
);

gpuTest("model-zoo ops: mul, relu6, adaptive average pool: bit-identical", (cpu, cuda) => {
  const rnd = new Rand(47);
  const n = 2, h = 13, w = 9, c = 5, p = 7, q = 4, e = n * h * w * c;
  const x = rnd.f32(e, 8), b = rnd.f32(e), dyp = rnd.f32(n * p * q * c);
  const run = (l: Lib) => {
    const bx = l.buf(4 * e, x), bb = l.buf(4 * e, b);
    const m = l.buf(4 * e), r6 = l.buf(4 * e), r6b = l.buf(4 * e);
    const ay = l.buf(4 * n * p * q * c), adx = l.buf(4 * e);
    l.check(l.s.d8_mul_f32(m, bx, bb, BigInt(e)));
    l.check(l.s.d8_relu6_fwd(r6, bx, BigInt(e)));
    l.check(l.s.d8_relu6_bwd(r6b, bb, r6, BigInt(e)));
    l.check(l.s.d8_adaptive_avgpool_fwd(ay, bx, n, h, w, c, p, q));
    l.check(l.s.d8_adaptive_avgpool_bwd(adx, l.buf(4 * dyp.length, dyp), n, h, w, c, p, q));
    const r = {
      mul: l.f32(m, e),
      relu6: [...l.f32(r6, e), ...l.f32(r6b, e)],
      pool: [...l.f32(ay, n * p * q * c), ...l.f32(adx, e)],
    };
    l.freeAll();
    return r;
  };
  const ref = run(cpu), got = run(cuda);
  assertEqualArrays("mul", got.mul, ref.mul);
  assertEqualArrays("relu6", got.relu6, ref.relu6);
  assertEqualArrays("adaptive avgpool", got.pool, ref.pool);
});

for (const cap of [0, 6]) {
  gpuTest(
    `fused batch norm + residual + ${cap ? "ReLU6" : "ReLU"} forward and backward`,
    (cpu, cuda) => {
      const m = 2 * 9 * 9, c = 24, n = m * c;
      const rnd = new Rand(31 + cap);
      const x = rnd.f32(n, 2), res = rnd.f32(n, 3), dy = rnd.f32(n);
      const g = rnd.f32(c, 8), b = rnd.f32(c, 3);
      const run = (l: Lib) => {
        const bx = l.buf(4 * n, x), br = l.buf(4 * n, res), bdy = l.buf(4 * n, dy);
        const bg = l.buf(4 * c, g), bb = l.buf(4 * c, b);
        const y = l.buf(4 * n),
          mask = l.buf(Math.ceil(n / 8)),
          sm = l.buf(4 * c),
          si = l.buf(4 * c);
        const rm = l.buf(4 * c, new Float32Array(c)),
          rv = l.buf(4 * c, new Float32Array(c).fill(1));
        l.check(
          l.s.d8_batchnorm_relu_fwd_train(
            y,
            mask,
            sm,
            si,
            rm,
            rv,
            bx,
            br,
            bg,
            bb,
            BigInt(m),
            c,
            0.1,
            1e-5,
            cap,
          ),
        );
        const dx = l.buf(4 * n), dr = l.buf(4 * n), dg = l.buf(4 * c), db = l.buf(4 * c);
        l.check(l.s.d8_batchnorm_relu_bwd(dx, dr, dg, db, bdy, mask, bx, bg, sm, si, BigInt(m), c));
        const out = {
          y: l.f32(y, n),
          mask: l.get(mask, Math.ceil(n / 8)),
          dx: l.f32(dx, n),
          dr: l.f32(dr, n),
          dg: l.f32(dg, c),
        };
        l.freeAll();
        return out;
      };
      const ref = run(cpu), got = run(cuda);
      const tol = { atol: 1e-5, rtol: 1e-5 };
      assertClose("y", got.y, ref.y, tol);
      assertEqualArrays("mask", got.mask, ref.mask);
      assertClose("dx", got.dx, ref.dx, { atol: 1e-4, rtol: 1e-4 });
      assertEqualArrays("dresidual", got.dr, ref.dr);
      assertClose("dgamma", got.dg, ref.dg, { atol: 1e-3, rtol: 1e-4 });
    },
  );
}
