/**
 * The cpu library's threads (kernels/cpu/team.cpp): parallel regions run on the library's own
 * worker pool, or on OpenMP when the pool is taken by another calling thread or D8_CPU_POOL=0.
 * Conv passes whose threads meet at barriers give the same bits on every path.
 */
import assert from "node:assert/strict";
import { threadWork, type ThreadWorkResult } from "./helpers/thread_work.ts";
import { cpu } from "./helpers/check_op.ts";
import { runChildTests } from "./helpers/child_tests.ts";

function sameBits(what: string, got: Float32Array[], want: Float32Array[]) {
  assert.equal(got.length, want.length, what);
  for (const [i, g] of got.entries()) {
    const bad = g.findIndex((v, j) => !Object.is(v, want[i]![j]));
    assert.equal(bad, -1, `${what}: output ${i} differs at ${bad}: ${g[bad]} vs ${want[i]![bad]}`);
  }
}

Deno.test("conv passes from three threads at once (Workers sharing the library's pool) give the bits of one caller", async () => {
  const ref = threadWork(cpu(), 1).outputs;
  const rounds = 40, limitMs = 60_000;
  const workers = [0, 1, 2].map(() =>
    new Worker(new URL("./helpers/thread_worker.ts", import.meta.url).href, { type: "module" })
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
    // a caller that never returns (a lost wake-up, two callers in one team) fails here
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the callers did not finish in ${limitMs / 1000} s`)),
        limitMs,
      );
    });
    const results = await Promise.race([Promise.all(done), timeout]);
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.unstable, [], `caller ${i}: rounds that differed from its first`);
      sameBits(`caller ${i}`, r.outputs, ref);
    }
  } finally {
    clearTimeout(timer);
    for (const w of workers) w.terminate();
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
