/**
 * `deno task analyze` and its report pieces: the error function, exact KS distances, histograms,
 * the SVG/HTML builder, and an end-to-end run on a few MNIST images.
 */
import assert from "node:assert/strict";
import { Rng } from "../src/data/rng.ts";
import { defaultDataDir } from "../src/data/datasets.ts";
import { main, parseAnalyzeArgs } from "../src/cli/analyze.ts";
import {
  analyzeChannel,
  analyzeGradient,
  pickChannels,
  summarize,
} from "../src/report/channels.ts";
import { erf, erfc, gaussianCdf, laplaceCdf } from "../src/report/dist.ts";
import { histogram, symmetricHistogram } from "../src/report/histogram.ts";
import { type AnalyzeReport, reportHtml } from "../src/report/html.ts";
import { ksDistance, ksDistanceSorted } from "../src/report/ks.ts";
import { channelSvg, escapeXml } from "../src/report/svg.ts";

function gaussianSample(rng: Rng, n: number): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal());
}

/** Laplace(0, b) by inversion. */
function laplaceSample(rng: Rng, n: number, b = 1): Float64Array {
  return Float64Array.from({ length: n }, () => {
    const u = rng.next() - 0.5;
    return -b * Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
  });
}

Deno.test("erf and erfc match reference values to ~1e-15 (relative in the tail)", () => {
  const cases: [number, number][] = [
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3.5, 0.9999992569016276],
  ];
  for (const [x, v] of cases) {
    assert.ok(Math.abs(erf(x) - v) < 2e-16 * 4, `erf(${x}) = ${erf(x)}, want ${v}`);
    assert.ok(Math.abs(erf(-x) + v) < 2e-16 * 4, `erf(-${x})`);
  }
  const tails: [number, number][] = [
    [3, 2.209049699858544e-5],
    [5, 1.5374597944280349e-12],
    [10, 2.088487583762545e-45],
  ];
  for (const [x, v] of tails) {
    assert.ok(Math.abs(erfc(x) / v - 1) < 1e-13, `erfc(${x}) = ${erfc(x)}, want ${v}`);
  }
  assert.equal(gaussianCdf({ mean: 0, sigma: 1 }, 0), 0.5);
  assert.ok(Math.abs(gaussianCdf({ mean: 1, sigma: 2 }, 3) - 0.8413447460685429) < 1e-15);
  assert.ok(Math.abs(laplaceCdf({ median: 0, b: 1 }, -1) - 0.5 * Math.exp(-1)) < 1e-16);
});

Deno.test("KS distance of a hand-made sample equals the value computed by hand", () => {
  const uniform = (x: number) => Math.min(Math.max(x, 0), 1);
  // Sorted 0.1, 0.4, 0.7: D+ = max(1/3-0.1, 2/3-0.4, 1-0.7) = 0.3, D- = max(0.1, 0.0667, 0.0333).
  assert.ok(Math.abs(ksDistance([0.7, 0.1, 0.4], uniform) - 0.3) < 1e-15);
  // The left side wins: F(0.9) - 0 = 0.9 for a single point.
  assert.ok(Math.abs(ksDistanceSorted([0.9], uniform) - 0.9) < 1e-15);
  // Ties: two points at 0.5 jump F_n from 0 to 1, the gap is 0.5 on both sides.
  assert.ok(Math.abs(ksDistanceSorted([0.5, 0.5], uniform) - 0.5) < 1e-15);
  // Against a standard Gaussian: sample {0}: max(1 - 0.5, 0.5 - 0) = 0.5.
  assert.equal(ksDistanceSorted([0], (x) => gaussianCdf({ mean: 0, sigma: 1 }, x)), 0.5);
  assert.throws(() => ksDistanceSorted([1, 0], uniform), /not sorted/);
  assert.ok(Number.isNaN(ksDistance([], uniform)));
});

Deno.test("a Gaussian sample is closer to its fitted Gaussian, a Laplace sample to its Laplace", () => {
  const rng = new Rng(42);
  const opts = { bins: 41, lambda: 0.3 };
  const g = analyzeChannel(gaussianSample(rng, 20000), 0, opts);
  const l = analyzeChannel(laplaceSample(rng, 20000, 0.7), 1, opts);
  // sqrt(n) * KS ~ 1.36 at the 5% level: 0.0096 for n = 20000.
  assert.ok(g.ksGaussian < 0.012, `KS(Gaussian sample, Gaussian) ${g.ksGaussian}`);
  assert.ok(g.ksLaplace > 0.03, `KS(Gaussian sample, Laplace) ${g.ksLaplace}`);
  assert.equal(g.better, "gaussian");
  assert.ok(l.ksLaplace < 0.012, `KS(Laplace sample, Laplace) ${l.ksLaplace}`);
  assert.ok(l.ksGaussian > 0.03, `KS(Laplace sample, Gaussian) ${l.ksGaussian}`);
  assert.equal(l.better, "laplace");
  // The classifier: P(|g| > sigma) is 0.317 for a Gaussian and 0.243 for a Laplace.
  assert.ok(Math.abs(g.share - 0.317) < 0.01 && g.verdict === "bell", `share ${g.share}`);
  assert.ok(Math.abs(l.share - 0.243) < 0.01 && l.verdict === "inverted-t", `share ${l.share}`);
  assert.ok(Math.abs(l.laplace.b - 0.7) < 0.02, `Laplace scale ${l.laplace.b}`);
  assert.ok(Math.abs(g.kurtosis) < 0.15 && Math.abs(l.kurtosis - 3) < 0.6);
});

