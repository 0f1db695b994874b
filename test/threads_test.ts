/**
 * The cpu library's threads (kernels/cpu/team.cpp): parallel regions run on the library's own
 * worker pool, or on OpenMP when the pool is taken by another calling thread or D8_CPU_POOL=0.
 * Conv passes whose threads meet at barriers give the same bits on every path.
 */
import assert from "node:assert/strict";
import { firstDifference, type ThreadWorkResult } from "./helpers/thread_work.ts";
import { runChildTests } from "./helpers/child_tests.ts";

function sameBits(what: string, got: Float32Array[], want: Float32Array[]) {
  assert.equal(got.length, want.length, what);
  for (const [i, g] of got.entries()) {
    const bad = firstDifference(g, want[i]!);
    assert.equal(bad, -1, `${what}: output ${i} differs at ${bad}: ${g[bad]} vs ${want[i]![bad]}`);
  }
}

/**
 * Runs threadWork in `n` Workers at once (each calls the library from its own OS thread); rejects
 * after `limitMs`. Every caller runs in a Worker, so a call that never returns (a lost wake-up, two
 * callers in one team) fails the test here instead of hanging the main thread.
 */
async function inWorkers(n: number, rounds: number, limitMs = 60_000): Promise<ThreadWorkResult[]> {
  const workers = Array.from(
    { length: n },
    () =>
      new Worker(new URL("./helpers/thread_worker.ts", import.meta.url).href, { type: "module" }),
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const done = workers.map((w) =>
      new Promise<ThreadWorkResult>((resolve, reject) => {
        w.onmessage = (e) => e.data.ok ? resolve(e.data.result) : reject(new Error(e.data.error));
        w.onerror = (e) => reject(new Error(e.message));
      })
    );
    for (const w of workers) w.postMessage({ rounds });
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${n} caller(s) did not finish in ${limitMs / 1000} s`)),
        limitMs,
      );
    });
    return await Promise.race([Promise.all(done), timeout]);
  } finally {
    clearTimeout(timer);
    for (const w of workers) w.terminate();
  }
}

Deno.test("conv passes from three threads at once (Workers sharing the library's pool) give the bits of one caller", async () => {
  const [one] = await inWorkers(1, 1);
  const results = await inWorkers(3, 40);
  for (const [i, r] of results.entries()) {
    assert.deepEqual(r.unstable, [], `caller ${i}: rounds that differed from its first`);
    sameBits(`caller ${i}`, r.outputs, one!.outputs);
  }
});

// OpenMP regions, as when the pool is taken: the INT8 conv cases (their wgrad meets at a barrier)
// and the three callers above (fp32 and INT8 passes) pass with every region on OpenMP
Deno.test({
  name: "INT8 conv cases and three callers pass with D8_CPU_POOL=0 (OpenMP regions; child process)",
  ignore: Deno.env.get("D8_CPU_POOL") !== undefined,
  fn: () => {
    const here = new URL(".", import.meta.url).pathname;
    return runChildTests({ D8_CPU_POOL: "0" }, "/int8 conv fprop|three threads/", [
      `${here}quant_test.ts`,
      `${here}threads_test.ts`,
    ], 40);
  },
});

// Workers that sleep between regions (OMP_WAIT_POLICY=passive: no spinning) are woken for each one:
// the three callers again, every region's workers taken from their condition variables
Deno.test({
  name: "sleeping pool workers wake for every region: OMP_WAIT_POLICY=passive (child process)",
  ignore: Deno.env.get("OMP_WAIT_POLICY") !== undefined ||
    Deno.env.get("D8_CPU_POOL") !== undefined,
  fn: () =>
    runChildTests({ OMP_WAIT_POLICY: "passive" }, "three threads", [
      new URL(import.meta.url).pathname,
    ], 1),
});
