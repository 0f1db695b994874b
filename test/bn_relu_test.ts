/**
 * The fused batch norm + (residual add) + ReLU of the cpu backend against the three ops it
 * replaces, on layer-sized tensors (several threads, the vector mask paths, row chunks): the same
 * outputs, mask bytes, statistics and gradients, bit for bit; and its argument errors.
 */
import assert from "node:assert/strict";
import type { BatchNormState } from "../src/backend/backend.ts";
import { Rng } from "../src/data/rng.ts";
import { Tensor } from "../src/tensor.ts";
import { cpu, randomArray } from "./helpers/check_op.ts";

const b = cpu();

function tensor(data: Float64Array, shape: number[]): Tensor {
  return Tensor.from(b, Float32Array.from(data), shape, "f32");
}

function state(rng: Rng, c: number): BatchNormState {
  return {
    gamma: tensor(randomArray(rng, c).map((v) => 1 + 0.5 * v), [c]),
    beta: tensor(randomArray(rng, c, 0.3), [c]),
    runningMean: tensor(randomArray(rng, c, 0.1), [c]),
    runningVar: tensor(randomArray(rng, c).map((v) => 1 + 0.5 * v), [c]),
  };
}

async function read(t: Tensor): Promise<Float32Array | Uint8Array> {
  return (await t.read()) as Float32Array | Uint8Array;
}

/** The fused forward and backward on x [m, c] (residual r when given; cap: ReLU6's bound). */
function fused(
  x: Tensor,
  r: Tensor | null,
  dy: Tensor,
  st: BatchNormState,
  m: number,
  c: number,
  cap?: number,
) {
  const t = (sh: number[] = [...x.shape]) => Tensor.empty(b, sh);
  const y = t(), mask = Tensor.empty(b, [Math.ceil((m * c) / 8)], "u8"), mean = t([c]);
  const is = t([c]);
  b.batchNormReluTrain(y, mask, mean, is, x, r, st, m, c, 0.1, 1e-5, cap);
  const dx = t(), dg = t([c]), db = t([c]), dr = r ? t() : null;
  b.batchNormReluBackward(dx, dr, dg, db, dy, mask, x, st.gamma, mean, is, m, c);
  return { y, mask, mean, is, dx, dg, db, dr };
}

/** Each pair bit for bit equal, failing with its name. */
async function assertSame(pairs: [string, Tensor, Tensor][]): Promise<void> {
  for (const [name, f, cc] of pairs) {
    assert.deepEqual(await read(f), await read(cc), `${name} differs`);
  }
}

for (
  const [shape, residual] of [
    [[4, 32, 32, 20], true],
    [[16, 16, 16, 24], false],
    [[2, 33, 33, 3], true],
    [[8, 28, 28, 16], true],
  ] as const
) {
  Deno.test(`batchNormReluTrain/Backward equal bn + add + reluMask bit for bit: [${shape}]${residual ? " + residual" : ""}`, async () => {
    const rng = new Rng(7);
    const c = shape.at(-1)!;
    const n = shape.reduce((a, v) => a * v, 1), m = n / c;
    const x = tensor(randomArray(rng, n, 2).map((v) => v + 0.5), [...shape]);
    const r = residual ? tensor(randomArray(rng, n), [...shape]) : null;
    const dy = tensor(randomArray(rng, n), [...shape]);
    const sf = state(rng, c);
    const copy = async (v: Tensor) => Tensor.from(b, (await read(v)) as Float32Array, [c], "f32");
    const sc = {
      gamma: sf.gamma,
      beta: sf.beta,
      runningMean: await copy(sf.runningMean),
      runningVar: await copy(sf.runningVar),
    };
    const t = (sh: number[] = [...shape]) => Tensor.empty(b, sh);
    const { y: yF, mask: maskF, mean: meanF, is: isF, dx: dxF, dg: dgF, db: dbF, dr: drF } = fused(
      x,
      r,
      dy,
      sf,
      m,
      c,
    );
    // composed
    const pre = t(), yC = t(), maskC = Tensor.empty(b, [Math.ceil(n / 8)], "u8");
    const meanC = t([c]), isC = t([c]);
    b.batchNormTrain(pre, meanC, isC, x, sc, m, c, 0.1, 1e-5);
    if (r) b.add(pre, pre, r);
    b.reluMask(yC, maskC, pre);
    const g = t(), dxC = t(), dgC = t([c]), dbC = t([c]);
    b.reluMaskBackward(g, dy, maskC);
    b.batchNormBackward(dxC, dgC, dbC, g, x, sf.gamma, meanC, isC, m, c);
    const pairs: [string, Tensor, Tensor][] = [
      ["y", yF, yC],
      ["mask", maskF, maskC],
      ["save_mean", meanF, meanC],
      ["save_invstd", isF, isC],
      ["running_mean", sf.runningMean, sc.runningMean],
      ["running_var", sf.runningVar, sc.runningVar],
      ["dx", dxF, dxC],
      ["dgamma", dgF, dgC],
      ["dbeta", dbF, dbC],
    ];
    if (drF) pairs.push(["dresidual", drF, g]);
    await assertSame(pairs);
    // some outputs are zero, some are not: the ReLU is exercised both ways
    const y = (await read(yF)) as Float32Array;
    const zeros = y.filter((v) => v === 0).length;
    assert.ok(zeros > n / 10 && zeros < n * 0.9, `${zeros} of ${n} outputs are 0`);
    for (
      const tt of [
        x,
        r,
        dy,
        sf.gamma,
        sf.beta,
        sf.runningMean,
        sf.runningVar,
        sc.runningMean,
        sc.runningVar,
        yF,
        maskF,
        meanF,
        isF,
        dxF,
        dgF,
        dbF,
        drF,
        pre,
        yC,
        maskC,
        meanC,
        isC,
        g,
        dxC,
        dgC,
        dbC,
      ]
    ) tt?.dispose();
  });
}

