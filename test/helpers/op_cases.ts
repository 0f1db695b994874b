/**
 * The op test cases of test/ops_test.ts, for any backend: every layer op's forward against a
 * double-precision naive reference and its backward against finite differences of it
 * (test/helpers/check_op.ts; a backend other than cpu is also compared with cpu).
 *
 * @module
 */
import type { Backend } from "../../src/backend/backend.ts";
import { checkOp as check, type OpCase } from "./check_op.ts";
import { batchNormRef, convRef, crossEntropyRef, linearRef, poolRef } from "./reference.ts";
import { conv2d, type Conv2dOptions, convShape, linear } from "../../src/ops/conv.ts";
import { add, concatChannels, flatten, relu } from "../../src/ops/elementwise.ts";
import { batchNorm, batchNormRelu } from "../../src/ops/norm.ts";
import { avgPool2d, globalAvgPool, maxPool2d } from "../../src/ops/pool.ts";
import { softmaxCrossEntropy } from "../../src/ops/loss.ts";
import { Rng } from "../../src/data/rng.ts";
import { Tensor } from "../../src/tensor.ts";

interface ConvCase {
  name: string;
  x: [number, number, number, number];
  k: number;
  kernel: [number, number];
  opts: Conv2dOptions;
  bias?: boolean;
}

const convCases: ConvCase[] = [
  { name: "3x3, padding 1", x: [2, 5, 6, 3], k: 4, kernel: [3, 3], opts: { padding: 1 } },
  {
    name: "stride 2, padding 1",
    x: [2, 7, 7, 4],
    k: 5,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
  },
  {
    name: "non-square 1x3 kernel",
    x: [1, 4, 6, 3],
    k: 2,
    kernel: [1, 3],
    opts: { padding: [0, 1] },
  },
  {
    name: "non-square 5x2 kernel, stride [2, 1]",
    x: [2, 9, 5, 2],
    k: 3,
    kernel: [5, 2],
    opts: { stride: [2, 1], padding: [2, 0] },
  },
  { name: "groups 2", x: [2, 5, 5, 4], k: 6, kernel: [3, 3], opts: { padding: 1, groups: 2 } },
  {
    name: "depthwise",
    x: [2, 6, 6, 5],
    k: 5,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1, groups: 5 },
  },
  {
    name: "depthwise 5x5 with bias, odd size",
    x: [2, 9, 7, 4],
    k: 4,
    kernel: [5, 5],
    opts: { padding: 2, groups: 4 },
    bias: true,
  },
  {
    name: "depthwise 3x3 stride 2, 12 channels",
    x: [2, 9, 7, 12],
    k: 12,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1, groups: 12 },
  },
  { name: "batch 1, 1x1 with bias", x: [1, 4, 4, 6], k: 7, kernel: [1, 1], opts: {}, bias: true },
  {
    name: "5x5 with bias (LeNet conv1)",
    x: [3, 8, 8, 1],
    k: 6,
    kernel: [5, 5],
    opts: { padding: 2 },
    bias: true,
  },
  { name: "1x1 stride 2 (downsample)", x: [2, 6, 6, 3], k: 4, kernel: [1, 1], opts: { stride: 2 } },
  // S*C = 48 and 24 taps per kernel row: the cpu wgrad's three-vector tiles (AVX-512 / AVX2)
  {
    name: "3x3, 16 channels, 9 filters",
    x: [1, 3, 4, 16],
    k: 9,
    kernel: [3, 3],
    opts: { padding: 1 },
  },
  { name: "3x3, 8 channels", x: [2, 4, 5, 8], k: 5, kernel: [3, 3], opts: { padding: 1 } },
  // >= 70% interior outputs, rows >= 8 wide: the cpu fprop without a padded copy (conv.cpp v3)
  {
    name: "3x3 pad 1 on 14x14 with bias",
    x: [1, 14, 14, 4],
    k: 5,
    kernel: [3, 3],
    opts: { padding: 1 },
    bias: true,
  },
  // 1-4 input channels, at most 16 filters, stride 1: the cpu's direct stem fprop (conv.cpp),
  // rows of 20 and 18 output pixels (a full and a partial block of 16)
  {
    name: "stem 3x3, 1 channel, 20 wide",
    x: [2, 4, 20, 1],
    k: 6,
    kernel: [3, 3],
    opts: { padding: 1 },
  },
  {
    name: "stem 5x5, 3 channels, 18 wide, bias",
    x: [1, 5, 18, 3],
    k: 15,
    kernel: [5, 5],
    opts: { padding: 2 },
    bias: true,
  },
  // the cpu fprop with exact windows (conv.cpp v4): four border columns with different tap
  // spans, border rows; and padding past the kernel (outputs with no taps)
  {
    name: "5x5 pad 2 on 6x7, 4 channels, 9 filters",
    x: [1, 6, 7, 4],
    k: 9,
    kernel: [5, 5],
    opts: { padding: 2 },
    bias: true,
  },
  {
    name: "3x3 pad 3 (outputs without taps)",
    x: [1, 4, 5, 4],
    k: 5,
    kernel: [3, 3],
    opts: { padding: 3 },
    bias: true,
  },
  // 16 input channels at stride 2: the cpu's by-phase dgrad (fewer channels scatter, conv.cpp)
  {
    name: "3x3 stride 2, 16 channels (dgrad by phase)",
    x: [1, 6, 7, 16],
    k: 4,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1 },
  },
  {
    name: "3x3 stride 2 on 20x20, groups 2",
    x: [1, 20, 20, 4],
    k: 6,
    kernel: [3, 3],
    opts: { stride: 2, padding: 1, groups: 2 },
  },
];

