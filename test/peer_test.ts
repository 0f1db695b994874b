/**
 * The PyTorch CPU peer (bench/peers/torch_cpu.py --serve), as `deno task report` drives it: a
 * conv request that carries its layer's shape is timed on that shape (any layer set, the zoo's
 * included), a ResNet-20 layer named without one still is, and bad requests get an error row
 * while the process goes on. Needs Debian's python3-torch; skipped (with a warning) without it.
 */
import assert from "node:assert/strict";
import { zooConvLayers } from "../bench/conv_fixture.ts";
import { findPython } from "./helpers/python.ts";

const script = new URL("../bench/peers/torch_cpu.py", import.meta.url).pathname;

const python = findPython("torch", ["/usr/bin/python3", "python3"]);
if (!python) {
  console.warn("SKIP peer tests: python3 with torch not found (apt-get install python3-torch)");
}

Deno.test({
  name: "the served PyTorch peer times a conv pass of any shape the request carries",
  ignore: !python,
  async fn() {
    // a zoo layer's shape, shrunk to a quick call (the peer takes whatever shape it is sent)
    const zoo = zooConvLayers(2).find((l) => l.stride === 2 && l.r === 3)!;
    const shape = { n: 2, h: 9, w: 9, c: 8, k: 16, stride: zoo.stride, r: zoo.r, pad: zoo.pad };
    const reqs = [
      { layer: "small s2", pass: "dgrad", shape, channels_last: true, seconds: 0.02 },
      { layer: "small s2", pass: "wgrad", shape, seconds: 0.02 },
      { layer: "stage3 64->64 7x7", pass: "fprop", seconds: 0.02 },
      { layer: "unknown", pass: "fprop", seconds: 0.02 },
      { layer: "bad", pass: "fprop", shape: { ...shape, r: 30 }, seconds: 0.02 },
      { layer: "bad", pass: "fprop", shape: { n: 2, c: 8 }, seconds: 0.02 },
      { layer: "bad", pass: "fprop", shape: [2, 8], seconds: 0.02 },
    ];
    const p = new Deno.Command(python!, {
      args: [script, "--serve", "--threads", "1", "--batch-size", "3", "--warmup", "1"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(reqs.map((r) => JSON.stringify(r)).join("\n") + "\n"));
    await w.close();
    const out = await p.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const rows = new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(rows.length, 1 + reqs.length);
    assert.equal(rows[0].ready, true);
    const p2 = Math.floor((9 + 2 * shape.pad - 3) / 2) + 1;
    for (const [i, pass] of [[1, "dgrad"], [2, "wgrad"]] as const) {
      const r = rows[i];
      assert.equal(r.error, undefined, JSON.stringify(r));
      assert.equal(r.layer, "small s2");
      assert.equal(r.pass, pass);
      assert.equal(r.batch, 2);
      assert.equal(r.macs, 2 * p2 * p2 * 16 * 3 * 3 * 8);
      assert.ok(r.ms > 0 && r.times_ms.length >= 5, JSON.stringify(r));
    }
    assert.equal(rows[1].channels_last, true);
    // a ResNet-20 layer by name: --batch-size, its own shape
    assert.equal(rows[3].batch, 3);
    assert.equal(rows[3].macs, 3 * 7 * 7 * 64 * 9 * 64);
    assert.match(rows[4].error, /unknown conv layer 'unknown'/);
    assert.match(rows[5].error, /is not a valid conv/);
    assert.match(rows[6].error, /lacks h, w, k, stride, r, pad/);
    assert.match(rows[7].error, /an object expected/);
  },
});
