/**
 * Small inline SVG plots of one channel's gradient histogram with the fitted Gaussian and
 * Laplace densities overlaid. Each plot holds a linear-y and a log-y version (groups of class
 * `lin` and `log`); the page's CSS shows one of them.
 *
 * @module
 */
import { gaussianPdf, laplacePdf } from "./dist.ts";
import type { ChannelAnalysis } from "./channels.ts";

/** Escapes text for XML/HTML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) =>
      c === "&"
        ? "&amp;"
        : c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === '"'
        ? "&quot;"
        : "&#39;",
  );
}

/** A number for labels: 3 significant digits, exponent form for small or large values. */
export function fmtNum(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "n/a" : String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a < 1e-3 || a >= 1e4) return x.toExponential(digits - 1);
  return x.toPrecision(digits);
}

/** Colors of the plots (also used by the page's legend). */
export const COLORS = {
  bell: "#4a7ab5",
  sharp: "#d0653f",
  gaussian: "#1a8a3a",
  laplace: "#7b3fb0",
} as const;

/** Plot size and options. */
export interface PlotOptions {
  width?: number;
  height?: number;
  /** Points per density curve. */
  curvePoints?: number;
}

const r1 = (x: number) => Math.round(x * 10) / 10;

/**
 * One channel's plot: histogram bars (colored by verdict), the fitted Gaussian (solid) and
 * Laplace (dashed) densities scaled to expected counts per bin, x from -max to +max, titled
 * with channel, verdict, share and both KS distances.
 *
 * @example
 * ```ts
 * import { analyzeChannel } from "./channels.ts";
 * import { channelSvg } from "./svg.ts";
 * const a = analyzeChannel(Float64Array.of(-1, -0.2, 0, 0.1, 0.3, 1.5), 3, { bins: 5, lambda: 0.3 });
 * const svg = channelSvg(a); // "<svg ...>...</svg>"
 * ```
 */
export function channelSvg(ch: ChannelAnalysis, opts: PlotOptions = {}): string {
  const W = opts.width ?? 240, H = opts.height ?? 170;
  const left = 8, right = 8, top = 34, bottom = 18;
  const pw = W - left - right, ph = H - top - bottom;
  const { lo, hi, counts } = ch.histogram;
  const bins = counts.length;
  const bw = (hi - lo) / bins;
  const X = (x: number) => left + ((x - lo) / (hi - lo)) * pw;
  const constant = Number.isNaN(ch.ksGaussian);
  // Expected count per bin under each fit: n * binWidth * pdf.
  const npts = opts.curvePoints ?? 161;
  const xs = Array.from({ length: npts }, (_, i) => lo + ((hi - lo) * i) / (npts - 1));
  const gC = constant ? [] : xs.map((x) => ch.n * bw * gaussianPdf(ch.gaussian, x));
  const lC = constant ? [] : xs.map((x) => ch.n * bw * laplacePdf(ch.laplace, x));
  const maxCount = Math.max(1, ...counts);
  const barColor = ch.verdict === "bell" ? COLORS.bell : COLORS.sharp;

  const group = (log: boolean): string => {
    const yLo = log ? Math.log10(0.5) : 0;
    const yHi = log ? Math.log10(maxCount * 2) : maxCount * 1.15;
    const Y = (c: number) => {
      const v = log ? Math.log10(Math.max(c, 0.5)) : c;
      return top + ph - ((Math.min(v, yHi) - yLo) / (yHi - yLo)) * ph;
    };
    const parts: string[] = [];
    for (let i = 0; i < bins; i++) {
      const c = counts[i]!;
      if (c <= 0) continue;
      const x0 = X(lo + i * bw), x1 = X(lo + (i + 1) * bw);
      const y = Y(c);
      parts.push(
        `<rect x="${r1(x0)}" y="${r1(y)}" width="${r1(Math.max(x1 - x0 - 0.3, 0.4))}" ` +
          `height="${r1(top + ph - y)}"/>`,
      );
    }
    const path = (ys: number[]) =>
      ys.map((c, i) => `${i === 0 ? "M" : "L"}${r1(X(xs[i]!))} ${r1(Y(c))}`).join("");
    const curves = constant
      ? ""
      : `<path d="${path(gC)}" fill="none" stroke="${COLORS.gaussian}" ` +
        `stroke-width="1.3"/><path d="${path(lC)}" fill="none" stroke="${COLORS.laplace}" ` +
        `stroke-width="1.3" stroke-dasharray="4 2"/>`;
    const sup = (e: number) => [...String(e)].map((d) => "⁰¹²³⁴⁵⁶⁷⁸⁹"[Number(d)] ?? d).join("");
    const yLabel = log ? `10${sup(Math.floor(Math.log10(maxCount)))}` : String(maxCount);
    const yTick = log ? Y(10 ** Math.floor(Math.log10(maxCount))) : Y(maxCount);
    return `<g class="${log ? "log" : "lin"}"><g fill="${barColor}">${parts.join("")}</g>` +
      `${curves}<line x1="${left}" x2="${W - right}" y1="${r1(yTick)}" y2="${r1(yTick)}" ` +
      `stroke="#ccc" stroke-width="0.5" stroke-dasharray="2 2"/>` +
      `<text x="${W - right}" y="${r1(yTick - 2)}" text-anchor="end" class="ax">${
        escapeXml(yLabel)
      }</text></g>`;
  };

  const verdict = ch.verdict === "bell" ? "bell" : "inverted-T";
  const title1 = `ch ${ch.channel} · ${verdict} · P(|g|>σ)=${ch.share.toFixed(3)}`;
  const title2 = `KS_G ${fmtNum(ch.ksGaussian)} · KS_L ${fmtNum(ch.ksLaplace)}` +
    (ch.better ? ` · ${ch.better === "laplace" ? "Laplace" : "Gauss"} fits` : "");
  const tooltip = `channel ${ch.channel}: ${verdict}, share ${ch.share.toFixed(4)}, sigma ` +
    `${fmtNum(ch.sigma)}, max ${fmtNum(ch.max)} (${fmtNum(ch.max / ch.sigma)} sigma), ` +
    `KS Gaussian ${fmtNum(ch.ksGaussian)}, KS Laplace ${fmtNum(ch.ksLaplace)}, kurtosis ` +
    `${fmtNum(ch.kurtosis)}, zeros ${(100 * ch.zeros).toFixed(1)}%, n ${ch.n}`;
  const axisY = top + ph;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
    `viewBox="0 0 ${W} ${H}" class="plot ${ch.verdict === "bell" ? "bell" : "sharp"}">` +
    `<title>${escapeXml(tooltip)}</title>` +
    `<text x="${left}" y="13" class="t1">${escapeXml(title1)}</text>` +
    `<text x="${left}" y="27" class="t2">${escapeXml(title2)}</text>` +
    group(false) + group(true) +
    `<line x1="${left}" x2="${W - right}" y1="${axisY}" y2="${axisY}" stroke="#444" ` +
    `stroke-width="0.8"/><line x1="${r1(X(0))}" x2="${r1(X(0))}" y1="${axisY}" ` +
    `y2="${axisY + 3}" stroke="#444"/>` +
    `<text x="${left}" y="${H - 4}" class="ax">${escapeXml(fmtNum(lo))}</text>` +
    `<text x="${r1(X(0))}" y="${H - 4}" text-anchor="middle" class="ax">0</text>` +
    `<text x="${W - right}" y="${H - 4}" text-anchor="end" class="ax">${
      escapeXml(fmtNum(hi))
    }</text></svg>`;
}