/**
 * Registers every op test on the backend `backend()` returns, each name prefixed with `prefix`;
 * `ignore` skips them all (no device).
 */
export function defineOpTests(prefix: string, backend: () => Backend, ignore = false): void {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({ name: `${prefix}${name}`, ignore, fn });
  const checkOp = (c: OpCase) => check(c, backend());
  for (const cc of convCases) {
    test(`conv2d() matches the reference and finite differences: ${cc.name}`, async () => {
      const g = cc.opts.groups ?? 1;
      const shape = convShape("test", cc.x, cc.k, cc.kernel, cc.opts);
      const inputs: Record<string, number[]> = {
        x: cc.x,
        w: [cc.k, cc.kernel[0], cc.kernel[1], cc.x[3] / g],
      };
      if (cc.bias) inputs.b = [cc.k];
      await checkOp({
        inputs,
        native: (tape, t) => conv2d(tape, t.x!, t.w!, t.b ?? null, cc.opts),
        reference: (a) => convRef(a.x!, a.w!, a.b ?? null, shape),
      });
    });
    // x read by two convs: the tape hands the first conv's dgrad the gradient x already has from
    // the second, and the dgrad adds into it (accumulate) instead of a separate add
    test(`conv2d() adds its input gradient into x's other gradient: ${cc.name}`, async () => {
      const shape = convShape("test", cc.x, cc.k, cc.kernel, cc.opts);
      const wShape = [cc.k, cc.kernel[0], cc.kernel[1], cc.x[3] / (cc.opts.groups ?? 1)];
      await checkOp({
        inputs: { x: cc.x, w: wShape, w2: wShape },
        native: (tape, t) =>
          add(
            tape,
            conv2d(tape, t.x!, t.w!, null, cc.opts),
            conv2d(tape, t.x!, t.w2!, null, cc.opts),
          ),
        reference: (a) => {
          const y = convRef(a.x!, a.w!, null, shape), y2 = convRef(a.x!, a.w2!, null, shape);
          return y.map((v, i) => v + y2[i]!);
        },
      });
    });
  }

  // Forward only (too large for finite differences): [label, x (NHWC), filters]; 3x3, padding 1.
  // [label, x (NHWC), filters, kernel, padding]
  const largeConvs: [string, [number, number, number, number], number, number, number][] = [
    // ResNet-like 3x3 layer with enough channels to exercise the blocked GEMM edges
    ["a larger random layer", [3, 10, 9, 19], 37, 3, 1],
    // 12 outputs (the cpu pairs tile), K = 3*3*150 = 1350: six K blocks of even length
    ["a reduction over several K blocks", [2, 5, 4, 150], 12, 3, 1],
    // 40 filters: three 16-column B panels, whose border runs start inside each panel (cpu v4)
    ["5x5 pad 2 with three B panels", [2, 9, 11, 7], 40, 5, 2],
  ];
  for (const [label, x, k, ks, pad] of largeConvs) {
    test(`conv2d() matches the naive reference on ${label} (forward)`, async () => {
      const opts = { stride: 1, padding: pad };
      const shape = convShape("test", x, k, ks, opts);
      await checkOp({
        inputs: { x, w: [k, ks, ks, x[3]] },
        grad: [],
        native: (tape, t) => conv2d(tape, t.x!, t.w!, null, opts),
        reference: (a) => convRef(a.x!, a.w!, null, shape),
        fwdTol: { atol: 1e-4, rtol: 1e-4 },
      });
    });
  }

  for (const [m, n, k] of [[1, 3, 5], [4, 10, 20], [17, 33, 65]] as const) {
    test(`linear() matches the reference and finite differences: ${m}x${k} -> ${n}`, async () => {
      await checkOp({
        inputs: { x: [m, k], w: [n, k], b: [n] },
        native: (tape, t) => linear(tape, t.x!, t.w!, t.b!),
        reference: (a) => linearRef(a.x!, a.w!, a.b!, m, n, k),
        gradTol: { atol: 5e-4, rtol: 3e-3 },
      });
    });
  }

  for (
    const [shape, label] of [
      [[2, 3, 4, 5], "NHWC"],
      [[1, 1, 3, 2], "batch 1"],
      [[6, 7], "2-D"],
      [[2, 3, 3, 32], "32 channels (the cpu backend's 16-channel blocks)"],
    ] as const
  ) {
    test(`batchNorm() in training mode matches the reference and finite differences: ${label}`, async () => {
      const c = shape.at(-1)!;
      const m = (shape as readonly number[]).reduce((a, b) => a * b, 1) / c;
      await checkOp({
        inputs: { x: [...shape], gamma: [c], beta: [c] },
        native: (tape, t) => {
          const state = {
            gamma: t.gamma!,
            beta: t.beta!,
            runningMean: tape.own(Tensor.full(tape.backend, [c], 0)),
            runningVar: tape.own(Tensor.full(tape.backend, [c], 1)),
          };
          return batchNorm(tape, t.x!, state, { training: true });
        },
        reference: (a) => batchNormRef(a.x!, a.gamma!, a.beta!, m, c),
        gradTol: { atol: 1e-3, rtol: 5e-3 },
      });
    });
  }

  // The fused relu(bn(x) + residual): odd channel counts put mask bytes across rows (c = 3, 5)
  // and row counts that are no multiple of 8 leave a partial last byte. With relu6 (MobileNetV2's
  // min(max(., 0), 6)) gamma is scaled so that outputs reach past 6 as well as below 0.
  for (
    const [shape, res, act] of [
      [[2, 3, 4, 5], false, "relu"],
      [[3, 3, 3, 3], true, "relu"],
      [[1, 4, 5, 16], true, "relu"],
      [[2, 2, 3, 48], false, "relu"],
      [[5, 7], false, "relu"],
      [[2, 3, 4, 5], false, "relu6"],
      [[2, 2, 3, 16], true, "relu6"],
    ] as const
  ) {
    const c = shape.at(-1)!;
    const m = (shape as readonly number[]).reduce((a, b) => a * b, 1) / c;
    const cap = act === "relu6" ? 6 : Infinity;
    const label = `[${shape.join(", ")}]${res ? " + residual" : ""}`;
    const what = act === "relu6" ? "batchNormRelu() with relu6" : "batchNormRelu()";
    test(`${what} in training mode matches the reference and finite differences: ${label}`, async () => {
      const inputs: Record<string, number[]> = { x: [...shape], gamma: [c], beta: [c] };
      if (res) inputs.r = [...shape];
      await checkOp({
        inputs,
        ...(act === "relu6" ? { scale: { gamma: 8, beta: 3 } } : {}),
        native: (tape, t) => {
          const state = {
            gamma: t.gamma!,
            beta: t.beta!,
            runningMean: tape.own(Tensor.full(tape.backend, [c], 0)),
            runningVar: tape.own(Tensor.full(tape.backend, [c], 1)),
          };
          return batchNormRelu(tape, t.x!, state, { training: true }, t.r ?? null, act);
        },
        reference: (a) =>
          batchNormRef(a.x!, a.gamma!, a.beta!, m, c).map((v, i) =>
            Math.min(Math.max(v + (a.r ? a.r[i]! : 0), 0), cap)
          ),
        gradTol: { atol: 1e-3, rtol: 5e-3 },
      });
    });
  }

  test("relu() matches the reference and finite differences", async () => {
    await checkOp({
      inputs: { x: [2, 3, 3, 4] },
      native: (tape, t) => relu(tape, t.x!),
      reference: (a) => a.x!.map((v) => Math.max(v, 0)),
    });
  });

  test("add() and flatten() pass gradients to both inputs", async () => {
    await checkOp({
      inputs: { a: [2, 2, 3, 2], b: [2, 2, 3, 2] },
      native: (tape, t) => flatten(tape, add(tape, t.a!, t.b!)),
      reference: (a) => a.a!.map((v, i) => v + a.b![i]!),
    });
  });

  test("concatChannels() matches the reference and finite differences", async () => {
    await checkOp({
      inputs: { a: [2, 3, 2, 3], b: [2, 3, 2, 5] },
      native: (tape, t) => concatChannels(tape, t.a!, t.b!),
      reference: (a) => {
        const rows = 12, out = new Float64Array(rows * 8);
        for (let i = 0; i < rows; i++) {
          for (let j = 0; j < 3; j++) out[i * 8 + j] = a.a![i * 3 + j]!;
          for (let j = 0; j < 5; j++) out[i * 8 + 3 + j] = a.b![i * 5 + j]!;
        }
        return out;
      },
    });
  });

  for (
    const [kind, x, kernel, opts] of [
      ["max", [2, 6, 6, 3], 2, {}],
      ["max", [1, 7, 5, 2], 3, { stride: 2, padding: 1 }],
      ["avg", [2, 6, 6, 3], 2, {}],
      ["avg", [2, 5, 7, 2], 3, { stride: [2, 1], padding: 1 }],
    ] as const
  ) {
    test(`${kind} pool matches the reference and finite differences: ${JSON.stringify(opts)}`, async () => {
      const shape = convShape("test", x, x[3], kernel, {
        stride: "stride" in opts ? opts.stride : kernel,
        padding: "padding" in opts ? opts.padding : 0,
        groups: x[3],
      });
      await checkOp({
        inputs: { x: [...x] },
        native: (tape, t) =>
          kind === "max"
            ? maxPool2d(tape, t.x!, kernel, opts)
            : avgPool2d(tape, t.x!, kernel, opts),
        reference: (a) => poolRef(a.x!, shape, kind),
      });
    });
  }

  test("globalAvgPool() matches the reference and finite differences", async () => {
    await checkOp({
      inputs: { x: [3, 4, 5, 6] },
      native: (tape, t) => globalAvgPool(tape, t.x!),
      reference: (a) => {
        const y = new Float64Array(3 * 6);
        for (let n = 0; n < 3; n++) {
          for (let i = 0; i < 20; i++) {
            for (let c = 0; c < 6; c++) y[n * 6 + c]! += a.x![(n * 20 + i) * 6 + c]! / 20;
          }
        }
        return y;
      },
    });
  });

  test("softmaxCrossEntropy() matches the reference and finite differences", async () => {
    const n = 5, classes = 7;
    const labels = new Int32Array(n);
    const rng = new Rng(3);
    for (let i = 0; i < n; i++) labels[i] = rng.int(classes);
    await checkOp({
      inputs: { logits: [n, classes] },
      scale: { logits: 3 },
      native: (tape, t) => {
        const y = tape.own(Tensor.from(tape.backend, labels, [n], "i32"));
        // Only the loss (element 0) is differentiable: the reference returns [loss, 0 * correct].
        return softmaxCrossEntropy(tape, t.logits!, y).loss;
      },
      reference: (a) => {
        const loss = crossEntropyRef(a.logits!, labels, n, classes);
        let correct = 0;
        for (let i = 0; i < n; i++) {
          let best = 0;
          for (let j = 1; j < classes; j++) {
            if (a.logits![i * classes + j]! > a.logits![i * classes + best]!) best = j;
          }
          if (best === labels[i]) correct++;
        }
        return Float64Array.of(loss, correct);
      },
    });
  });

  test("conv2d(), max/avg pool and batchNorm() on seeded random shapes match reference and FD", async () => {
    const rng = new Rng(2024);
    const pick = (lo: number, hi: number) => lo + rng.int(hi - lo + 1);
    for (let trial = 0; trial < 8; trial++) {
      const groups = pick(1, 3);
      const c = groups * pick(1, 3), k = groups * pick(1, 3);
      const r = pick(1, 4), s = pick(1, 4);
      const opts = {
        stride: [pick(1, 2), pick(1, 2)] as [number, number],
        padding: [pick(0, r - 1), pick(0, s - 1)] as [number, number],
        groups,
      };
      const x: [number, number, number, number] = [pick(1, 3), pick(r, 8), pick(s, 8), c];
      const shape = convShape("test", x, k, [r, s], opts);
      const what = `trial ${trial}: x [${x}], w [${k}, ${r}, ${s}, ${c / groups}], ${
        JSON.stringify(opts)
      }`;
      try {
        await checkOp({
          seed: trial,
          inputs: { x, w: [k, r, s, c / groups], b: [k] },
          native: (tape, t) => conv2d(tape, t.x!, t.w!, t.b!, opts),
          reference: (a) => convRef(a.x!, a.w!, a.b!, shape),
        });
        const pk: [number, number] = [pick(1, Math.min(3, x[1])), pick(1, Math.min(3, x[2]))];
        const popts = { stride: [pick(1, 2), pick(1, 2)] as [number, number], padding: 0 };
        const ps = convShape("test", x, c, pk, { ...popts, groups: c });
        for (const kind of ["max", "avg"] as const) {
          await checkOp({
            seed: 100 + trial,
            inputs: { x },
            native: (tape, t) =>
              kind === "max" ? maxPool2d(tape, t.x!, pk, popts) : avgPool2d(tape, t.x!, pk, popts),
            reference: (a) => poolRef(a.x!, ps, kind),
          });
        }
        const m = x[0] * x[1] * x[2];
        if (m >= 2) {
          await checkOp({
            seed: 200 + trial,
            inputs: { x, gamma: [c], beta: [c] },
            native: (tape, t) =>
              batchNorm(tape, t.x!, {
                gamma: t.gamma!,
                beta: t.beta!,
                runningMean: tape.own(Tensor.full(tape.backend, [c], 0)),
                runningVar: tape.own(Tensor.full(tape.backend, [c], 1)),
              }, { training: true }),
            reference: (a) => batchNormRef(a.x!, a.gamma!, a.beta!, m, c),
            gradTol: { atol: 1e-3, rtol: 5e-3 },
          });
        }
      } catch (e) {
        throw new Error(`${what}: ${(e as Error).message}`);
      }
    }
  });
}
