/**
 * Environment and permission helpers of the loader: environment reads that tolerate a denied
 * `--allow-env`, and errors that name the Deno flag a refused operation needs.
 *
 * @module
 */
import { Daint8Error } from "./errors.ts";

/**
 * The value of environment variable `name`, or undefined when it is unset, empty, or not
 * readable (no `--allow-env` for it: the variable is then treated as unset, without a prompt).
 */
export function readEnv(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** True when `e` is Deno's refusal of an operation for want of a permission flag. */
export function isPermissionError(e: unknown): boolean {
  return e instanceof Deno.errors.NotCapable ||
    (e instanceof Error && e.name === "NotCapable");
}

/**
 * A `Daint8Error` (status 0) saying that `what` needs `flag` (e.g. `--allow-net=example.com`),
 * with the refusal as its cause.
 */
export function permissionError(what: string, flag: string, cause: unknown): Daint8Error {
  return new Daint8Error(
    `daint8 needs permission to ${what}: add ${flag} to the deno command line ` +
      `(${(cause as Error).message})`,
    0,
    { cause },
  );
}

/** Runs `fn`; a permission refusal becomes a `permissionError(what, flag)`. */
export function withPermission<T>(what: string, flag: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(what, flag, e);
    throw e;
  }
}

/** The async form of `withPermission`. */
export async function withPermissionAsync<T>(
  what: string,
  flag: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (isPermissionError(e)) throw permissionError(what, flag, e);
    throw e;
  }
}
