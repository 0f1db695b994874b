/**
 * The self-contained HTML page of `deno task analyze` (inline SVG and CSS, no external assets,
 * no script): a summary table, then per layer and step two grids of per-channel histograms side
 * by side, the most bell-shaped channels (highest P(|g| > sigma)) and the sharpest (lowest).
 * A checkbox switches every plot between linear and log-scale counts (pure CSS).
 *
 * @module
 */
import type { ChannelAnalysis, LayerSummary } from "./channels.ts";
import { channelSvg, COLORS, escapeXml, fmtNum } from "./svg.ts";

/** One layer at one step, as stored in report.json. */
export interface StepReport {
  step: number;
  /** Training loss of that step. */
  loss: number;
  /** Shape of the captured dY. */
  shape: number[];
  summary: LayerSummary;
  /** Channels chosen for the plots. */
  plotted: { bell: number[]; sharp: number[] };
  channels: ChannelAnalysis[];
}

/** One analyzed layer. */
export interface LayerReport {
  name: string;
  /** "conv 3x3, 16 -> 32, stride 2" and so on. */
  description: string;
  /** Whether the layer's GEMMs ran in INT8 (false: FP32). */
  int8: boolean;
  steps: StepReport[];
  /** Over all captured steps: bell share and mean KS distances. */
  overall: { bellShare: number; meanKsGaussian: number; meanKsLaplace: number };
}

/** Everything in report.json. */
export interface AnalyzeReport {
  version: 1;
  model: string;
  dataset: string;
  quant: string;
  lambda: number;
  batchSize: number;
  lr: number;
  seed: number;
  images: number;
  bins: number;
  /** Steps at which dY was captured (1 = the first training step). */
  steps: number[];
  /** How the fits and statistics are defined. */
  definitions: Record<string, string>;
  layers: LayerReport[];
}

const CSS = `
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:16px;color:#222}
h1{font-size:19px;margin:0 0 6px}h2{font-size:16px;margin:26px 0 4px;border-bottom:1px solid #ccc}
h3{font-size:14px;margin:14px 0 2px}h4{font-size:12px;margin:4px 0;color:#555;font-weight:600}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.pair{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.side{border:1px solid #e2e2e2;border-radius:4px;padding:4px 6px}
.grid{display:grid;grid-template-columns:repeat(2,auto);gap:4px}
.plot{background:#fff}.plot.bell{outline:1px solid ${COLORS.bell}33}.plot.sharp{outline:1px solid ${COLORS.sharp}33}
.t1{font-size:11px;font-weight:600}.t2{font-size:10px;fill:#444}.ax{font-size:9px;fill:#666}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.note{color:#555;max-width:1100px}
#logy:checked~main .lin{display:none}#logy:not(:checked)~main .log{display:none}
.toggle{position:sticky;top:0;background:#fffe;padding:4px 0}
`;

function pct(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : "n/a";
}

function summaryRow(layer: LayerReport, s: StepReport): string {
  const m = s.summary;
  return `<tr><td>${escapeXml(layer.name)}</td><td>${s.step}</td><td>${m.channels}</td>` +
    `<td>${m.bellChannels} (${pct(m.bellShare)})</td><td>${fmtNum(m.meanKsGaussian)}</td>` +
    `<td>${fmtNum(m.meanKsLaplace)}</td><td>${m.laplaceBetter}/${m.channels}</td>` +
    `<td>${fmtNum(m.meanKsGaussianBell)} / ${fmtNum(m.meanKsLaplaceBell)}</td>` +
    `<td>${fmtNum(m.meanKsGaussianSharp)} / ${fmtNum(m.meanKsLaplaceSharp)}</td>` +
    `<td>${fmtNum(s.loss)}</td></tr>`;
}

function grid(title: string, chs: ChannelAnalysis[]): string {
  return `<div class="side"><h4>${escapeXml(title)}</h4><div class="grid">` +
    chs.map((c) => channelSvg(c)).join("") + `</div></div>`;
}

/**
 * The report page.
 *
 * @param logY Whether the page opens with log-scale counts.
 */
export function reportHtml(r: AnalyzeReport, logY = false): string {
  const head = `${r.model} on ${r.dataset}, ${r.quant}`;
  const out: string[] = [];
  out.push(
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">` +
      `<title>${escapeXml(`dY per channel: ${head}`)}</title><style>${CSS}</style></head><body>`,
  );
  out.push(
    `<input type="checkbox" id="logy"${logY ? " checked" : ""}>` +
      `<label for="logy" class="toggle">log-scale counts</label><main>`,
  );
  out.push(`<h1>Output gradients dY per channel: ${escapeXml(head)}</h1>`);
  out.push(
    `<p class="note">Batch ${r.batchSize}, lr ${r.lr}, seed ${r.seed}, ${r.images} training ` +
      `images; captured at step${r.steps.length > 1 ? "s" : ""} ${r.steps.join(", ")}. ` +
      `Classifier: bell-shaped when P(|g| &gt; σ) &gt; λ = ${r.lambda}, else inverted-T ` +
      `(sharp). ${escapeXml(r.definitions.fits ?? "")}</p>`,
  );
  out.push(
    `<p class="legend"><span><i class="sw" style="background:${COLORS.bell}"></i>bell-shaped` +
      `</span><span><i class="sw" style="background:${COLORS.sharp}"></i>inverted-T</span>` +
      `<span><i class="sw" style="background:${COLORS.gaussian}"></i>fitted Gaussian</span>` +
      `<span><i class="sw" style="background:repeating-linear-gradient(90deg,${COLORS.laplace}` +
      ` 0 4px,transparent 4px 6px)"></i>fitted Laplace</span><span>x: −max … +max; ` +
      `curves: expected counts per bin</span></p>`,
  );
  out.push(
    `<table><thead><tr><th>layer</th><th>step</th><th>channels</th><th>bell</th>` +
      `<th>mean KS_G</th><th>mean KS_L</th><th>Laplace fits better</th>` +
      `<th>KS_G / KS_L (bell)</th><th>KS_G / KS_L (inv-T)</th><th>loss</th></tr></thead><tbody>` +
      r.layers.flatMap((l) => l.steps.map((s) => summaryRow(l, s))).join("") +
      `</tbody></table>`,
  );
  for (const l of r.layers) {
    out.push(
      `<section><h2>${escapeXml(l.name)} <small>(${escapeXml(l.description)}, ` +
        `${l.int8 ? "INT8" : "FP32"})</small></h2>`,
    );
    for (const s of l.steps) {
      const m = s.summary;
      const byIndex = new Map(s.channels.map((c) => [c.channel, c]));
      const pick = (ids: number[]) => ids.map((i) => byIndex.get(i)!).filter((c) => c);
      out.push(
        `<h3>step ${s.step}</h3><p class="note">dY [${s.shape.join(", ")}]: ` +
          `${m.bellChannels}/${m.channels} channels bell-shaped (${pct(m.bellShare)}); mean KS ` +
          `to Gaussian ${fmtNum(m.meanKsGaussian)}, to Laplace ${fmtNum(m.meanKsLaplace)}; ` +
          `Laplace fits better in ${m.laplaceBetter}; exact zeros ${pct(m.meanZeros)} of the ` +
          `values on average.</p>`,
      );
      out.push(
        `<div class="pair">` +
          grid("highest P(|g| > σ): most bell-shaped", pick(s.plotted.bell)) +
          grid("lowest P(|g| > σ): sharpest", pick(s.plotted.sharp)) +
          `</div>`,
      );
    }
    out.push(`</section>`);
  }
  out.push(`</main></body></html>\n`);
  return out.join("\n");
}
