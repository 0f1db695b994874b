/**
 * The model zoo: parameter counts equal torchvision's, every model runs forward and backward at a
 * small input, MobileNetV2's depthwise and pointwise convolutions get INT8, and the zoo ops
 * (ReLU6, dropout, adaptive average pooling) match float64 references.
 */
import assert from "node:assert/strict";
import { Tape } from "../src/autograd/tape.ts";
import { Rng } from "../src/data/rng.ts";
import { Conv2d } from "../src/nn/layers.ts";
import { createModel, MODELS } from "../src/models/registry.ts";
import { adaptiveAvgPool2d, dropout, relu6 } from "../src/ops/zoo.ts";
import { softmaxCrossEntropy } from "../src/ops/loss.ts";
import { quantConfig } from "../src/quant/config.ts";
import { ModelQuantizer } from "../src/quant/quantizer.ts";
import { Tensor } from "../src/tensor.ts";
import { loadTorchvisionWeights, saveTorchvisionWeights } from "../src/io/torchvision.ts";
import type { InceptionV3 } from "../src/models/inception.ts";
import { Sgd } from "../src/optim/sgd.ts";
import { TrainStep } from "../src/train/step.ts";
import { cpu as cpuBackend } from "./helpers/check_op.ts";

const cpu = cpuBackend();

// Parameter counts from torchvision 0.14.1 (Debian python3-torchvision), computed with
//   sum(p.numel() for p in torchvision.models.<name>(num_classes=C).parameters())
// (inception_v3 with init_weights=False, aux_logits True / False). ResNet-20/56 and LeNet-5 are
// not in torchvision: their counts come from the same sum over a PyTorch definition of the same
// layers (3x3 stem, projection shortcuts of 1x1 conv + batch norm; LeNet-5 with padding 2).
const TORCHVISION_COUNTS: [string, number, Record<string, unknown>, number][] = [
  ["resnet18", 1000, {}, 11_689_512],
  ["resnet18", 10, {}, 11_181_642],
  ["resnet34", 1000, {}, 21_797_672],
  ["resnet50", 1000, {}, 25_557_032],
  ["resnet50", 10, {}, 23_528_522],
  ["mobilenet_v2", 1000, {}, 3_504_872],
  ["mobilenet_v2", 10, {}, 2_236_682],
  ["vgg16", 1000, {}, 138_357_544],
  ["vgg16_bn", 1000, {}, 138_365_992],
  ["vgg16_bn", 10, {}, 134_309_962],
  ["alexnet", 1000, {}, 61_100_840],
  ["alexnet", 10, {}, 57_044_810],
  ["inception_v3", 1000, { auxLogits: true }, 27_161_264],
  ["inception_v3", 1000, {}, 23_834_568],
  ["inception_v3", 10, {}, 21_806_058],
];
const OWN_COUNTS: [string, number, number, number][] = [
  ["resnet20", 10, 3, 272_474],
  ["resnet56", 10, 3, 855_770],
  ["lenet5", 10, 1, 61_706],
];

Deno.test("parameter counts equal torchvision's", () => {
  for (const [name, classes, extra, want] of TORCHVISION_COUNTS) {
    const size = name === "inception_v3" ? 299 : 224;
    const m = createModel(name, { backend: cpu, rng: new Rng(0), zeros: true }, {
      inChannels: 3,
      inputSize: size,
      classes,
      ...extra,
    });
    try {
      assert.equal(m.parameterCount(), want, `${name} (${classes} classes)`);
    } finally {
      m.dispose();
    }
  }
  for (const [name, classes, cin, want] of OWN_COUNTS) {
    const m = createModel(name, { backend: cpu, rng: new Rng(0), zeros: true }, {
      inChannels: cin,
      inputSize: 28,
      classes,
    });
    assert.equal(m.parameterCount(), want, name);
    m.dispose();
  }
});

Deno.test("parameter names follow torchvision", () => {
  const names = (model: string, opts = {}) => {
    const m = createModel(model, { backend: cpu, rng: new Rng(0), zeros: true }, {
      classes: 10,
      inputSize: 224,
      ...opts,
    });
    const out = new Map(m.stateTensors().map(([n, t]) => [n, t.shape]));
    m.dispose();
    return out;
  };
  const mb = names("mobilenet_v2");
  assert.deepEqual(mb.get("features.0.0.weight"), [32, 3, 3, 3]);
  assert.deepEqual(mb.get("features.1.conv.0.0.weight"), [32, 3, 3, 1]); // depthwise, OHWI
  assert.deepEqual(mb.get("features.2.conv.0.0.weight"), [96, 1, 1, 16]);
  assert.deepEqual(mb.get("features.18.1.running_var"), [1280]);
  assert.deepEqual(mb.get("classifier.1.weight"), [10, 1280]);
  const r50 = names("resnet50");
  assert.deepEqual(r50.get("layer4.2.conv3.weight"), [2048, 1, 1, 512]);
  assert.deepEqual(r50.get("layer2.0.downsample.0.weight"), [512, 1, 1, 256]);
  const inc = names("inception_v3", { inputSize: 299, auxLogits: true });
  assert.deepEqual(inc.get("Mixed_6b.branch7x7_2.conv.weight"), [128, 1, 7, 128]);
  assert.deepEqual(inc.get("Mixed_7b.branch3x3_2b.conv.weight"), [384, 3, 1, 384]);
  assert.deepEqual(inc.get("AuxLogits.fc.weight"), [10, 768]);
  const vgg = names("vgg16_bn");
  assert.deepEqual(vgg.get("features.1.running_mean"), [64]);
  assert.deepEqual(vgg.get("classifier.6.weight"), [10, 4096]);
});

