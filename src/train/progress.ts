/**
 * Training progress display: a single-line bar redrawn in place on a terminal, plain periodic
 * lines otherwise (logs, CI).
 *
 * @module
 */

/** Where {@linkcode Progress} writes; `Deno.stdout` and `Deno.stderr` qualify. */
export interface ProgressWriter {
  /** Writes some of `p`, returning how many bytes were written. */
  writeSync(p: Uint8Array): number;
}

/** Options of {@linkcode Progress}. */
export interface ProgressOptions {
  /** The output; `Deno.stdout` by default. */
  writer?: ProgressWriter;
  /** Whether the output is a terminal; `Deno.stdout.isTerminal()` by default. */
  isTerminal?: boolean;
  /** The clock in milliseconds; `performance.now` by default. */
  now?: () => number;
  /** Items (e.g. images) per step; when set, the throughput is shown as `<n> <unit>/s`. */
  itemsPerStep?: number;
  /** The unit of `itemsPerStep` (default `"img"`). */
  unit?: string;
  /** The terminal width in columns; measured when absent (100 if it cannot be). */
  columns?: number;
  /** The shortest time between two redraws of the bar, in ms (default 100). */
  minRedrawMs?: number;
  /** Without a terminal, print a line every this many steps (default: a tenth of an epoch). */
  plainEverySteps?: number;
  /** Without a terminal, print a line at least this often, in ms (default 5000). */
  plainEveryMs?: number;
  /** The width of the bar between its brackets (default 20). */
  barWidth?: number;
}

/** Clears the current terminal line and returns the cursor to its start. */
const CLEAR_LINE = "\r\x1b[2K";

/** Formats a field value: integers as is, others with 4 decimals below 1, 2 below 100, else 1. */
export function formatValue(value: number | string): string {
  if (typeof value === "string") return value;
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  return value.toFixed(abs < 1 ? 4 : abs < 100 ? 2 : 1);
}

/** Formats a duration in seconds as `12s`, `3m05s` or `1h02m`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * Shows training progress. On a terminal, {@linkcode Progress.update} redraws one line in place,
 * at most every `minRedrawMs`:
 * `epoch 1/1 [=========>          ] 512/938  loss 0.2134  acc 93.4%  1843 img/s  eta 12s`.
 * Elsewhere it prints that line without the bar every `plainEverySteps` steps, at least every
 * `plainEveryMs`, and at the last step of an epoch. A field named `epoch` is shown before the
 * bar, the others after the step count, in order.
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const lines: string[] = [];
 * const writer = { writeSync: (p: Uint8Array) => (lines.push(new TextDecoder().decode(p)), p.length) };
 * const progress = new Progress({ writer, isTerminal: false, itemsPerStep: 64 });
 * for (let step = 1; step <= 10; step++) progress.update(step, 10, { epoch: "1/1", loss: 0.5 });
 * progress.done("epoch 1: loss 0.5000");
 * ```
 */
export class Progress {
  readonly #writer: ProgressWriter;
  readonly #tty: boolean;
  readonly #now: () => number;
  readonly #itemsPerStep: number | undefined;
  readonly #unit: string;
  readonly #columns: number;
  readonly #minRedrawMs: number;
  readonly #plainEverySteps: number | undefined;
  readonly #plainEveryMs: number;
  readonly #barWidth: number;
  readonly #encoder = new TextEncoder();

  #epochStart: number;
  #epochStartStep = 0;
  #lastStep = -1;
  #lastOutput = -Infinity;
  #lastOutputStep = 0;
  /** The bar currently shown on the terminal, redrawn after {@linkcode Progress.log}. */
  #barLine: string | undefined;

  /** Creates a display; see {@linkcode ProgressOptions} for the defaults. */
  constructor(opts: ProgressOptions = {}) {
    this.#writer = opts.writer ?? Deno.stdout;
    this.#tty = opts.isTerminal ?? Deno.stdout.isTerminal();
    this.#now = opts.now ?? (() => performance.now());
    this.#itemsPerStep = opts.itemsPerStep;
    this.#unit = opts.unit ?? "img";
    this.#minRedrawMs = opts.minRedrawMs ?? 100;
    this.#plainEverySteps = opts.plainEverySteps;
    this.#plainEveryMs = opts.plainEveryMs ?? 5000;
    this.#barWidth = opts.barWidth ?? 20;
    let columns = opts.columns;
    if (columns === undefined && this.#tty) {
      try {
        columns = Deno.consoleSize().columns;
      } catch {
        // not a console after all
      }
    }
    this.#columns = columns ?? 100;
    this.#epochStart = this.#now();
  }