Deno.test("batchNormReluTrain/Backward reject aliased and short buffers by name", () => {
  const rng = new Rng(3);
  const shape = [2, 4, 4, 3], n = 96, m = 32, c = 3;
  const x = tensor(randomArray(rng, n), shape), r = tensor(randomArray(rng, n), shape);
  const st = state(rng, c);
  const mean = Tensor.empty(b, [c]), is = Tensor.empty(b, [c]);
  const mask = Tensor.empty(b, [12], "u8"), short = Tensor.empty(b, [11], "u8");
  const y = Tensor.empty(b, shape);
  assert.throws(
    () => b.batchNormReluTrain(r, mask, mean, is, x, r, st, m, c, 0.1, 1e-5),
    /d8_batchnorm_relu_fwd_train: y must not be the same buffer as residual/,
  );
  assert.throws(
    () => b.batchNormReluTrain(y, short, mean, is, x, r, st, m, c, 0.1, 1e-5),
    /d8_batchnorm_relu_fwd_train: .*mask/,
  );
  b.batchNormReluTrain(y, mask, mean, is, x, r, st, m, c, 0.1, 1e-5);
  const dx = Tensor.empty(b, shape), dg = Tensor.empty(b, [c]), db = Tensor.empty(b, [c]);
  assert.throws(
    () => b.batchNormReluBackward(dx, dx, dg, db, y, mask, x, st.gamma, mean, is, m, c),
    /d8_batchnorm_relu_bwd: dresidual must not be the same buffer as dx or x/,
  );
  assert.throws(
    () => b.batchNormReluBackward(dx, null, dg, db, y, short, x, st.gamma, mean, is, m, c),
    /d8_batchnorm_relu_bwd: .*mask/,
  );
  for (const t of [x, r, mean, is, mask, short, y, dx, dg, db, ...Object.values(st)]) t.dispose();
});

for (const [shape, residual] of [[[8, 12, 12, 16], false], [[4, 10, 10, 24], true]] as const) {
  Deno.test(`batchNormReluTrain/Backward with cap 6 equal bn + add + relu6 bit for bit: [${shape}]${residual ? " + residual" : ""}`, async () => {
    const rng = new Rng(11);
    const c = shape.at(-1)!;
    const n = shape.reduce((a, v) => a * v, 1), m = n / c;
    const x = tensor(randomArray(rng, n, 2).map((v) => v + 0.5), [...shape]);
    const r = residual ? tensor(randomArray(rng, n, 3), [...shape]) : null;
    const dy = tensor(randomArray(rng, n), [...shape]);
    // gamma up to 8: outputs above 6 as well as below 0
    const sf = {
      gamma: tensor(randomArray(rng, c, 8), [c]),
      beta: tensor(randomArray(rng, c, 3), [c]),
      runningMean: Tensor.full(b, [c], 0),
      runningVar: Tensor.full(b, [c], 1),
    };
    const sc = { ...sf, runningMean: Tensor.full(b, [c], 0), runningVar: Tensor.full(b, [c], 1) };
    const t = (sh: number[] = [...shape]) => Tensor.empty(b, sh);
    const { y: yF, dx: dxF, dg: dgF, db: dbF, dr: drF } = fused(x, r, dy, sf, m, c, 6);
    // composed: bn, add, relu6 and its backward from the output
    const pre = t(), yC = t(), meanC = t([c]), isC = t([c]);
    b.batchNormTrain(pre, meanC, isC, x, sc, m, c, 0.1, 1e-5);
    if (r) b.add(pre, pre, r);
    b.relu6(yC, pre);
    const g = t(), dxC = t(), dgC = t([c]), dbC = t([c]);
    b.relu6Backward(g, dy, yC);
    b.batchNormBackward(dxC, dgC, dbC, g, x, sf.gamma, meanC, isC, m, c);
    const pairs: [string, Tensor, Tensor][] = [
      ["y", yF, yC],
      ["dx", dxF, dxC],
      ["dgamma", dgF, dgC],
      ["dbeta", dbF, dbC],
      ["running_var", sf.runningVar, sc.runningVar],
    ];
    if (drF) pairs.push(["dresidual", drF, g]);
    await assertSame(pairs);
    const y = (await read(yF)) as Float32Array;
    const zeros = y.filter((v) => v === 0).length, sixes = y.filter((v) => v === 6).length;
    assert.ok(zeros > n / 20 && sixes > n / 20, `${zeros} zeros and ${sixes} sixes of ${n}`);
  });
}

