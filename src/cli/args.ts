/**
 * Command-line plumbing shared by `train`, `experiment` and `analyze`: flag value parsers that
 * throw a `UsageError` quoting the flag and value, `--quant-set` parsing, and the one way every
 * command reports errors (usage: one line, exit 2; failure: one line, exit 1; a stack trace only
 * for a bug).
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { Daint8Error } from "../../ffi/library.ts";
import type { KnownDataset } from "../data/datasets.ts";
import { quantConfig } from "../quant/config.ts";

/** Datasets the commands load by name. */
export const DATASETS: readonly KnownDataset[] = ["mnist", "fashion-mnist"];
/** Datasets `train`, `eval` and `experiment` load: the MNIST-like ones, CIFAR-10, image folders. */
export const TRAIN_DATASETS: readonly string[] = [...DATASETS, "cifar10", "folder"];
/** Backend names the commands accept. */
export const BACKENDS: readonly string[] = ["cpu", "cuda", "webgpu", "auto"];

/** The flags every training command shares (parseArgs option specs). */
export const COMMON_OPTIONS = {
  model: { type: "string" },
  dataset: { type: "string" },
  "data-dir": { type: "string" },
  "batch-size": { type: "string" },
  lr: { type: "string" },
  seed: { type: "string" },
  limit: { type: "string" },
  backend: { type: "string" },
  threads: { type: "string" },
  quant: { type: "string" },
  "quant-set": { type: "string", multiple: true },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** A command-line mistake: printed without a stack trace, exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * Parses `args` strictly against `options` (no positionals); an unknown flag or a missing value
 * is a UsageError.
 */
export function parseFlags<O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message}. Run with --help for the flags.`);
  }
}

/**
 * `--name v` as a safe integer >= min (and <= max when given; `def` when absent). Integers
 * beyond 2^53 ("1e20") are refused: they cannot be represented exactly.
 */
export function int(
  name: string,
  v: string | undefined,
  def: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (v.trim() === "" || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max !== Number.MAX_SAFE_INTEGER
      ? `from ${min} to ${max}`
      : Number.isInteger(n) && n >= min
      ? `>= ${min} and at most ${max}`
      : `>= ${min}`;
    throw new UsageError(`--${name} must be an integer ${range}, got "${v}"`);
  }
  return n;
}

/** The most worker threads `--threads` accepts. */
export const MAX_THREADS = 1024;

/** `--name v` as a finite number >= min (`def` when absent). */
export function num(name: string, v: string | undefined, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < min) {
    throw new UsageError(`--${name} must be a number >= ${min}, got "${v}"`);
  }
  return n;
}

/** `--name v` as one of `all` (`def` when absent). */
export function oneOf<T extends string>(
  name: string,
  v: string | undefined,
  def: T,
  all: readonly T[],
): T {
  if (v === undefined) return def;
  if (!all.includes(v as T)) {
    throw new UsageError(`--${name} must be one of ${all.join(", ")}, got "${v}"`);
  }
  return v as T;
}

/** A comma-separated list (undefined when the flag is absent). */
export function list(v: string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  return v.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/**
 * `--quant-set`, given once or more: each `k=v,k=v` text or `@file.json`, checked against preset
 * `quant`. Several flags merge, a later flag's knob winning over an earlier one's. Returns the
 * overrides ("" when none; the flag's own text or object when given once).
 */
export function parseQuantSet(
  quant: string,
  raw: string | readonly string[] | undefined,
): string | Record<string, unknown> {
  if (raw === undefined || typeof raw === "string") return parseOneQuantSet(quant, raw);
  if (raw.length <= 1) return parseOneQuantSet(quant, raw[0]);
  const sets = raw.map((r) => parseOneQuantSet(quant, r));
  if (sets.every((x) => typeof x === "string")) {
    return sets.filter((x) => x !== "").join(","); // quantConfig lets a later knob win
  }
  const merged: Record<string, unknown> = {};
  for (const set of sets) {
    if (typeof set !== "string") Object.assign(merged, set);
    else {
      for (const kv of set.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
        const eq = kv.indexOf("="); // checked by parseOneQuantSet
        merged[kv.slice(0, eq).trim()] = kv.slice(eq + 1).trim();
      }
    }
  }
  return merged;
}

function parseOneQuantSet(
  quant: string,
  raw: string | undefined,
): string | Record<string, unknown> {
  let set: string | Record<string, unknown> = raw ?? "";
  if (set.startsWith("@")) {
    const file = set.slice(1);
    try {
      set = JSON.parse(Deno.readTextFileSync(file));
    } catch (e) {
      throw new UsageError(
        `--quant-set: cannot read JSON knobs from "${file}": ${(e as Error).message}`,
      );
    }
    if (typeof set !== "object" || set === null || Array.isArray(set)) {
      throw new UsageError(`--quant-set: "${file}" must hold a JSON object of knobs`);
    }
  }
  try {
    quantConfig(quant, set);
  } catch (e) {
    throw new UsageError(`--quant-set: ${(e as Error).message}`);
  }
  return set;
}

/** Prints an error the way every command does; returns the exit status (2 usage, 1 failure). */
export function reportError(e: unknown): number {
  const err = e as Error;
  console.error(`error: ${err.message}`);
  if (err instanceof UsageError) return 2;
  // Deno.errors.* are I/O failures (disk full, permission denied), not bugs: no stack for them.
  const io = Object.values(Deno.errors).some((c) => err instanceof c);
  const known = err instanceof Daint8Error || err instanceof TypeError ||
    err instanceof RangeError || err.constructor === Error || io;
  if (!known) console.error(err.stack);
  return 1;
}

/**
 * Runs a command: parses `args` (a UsageError exits 2), prints `help` on `--help`, else runs it;
 * returns the exit status.
 */
export async function runCommand<A extends { help: boolean }>(
  args: string[],
  parse: (args: string[]) => A,
  help: string,
  run: (a: A) => Promise<void>,
  print: (line: string) => void = (l) => console.log(l),
): Promise<number> {
  let a: A;
  try {
    a = parse(args);
  } catch (e) {
    if (e instanceof UsageError) return reportError(e);
    throw e;
  }
  if (a.help) {
    print(help);
    return 0;
  }
  try {
    await run(a);
    return 0;
  } catch (e) {
    return reportError(e);
  }
}
