/**
 * Every layer op on the cpu backend: forward against a double-precision naive reference,
 * backward against finite differences of it (test/helpers/check_op.ts).
 */
import assert from "node:assert/strict";
import { Tape } from "../src/autograd/tape.ts";
import { conv2d, convShape } from "../src/ops/conv.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, cpu } from "./helpers/check_op.ts";
import { convDgradRef, convRef, convWgradRef } from "./helpers/reference.ts";
import { defineOpTests } from "./helpers/op_cases.ts";
import { runChildTests } from "./helpers/child_tests.ts";

defineOpTests("", cpu);

// The cpu convolutions choose per shape and per CPU, and an environment variable (read once per
// process) forces each choice: D8_CPU_CONV_PATH the GEMM form (kernels/cpu/conv.cpp and
// int8_conv.cpp: im2col / scatter or implicit / by phase), D8_CPU_ZMM_PAIRS the 16-column fp32 and
// avx512-vnni tiles over pairs of k (kernels/cpu/common.h zmm_pairs: on where the core issues two
// 512-bit FMAs a clock, Zen 5) or one broadcast per FMA. Run the fp32 and INT8 conv cases in a
// child process with each forced (the pairs with the setting this CPU does not pick: the cases
// above run the other), so every form stays tested whichever this CPU picks; a child (any of them
// set) runs none of these.
const forcing = ["D8_CPU_CONV_PATH", "D8_CPU_ZMM_PAIRS"];
const isChild = forcing.some((v) => Deno.env.get(v) !== undefined);
const pairsHere = /16-column tiles over k pairs/.test(cpu().info());
for (
  const [name, value, what] of [
    ["D8_CPU_CONV_PATH", "im2col", "conv cases pass"],
    ["D8_CPU_CONV_PATH", "implicit", "conv cases pass"],
    ["D8_CPU_ZMM_PAIRS", pairsHere ? "0" : "1", "16-column tiles: the fp32 and INT8 cases pass"],
  ] as const
) {
  Deno.test({
    name: `${what} with ${name}=${value} (child process)`,
    ignore: isChild,
    fn: () => {
      const here = new URL(".", import.meta.url).pathname;
      return runChildTests({ [name]: value }, "conv", [
        `${here}ops_test.ts`,
        `${here}quant_test.ts`,
      ], 40);
    },
  });
}

Deno.test("Tape.backward() adds a conv's input gradient into x's other gradient, never into a seed", () => {
  const b = cpu();
  using tape = new Tape(b);
  const s = convShape("test", [2, 5, 5, 3], 4, [3, 3], { padding: 1 });
  const vals = (n: number, f: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * f));
  const x = tape.watch(tape.own(Tensor.from(b, vals(150, 0.7), [2, 5, 5, 3], "f32")));
  const w = tape.own(Tensor.from(b, vals(108, 1.3), [4, 3, 3, 3], "f32"));
  const y = conv2d(tape, x, w, null, { padding: 1 });
  const seedY = tape.own(Tensor.from(b, vals(200, 0.3), [2, 5, 5, 4], "f32"));
  const seedX = tape.own(Tensor.from(b, vals(150, 2.1), [2, 5, 5, 3], "f32"));
  // x is a root too: its seed is its gradient before the conv's backward, which must not write
  // into the caller's tensor
  const g = tape.backward(y, seedY, [[x, seedX]]);
  assert.deepEqual(seedX.toFloat32(), vals(150, 2.1), "the seed of x is unchanged");
  const dgrad = convDgradRef(
    Float64Array.from(vals(200, 0.3)),
    Float64Array.from(vals(108, 1.3)),
    s,
  );
  const want = dgrad.map((v, i) => v + vals(150, 2.1)[i]!);
  assertClose("x's gradient", g.get(x.id)!.toFloat32(), want, x.shape, { atol: 1e-5, rtol: 1e-5 });
});