Deno.test("every model trains a step at a small input", () => {
  const cases: [string, number][] = [
    ["lenet5", 32],
    ["resnet20", 32],
    ["resnet56", 32],
    ["resnet18", 32],
    ["resnet50", 32],
    ["mobilenet_v2", 32],
    ["alexnet", 32],
    ["vgg16_bn", 32],
    ["inception_v3", 75],
  ];
  for (const [name, size] of cases) {
    // VGG and AlexNet: zero weights (drawing 57M-134M random values takes seconds); shape and
    // loss only for them.
    const heavy = name === "vgg16_bn" || name === "alexnet";
    const m = createModel(name, { backend: cpu, rng: new Rng(1), zeros: heavy }, {
      inChannels: 3,
      inputSize: size,
      classes: 10,
    });
    try {
      using tape = new Tape(cpu);
      for (const [, p] of m.namedParameters()) tape.watch(p);
      const host = new Float32Array(2 * size * size * 3);
      const rng = new Rng(2);
      for (let i = 0; i < host.length; i++) host[i] = rng.normal();
      const x = tape.own(Tensor.from(cpu, host, [2, size, size, 3], "f32"));
      const labels = tape.own(Tensor.from(cpu, new Int32Array([1, 7]), [2], "i32"));
      const logits = m.forward(tape, x);
      assert.deepEqual(logits.shape, [2, 10], name);
      const ce = softmaxCrossEntropy(tape, logits, labels);
      const grads = tape.backward(ce.loss);
      assert.ok(Number.isFinite(ce.readSync().loss), name);
      if (heavy) continue;
      const w = m.namedParameters()[0]!;
      const g = grads.get(w[1].id);
      assert.ok(g !== undefined, `${name}: no gradient for ${w[0]}`);
      assert.ok(g.toArray().some((v) => v !== 0), `${name}: zero gradient for ${w[0]}`);
    } finally {
      m.dispose();
    }
  }
  assert.ok(Object.keys(MODELS).length >= 11);
});

Deno.test("MobileNetV2: depthwise and pointwise convolutions run in INT8", () => {
  const m = createModel("mobilenet_v2", { backend: cpu, rng: new Rng(0) }, { classes: 10 });
  const q = new ModelQuantizer(m, quantConfig("daint8"), 0);
  const int8 = new Set(q.layers.map((l) => l.layer));
  const convs = m.namedModules().filter(([, mod]) => mod instanceof Conv2d) as [string, Conv2d][];
  const dw = convs.filter(([, c]) => c.options.groups > 1);
  const pw = convs.filter(([, c]) => c.kernel[0] === 1 && c.options.groups === 1);
  assert.equal(dw.length, 17);
  for (const [name] of [...dw, ...pw]) assert.ok(int8.has(name), `${name} is not INT8`);
  assert.deepEqual(q.fp32Layers, ["features.0.0", "classifier.1"]);
  // One INT8 training step runs and gives finite gradients.
  using tape = new Tape(cpu);
  for (const [, p] of m.namedParameters()) tape.watch(p);
  const host = new Float32Array(2 * 32 * 32 * 3).map((_, i) => Math.sin(i));
  const x = tape.own(Tensor.from(cpu, host, [2, 32, 32, 3], "f32"));
  const y = tape.own(Tensor.from(cpu, new Int32Array([3, 4]), [2], "i32"));
  const ce = softmaxCrossEntropy(tape, m.forward(tape, x), y);
  const grads = tape.backward(ce.loss);
  const dwWeight = dw[0]![1].weight;
  assert.ok(grads.get(dwWeight.id)!.toArray().every(Number.isFinite));
  m.dispose();
});

