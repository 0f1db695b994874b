/**
 * Runs test files again in a child `deno test` with one environment variable set: for the cpu
 * kernels' forms that a variable read once per process forces (D8_CPU_CONV_PATH, D8_CPU_WGRAD).
 */

/** The permissions every `deno test` of this repository's suite runs with (deno.json's tasks). */
export const TEST_PERMISSIONS: readonly string[] = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-ffi",
  "--allow-run",
];

/**
 * Runs `files` with `--filter filter` and `env` in a child process; throws with the child's
 * output when it fails or passes fewer than `minPassed` tests.
 */
export async function runChildTests(
  env: Record<string, string>,
  filter: string,
  files: string[],
  minPassed: number,
): Promise<void> {
  const label = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      ...TEST_PERMISSIONS,
      "--filter",
      filter,
      ...files,
    ],
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (r.code !== 0) throw new Error(`child test run failed (${label}):\n${out.slice(-4000)}`);
  const passed = Number(out.match(/ok \| (\d+) passed/)?.[1] ?? 0);
  if (passed < minPassed) {
    throw new Error(`child ran only ${passed} "${filter}" tests (${label}):\n${out}`);
  }
}