// Over 1 MB of packed weights on a map narrower than 8 pixels (the zoo's 512-channel layers):
// the cpu im2col path splits B's panels over the threads (kernels/cpu/conv.cpp wide_b); the
// stride-1 dgrad runs as the forward of dy with the flipped weights, so it takes that path too.
Deno.test("conv2d forward and dgrad with over 1 MB of weights on a 5x5 map match the references", () => {
  const b = cpu();
  const s = convShape("test", [2, 5, 5, 64], 512, [3, 3], { padding: 1 });
  const vals = (n: number, f: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * f) * 0.5);
  const xv = vals(2 * 5 * 5 * 64, 0.37), wv = vals(512 * 9 * 64, 1.13);
  const dyv = vals(2 * 5 * 5 * 512, 0.71);
  using x = Tensor.from(b, xv, [2, 5, 5, 64], "f32");
  using w = Tensor.from(b, wv, [512, 3, 3, 64], "f32");
  using dy = Tensor.from(b, dyv, [2, 5, 5, 512], "f32");
  using y = Tensor.empty(b, [2, 5, 5, 512]);
  using dx = Tensor.empty(b, [2, 5, 5, 64]);
  b.conv2d(y, x, w, null, s);
  b.conv2dDgrad(dx, dy, w, s);
  const tol = { atol: 1e-4, rtol: 1e-4 };
  assertClose(
    "y",
    y.toFloat32(),
    convRef(Float64Array.from(xv), Float64Array.from(wv), null, s),
    y.shape,
    tol,
  );
  assertClose(
    "dx",
    dx.toFloat32(),
    convDgradRef(Float64Array.from(dyv), Float64Array.from(wv), s),
    dx.shape,
    tol,
  );
});

/** A conv case against the double reference: label, x shape [n, h, w, c], k, kernel, options. */
type RefConvCase = [string, [number, number, number, number], number, [number, number], {
  stride?: number | [number, number];
  padding?: number | [number, number];
}];
const numel = (sh: readonly number[]) => sh.reduce((a, v) => a * v, 1);
/** Deterministic values in [-0.5, 0.5]: sin(i*f + 0.3) / 2. */
const sineVals = (len: number, f: number) =>
  Float32Array.from({ length: len }, (_, i) => Math.sin(i * f + 0.3) * 0.5);

/**
 * A reference case's operands (sineVals) and its forward with bias, checked against the double
 * reference; returns the shape, dY's values and w (the caller disposes it) for the dgrad after.
 */
function checkForwardWithBias(b: ReturnType<typeof cpu>, c: RefConvCase, atol: number) {
  const [label, xs, k, ks, opts] = c;
  const s = convShape("test", xs, k, ks, opts);
  const ys = [xs[0], s.p, s.q, k], ws = [k, ks[0], ks[1], xs[3]];
  const xv = sineVals(numel(xs), 0.37), wv = sineVals(numel(ws), 0.53), bv = sineVals(k, 0.91);
  const w = Tensor.from(b, wv, ws, "f32");
  using x = Tensor.from(b, xv, xs, "f32");
  using bias = Tensor.from(b, bv, [k], "f32");
  using y = Tensor.empty(b, ys);
  b.conv2d(y, x, w, bias, s);
  const want = convRef(Float64Array.from(xv), Float64Array.from(wv), Float64Array.from(bv), s);
  assertClose(`y (${label})`, y.toFloat32(), want, y.shape, { atol, rtol: 1e-4 });
  return { s, ys, wv, dyv: sineVals(numel(ys), 0.71), w };
}

/**
 * The dgrad of a checkForwardWithBias case against the double reference; with `base`, dx starts
 * as those values and the dgrad is accumulated into it (D8_CONV_ACCUMULATE).
 */
function checkDgrad(
  b: ReturnType<typeof cpu>,
  label: string,
  f: ReturnType<typeof checkForwardWithBias>,
  xs: number[],
  atol: number,
  base?: Float32Array,
) {
  using dy = Tensor.from(b, f.dyv, f.ys, "f32");
  using dx = base ? Tensor.from(b, base, xs, "f32") : Tensor.empty(b, xs);
  b.conv2dDgrad(dx, dy, f.w, f.s, base !== undefined);
  const ref = convDgradRef(Float64Array.from(f.dyv), Float64Array.from(f.wv), f.s);
  const want = base ? ref.map((v, i) => v + base[i]!) : ref;
  assertClose(`dx (${label})`, dx.toFloat32(), want, dx.shape, { atol, rtol: 1e-4 });
}

