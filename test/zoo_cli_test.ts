/**
 * The zoo end to end on a tiny synthetic CIFAR-10 (binary files in a temp folder): training with
 * the input pipeline writes a checkpoint that `deno task eval` scores exactly as training did,
 * `--init` starts from the given weights (INT8 preset included), and eval's usage errors.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Rng } from "../src/data/rng.ts";
import { loadCifar10 } from "../src/data/cifar.ts";
import { InputPipeline } from "../src/data/pipeline.ts";
import { saveTorchvisionWeights } from "../src/io/torchvision.ts";
import { readSafetensors } from "../src/io/safetensors.ts";
import { createModel } from "../src/models/registry.ts";
import { main as evalMain } from "../src/cli/eval.ts";
import { train, type TrainConfig } from "../src/train/trainer.ts";
import { cpu as cpuBackend } from "./helpers/check_op.ts";

const cpu = cpuBackend();

async function tinyCifar(dir: string): Promise<void> {
  const rng = new Rng(4);
  const file = (n: number) => {
    const out = new Uint8Array(n * 3073);
    for (let i = 0; i < n; i++) {
      const label = rng.int(10);
      out[i * 3073] = label;
      // Class-dependent brightness, so that a few steps can learn something.
      for (let p = 1; p < 3073; p++) out[i * 3073 + p] = (label * 25 + rng.int(30)) & 255;
    }
    return out;
  };
  for (let i = 1; i <= 5; i++) await Deno.writeFile(join(dir, `data_batch_${i}.bin`), file(8));
  await Deno.writeFile(join(dir, "test_batch.bin"), file(20));
}

function config(over: Partial<TrainConfig>): TrainConfig {
  return {
    model: "resnet20",
    dataset: "cifar10",
    epochs: 1,
    batchSize: 16,
    lr: 0.05,
    momentum: 0.9,
    weightDecay: 5e-4,
    nesterov: false,
    schedule: "cosine",
    warmupEpochs: 0,
    seed: 0,
    quant: "fp32",
    ...over,
  };
}

Deno.test("cifar10 training with the pipeline; eval scores the checkpoint as training did", async () => {
  const dir = await Deno.makeTempDir({ prefix: "daint8-zoo-cli-" });
  try {
    await tinyCifar(dir);
    const trainSet = await loadCifar10(dir, "train"), testSet = await loadCifar10(dir, "test");
    const input = new InputPipeline(trainSet, { seed: 0 });
    const lines: string[] = [];
    const r = await train(config({}), trainSet, testSet, {
      backend: cpu,
      out: join(dir, "run"),
      input,
      print: (l) => lines.push(l),
    }).finally(() => input.close());
    r.model.dispose();
    assert.ok(lines.some((l) => /data wait \d+\.\d s/.test(l)), lines.join("\n"));
    const log = (await Deno.readTextFile(join(dir, "run", "metrics.jsonl"))).trim().split("\n");
    const epoch = JSON.parse(log.at(-1)!);
    assert.ok(epoch.data_wait_ms >= 0);
    const out: string[] = [];
    const status = await evalMain([
      "--model=resnet20",
      `--weights=${join(dir, "run", "checkpoint.safetensors")}`,
      "--dataset=cifar10",
      `--data-dir=${dir}`,
    ], (l) => out.push(l));
    assert.equal(status, 0, out.join("\n"));
    const acc = Number(/test accuracy ([\d.]+)%/.exec(out.at(-1)!)![1]);
    const loss = Number(/test loss ([\d.]+)/.exec(out.at(-1)!)![1]);
    assert.equal(acc, Number((100 * epoch.test_acc).toFixed(2)));
    assert.equal(loss, Number(epoch.test_loss.toFixed(4)));
    // An INT8 run's own test numbers (INT8 fprop) come back with --quant.
    const q = await train(config({ quant: "daint8" }), trainSet, testSet, {
      backend: cpu,
      out: join(dir, "run8"),
      input: new InputPipeline(trainSet, { seed: 0, prefetch: 0 }),
      print: () => {},
    });
    q.model.dispose();
    const log8 = (await Deno.readTextFile(join(dir, "run8", "metrics.jsonl"))).trim().split("\n");
    const epoch8 = JSON.parse(log8.at(-1)!);
    out.length = 0;
    assert.equal(
      await evalMain([
        "--model=resnet20",
        `--weights=${join(dir, "run8", "checkpoint.safetensors")}`,
        "--dataset=cifar10",
        `--data-dir=${dir}`,
        "--quant=daint8",
      ], (l) => out.push(l)),
      0,
      out.join("\n"),
    );
    assert.match(out.at(-1)!, /, daint8\): /);
    assert.equal(
      Number(/test loss ([\d.]+)/.exec(out.at(-1)!)![1]),
      Number(epoch8.test_loss.toFixed(4)),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--init: training (daint8) starts from the given torchvision-named weights", async () => {
  const dir = await Deno.makeTempDir({ prefix: "daint8-zoo-cli-" });
  try {
    await tinyCifar(dir);
    const trainSet = await loadCifar10(dir, "train", { limit: 16 });
    const testSet = await loadCifar10(dir, "test");
    const src = createModel("resnet20", { backend: cpu, rng: new Rng(77) }, { inChannels: 3 });
    await saveTorchvisionWeights(src, join(dir, "w.safetensors"));
    const want = new Map(src.namedParameters().map(([n, t]) => [n, t.toArray() as Float32Array]));
    src.dispose();
    // One step at a negligible learning rate: the weights stay those of the file.
    const r = await train(
      config({ quant: "daint8", lr: 1e-20, momentum: 0, weightDecay: 0 }),
      trainSet,
      testSet,
      { backend: cpu, init: join(dir, "w.safetensors"), print: () => {} },
    );
    for (const [n, t] of r.model.namedParameters()) {
      const got = t.toArray() as Float32Array, ref = want.get(n)!;
      for (let i = 0; i < got.length; i++) {
        assert.ok(Math.abs(got[i]! - ref[i]!) < 1e-6, `${n}[${i}]: ${got[i]} vs ${ref[i]}`);
      }
    }
    r.model.dispose();
    // The exported file really is in PyTorch's layout: conv1 is OIHW there.
    const st = await readSafetensors(join(dir, "w.safetensors"));
    assert.deepEqual(st.tensors["conv1.weight"]!.shape, [16, 3, 3, 3]);
    assert.deepEqual(st.tensors["layer2.0.conv1.weight"]!.shape, [32, 16, 3, 3]);
    assert.deepEqual(st.tensors["bn1.num_batches_tracked"]!.shape, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cifar10 with augmentation: 1 epoch + resume 1 equals 2 epochs straight", async () => {
  const dir = await Deno.makeTempDir({ prefix: "daint8-zoo-cli-" });
  try {
    await tinyCifar(dir);
    const trainSet = await loadCifar10(dir, "train"), testSet = await loadCifar10(dir, "test");
    const run = async (out: string, stopAfterEpochs?: number, resume?: string) => {
      const input = new InputPipeline(trainSet, { seed: 0 });
      const r = await train(config({ epochs: 2, quant: "daint8" }), trainSet, testSet, {
        backend: cpu,
        out,
        input,
        stopAfterEpochs,
        resume,
        print: () => {},
      }).finally(() => input.close());
      const w = r.model.stateTensors().map(([n, t]) => [n, Array.from(t.toArray())] as const);
      r.model.dispose();
      return w;
    };
    const straight = await run(join(dir, "a"));
    await run(join(dir, "b"), 1);
    const resumed = await run(join(dir, "b"), undefined, join(dir, "b", "checkpoint.safetensors"));
    assert.deepEqual(resumed, straight);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval: usage errors", async () => {
  const out: string[] = [];
  const err = console.error;
  console.error = (l: string) => out.push(l);
  try {
    assert.equal(await evalMain(["--model=resnet20"], (l) => out.push(l)), 2);
    assert.equal(await evalMain(["--model=nope", "--weights=x"], (l) => out.push(l)), 2);
    assert.equal(
      await evalMain(["--model=resnet20", "--weights=x", "--dataset=cifar10"], (l) => out.push(l)),
      2,
    );
  } finally {
    console.error = err;
  }
  assert.ok(out.some((l) => /needs --model and --weights/.test(l)), out.join("\n"));
  assert.ok(out.some((l) => /--model must be one of/.test(l)));
  assert.ok(out.some((l) => /cifar10 needs --data-dir/.test(l)));
});
