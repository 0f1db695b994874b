import assert from "node:assert/strict";
import {
  classifyChannel,
  clippingError,
  dClippingError,
  density,
  type Family,
  familySigma,
  fitInvertedT,
  gaussian,
  invertedT,
  laplace,
  laplaceFromSigma,
  optimalClip,
  shareAboveSigma,
} from "../src/quant/solve.ts";

// ---------------------------------------------------------------------------------------------
// Reference: E(s) by adaptive Simpson quadrature of PAPER.md's formula, taken literally.

/** Adaptive Simpson to a relative tolerance `rel` of the integral of |fn|. */
function simpson(fn: (x: number) => number, a: number, b: number, rel = 1e-14): number {
  const rec = (
    a: number,
    b: number,
    fa: number,
    fm: number,
    fb: number,
    whole: number,
    depth: number,
  ): number => {
    const m = 0.5 * (a + b);
    const lm = 0.5 * (a + m);
    const rm = 0.5 * (m + b);
    const flm = fn(lm);
    const frm = fn(rm);
    const left = ((m - a) / 6) * (fa + 4 * flm + fm);
    const right = ((b - m) / 6) * (fm + 4 * frm + fb);
    const diff = left + right - whole;
    if (depth <= 0 || Math.abs(diff) <= 15 * tol) return left + right + diff / 15;
    return rec(a, m, fa, flm, fm, left, depth - 1) + rec(m, b, fm, frm, fb, right, depth - 1);
  };
  if (!(b > a)) return 0;
  // Scale of the integral, from a fixed composite rule, for the relative tolerance.
  const n = 512;
  let scale = 0;
  for (let i = 0; i <= n; i++) {
    const weight = i === 0 || i === n ? 1 : i % 2 === 1 ? 4 : 2;
    scale += weight * Math.abs(fn(a + ((b - a) * i) / n));
  }
  const tol = Math.max(rel * scale * ((b - a) / (3 * n)), Number.MIN_VALUE);
  const fa = fn(a);
  const fb = fn(b);
  const fm = fn(0.5 * (a + b));
  return rec(a, b, fa, fm, fb, ((b - a) / 6) * (fa + 4 * fm + fb), 30);
}

/** int_lo^hi fn, split at the family's density jumps so each piece is smooth. */
function integrate(family: Family, fn: (g: number) => number, lo: number, hi: number): number {
  const cuts = family.kind === "inverted-t" ? [family.a, family.max] : [];
  const points = [lo, ...cuts.filter((c) => c > lo && c < hi), hi];
  let sum = 0;
  for (let i = 0; i + 1 < points.length; i++) {
    // Evaluate just inside each piece, so a jump's value belongs to the piece being integrated.
    const p0 = points[i]!, p1 = points[i + 1]!, eps = 1e-13 * (p1 - p0);
    sum += simpson((g) => fn(Math.min(Math.max(g, p0 + eps), p1 - eps)), p0, p1);
  }
  return sum;
}

function referenceError(family: Family, s: number, alpha: number, max: number, levels = 127) {
  const rate = alpha / familySigma(family);
  const fp = (g: number) => Math.exp(rate * g) * density(family, g);
  const head = integrate(family, fp, 0, s);
  const tail = integrate(family, (g) => (g - s) * fp(g), s, max);
  return (s / levels) * head + 2 * tail;
}

function assertClose(actual: number, expected: number, rel: number, what: string) {
  const err = Math.abs(actual - expected);
  assert.ok(
    err <= rel * Math.abs(expected),
    `${what}: got ${actual}, expected ${expected} (relative error ${err / Math.abs(expected)})`,
  );
}

