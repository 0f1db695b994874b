/**
 * Bad input is a clear thrown error naming the problem, never a crash: shape mismatches caught in
 * TypeScript, the same caught again by the native library (called directly), zero or negative
 * dimensions, disposed tensors, and a missing or stale native library.
 */
import assert from "node:assert/strict";
import { Daint8Error } from "../ffi/library.ts";
import { Tape } from "../src/autograd/tape.ts";
import { ScaleLayout } from "../src/backend/backend.ts";
import { conv2d, convShape, linear } from "../src/ops/conv.ts";
import { add } from "../src/ops/elementwise.ts";
import { softmaxCrossEntropy } from "../src/ops/loss.ts";
import { Tensor } from "../src/tensor.ts";
import { cpu } from "./helpers/check_op.ts";

const backend = cpu();

Deno.test("conv2d() names mismatched channels, bad bias and kernels larger than the input", () => {
  using tape = new Tape(backend);
  const x = tape.own(Tensor.full(backend, [1, 8, 8, 30], 0));
  const w = tape.own(Tensor.full(backend, [4, 3, 3, 32], 0));
  assert.throws(() => conv2d(tape, x, w, null), /input has 30 channels, weight expects 32/);
  const w2 = tape.own(Tensor.full(backend, [4, 3, 3, 30], 0));
  const b = tape.own(Tensor.full(backend, [5], 0));
  assert.throws(() => conv2d(tape, x, w2, b), /bias must be \[4\], got \[5\]/);
  const big = tape.own(Tensor.full(backend, [4, 11, 11, 30], 0));
  assert.throws(() => conv2d(tape, x, big, null), /11x11 kernel .* does not fit a 8x8 input/);
  assert.throws(() => conv2d(tape, x, w2, null, { stride: 0 }), /stride must be an integer >= 1/);
  assert.throws(
    () => conv2d(tape, x, w2, null, { groups: 4 }),
    (e: Error) =>
      e instanceof TypeError &&
      e.message ===
        "Cannot run conv2d: input has 30 channels, weight expects 120 (30 per group x 4 groups)",
  );
});

Deno.test("linear(), add() and the loss name mismatched shapes", () => {
  using tape = new Tape(backend);
  const x = tape.own(Tensor.full(backend, [2, 5], 0));
  const w = tape.own(Tensor.full(backend, [3, 6], 0));
  assert.throws(() => linear(tape, x, w, null), /input must be \[batch, 6\], got \[2, 5\]/);
  const y = tape.own(Tensor.full(backend, [2, 6], 0));
  assert.throws(() => add(tape, x, y), /shapes \[2, 5\] and \[2, 6\] differ/);
  const labels = tape.own(Tensor.from(backend, Int32Array.of(0, 1, 2), [3], "i32"));
  assert.throws(() => softmaxCrossEntropy(tape, x, labels), /labels must be \[2\] i32/);
});

Deno.test("Tensor refuses zero, negative and fractional dimensions and use after dispose", () => {
  for (const shape of [[0, 3], [2, -1], [1.5]]) {
    assert.throws(() => Tensor.empty(backend, shape), RangeError);
  }
  assert.throws(() => Tensor.from(backend, new Float32Array(5), [2, 3], "f32"), /from 5 values/);
  const t = Tensor.full(backend, [2], 1);
  t.dispose();
  assert.throws(() => t.toArray(), /already disposed/);
  t.dispose(); // idempotent
});

Deno.test("the native library rejects a too-small buffer and a bad shape with a Daint8Error", () => {
  const s = convShape("test", [1, 4, 4, 2], 3, 3, { padding: 1 });
  using x = Tensor.full(backend, [1, 4, 4, 2], 0);
  using w = Tensor.full(backend, [3, 3, 3, 2], 0);
  using small = Tensor.full(backend, [1, 4, 4, 2], 0); // needs 3 channels
  assert.throws(() => backend.conv2d(small, x, w, null, s), (e: Error) => {
    assert.ok(e instanceof Daint8Error, `${e.name}: ${e.message}`);
    assert.equal(e.status, 1);
    assert.equal(
      e.message,
      "d8_conv2d_fwd: y holds 128 bytes, shape needs 192 (n=1,h=4,w=4,c=2,k=3,r=3,s=3," +
        "groups=1,stride=1x1,pad=1x1,p=4,q=4) (invalid argument)",
    );
    return true;
  });
  using y = Tensor.full(backend, [1, 4, 4, 3], 0);
  assert.throws(
    () => backend.conv2d(y, x, w, null, { ...s, p: 5 }),
    (e: Error) =>
      e instanceof Daint8Error &&
      e.message ===
        "d8_conv2d_fwd: output is 5x4, the shape gives p=4, q=4 (n=1,h=4,w=4,c=2,k=3,r=3,s=3," +
          "groups=1,stride=1x1,pad=1x1,p=5,q=4) (invalid argument)",
  );
  using q = Tensor.empty(backend, [4], "i8");
  using clip = Tensor.full(backend, [1], 1);
  assert.throws(
    () => backend.quantizeI8(q, x, 8, 4, clip, ScaleLayout.tensor, false, 0),
    (e: Error) =>
      e instanceof Daint8Error &&
      e.message ===
        "d8_quantize_i8: y holds 4 bytes, shape needs 32 (outer=8,inner=4,layout=0) " +
          "(invalid argument)",
  );
  assert.throws(
    () => backend.quantizeI8(q, x, 1, 4, clip, 7 as ScaleLayout, false, 0),
    (e: Error) =>
      e instanceof Daint8Error &&
      e.message ===
        "d8_quantize_i8: layout must be D8_SCALE_TENSOR (0), D8_SCALE_INNER (1) or " +
          "D8_SCALE_OUTER (2), got 7 (outer=1,inner=4,layout=7) (invalid argument)",
  );
});

async function loadIn(env: Record<string, string>): Promise<string> {
  const code = `import { loadLibrary } from "${new URL("../ffi/library.ts", import.meta.url)}";
try { loadLibrary("cpu"); console.log("loaded"); } catch (e) { console.log(e.name + ": " + e.message); }`;
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
}

Deno.test("a missing library says where it looked and how to build it", async () => {
  const out = await loadIn({ DAINT8_CPU_LIB: "/nonexistent/libdaint8_cpu.so" });
  assert.match(
    out,
    /Daint8Error: Cannot find the cpu library at "\/nonexistent\/libdaint8_cpu.so"/,
  );
  assert.match(out, /deno task build/);
});

Deno.test("a stale library (old ABI, missing symbols) is refused with how to rebuild it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "daint8-stale-" });
  try {
    // A library of ABI version 1 with none of today's symbols.
    await Deno.writeTextFile(`${dir}/old.cpp`, 'extern "C" int d8_abi_version() { return 1; }\n');
    const cc = await new Deno.Command(Deno.env.get("CXX") ?? "g++", {
      args: ["-shared", "-fPIC", `${dir}/old.cpp`, "-o", `${dir}/libold.so`],
    }).output();
    assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
    const out = await loadIn({ DAINT8_CPU_LIB: `${dir}/libold.so` });
    assert.match(out, /Daint8Error: Cannot load the cpu library .*stale.*deno task build/s);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