Deno.test("histogram counts sum to n and respect the range", () => {
  const rng = new Rng(3);
  const xs = gaussianSample(rng, 5000);
  const h = symmetricHistogram(xs, 31);
  const max = Math.max(...xs.map(Math.abs));
  assert.equal(h.counts.length, 31);
  assert.equal(h.lo, -max);
  assert.equal(h.hi, max);
  assert.equal(h.counts.reduce((a, v) => a + v, 0), xs.length);
  assert.equal(h.below + h.above, 0);
  // Edges: the last bin includes hi; each bin is [left, right).
  const e = histogram([-1, -0.5, 0, 0.5, 1, 1.5, -2], 4, -1, 1);
  assert.deepEqual(e.counts, [1, 1, 1, 2]);
  assert.equal(e.below, 1);
  assert.equal(e.above, 1);
  // Every value counted in bin i lies in its interval.
  const bw = (h.hi - h.lo) / 31;
  for (const x of xs) {
    const i = Math.min(30, Math.floor((x - h.lo) / bw));
    assert.ok(x >= h.lo + i * bw - 1e-12 && x <= h.lo + (i + 1) * bw + 1e-12);
  }
  assert.deepEqual(symmetricHistogram([0, 0], 2).counts, [0, 2]);
  assert.throws(() => histogram([1], 0, 0, 1), /bins/);
});

Deno.test("analyzeGradient reads channels from the last dimension; pickChannels splits extremes", () => {
  const rng = new Rng(5);
  const rows = 4000, k = 6;
  const dy = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < k; c++) {
      dy[r * k + c] = c % 2 === 0 ? rng.normal(0, c + 1) : laplaceSample(rng, 1, c)[0]!;
    }
  }
  const chs = analyzeGradient(dy, k, { bins: 21, lambda: 0.3 });
  assert.deepEqual(chs.map((c) => c.verdict), [
    "bell",
    "inverted-t",
    "bell",
    "inverted-t",
    "bell",
    "inverted-t",
  ]);
  for (const c of chs) {
    assert.ok(
      Math.abs(c.sigma / (c.channel % 2 === 0 ? c.channel + 1 : c.channel * Math.SQRT2) - 1) < 0.06,
    );
  }
  const s = summarize(chs);
  assert.equal(s.bellChannels, 3);
  assert.equal(s.bellShare, 0.5);
  assert.equal(s.laplaceBetter, 3);
  const p = pickChannels(chs, 4);
  assert.equal(p.bell.length, 2);
  assert.equal(p.sharp.length, 2);
  for (const i of p.bell) assert.equal(chs[i]!.verdict, "bell");
  for (const i of p.sharp) assert.equal(chs[i]!.verdict, "inverted-t");
  const all = pickChannels(chs, 50);
  assert.deepEqual([...all.bell, ...all.sharp].sort(), [0, 1, 2, 3, 4, 5]);
  assert.throws(() => analyzeGradient(dy, 7, { bins: 4, lambda: 0.3 }), /as 7 channels/);
});

function tinyReport(): AnalyzeReport {
  const rng = new Rng(9);
  const channels = [0, 1, 2, 3, 4].map((c) =>
    analyzeChannel(c < 3 ? gaussianSample(rng, 500) : laplaceSample(rng, 500), c, {
      bins: 15,
      lambda: 0.3,
    })
  );
  // A constant channel must not break the plot.
  channels.push(analyzeChannel(new Float64Array(10), 5, { bins: 15, lambda: 0.3 }));
  return {
    version: 1,
    model: "m<odel>&",
    dataset: 'd"s',
    quant: "fp32",
    lambda: 0.3,
    batchSize: 8,
    lr: 0.1,
    seed: 0,
    images: 8,
    bins: 15,
    steps: [1],
    definitions: { fits: "Gaussian <mean, std> & Laplace" },
    layers: [{
      name: "layer<1>",
      description: "conv 3x3, 1 -> 6",
      int8: false,
      steps: [{
        step: 1,
        loss: 2.3,
        shape: [2, 1, 5, 6],
        summary: summarize(channels),
        plotted: pickChannels(channels, 6),
        channels,
      }],
      overall: { bellShare: 0.5, meanKsGaussian: 0.1, meanKsLaplace: 0.1 },
    }],
  };
}