Deno.test("batchNormReluTrain refuses a cap that is negative or not finite", () => {
  const c = 4, m = 8;
  const t = (sh: number[]) => Tensor.empty(b, sh);
  const st = {
    gamma: Tensor.full(b, [c], 1),
    beta: Tensor.full(b, [c], 0),
    runningMean: Tensor.full(b, [c], 0),
    runningVar: Tensor.full(b, [c], 1),
  };
  const x = Tensor.full(b, [m, c], 1);
  for (const cap of [-1, Infinity, NaN]) {
    assert.throws(
      () =>
        b.batchNormReluTrain(
          t([m, c]),
          Tensor.empty(b, [4], "u8"),
          t([c]),
          t([c]),
          x,
          null,
          st,
          m,
          c,
          0.1,
          1e-5,
          cap,
        ),
      /cap must be 0 \(ReLU\) or a finite clamp > 0/,
    );
  }
});

// The backward's sums (cpu: float partials over a few rows, added in double) against an f64
// reference, with a mean far from zero (x = 1000 + noise: x - mean must not lose the noise) and
// with channel counts on both cpu paths (16-channel blocks, and 20).
for (const c of [16, 32, 20]) {
  Deno.test(`batchNormBackward matches an f64 reference with a large mean: ${c} channels`, async () => {
    const rng = new Rng(11);
    const m = 4099, n = m * c;
    const xs = randomArray(rng, n, 0.5).map((v) => 1000 + v);
    const dys = randomArray(rng, n);
    const gs = randomArray(rng, c).map((v) => 1 + 0.5 * v);
    const x = tensor(xs, [m, c]), dy = tensor(dys, [m, c]);
    const st = state(rng, c);
    st.gamma.dispose();
    st.gamma = tensor(gs, [c]);
    const y = Tensor.empty(b, [m, c]), mean = Tensor.empty(b, [c]), istd = Tensor.empty(b, [c]);
    const eps = 1e-5;
    b.batchNormTrain(y, mean, istd, x, st, m, c, 0.1, eps);
    const dx = Tensor.empty(b, [m, c]), dg = Tensor.empty(b, [c]), db = Tensor.empty(b, [c]);
    b.batchNormBackward(dx, dg, db, dy, x, st.gamma, mean, istd, m, c);
    const gotDx = (await read(dx)) as Float32Array;
    const gotDg = (await read(dg)) as Float32Array;
    const gotDb = (await read(db)) as Float32Array;
    // the reference from the float inputs, in f64
    const xf = Float32Array.from(xs), dyf = Float32Array.from(dys), gf = Float32Array.from(gs);
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += xf[i * c + j]!;
      const mu = s / m;
      let v = 0;
      for (let i = 0; i < m; i++) v += (xf[i * c + j]! - mu) ** 2;
      const is = 1 / Math.sqrt(v / m + eps);
      let sdy = 0, sdyx = 0;
      for (let i = 0; i < m; i++) {
        sdy += dyf[i * c + j]!;
        sdyx += dyf[i * c + j]! * (xf[i * c + j]! - mu) * is;
      }
      const close = (got: number, want: number, scale: number, what: string) =>
        assert.ok(Math.abs(got - want) <= 2e-4 * scale, `${what}, channel ${j}: ${got} vs ${want}`);
      close(gotDb[j]!, sdy, 0.5, "dbeta"); // (sums of ~64: float rounding 4e-6)
      close(gotDg[j]!, sdyx, 0.5, "dgamma");
      for (let i = 0; i < m; i += 97) {
        const xh = (xf[i * c + j]! - mu) * is;
        const want = (gf[j]! * is / m) * (m * dyf[i * c + j]! - sdy - xh * sdyx);
        close(gotDx[i * c + j]!, want, gf[j]! * is, `dx row ${i}`);
      }
    }
    for (
      const t of [
        x,
        dy,
        y,
        mean,
        istd,
        dx,
        dg,
        db,
        st.gamma,
        st.beta,
        st.runningMean,
        st.runningVar,
      ]
    ) {
      t.dispose();
    }
  });
}
