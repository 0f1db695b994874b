/**
 * A JSON Lines metrics log: one JSON object per line, appended as training goes.
 *
 * @module
 */

/** A value that can be logged; nested objects and arrays are allowed. */
export type MetricValue =
  | number
  | string
  | boolean
  | null
  | bigint
  | undefined
  | MetricValue[]
  | { [key: string]: MetricValue };

/**
 * Converts a value for JSON: non-finite numbers become `null` (as `JSON.stringify` does), and
 * bigints become numbers when exactly representable, strings otherwise.
 */
function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") {
    const n = Number(value);
    return Number.isSafeInteger(n) ? n : value.toString();
  }
  if (typeof value === "number" && !Number.isFinite(value)) return null;
  return value;
}

/**
 * Appends records to a JSON Lines file. The file is opened once (created if needed, never
 * truncated), and each record is written synchronously as one line, so a crash loses at most
 * the record being written.
 *
 * @example
 * ```ts
 * import { MetricsLog } from "./metrics.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * const log = new MetricsLog(path);
 * log.append({ epoch: 1, step: 100, loss: 0.25, lr: 0.1 });
 * log.append({ epoch: 1, step: 200, loss: NaN }); // written as "loss":null
 * log.close();
 * await Deno.remove(path);
 * ```
 */
export class MetricsLog {
  /** The file's path. */
  readonly path: string;
  #file: Deno.FsFile | undefined;
  readonly #encoder = new TextEncoder();

  /**
   * Opens (or creates) `path` for appending.
   *
   * @throws {Error} If the file cannot be opened, naming the path.
   */
  constructor(path: string) {
    this.path = path;
    try {
      this.#file = Deno.openSync(path, { append: true, create: true });
    } catch (cause) {
      const msg = cause instanceof Error ? cause.message : String(cause);
      throw new Error(`Cannot open metrics log "${path}": ${msg}`, { cause });
    }
  }

  /**
   * Writes `record` as one line of JSON. Numbers stay numbers; NaN and infinities are written
   * as `null`.
   *
   * @throws {Error} If the log is closed or the write fails.
   */
  append(record: Readonly<Record<string, MetricValue>>): void {
    const file = this.#file;
    if (file === undefined) {
      throw new Error(`Cannot append to metrics log "${this.path}": it is closed`);
    }
    const bytes = this.#encoder.encode(JSON.stringify(record, replacer) + "\n");
    let written = 0;
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
  }

  /** Closes the file; further appends throw. Closing twice is harmless. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Closes the file (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
