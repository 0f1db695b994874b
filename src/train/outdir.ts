/**
 * The output directory of a run (`--out`): checked before anything is written so that a new run
 * never silently replaces another run's checkpoint or mixes its records into another run's
 * metrics.jsonl, and so that an unusable path (a file, a device, a symbolic link loop, a
 * read-only place) is one clear error instead of a stack trace.
 *
 * @module
 */
import { join } from "node:path";
import { readSafetensors } from "../io/safetensors.ts";
import { MetricsLog } from "./metrics.ts";

/** The checkpoint file a run keeps in its output directory. */
export const CHECKPOINT_FILE = "checkpoint.safetensors";
/** The metrics log a run appends to in its output directory. */
export const METRICS_FILE = "metrics.jsonl";

/** How a run may use an output directory that already holds a run. */
export interface OutDirOptions {
  /** The checkpoint this run resumes from: appending to its own directory is allowed. */
  resume?: string;
  /** Replace what the directory holds (`--overwrite`). */
  overwrite?: boolean;
  /** Whether the error may suggest `--resume` (default true; experiments cannot resume). */
  canResume?: boolean;
  /**
   * The step of the checkpoint resumed from: metrics records of later steps (an epoch that was
   * interrupted before its checkpoint) are dropped, since the resumed run writes them again.
   */
  resumedStep?: number;
  /** Told how many records were dropped. */
  print?: (line: string) => void;
}

function fsMessage(e: unknown): string {
  if (e instanceof Deno.errors.FilesystemLoop) return "it is a symbolic link loop";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotADirectory) return "a part of the path is not a directory";
  return e instanceof Error ? e.message : String(e);
}

async function statOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

async function realPathOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await Deno.realPath(path);
  } catch {
    return undefined;
  }
}

async function describeCheckpoint(path: string): Promise<string> {
  try {
    const epoch = (await readSafetensors(path)).metadata.epoch;
    return epoch === undefined ? CHECKPOINT_FILE : `${CHECKPOINT_FILE} at epoch ${epoch}`;
  } catch {
    return `${CHECKPOINT_FILE} (unreadable)`;
  }
}

/** True when `resume` is the checkpoint file inside `out`. */
async function resumesFrom(out: string, resume: string | undefined): Promise<boolean> {
  if (resume === undefined) return false;
  const a = await realPathOrUndefined(resume);
  return a !== undefined && a === await realPathOrUndefined(join(out, CHECKPOINT_FILE));
}

/**
 * Checks that `out` is a directory or does not exist yet (returns whether it exists); a file, a
 * device, a symbolic link loop or an unreadable path is an Error naming it.
 */
export async function checkDirPath(out: string): Promise<boolean> {
  const what = `Cannot use output directory "${out}"`;
  if (out === "") throw new TypeError(`${what}: the name is empty`);
  let info: Deno.FileInfo | undefined;
  try {
    info = await statOrUndefined(out);
  } catch (e) {
    throw new Error(`${what}: ${fsMessage(e)}`, { cause: e });
  }
  if (info === undefined) return false;
  if (!info.isDirectory) {
    throw new TypeError(`${what}: it exists and is not a directory (pick a directory)`);
  }
  return true;
}

/**
 * Creates directory `out` (and its parents) if needed, with an error naming it and the reason
 * instead of the file system's exception.
 */
export async function makeOutDir(out: string): Promise<void> {
  await checkDirPath(out);
  try {
    await Deno.mkdir(out, { recursive: true });
  } catch (e) {
    throw new Error(`Cannot use output directory "${out}": ${fsMessage(e)}`, { cause: e });
  }
}

/**
 * Checks that a run may write to `out` (nothing is written): the path is empty or a directory,
 * and it holds no other run, unless this run resumes from that directory's own checkpoint or
 * `overwrite` is set. Throws an Error (TypeError for a path that is not a directory) that says
 * what to do instead.
 */
export async function checkOutDir(out: string, opts: OutDirOptions = {}): Promise<void> {
  const what = `Cannot use output directory "${out}"`;
  if (!await checkDirPath(out)) return;
  const ckpt = join(out, CHECKPOINT_FILE), metrics = join(out, METRICS_FILE);
  let held: string[];
  try {
    held = [];
    if (await statOrUndefined(ckpt)) held.push(await describeCheckpoint(ckpt));
    if (await statOrUndefined(metrics)) held.push(METRICS_FILE);
  } catch (e) {
    throw new Error(`${what}: ${fsMessage(e)}`, { cause: e });
  }
  if (held.length === 0 || opts.overwrite || await resumesFrom(out, opts.resume)) return;
  const holds = `it already holds a run (${held.join(", ")})`;
  if (opts.resume !== undefined) {
    throw new Error(
      `${what}: ${holds}, not the one of "${opts.resume}"; resuming into it would replace ` +
        "that run: pick another --out, or pass --overwrite to replace it",
    );
  }
  const cont = opts.canResume !== false && (held.length > 1 || held[0] !== METRICS_FILE)
    ? `continue it with --resume ${ckpt}, pick another --out,`
    : "pick another --out";
  throw new Error(`${what}: ${holds}; ${cont} or pass --overwrite to replace it`);
}

/**
 * Prepares `out` for a run and opens its metrics log: checks it ({@linkcode checkOutDir}),
 * removes the previous run's files when `overwrite` is set (not when resuming from them), and
 * creates the directory. Errors name the path without a stack trace.
 */
export async function openOutDir(out: string, opts: OutDirOptions = {}): Promise<MetricsLog> {
  await checkOutDir(out, opts);
  const what = `Cannot use output directory "${out}"`;
  try {
    if (opts.overwrite && !await resumesFrom(out, opts.resume)) {
      for (const f of [CHECKPOINT_FILE, METRICS_FILE]) {
        await Deno.remove(join(out, f)).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
      }
    }
  } catch (e) {
    throw new Error(`${what}: ${fsMessage(e)}`, { cause: e });
  }
  await makeOutDir(out);
  const metrics = join(out, METRICS_FILE);
  if (opts.resumedStep !== undefined && await resumesFrom(out, opts.resume)) {
    await trimMetrics(metrics, opts.resumedStep, opts.print);
  }
  return new MetricsLog(metrics);
}

/**
 * Drops the records of `path` after `step` (and a line cut short by a crash), rewriting it
 * atomically; records without a step are kept.
 */
async function trimMetrics(
  path: string,
  step: number,
  print?: (line: string) => void,
): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw new Error(`Cannot read metrics log "${path}": ${fsMessage(e)}`, { cause: e });
  }
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const kept = lines.filter((l) => {
    try {
      const r = JSON.parse(l);
      return typeof r?.step !== "number" || r.step <= step;
    } catch {
      return false;
    }
  });
  if (kept.length === lines.length) return;
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await Deno.writeTextFile(tmp, kept.map((l) => l + "\n").join(""));
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot rewrite metrics log "${path}": ${fsMessage(e)}`, { cause: e });
  }
  print?.(
    `dropped ${lines.length - kept.length} record(s) after step ${step} from "${path}" ` +
      "(an epoch interrupted before its checkpoint; they are written again)",
  );
}