// Over 1 MB of weights on maps under 16 wide: the im2col form, without the padding taps (per class
// of tap spans, kernels/cpu/conv.cpp conv_fwd_im2col_exact): a forward with bias, the dgrad added
// into dx (its gather forward with beta 1), stride 2, a batch over two chunks of compact rows
// (2048 channels) with one thread left without B panels (16 outputs), a 1x3 map and a 10x10 one.
Deno.test("conv2d with over 1 MB of weights on small maps matches the reference (exact im2col classes)", () => {
  const b = cpu();
  const cases: RefConvCase[] = [
    ["4x4 2048 -> 16, batch 11", [11, 4, 4, 2048], 16, [3, 3], { padding: 1 }],
    ["6x6 stride 2, 128 -> 256", [3, 6, 6, 128], 256, [3, 3], { stride: 2, padding: 1 }],
    ["1x3 256 -> 512", [2, 1, 3, 256], 512, [3, 3], { padding: 1 }],
    ["10x10 128 -> 256", [2, 10, 10, 128], 256, [3, 3], { padding: 1 }],
  ];
  for (const c of cases) {
    const [label, xs] = c;
    const f = checkForwardWithBias(b, c, 1e-3);
    using _w = f.w;
    checkDgrad(b, label, f, xs, 1e-3, sineVals(numel(xs), 0.29));
  }
});

// The cpu fp32 forward by exact windows (kernels/cpu/conv.cpp v4) runs each corner of the map
// as one GEMM over up to 8 images, by the thread that owns them: batches of several blocks and a
// partial last one, large enough for the exact windows' cost rule (border-column weights small
// next to the work); the stride-1 dgrad runs as that forward. Bias in the forward.
Deno.test("conv2d() and its stride-1 dgrad match the reference over blocks of images (exact windows, corners per block)", () => {
  const b = cpu();
  const cases: RefConvCase[] = [
    ["7x7 3x3 pad 1, 16 -> 32, batch 29", [29, 7, 7, 16], 32, [3, 3], { padding: 1 }],
    ["6x5 3x3 pad 1, 8 -> 16, batch 51", [51, 6, 5, 8], 16, [3, 3], { padding: 1 }],
    ["9x8 3x3 stride 2 pad 1, 16 -> 32, batch 35", [35, 9, 8, 16], 32, [3, 3], {
      stride: 2,
      padding: 1,
    }],
    ["5x5 pad 2, 16 -> 16, batch 70", [70, 6, 7, 16], 16, [5, 5], { padding: 2 }],
  ];
  for (const c of cases) {
    const [label, xs] = c;
    const f = checkForwardWithBias(b, c, 1e-4);
    using _w = f.w;
    if (f.s.strideH !== 1) continue;
    checkDgrad(b, label, f, xs, 1e-4);
  }
});

// The cpu wgrad on channels that fill whole vectors (16 or 32 here) with at least as many images
// as threads reads x in place, per column class of the taps a window has inside x, and leaves out
// the pixels whose tap row lies in the padding (kernels/cpu/conv.cpp wgrad v3): the classes of
// border columns, strides, a non-square kernel, padding past the kernel (windows without taps),
// and the three-vector tile (S*C = 48), each against the double reference.
Deno.test("conv2dWgrad() reading x in place matches the reference on border, stride and padding cases", () => {
  const b = cpu();
  const cases: RefConvCase[] = [
    ["3x3 pad 1, 16 channels", [4, 7, 6, 16], 9, [3, 3], { padding: 1 }],
    ["3x3 stride 2 pad 1, 32 channels", [3, 9, 8, 32], 20, [3, 3], { stride: 2, padding: 1 }],
    ["5x5 pad 2, 16 channels", [2, 6, 7, 16], 5, [5, 5], { padding: 2 }],
    ["3x3 pad 3 (windows without taps)", [2, 4, 5, 16], 3, [3, 3], { padding: 3 }],
    ["5x2 stride [2, 1] pad [2, 0]", [3, 9, 5, 16], 3, [5, 2], { stride: [2, 1], padding: [2, 0] }],
    ["3x3 pad 1, 48 channels", [4, 5, 5, 48], 7, [3, 3], { padding: 1 }],
  ];
  for (const [label, xs, k, ks, opts] of cases) {
    const s = convShape("test", xs, k, ks, opts);
    const dyShape = [xs[0], s.p, s.q, k];
    const xv = sineVals(numel(xs), 0.37), dyv = sineVals(numel(dyShape), 0.71);
    using x = Tensor.from(b, xv, xs, "f32");
    using dy = Tensor.from(b, dyv, dyShape, "f32");
    using dw = Tensor.empty(b, [k, ks[0], ks[1], xs[3]]);
    b.conv2dWgrad(dw, x, dy, s);
    const want = convWgradRef(Float64Array.from(xv), Float64Array.from(dyv), s);
    assertClose(`dw (${label})`, dw.toFloat32(), want, dw.shape, { atol: 1e-4, rtol: 1e-4 });
  }
});