Deno.test("the HTML report is well formed: one <svg> per plotted channel, text escaped", () => {
  const r = tinyReport();
  const html = reportHtml(r);
  const plotted = r.layers[0]!.steps[0]!.plotted;
  const nPlots = plotted.bell.length + plotted.sharp.length;
  assert.equal(nPlots, 6);
  assert.equal(html.match(/<svg[\s>]/g)?.length, nPlots);
  assert.equal(html.match(/<\/svg>/g)?.length, nPlots);
  assert.ok(html.startsWith("<!DOCTYPE html>") && html.trimEnd().endsWith("</html>"));
  // No external assets.
  assert.ok(!/\b(src|href)=/.test(html), "external reference in the page");
  // Escaped text; no raw model/layer names with markup.
  assert.ok(html.includes("m&lt;odel&gt;&amp;") && html.includes("d&quot;s"));
  assert.ok(html.includes("layer&lt;1&gt;") && !html.includes("layer<1>"));
  assert.ok(html.includes("Gaussian &lt;mean, std&gt; &amp; Laplace"));
  // Tags balance (every element the builder opens it closes).
  for (const tag of ["svg", "g", "text", "title", "section", "div", "table", "main", "p"]) {
    const open = html.match(new RegExp(`<${tag}[\\s>]`, "g"))?.length ?? 0;
    const close = html.match(new RegExp(`</${tag}>`, "g"))?.length ?? 0;
    assert.equal(open, close, `<${tag}> opened ${open} times, closed ${close}`);
  }
  // Each plot has its title with channel, verdict, share and both KS values, and both curves.
  const svg = channelSvg(r.layers[0]!.steps[0]!.channels[0]!);
  assert.match(svg, /ch 0 · (bell|inverted-T) · P\(\|g\|&gt;σ\)=0\.\d{3}/);
  assert.match(svg, /KS_G 0\.\d+ · KS_L 0\.\d+/);
  assert.equal(svg.match(/<path /g)?.length, 4); // Gaussian and Laplace, linear and log
  assert.ok(!/NaN|undefined/.test(svg));
  const flat = channelSvg(r.layers[0]!.steps[0]!.channels[5]!);
  assert.ok(flat.includes("KS_G n/a") && !/NaN|undefined/.test(flat));
  assert.equal(
    escapeXml(`<a href="x">'&'</a>`),
    "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;",
  );
  assert.ok(reportHtml(r, true).includes(`id="logy" checked`));
});

Deno.test("parseAnalyzeArgs: defaults and errors", () => {
  const a = parseAnalyzeArgs(["--steps", "50,1,50", "--layers", "conv2", "--quant", "daint8"]);
  assert.deepEqual(a.steps, [1, 50]);
  assert.deepEqual(a.layers, ["conv2"]);
  assert.equal(a.channels, 8);
  assert.equal(a.out, "runs/analyze-lenet5-mnist-daint8-s0");
  assert.throws(() => parseAnalyzeArgs(["--steps", "0"]), /--steps must be an integer >= 1/);
  assert.throws(() => parseAnalyzeArgs(["--bogus"]), /--help/);
  assert.throws(() => parseAnalyzeArgs(["--quant-set", "lambda=2"]), /lambda/);
});

const mnistDir = defaultDataDir("mnist");
const ignore = mnistDir === undefined;
if (ignore) console.warn("SKIP analyze end-to-end test: MNIST not found (run `deno install`)");

Deno.test({
  name: "analyze CLI end to end: LeNet-5 on 256 MNIST images writes report.html and report.json",
  ignore,
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "daint8-analyze-" });
    try {
      const lines: string[] = [];
      const code = await main(
        [
          "--limit",
          "256",
          "--steps",
          "1,2",
          "--layers",
          "conv1,conv2",
          "--channels",
          "4",
          "--out",
          out,
        ],
        (l) => lines.push(l),
      );
      assert.equal(code, 0);
      const html = await Deno.readTextFile(`${out}/report.html`);
      const r = JSON.parse(await Deno.readTextFile(`${out}/report.json`)) as AnalyzeReport;
      assert.deepEqual(r.layers.map((l) => l.name), ["conv1", "conv2"]);
      assert.deepEqual(r.steps, [1, 2]);
      for (const l of r.layers) {
        assert.deepEqual(l.steps.map((s) => s.step), [1, 2]);
        for (const s of l.steps) {
          const k = l.name === "conv1" ? 6 : 16;
          assert.equal(s.shape.at(-1), k);
          assert.equal(s.channels.length, k);
          assert.equal(s.plotted.bell.length + s.plotted.sharp.length, 4);
          for (const c of s.channels) {
            assert.equal(c.histogram.counts.reduce((a, v) => a + v, 0), c.n);
          }
        }
      }
      // 2 layers x 2 steps x 4 plotted channels.
      assert.equal(html.match(/<svg[\s>]/g)?.length, 16);
      assert.ok(lines.some((l) => /^conv2\s+2\s+\d+\/16/.test(l)), lines.join("\n"));
      // A bad layer name is a usage error.
      assert.equal(
        await main(["--limit", "64", "--steps", "1", "--layers", "nope", "--out", out], () => {}),
        2,
      );
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