Deno.test("Inception v3 takes an INT8 (daint8) step: 1x7 / 7x1 kernels and concat branches", () => {
  const m = createModel("inception_v3", { backend: cpu, rng: new Rng(0) }, {
    inputSize: 75,
    classes: 10,
  });
  const q = new ModelQuantizer(m, quantConfig("daint8"), 0);
  assert.ok(q.layers.some((l) => l.layer === "Mixed_6b.branch7x7_2.conv"));
  using tape = new Tape(cpu);
  for (const [, p] of m.namedParameters()) tape.watch(p);
  const host = new Float32Array(2 * 75 * 75 * 3).map((_, i) => Math.cos(i * 0.37));
  const x = tape.own(Tensor.from(cpu, host, [2, 75, 75, 3], "f32"));
  const y = tape.own(Tensor.from(cpu, new Int32Array([0, 9]), [2], "i32"));
  const ce = softmaxCrossEntropy(tape, m.forward(tape, x), y);
  const grads = tape.backward(ce.loss);
  assert.ok(Number.isFinite(ce.readSync().loss));
  const w = m.namedParameters().find(([n]) => n === "Mixed_6b.branch7x7_2.conv.weight")![1];
  const g = grads.get(w.id)!.toArray();
  assert.ok(g.every(Number.isFinite) && g.some((v) => v !== 0));
  m.dispose();
});

Deno.test("ReLU6, dropout and adaptive average pooling match references", () => {
  const rng = new Rng(5);
  const host = new Float32Array(2 * 5 * 7 * 3);
  for (let i = 0; i < host.length; i++) host[i] = rng.normal(0, 5);
  using tape = new Tape(cpu);
  const x = tape.watch(tape.own(Tensor.from(cpu, host, [2, 5, 7, 3], "f32")));
  // ReLU6
  const r = relu6(tape, x).toArray();
  host.forEach((v, i) => assert.equal(r[i], Math.min(Math.max(v, 0), 6)));
  // Adaptive average pooling to 3x4 and to 9x9 (upsampling), PyTorch's windows.
  for (const [p, q] of [[3, 4], [9, 9], [1, 1]] as const) {
    const y = adaptiveAvgPool2d(tape, x, [p, q]);
    const got = y.toArray();
    for (let n = 0; n < 2; n++) {
      for (let i = 0; i < p; i++) {
        for (let j = 0; j < q; j++) {
          const h0 = Math.floor(i * 5 / p), h1 = Math.ceil((i + 1) * 5 / p);
          const w0 = Math.floor(j * 7 / q), w1 = Math.ceil((j + 1) * 7 / q);
          for (let c = 0; c < 3; c++) {
            let s = 0;
            for (let a = h0; a < h1; a++) {
              for (let b = w0; b < w1; b++) s += host[((n * 5 + a) * 7 + b) * 3 + c]!;
            }
            const want = s / ((h1 - h0) * (w1 - w0));
            const v = got[((n * p + i) * q + j) * 3 + c]!;
            assert.ok(Math.abs(v - want) < 1e-5, `adaptive ${p}x${q}: ${v} vs ${want}`);
          }
        }
      }
    }
    // Backward: the gradient of sum(y) spreads 1/window to each window's pixels.
    const seed = tape.own(Tensor.full(cpu, y.shape, 1));
    const g = tape.backward(y, seed).get(x.id)!.toArray();
    const total = Array.from(g).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(total - 2 * p * q * 3) < 1e-3, `adaptive ${p}x${q} backward sum ${total}`);
  }
  // Dropout: about p zeroed, the rest scaled by 1 / (1 - p), the same mask in backward, seeded.
  const big = tape.watch(tape.own(Tensor.full(cpu, [4000], 1)));
  const d1 = dropout(tape, big, 0.25, new Rng(9)).toArray();
  const d2 = dropout(tape, big, 0.25, new Rng(9)).toArray();
  assert.deepEqual(d1, d2);
  const zeros = d1.filter((v) => v === 0).length;
  assert.ok(zeros > 850 && zeros < 1150, `${zeros} of 4000 dropped at p 0.25`);
  assert.ok(d1.every((v) => v === 0 || Math.abs(v - 4 / 3) < 1e-6));
  assert.throws(() => dropout(tape, big, 1, new Rng(0)), /probability must be in \[0, 1\)/);
  assert.throws(() => adaptiveAvgPool2d(tape, big, [2, 2]), /must be \[n, h, w, c\]/);
});

Deno.test("Inception v3 rejects inputs below 75x75", () => {
  assert.throws(
    () => createModel("inception_v3", { backend: cpu, rng: new Rng(0) }, { inputSize: 64 }),
    /at least 75x75, got 64/,
  );
});

