/**
 * torchvision interop: a PyTorch model with random weights (ResNet-18, MobileNetV2, and LeNet-5
 * for the flattened-classifier permutation), saved as safetensors, gives the same eval-mode
 * logits here; our exported weights load strictly into PyTorch and give our logits there; bad
 * files fail with a list of what is wrong. Needs Debian's python3-torch and python3-torchvision;
 * skipped (with a warning) without them.
 */
import assert from "node:assert/strict";
import { Tape } from "../src/autograd/tape.ts";
import { Rng } from "../src/data/rng.ts";
import { readSafetensors, writeSafetensorsAtomic } from "../src/io/safetensors.ts";
import { loadTorchvisionWeights, saveTorchvisionWeights } from "../src/io/torchvision.ts";
import { createModel } from "../src/models/registry.ts";
import { Tensor } from "../src/tensor.ts";
import { cpu as cpuBackend } from "./helpers/check_op.ts";
import { findPython } from "./helpers/python.ts";

const cpu = cpuBackend();
const script = new URL("./helpers/torch_parity.py", import.meta.url).pathname;

const python = findPython("torch, torchvision");
if (!python) {
  console.warn(
    "SKIP interop tests: python3 with torch and torchvision not found (apt-get install " +
      "python3-torch python3-torchvision)",
  );
}

function py(...args: string[]): { ok: boolean; out: string } {
  const r = new Deno.Command(python!, { args: [script, ...args] }).outputSync();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  return { ok: r.success, out };
}

const CASES: [string, number][] = [["resnet18", 64], ["mobilenet_v2", 64], ["lenet5", 32]];

function forward(model: ReturnType<typeof createModel>, x: Float32Array, size: number) {
  model.eval();
  using tape = new Tape(cpu, { grad: false });
  const t = tape.own(Tensor.from(cpu, x, [2, size, size, 3], "f32"));
  return model.forward(tape, t).toArray() as Float32Array;
}

for (const [name, size] of CASES) {
  Deno.test({
    name: `${name}: torchvision weights give PyTorch's logits, ours load back into PyTorch`,
    ignore: !python,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "daint8-interop-" });
      try {
        const r = py("export", name, String(size), dir);
        assert.ok(r.ok, r.out);
        const opts = { inChannels: 3, inputSize: size, classes: 10, stem: "imagenet" };
        const model = createModel(name, { backend: cpu, rng: new Rng(0), zeros: true }, opts);
        await loadTorchvisionWeights(model, `${dir}/weights.safetensors`, name);
        const io = (await readSafetensors(`${dir}/io.safetensors`)).tensors;
        const got = forward(model, io.x!.data as Float32Array, size);
        const want = io.logits!.data as Float32Array;
        const scale = Math.max(1, ...Array.from(want, Math.abs));
        want.forEach((v, i) =>
          assert.ok(Math.abs(got[i]! - v) <= 1e-3 * scale, `logit ${i}: ${got[i]} vs ${v}`)
        );
        model.dispose();

        // The reverse: our randomly initialized model, exported, in PyTorch.
        const ours = createModel(name, { backend: cpu, rng: new Rng(3) }, opts);
        const rng = new Rng(4);
        const x = new Float32Array(2 * size * size * 3).map(() => rng.normal());
        // Non-trivial running statistics, so eval mode is not the identity.
        for (const [n, t] of ours.namedBuffers()) {
          const v = new Float32Array(t.size).map(() =>
            n.endsWith("running_var") ? 0.5 + rng.next() : rng.next() - 0.5
          );
          cpu.upload(t, v);
        }
        const logits = forward(ours, x, size);
        await saveTorchvisionWeights(ours, `${dir}/ours.safetensors`);
        await writeSafetensorsAtomic(`${dir}/ours_io.safetensors`, {
          x: { dtype: "F32", shape: [2, size, size, 3], data: x },
          logits: { dtype: "F32", shape: [2, 10], data: logits },
        });
        ours.dispose();
        const back = py("check", name, String(size), dir);
        assert.ok(back.ok, `PyTorch disagrees with our exported ${name}: ${back.out}`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test("importing names missing, unexpected and mis-shaped tensors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "daint8-interop-" });
  try {
    const init = { backend: cpu, rng: new Rng(0), zeros: true };
    const m = createModel("resnet20", init, { inChannels: 3, classes: 10 });
    await saveTorchvisionWeights(m, `${dir}/w.safetensors`);
    const st = await readSafetensors(`${dir}/w.safetensors`);
    delete st.tensors["layer1.0.conv1.weight"];
    st.tensors["extra.weight"] = { dtype: "F32", shape: [1], data: new Float32Array(1) };
    st.tensors["fc.weight"] = { dtype: "F32", shape: [5, 64], data: new Float32Array(320) };
    await writeSafetensorsAtomic(`${dir}/bad.safetensors`, st.tensors);
    await assert.rejects(
      () => loadTorchvisionWeights(m, `${dir}/bad.safetensors`, "resnet20"),
      (e: Error) =>
        e instanceof TypeError && /1 missing: layer1\.0\.conv1\.weight/.test(e.message) &&
        /1 unexpected: extra\.weight/.test(e.message) &&
        /fc\.weight \[5, 64\] \(expected \[10, 64\]\)/.test(e.message),
    );
    m.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