/** A small seeded LCG so the "random" points are reproducible. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 4294967296;
  };
}

const unitGaussian = gaussian(1);
const unitLaplace = laplaceFromSigma(1);

// ---------------------------------------------------------------------------------------------
// PAPER.md's numbers

Deno.test("optimalClip() puts the unit Gaussian optimum at 2.87 sigma for alpha 0 and M = 4, 6, 8", () => {
  for (const max of [4, 6, 8]) {
    const r = optimalClip(unitGaussian, { alpha: 0, max });
    assert.ok(Math.abs(r.s - 2.87) <= 0.03, `M = ${max}: s = ${r.s}`);
    assert.equal(r.atMax, false);
  }
});

Deno.test("optimalClip() gives s = 3.98 (M = 4) and 5.91 (M = 6) for a unit Gaussian, alpha 4", () => {
  const r4 = optimalClip(unitGaussian, { alpha: 4, max: 4 });
  const r6 = optimalClip(unitGaussian, { alpha: 4, max: 6 });
  assert.ok(Math.abs(r4.s - 3.98) <= 0.03, `M = 4: s = ${r4.s}`);
  assert.ok(Math.abs(r6.s - 5.91) <= 0.03, `M = 6: s = ${r6.s}`);
});

Deno.test("optimalClip() moves the optimum toward max as alpha grows, for all families", () => {
  const families: Family[] = [unitGaussian, unitLaplace, fitInvertedT(1, 8)];
  for (const family of families) {
    let previous = 0;
    for (const alpha of [0, 0.5, 1, 2, 4]) {
      const { s } = optimalClip(family, { alpha, max: 8 });
      assert.ok(s > previous, `${family.kind} alpha ${alpha}: s = ${s} after ${previous}`);
      assert.ok(s < 8);
      previous = s;
    }
  }
});

Deno.test("optimalClip() gives 3.90 (alpha 0) and 7.96 (alpha 2) for a unit Laplace, M = 8", () => {
  assert.ok(Math.abs(laplace(Math.SQRT1_2).b - unitLaplace.b) < 1e-15);
  const r0 = optimalClip(unitLaplace, { alpha: 0, max: 8 });
  const r2 = optimalClip(unitLaplace, { alpha: 2, max: 8 });
  assert.ok(Math.abs(r0.s - 3.9) <= 0.05, `alpha 0: s = ${r0.s}`);
  assert.ok(Math.abs(r2.s - 7.96) <= 0.05, `alpha 2: s = ${r2.s}`);
});

Deno.test("optimalClip() never reaches max: dE/ds(max) > 0, so M - s is about M / (2L)", () => {
  const max = 6;
  const r = optimalClip(unitGaussian, { alpha: 50, max });
  assert.equal(r.atMax, false);
  assert.ok(r.s < max && max - r.s < max / 127, `s = ${r.s}`);
  assert.ok(dClippingError(unitGaussian, max, { alpha: 50, max }) > 0);
});

Deno.test("optimalClip() is a minimum of E and a zero of dE/ds, and scales with sigma", () => {
  for (const family of [gaussian(0.01), laplace(3), fitInvertedT(0.5, 5)]) {
    const sigma = familySigma(family);
    const opts = { alpha: 1.5, max: 7 * sigma, levels: 15 };
    const r = optimalClip(family, opts);
    assertClose(r.error, clippingError(family, r.s, opts), 1e-14, `${family.kind} error`);
    for (const ds of [-1e-3, 1e-3]) {
      assert.ok(clippingError(family, r.s + ds * sigma, opts) > r.error, family.kind);
    }
    // Same problem in unit sigma: the optimum divides by sigma.
    const unit: Family = family.kind === "gaussian"
      ? unitGaussian
      : family.kind === "laplace"
      ? unitLaplace
      : invertedT(family.a / sigma, family.max / sigma, family.w);
    const ru = optimalClip(unit, { ...opts, max: 7 });
    assertClose(r.s / sigma, ru.s, 1e-9, `${family.kind} scale invariance`);
  }
});

Deno.test("optimalClip() stays finite in s where E overflows a double", () => {
  const r = optimalClip(unitLaplace, { alpha: 3, max: 1000 });
  assert.ok(r.s > 990 && r.s < 1000, `s = ${r.s}`);
  assert.equal(r.error, Infinity);
  const g = optimalClip(unitGaussian, { alpha: 4, max: 1000 });
  assert.ok(Number.isFinite(g.s) && g.s > 4 && g.s < 1000, `s = ${g.s}`);
});

// ---------------------------------------------------------------------------------------------
// Closed forms against quadrature

const cases: { family: Family; max: number }[] = [
  { family: unitGaussian, max: 6 },
  { family: gaussian(2.5), max: 9 },
  { family: unitLaplace, max: 8 },
  { family: laplace(0.3), max: 4 },
  { family: invertedT(1, 8, 0.9), max: 8 },
  { family: invertedT(0.5, 3, 0.6), max: 2 }, // truncated inside the tail
  { family: invertedT(0.5, 3, 0.6), max: 4 }, // max beyond the support
  { family: fitInvertedT(1, 10), max: 10 },
];

Deno.test("clippingError() matches quadrature of PAPER.md's formula for all families", () => {
  for (const { family, max } of cases) {
    for (const alpha of [0, 0.7, 2, 4]) {
      for (const frac of [0.05, 0.2, 0.37, 0.5, 0.81, 0.999, 1]) {
        const s = frac * max;
        const got = clippingError(family, s, { alpha, max });
        const want = referenceError(family, s, alpha, max);
        assertClose(got, want, 1e-10, `${family.kind} alpha ${alpha} s ${s} M ${max}`);
      }
    }
  }
});

Deno.test("clippingError() of the inverted-T equals its piecewise integrals by quadrature", () => {
  const family = invertedT(0.8, 6, 0.85);
  const rng = lcg(7);
  for (let i = 0; i < 40; i++) {
    const s = 6 * (0.01 + 0.99 * rng());
    const alpha = 5 * rng();
    const levels = 1 + Math.floor(300 * rng());
    const got = clippingError(family, s, { alpha, max: 6, levels });
    assertClose(got, referenceError(family, s, alpha, 6, levels), 1e-11, `s ${s} alpha ${alpha}`);
  }
});

Deno.test("dClippingError() matches a central difference of E at random points", () => {
  const rng = lcg(12345);
  for (const { family, max } of cases) {
    for (let i = 0; i < 25; i++) {
      const alpha = 4 * rng();
      const levels = [1, 7, 127, 255][i % 4]!;
      const h = 1e-5 * max;
      const s = h * 2 + (max - 4 * h) * rng();
      if (family.kind === "inverted-t" && Math.abs(s - family.a) < 4 * h) continue; // the kink
      const opts = { alpha, max, levels };
      const fd = (clippingError(family, s + h, opts) - clippingError(family, s - h, opts)) /
        (2 * h);
      const d = dClippingError(family, s, opts);
      const scale = Math.abs(d) + clippingError(family, s, opts) / max;
      assert.ok(
        Math.abs(d - fd) <= 1e-6 * scale,
        `${family.kind} s ${s} alpha ${alpha}: dE/ds ${d}, difference ${fd}`,
      );
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Families and the classifier

Deno.test("fitInvertedT() reproduces the requested sigma and max", () => {
  for (const [sigma, max, tail] of [[1, 8, undefined], [0.02, 0.3, 0.005], [3, 6, 0.3]] as const) {
    const t = fitInvertedT(sigma, max, tail);
    assert.equal(t.max, max);
    const variance = 2 * integrate(t, (g) => g * g * density(t, g), 0, max);
    assertClose(Math.sqrt(variance), sigma, 1e-10, `sigma ${sigma} max ${max}`);
    assertClose(familySigma(t), sigma, 1e-12, "familySigma");
    const mass = 2 * integrate(t, (g) => density(t, g), 0, max);
    assertClose(mass, 1, 1e-12, "mass");
    if (tail !== undefined) assertClose(1 - t.w, tail, 1e-12, "tailShare");
    assert.ok(density(t, 0) > density(t, max), "h1 > h2");
  }
});

Deno.test("classifyChannel() calls a Gaussian (0.317) bell and a Laplace (0.243) inverted-t", () => {
  assert.equal(classifyChannel(0.317), "bell");
  assert.equal(classifyChannel(0.243), "inverted-t");
  assert.equal(classifyChannel(0.3), "inverted-t");
  assert.equal(classifyChannel(0.25, 0.2), "bell");
  assertClose(shareAboveSigma(gaussian(4)), 0.31731050786291415, 1e-14, "Gaussian share");
  assertClose(shareAboveSigma(laplace(2)), Math.exp(-Math.SQRT2), 1e-15, "Laplace share");
  assert.equal(classifyChannel(shareAboveSigma(unitGaussian)), "bell");
  assert.equal(classifyChannel(shareAboveSigma(unitLaplace)), "inverted-t");
  const t = fitInvertedT(1, 8);
  const share = 2 * integrate(t, (g) => density(t, g), 1, 8);
  assertClose(shareAboveSigma(t), share, 1e-12, "inverted-T share");
  assert.equal(classifyChannel(shareAboveSigma(t)), "inverted-t");
});

Deno.test("solve functions throw RangeError naming the bad value", () => {
  const opts = { alpha: 0, max: 8 };
  const cases: [() => unknown, RegExp][] = [
    [() => gaussian(0), /^Cannot build a Gaussian family: sigma must .* got 0$/],
    [() => gaussian(NaN), /sigma must be a finite number > 0, got NaN/],
    [() => laplace(-1), /^Cannot build a Laplace family: b must .* got -1$/],
    [() => laplaceFromSigma(Infinity), /sigma must be a finite number > 0, got Infinity/],
    [() => invertedT(8, 8, 0.9), /a must be < max \(8\), got 8/],
    [() => invertedT(1, 8, 1), /w must be a number in \(0, 1\), got 1/],
    [() => invertedT(1, 8, 0), /w must be a number in \(0, 1\), got 0/],
    [() => invertedT(4, 8, 0.4), /w must exceed a\/max \(0\.5\) .* got 0\.4/],
    [() => invertedT(1, -8, 0.9), /max must be a finite number > 0, got -8/],
    [() => fitInvertedT(5, 8), /sigma must be < max \/ sqrt\(3\) .* got 5/],
    [() => fitInvertedT(1, 8, 0.5), /tailShare must be .* got 0\.5/],
    [() => fitInvertedT(1, 0), /max must be a finite number > 0, got 0/],
    [
      () => clippingError(unitGaussian, 1, { alpha: -1, max: 8 }),
      /^Cannot solve clipping: alpha must be a finite number >= 0, got -1$/,
    ],
    [() => optimalClip(unitGaussian, { alpha: NaN, max: 8 }), /alpha .* got NaN/],
    [() => clippingError(unitGaussian, 0, opts), /s must be a number in \(0, max = 8\], got 0/],
    [() => dClippingError(unitGaussian, 9, opts), /s must be .* got 9/],
    [() => clippingError(unitGaussian, 1, { alpha: 0, max: 0 }), /max must .* got 0/],
    [() => optimalClip(unitGaussian, { ...opts, levels: 1.5 }), /levels must be .* got 1\.5/],
    [() => optimalClip(unitGaussian, { ...opts, levels: 0 }), /levels must be .* got 0/],
    [
      () => optimalClip({ kind: "laplace", b: -2 }, opts),
      /^Cannot solve clipping: b must be a finite number > 0, got -2$/,
    ],
    [
      () => optimalClip({ kind: "inverted-t", a: 1, max: 8, w: 0.1 }, opts),
      /^Cannot solve clipping: w must exceed a\/max/,
    ],
    [() => classifyChannel(1.2), /shareAboveSigma must be .* got 1\.2/],
    [() => classifyChannel(0.3, -0.1), /lambda must be .* got -0\.1/],
  ];
  for (const [fn, message] of cases) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof RangeError, `not a RangeError: ${String(e)}`);
      assert.match(e.message, message);
      return true;
    });
  }
  assert.throws(
    () => optimalClip({ kind: "uniform" } as unknown as Family, opts),
    TypeError,
  );
});