Deno.test("tape: extra roots back-propagate in one pass, their gradients added", async () => {
  const rng = new Rng(5);
  const host = new Float32Array(6).map(() => rng.normal());
  const labels = [Int32Array.from([0, 2]), Int32Array.from([1, 1])];
  const grad = async (weights: number[]) => {
    const logits = Tensor.from(cpu, host, [2, 3], "f32");
    const ys = labels.map((l) => Tensor.from(cpu, l, [2], "i32"));
    try {
      using tape = new Tape(cpu);
      tape.watch(logits);
      const roots = ys.map((y) => softmaxCrossEntropy(tape, logits, y).loss);
      const seeds = weights.map((w) => {
        const s = tape.empty([2]);
        cpu.fill(s, w);
        return s;
      });
      const extra = roots.slice(1).map((r, i) => [r, seeds[i + 1]!] as const);
      const g = tape.backward(roots[0]!, seeds[0], extra).get(logits.id)!;
      return await g.read() as Float32Array;
    } finally {
      logits.dispose();
      for (const y of ys) y.dispose();
    }
  };
  const both = await grad([1, 0.4]);
  const first = await grad([1, 0]);
  const second = await grad([0, 1]);
  for (let i = 0; i < 6; i++) {
    assert.ok(Math.abs(both[i]! - (first[i]! + 0.4 * second[i]!)) < 1e-6, `element ${i}`);
  }
  assert.ok(second.some((v) => Math.abs(v) > 1e-3), "the extra root's gradient reaches logits");
  using tape = new Tape(cpu);
  const t = tape.empty([2]);
  assert.throws(() => tape.backward(t, undefined, [[t, t]]), /a root is given twice/);
});

Deno.test("inception_v3 --aux-logits: the step trains AuxLogits on 0.4 x its loss; weights without the head skip it", async () => {
  const size = 299, n = 2;
  const rng = new Rng(3);
  const xs = new Float32Array(n * size * size * 3).map(() => rng.normal());
  const ys = Int32Array.from([3, 7]);
  const m = createModel("inception_v3", { backend: cpu, rng: new Rng(1) }, {
    inputSize: size,
    classes: 10,
    auxLogits: true,
  }) as InceptionV3;
  const x = Tensor.from(cpu, xs, [n, size, size, 3], "f32");
  const y = Tensor.from(cpu, ys, [n], "i32");
  const dir = await Deno.makeTempDir({ prefix: "daint8-aux-" });
  try {
    // The auxiliary logits of this batch before the step (training mode: batch statistics,
    // and the dropout comes after the auxiliary head, so the step sees the same ones).
    m.train();
    let aux: Float32Array;
    {
      using tape = new Tape(cpu, { grad: false });
      m.forward(tape, x);
      aux = await m.lastAux!.read() as Float32Array;
    }
    const bias = m.aux!.fc.bias!;
    const before = await bias.read() as Float32Array;
    const q = new ModelQuantizer(m, quantConfig("fp32"), 0);
    const opt = new Sgd(cpu, m.namedParameters(), { lr: 1, momentum: 0, weightDecay: 0 });
    new TrainStep(cpu, m, q, opt).run(() => [x, y], 1);
    const after = await bias.read() as Float32Array;
    // d(0.4 * mean CE)/d bias = 0.4 * mean over the batch of softmax - onehot (the main loss
    // does not reach the auxiliary head).
    for (let c = 0; c < 10; c++) {
      let g = 0;
      for (let i = 0; i < n; i++) {
        const row = aux.subarray(i * 10, i * 10 + 10);
        const mx = Math.max(...row);
        const z = row.reduce((s, v) => s + Math.exp(v - mx), 0);
        g += Math.exp(row[c]! - mx) / z - (ys[i] === c ? 1 : 0);
      }
      const want = before[c]! - 0.4 * g / n;
      assert.ok(Math.abs(after[c]! - want) < 1e-5, `bias ${c}: ${after[c]} vs ${want}`);
    }
    // torchvision's weights hold AuxLogits.*: a model built without the head skips them.
    const path = `${dir}/w.safetensors`;
    await saveTorchvisionWeights(m, path);
    const plain = createModel("inception_v3", { backend: cpu, rng: new Rng(2), zeros: true }, {
      inputSize: size,
      classes: 10,
    });
    try {
      await loadTorchvisionWeights(plain, path, "inception_v3");
      const [name, fc] = plain.stateTensors().find(([k]) => k === "fc.weight")!;
      assert.deepEqual(await fc.read(), await m.fc.weight.read(), name);
    } finally {
      plain.dispose();
    }
  } finally {
    m.dispose();
    x.dispose();
    y.dispose();
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(
    () =>
      createModel("inception_v3", { backend: cpu, rng: new Rng(1) }, {
        inputSize: 298,
        auxLogits: true,
      }),
    /auxiliary head needs inputs of at least 299x299/,
  );
  assert.throws(
    () => createModel("resnet20", { backend: cpu, rng: new Rng(1) }, { auxLogits: true }),
    /Model "resnet20" has no auxiliary classifier/,
  );
});
