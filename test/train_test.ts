/**
 * Training end to end on a few hundred MNIST images: the loss falls, resume is exact, and bad
 * runs fail with clear errors without losing the previous checkpoint.
 */
import assert from "node:assert/strict";
import { defaultDataDir, type ImageDataset, loadMnistLike } from "../src/data/datasets.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { train, type TrainConfig } from "../src/train/trainer.ts";
import { cpu } from "./helpers/check_op.ts";

const mnistDir = defaultDataDir("mnist");
const ignore = mnistDir === undefined;
if (ignore) console.warn("SKIP train tests: MNIST not found (run `deno install`)");

async function data(limit: number, testLimit = 200): Promise<[ImageDataset, ImageDataset]> {
  return [
    await loadMnistLike(mnistDir!, "train", { limit, name: "mnist" }),
    await loadMnistLike(mnistDir!, "test", { limit: testLimit, name: "mnist" }),
  ];
}

function config(over: Partial<TrainConfig> = {}): TrainConfig {
  return {
    model: "lenet5",
    dataset: "mnist",
    epochs: 2,
    batchSize: 32,
    lr: 0.05,
    momentum: 0.9,
    weightDecay: 5e-4,
    nesterov: false,
    schedule: "constant",
    warmupEpochs: 0,
    seed: 7,
    quant: "fp32",
    ...over,
  };
}

const quiet = { backend: cpu(), print: () => {} };

for (const quant of ["fp32", "int8-naive", "ui8", "daint8"]) {
  Deno.test({
    name: `train() lowers LeNet-5's loss on 512 MNIST images by at least 3x in 3 epochs (${quant})`,
    ignore,
    async fn() {
      const [tr, te] = await data(512);
      const r = await train(config({ epochs: 3, schedule: "cosine", quant }), tr, te, quiet);
      const first = r.epochs[0]!.trainLoss, last = r.epochs.at(-1)!.trainLoss;
      const int8Layers = r.quantizer.layers.length;
      r.model.dispose();
      // An untrained 10-way classifier starts near ln 10 = 2.30.
      assert.ok(last * 3 < first, `loss went from ${first} to ${last}, expected a 3x drop`);
      assert.ok(r.testAcc > 0.6, `test accuracy ${r.testAcc} after 3 short epochs`);
      // LeNet-5 has 5 GEMM layers; the first and last stay FP32 by default.
      assert.equal(int8Layers, quant === "fp32" ? 0 : 3);
    },
  });
}

