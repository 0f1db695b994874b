/** The public API of mod.ts: the values a user imports exist at run time and work together. */
import assert from "node:assert/strict";
import * as d8 from "../mod.ts";

Deno.test("mod.ts exports the runtime values of the public API", () => {
  for (
    const name of [
      "getBackend",
      "Tensor",
      "Tape",
      "conv2d",
      "lenet5",
      "resnet20",
      "Sgd",
      "train",
      "quantConfig",
      "ModelQuantizer",
      "optimalClip",
      "clippingError",
      "ScaleLayout",
      "INT8_KERNELS",
      "SHARP_FAMILIES",
      "PRESETS",
      "SYMBOLS",
      "Daint8Error",
    ] as const
  ) {
    assert.ok((d8 as Record<string, unknown>)[name] !== undefined, `mod.ts lacks ${name}`);
  }
});

Deno.test("mod.ts: a daint8-quantized ResNet-20 takes one training step through the public API", async () => {
  const backend = d8.getBackend("cpu");
  const model = d8.resnet20({ backend, rng: new d8.Rng(0) }, { inChannels: 1, inputSize: 12 });
  const q = new d8.ModelQuantizer(model, d8.quantConfig("daint8"), 0);
  const opt = new d8.Sgd(backend, model.namedParameters(), { lr: 0.1, momentum: 0.9 });
  try {
    using tape = new d8.Tape(backend);
    for (const [, p] of model.namedParameters()) tape.watch(p);
    const x = tape.own(d8.Tensor.full(backend, [4, 12, 12, 1], 0.5));
    const y = tape.own(d8.Tensor.from(backend, Int32Array.of(0, 1, 2, 3), [4], "i32"));
    const ce = d8.softmaxCrossEntropy(tape, model.forward(tape, x), y);
    opt.step(tape.backward(ce.loss));
    assert.ok(Number.isFinite((await ce.read()).loss));
    assert.equal(q.layers.length, 20); // 21 convs + fc, first conv and fc kept in FP32
    assert.ok(q.layers.every((l) => l.step === 1), "every INT8 layer saw one backward");
    const states = await Promise.all(q.layers.map((l) => l.readState()));
    assert.ok(states.every((s) => s!.step === 1), "and its device state counted it");
  } finally {
    opt.dispose();
    q.dispose();
    model.dispose();
  }
});
