/**
 * Conv passes on the cpu backend for test/threads_test.ts, run inside Workers
 * (./thread_worker.ts): each Worker calls into the one loaded library from its own OS thread, so
 * the library's fork/join (kernels/cpu/team.cpp) serves several callers at once.
 */
import { ScaleLayout } from "../../src/backend/backend.ts";
import type { CpuBackend } from "../../src/backend/backend.ts";
import { convShape } from "../../src/ops/conv.ts";
import { Tensor } from "../../src/tensor.ts";

/** The outputs of `rounds` rounds of the passes; every round's must equal the first's. */
export interface ThreadWorkResult {
  outputs: Float32Array[];
  /** Rounds whose outputs differed from the first round's (indices). */
  unstable: number[];
}

/** The first index where `a` and `b` differ in bits (Object.is: -0 differs from 0), or -1. */
export function firstDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return a.findIndex((v, j) => !Object.is(v, b[j]));
}

/**
 * fp32 fprop / dgrad / wgrad (the wgrad splits its GEMM over the threads with barriers between
 * chunks) and INT8 fprop / dgrad / wgrad (the image-quad wgrad meets at a barrier before its
 * reduction), on two threads, `rounds` times over seeded data.
 */
export function threadWork(b: CpuBackend, rounds: number): ThreadWorkResult {
  b.setThreads(2);
  const s = convShape("threads", [8, 14, 14, 16], 32, [3, 3], { padding: 1 });
  const vals = (n: number, f: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * f) * 0.5);
  const ints = (n: number, f: number) =>
    Int8Array.from({ length: n }, (_, i) => Math.round(Math.sin(i * f) * 127));
  const nx = 8 * 14 * 14 * 16, ny = 8 * 14 * 14 * 32, nw = 32 * 9 * 16;
  const xs = [8, 14, 14, 16], ys = [8, 14, 14, 32], ws = [32, 3, 3, 16];
  using x = Tensor.from(b, vals(nx, 0.37), xs, "f32");
  using dy = Tensor.from(b, vals(ny, 0.71), ys, "f32");
  using w = Tensor.from(b, vals(nw, 1.13), ws, "f32");
  using xq = Tensor.from(b, ints(nx, 0.41), xs, "i8");
  using dyq = Tensor.from(b, ints(ny, 0.93), ys, "i8");
  using wq = Tensor.from(b, ints(nw, 1.7), ws, "i8");
  using sx = Tensor.from(b, Float32Array.of(0.01), [1], "f32");
  using sw = Tensor.from(b, vals(32, 0.3).map((v) => 0.01 + Math.abs(v) * 0.01), [32], "f32");
  using y = Tensor.empty(b, ys, "f32");
  using dx = Tensor.empty(b, xs, "f32");
  using dw = Tensor.empty(b, ws, "f32");
  const outputs: Float32Array[] = [];
  const unstable: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const out: Float32Array[] = [];
    b.conv2d(y, x, w, null, s);
    out.push(y.toFloat32());
    b.conv2dDgrad(dx, dy, w, s);
    out.push(dx.toFloat32());
    b.conv2dWgrad(dw, x, dy, s);
    out.push(dw.toFloat32());
    b.conv2dI8(y, xq, wq, null, sx, sw, ScaleLayout.outer, s);
    out.push(y.toFloat32());
    b.conv2dDgradI8(dx, dyq, wq, sx, sx, s);
    out.push(dx.toFloat32());
    b.conv2dWgradI8(dw, xq, dyq, sx, sw, ScaleLayout.inner, s);
    out.push(dw.toFloat32());
    if (r === 0) outputs.push(...out);
    else if (out.some((o, i) => firstDifference(o, outputs[i]!) >= 0)) unstable.push(r);
  }
  b.setThreads(0);
  return { outputs, unstable };
}