Deno.test({
  name:
    "train() resumed after 1 of 2 epochs gives the same weights and quantizer state as 2 straight",
  ignore,
  async fn() {
    const [tr, te] = await data(256);
    const dir = await Deno.makeTempDir({ prefix: "daint8-resume-" });
    try {
      for (
        const [quant, schedule, quantSet, tag] of [
          ["fp32", "constant", undefined, "fp32"],
          ["fp32", "cosine", undefined, "fp32"],
          ["daint8", "cosine", undefined, "daint8"],
          ["ui8", "constant", "statsPeriod=3", "ui8"],
          ["daint8", "constant", "clip=mcs-solve,alpha=1", "mcs-solve"],
        ] as const
      ) {
        const cfg = config({ schedule, quant, quantSet });
        const a = await train(cfg, tr, te, { ...quiet, out: `${dir}/${tag}-${schedule}-a` });
        a.model.dispose();
        const b1 = await train(cfg, tr, te, {
          ...quiet,
          out: `${dir}/${tag}-${schedule}-b`,
          stopAfterEpochs: 1,
        });
        b1.model.dispose();
        const b2 = await train(cfg, tr, te, {
          ...quiet,
          out: `${dir}/${tag}-${schedule}-b`,
          resume: `${dir}/${tag}-${schedule}-b/checkpoint.safetensors`,
        });
        b2.model.dispose();
        const ca = await readSafetensors(`${dir}/${tag}-${schedule}-a/checkpoint.safetensors`);
        const cb = await readSafetensors(`${dir}/${tag}-${schedule}-b/checkpoint.safetensors`);
        assert.deepEqual(Object.keys(cb.tensors).sort(), Object.keys(ca.tensors).sort());
        if (quant !== "fp32") {
          assert.ok(
            Object.keys(ca.tensors).some((n) => n.startsWith("quant.")),
            "quantizer state saved",
          );
        }
        for (const [name, t] of Object.entries(ca.tensors)) {
          assert.deepEqual(
            cb.tensors[name]!.data,
            t.data,
            `${tag} ${schedule}: ${name} differs after resume`,
          );
        }
        assert.equal(cb.metadata.epoch, "2");
        assert.equal(b2.epochs.length, 1);
        assert.equal(b2.epochs[0]!.testAcc, a.epochs[1]!.testAcc);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "train() refuses a checkpoint of another model and keeps it intact",
  ignore,
  async fn() {
    const [tr, te] = await data(64);
    const dir = await Deno.makeTempDir({ prefix: "daint8-other-" });
    try {
      const a = await train(config({ epochs: 1 }), tr, te, { ...quiet, out: dir });
      a.model.dispose();
      const path = `${dir}/checkpoint.safetensors`;
      const before = await Deno.readFile(path);
      await assert.rejects(
        () => train(config({ model: "resnet20" }), tr, te, { ...quiet, resume: path }),
        (e: Error) => e instanceof TypeError && /saved from model "lenet5"/.test(e.message),
      );
      assert.deepEqual(await Deno.readFile(path), before);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "train() refuses a corrupted checkpoint and a missing one with clear errors",
  ignore,
  async fn() {
    const [tr, te] = await data(64);
    const dir = await Deno.makeTempDir({ prefix: "daint8-bad-" });
    try {
      await Deno.writeFile(`${dir}/bad.safetensors`, new Uint8Array([1, 2, 3]));
      await assert.rejects(
        () => train(config(), tr, te, { ...quiet, resume: `${dir}/bad.safetensors` }),
        /bad\.safetensors/,
      );
      await assert.rejects(
        () => train(config(), tr, te, { ...quiet, resume: `${dir}/none.safetensors` }),
        /does not exist/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "train() refuses an unknown preset and bad knob values before training",
  ignore,
  async fn() {
    const [tr, te] = await data(64);
    await assert.rejects(
      () => train(config({ quant: "int4" }), tr, te, quiet),
      /Unknown quantization "int4"/,
    );
    await assert.rejects(
      () => train(config({ quant: "daint8", quantSet: { A: 3 } }), tr, te, quiet),
      /A=3/,
    );
  },
});

Deno.test({
  name: "train() resumes a model with dropout bit-identically (the masks' generators are saved)",
  ignore,
  async fn() {
    // MobileNetV2's evaluation dominates the time: a few test images do (accuracy is not checked)
    const [tr, te] = await data(32, 16);
    const dir = await Deno.makeTempDir({ prefix: "daint8-dropout-" });
    try {
      const cfg = config({ model: "mobilenet_v2", quant: "daint8", batchSize: 16 });
      const a = await train(cfg, tr, te, { ...quiet, out: `${dir}/a` });
      a.model.dispose();
      const b1 = await train(cfg, tr, te, { ...quiet, out: `${dir}/b`, stopAfterEpochs: 1 });
      b1.model.dispose();
      const b2 = await train(cfg, tr, te, {
        ...quiet,
        out: `${dir}/b`,
        resume: `${dir}/b/checkpoint.safetensors`,
      });
      b2.model.dispose();
      const ca = await readSafetensors(`${dir}/a/checkpoint.safetensors`);
      const cb = await readSafetensors(`${dir}/b/checkpoint.safetensors`);
      assert.ok(
        Object.keys(ca.tensors).some((n) => n.startsWith("rng.layer.")),
        "dropout rng saved",
      );
      for (const [name, t] of Object.entries(ca.tensors)) {
        assert.deepEqual(cb.tensors[name]!.data, t.data, `${name} differs after resume`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
