/** A Worker for test/threads_test.ts: runs threadWork on its own backend and posts the result. */
import { openBackend } from "../../src/backend/registry.ts";
import { isCpuBackend } from "../../src/backend/backend.ts";
import { threadWork } from "./thread_work.ts";

self.onmessage = async (e: MessageEvent<{ rounds: number }>) => {
  try {
    const b = await openBackend("cpu");
    if (!isCpuBackend(b)) throw new Error("the cpu backend is not a CpuBackend");
    self.postMessage({ ok: true, result: threadWork(b, e.data.rounds) });
  } catch (err) {
    self.postMessage({ ok: false, error: String((err as Error)?.stack ?? err) });
  }
};