  /**
   * Reports that `step` of `total` steps are done, with fields to show (e.g.
   * `{ epoch: "1/3", loss: 0.2134, acc: "93.4%" }`). A step lower than the previous one starts
   * a new epoch's timing.
   */
  update(
    step: number,
    total: number,
    fields: Readonly<Record<string, number | string>> = {},
  ): void {
    const now = this.#now();
    if (step < this.#lastStep) {
      this.#epochStart = now;
      this.#epochStartStep = step;
      this.#lastOutputStep = step;
    }
    this.#lastStep = step;
    const last = step >= total;
    if (this.#tty) {
      if (!last && now - this.#lastOutput < this.#minRedrawMs) return;
      const line = this.#fit(this.#format(step, total, fields, now, true));
      this.#barLine = line;
      this.#write(CLEAR_LINE + line);
    } else {
      const every = this.#plainEverySteps ?? Math.max(1, Math.ceil(total / 10));
      const due = last || step - this.#lastOutputStep >= every ||
        now - this.#lastOutput >= this.#plainEveryMs;
      if (!due) return;
      this.#write(this.#format(step, total, fields, now, false) + "\n");
      this.#lastOutputStep = step;
    }
    this.#lastOutput = now;
  }

  /**
   * Ends the current epoch: replaces the bar (on a terminal) with `summaryLine`, or prints it,
   * and restarts the timing for the next epoch.
   */
  done(summaryLine: string): void {
    this.#write((this.#tty ? CLEAR_LINE : "") + summaryLine + "\n");
    this.#barLine = undefined;
    this.#epochStart = this.#now();
    this.#epochStartStep = 0;
    this.#lastStep = -1;
    this.#lastOutputStep = 0;
    this.#lastOutput = -Infinity;
  }

  /** Prints `line` above the bar, which is then redrawn (on a terminal). */
  log(line: string): void {
    if (this.#tty && this.#barLine !== undefined) {
      this.#write(CLEAR_LINE + line + "\n" + this.#barLine);
    } else {
      this.#write(line + "\n");
    }
  }

  #format(
    step: number,
    total: number,
    fields: Readonly<Record<string, number | string>>,
    now: number,
    withBar: boolean,
  ): string {
    const parts: string[] = [];
    let head = "";
    if (fields.epoch !== undefined) head = `epoch ${formatValue(fields.epoch)} `;
    if (withBar) {
      const width = this.#barWidth;
      const frac = total > 0 ? Math.min(1, Math.max(0, step / total)) : 0;
      const filled = Math.floor(frac * width);
      const bar = filled >= width
        ? "=".repeat(width)
        : "=".repeat(filled) + ">" + " ".repeat(width - filled - 1);
      head += `[${bar}] `;
    } else if (head === "") {
      head = "step ";
    }
    parts.push(`${head}${step}/${total}`);
    for (const [key, value] of Object.entries(fields)) {
      if (key !== "epoch") parts.push(`${key} ${formatValue(value)}`);
    }
    const seconds = (now - this.#epochStart) / 1000;
    const steps = step - this.#epochStartStep;
    if (seconds > 0 && steps > 0) {
      const stepsPerSecond = steps / seconds;
      if (this.#itemsPerStep !== undefined) {
        parts.push(`${Math.round(stepsPerSecond * this.#itemsPerStep)} ${this.#unit}/s`);
      }
      if (step < total) parts.push(`eta ${formatDuration((total - step) / stepsPerSecond)}`);
      else parts.push(`time ${formatDuration(seconds)}`);
    }
    return parts.join("  ");
  }

  #fit(line: string): string {
    const max = Math.max(10, this.#columns - 1);
    return line.length > max ? line.slice(0, max) : line;
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    let written = 0;
    while (written < bytes.length) written += this.#writer.writeSync(bytes.subarray(written));
  }
}
