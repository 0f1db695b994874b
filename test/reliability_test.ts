/**
 * Nothing lost, nothing silently wrong: a rerun never replaces another run's output, a diverged
 * run never replaces a good checkpoint, `--resume` checks everything it loads, and bad values
 * are one clear line (the right exit status, no stack trace) before any training.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { main, parseTrainArgs } from "../src/cli/train.ts";
import { parseQuantSet, reportError } from "../src/cli/args.ts";
import { defaultDataDir, type ImageDataset, loadMnistLike } from "../src/data/datasets.ts";
import { parseIdx } from "../src/data/idx.ts";
import {
  encodeSafetensors,
  readSafetensors,
  type Safetensors,
  writeSafetensorsAtomic,
} from "../src/io/safetensors.ts";
import { quantConfig } from "../src/quant/config.ts";
import { Tensor } from "../src/tensor.ts";
import { saveCheckpoint } from "../src/train/checkpoint.ts";
import { train, type TrainConfig } from "../src/train/trainer.ts";
import { cpu } from "./helpers/check_op.ts";

const backend = cpu();
const mnistDir = defaultDataDir("mnist");
const ignore = mnistDir === undefined;
if (ignore) console.warn("SKIP reliability training tests: MNIST not found (run `deno install`)");

let cached: [ImageDataset, ImageDataset] | undefined;
async function data(): Promise<[ImageDataset, ImageDataset]> {
  cached ??= [
    await loadMnistLike(mnistDir!, "train", { limit: 64, name: "mnist" }),
    await loadMnistLike(mnistDir!, "test", { limit: 32, name: "mnist" }),
  ];
  return cached;
}

function config(over: Partial<TrainConfig> = {}): TrainConfig {
  return {
    model: "lenet5",
    dataset: "mnist",
    epochs: 1,
    batchSize: 32,
    lr: 0.05,
    momentum: 0.9,
    weightDecay: 5e-4,
    nesterov: false,
    schedule: "constant",
    warmupEpochs: 0,
    seed: 3,
    quant: "fp32",
    ...over,
  };
}

const lines: string[] = [];
const quiet = { backend, print: (l: string) => lines.push(l) };

async function withDir(prefix: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs the train CLI in-process; returns its exit status and what it printed to stderr. */
async function cli(args: string[]): Promise<{ code: number; err: string[]; out: string[] }> {
  const err: string[] = [], out: string[] = [];
  const [e, l] = [console.error, console.log];
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  try {
    return { code: await main(args), err, out };
  } finally {
    [console.error, console.log] = [e, l];
  }
}

/** Rewrites a checkpoint with `edit` applied to its decoded contents. */
async function rewrite(src: string, dst: string, edit: (st: Safetensors) => void): Promise<void> {
  const st = await readSafetensors(src);
  edit(st);
  await Deno.writeFile(dst, encodeSafetensors(st.tensors, st.metadata));
}

function rejectsWith(message: string, kind: ErrorConstructor = Error) {
  return (e: unknown) => {
    assert.ok(e instanceof kind, `expected a ${kind.name}, got ${String(e)}`);
    assert.equal((e as Error).message, message);
    return true;
  };
}

// ---- data lost ----

Deno.test({
  name: "train() refuses an --out that holds another run, leaving its files as they were",
  ignore,
  async fn() {
    const [tr, te] = await data();
    await withDir("daint8-rerun-", async (dir) => {
      const a = await train(config({ epochs: 2 }), tr, te, { ...quiet, out: dir });
      a.model.dispose();
      const ckpt = `${dir}/checkpoint.safetensors`, metrics = `${dir}/metrics.jsonl`;
      const [ck0, m0] = [await Deno.readFile(ckpt), await Deno.readFile(metrics)];
      await assert.rejects(
        () => train(config(), tr, te, { ...quiet, out: dir }),
        rejectsWith(
          `Cannot use output directory "${dir}": it already holds a run (checkpoint.safetensors ` +
            `at epoch 2, metrics.jsonl); continue it with --resume ${ckpt}, pick another --out, ` +
            "or pass --overwrite to replace it",
        ),
      );
      // Resuming some other checkpoint into it would replace its checkpoint too.
      await Deno.copyFile(ckpt, `${dir}/copy.safetensors`);
      await assert.rejects(
        () =>
          train(config({ epochs: 3 }), tr, te, {
            ...quiet,
            out: dir,
            resume: `${dir}/copy.safetensors`,
          }),
        rejectsWith(
          `Cannot use output directory "${dir}": it already holds a run (checkpoint.safetensors ` +
            `at epoch 2, metrics.jsonl), not the one of "${dir}/copy.safetensors"; resuming into ` +
            "it would replace that run: pick another --out, or pass --overwrite to replace it",
        ),
      );
      assert.deepEqual(await Deno.readFile(ckpt), ck0);
      assert.deepEqual(await Deno.readFile(metrics), m0);
      // --overwrite starts afresh: one epoch's checkpoint, only this run's records.
      const b = await train(config(), tr, te, { ...quiet, out: dir, overwrite: true });
      b.model.dispose();
      assert.equal((await readSafetensors(ckpt)).metadata.epoch, "1");
      const records = (await Deno.readTextFile(metrics)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assert.deepEqual(records.map((r) => [r.event, r.epoch]), [["epoch", 1]]);
    });
  },
});

Deno.test({
  name: "train() resuming its own directory drops the records of the interrupted epoch",
  ignore,
  async fn() {
    const [tr, te] = await data();
    await withDir("daint8-metrics-", async (dir) => {
      const run = { ...quiet, out: dir, logEvery: 1 };
      const a = await train(config({ epochs: 2 }), tr, te, { ...run, stopAfterEpochs: 1 });
      a.model.dispose();
      // Epoch 2 was logged up to step 3, then the process was killed mid-line.
      const metrics = `${dir}/metrics.jsonl`;
      await Deno.writeTextFile(metrics, '{"event":"step","epoch":2,"step":3}\n{"event":"st', {
        append: true,
      });
      lines.length = 0;
      const b = await train(config({ epochs: 2 }), tr, te, {
        ...run,
        resume: `${dir}/checkpoint.safetensors`,
      });
      b.model.dispose();
      assert.equal(
        lines[1],
        `dropped 2 record(s) after step 2 from "${metrics}" (an epoch interrupted before its ` +
          "checkpoint; they are written again)",
      );
      const records = (await Deno.readTextFile(metrics)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assert.deepEqual(records.map((r) => [r.event, r.step]), [
        ["step", 1],
        ["step", 2],
        ["epoch", 2],
        ["step", 3],
        ["step", 4],
        ["epoch", 4],
      ]);
    });
  },
});

Deno.test({
  name: "train CLI: a diverging run (--lr 1e8, 1e6) exits 1 and never replaces the good checkpoint",
  ignore,
  async fn() {
    await withDir("daint8-diverge-", async (dir) => {
      // 2 steps at lr 1e8: weights finite but so large that the test loss is NaN (lr 1e7 to 1e8
      // on both builds the tests use; at 1e6, the edge, the -O1 sanitizer build's rounding left
      // the test loss finite, at 6.6e6; from 1e10 a weight overflows first)
      const common = ["--limit=64", "--test-limit=32", "--batch-size=32", `--out=${dir}/a`];
      const ok = await cli([...common, "--epochs=2", "--stop-after=1"]);
      assert.equal(ok.code, 0, ok.err.join("\n"));
      const ckpt = `${dir}/a/checkpoint.safetensors`;
      const good = await Deno.readFile(ckpt);
      const r = await cli([...common, "--epochs=2", "--lr=1e8", `--resume=${ckpt}`]);
      assert.equal(r.code, 1, r.err.join("\n"));
      assert.deepEqual(r.err, [
        "error: Training diverged in epoch 2 (step 4): the test loss is NaN; no checkpoint was " +
        "written for this epoch (try a lower --lr than 100000000)",
      ]);
      assert.deepEqual(await Deno.readFile(ckpt), good);
      // 4 steps at lr 1e6 from the start: NaN weights (ReLU keeps the loss finite).
      const r2 = await cli([
        "--limit=256",
        "--test-limit=32",
        "--lr=1e6",
        `--out=${dir}/b`,
      ]);
      assert.equal(r2.code, 1);
      assert.equal(r2.err.length, 1, r2.err.join("\n"));
      // Which weight turns non-finite first depends on the kernels' summation order; the message
      // names it with its size.
      assert.match(
        r2.err[0]!,
        /^error: Training diverged in epoch 1 \(step 4\): tensor "model\.(conv1|conv2|fc1|fc2|fc3)\.(weight|bias)" holds \d+ of \d+ values that are not finite \(the first, at index \d+, is (NaN|-?Infinity)\); no checkpoint was written for this epoch \(try a lower --lr than 1000000\)$/,
      );
      assert.deepEqual([...Deno.readDirSync(`${dir}/b`)].map((e) => e.name), ["metrics.jsonl"]);
    });
  },
});

Deno.test("saveCheckpoint() refuses a tensor with NaN, naming it, and keeps the old file", async () => {
  await withDir("daint8-save-", async (dir) => {
    const path = `${dir}/checkpoint.safetensors`;
    await Deno.writeTextFile(path, "previous");
    using w = Tensor.from(backend, Float32Array.of(1, 2, NaN, Infinity), [4], "f32");
    await assert.rejects(
      () =>
        saveCheckpoint(path, {
          meta: { model: "m", dataset: "d", epoch: 1, step: 1, config: "{}" },
          tensors: [["model.fc.weight", w]],
          rng: { data: [1, 2, 3, 4] },
        }),
      rejectsWith(
        `Cannot save checkpoint "${path}": tensor "model.fc.weight" holds 2 of 4 values that ` +
          "are not finite (the first, at index 2, is NaN); the previous checkpoint is left as " +
          "it was",
        RangeError,
      ),
    );
    assert.equal(await Deno.readTextFile(path), "previous");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["checkpoint.safetensors"]);
  });
});

Deno.test("writeSafetensorsAtomic() removes temporaries of killed writes, not live ones", async () => {
  await withDir("daint8-tmp-", async (dir) => {
    const path = `${dir}/checkpoint.safetensors`;
    // pid 999999999 is above Linux's pid_max (4194304): that process cannot be running.
    const stale = `${path}.tmp-999999999-0123456789abcdef`;
    const live = `${path}.tmp-${Deno.pid}-0123456789abcdef`;
    const other = `${dir}/other.safetensors.tmp-999999999-0123456789abcdef`;
    for (const f of [stale, live, other]) await Deno.writeTextFile(f, "partial");
    await writeSafetensorsAtomic(path, {});
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      "checkpoint.safetensors",
      `checkpoint.safetensors.tmp-${Deno.pid}-0123456789abcdef`,
      "other.safetensors.tmp-999999999-0123456789abcdef",
    ]);
  });
});

// ---- silently wrong: --resume ----

Deno.test({
  name: "train() validates everything --resume loads: tensors, epoch, step, run identity",
  ignore,
  async fn() {
    const [tr, te] = await data();
    await withDir("daint8-resume-", async (dir) => {
      const a = await train(config({ epochs: 2 }), tr, te, {
        ...quiet,
        out: `${dir}/run`,
        stopAfterEpochs: 1,
      });
      a.model.dispose();
      const good = `${dir}/run/checkpoint.safetensors`;
      const bad = `${dir}/bad.safetensors`;
      const cases: [string, (st: Safetensors) => void, string, ErrorConstructor][] = [
        [
          "NaN weights",
          (st) => (st.tensors["model.conv2.weight"]!.data as Float32Array)[7] = NaN,
          'tensor "model.conv2.weight" holds 1 of 2400 values that are not finite (the first, ' +
          "at index 7, is NaN)",
          RangeError,
        ],
        [
          "infinite momentum",
          (st) =>
            (st.tensors["optim.fc1.bias.momentum_buffer"]!.data as Float32Array).fill(-Infinity),
          'tensor "optim.fc1.bias.momentum_buffer" holds 120 of 120 values that are not finite ' +
          "(the first, at index 0, is -Infinity)",
          RangeError,
        ],
        [
          "epoch -5",
          (st) => st.metadata.epoch = "-5",
          'its epoch metadata "-5" is not a non-negative integer',
          RangeError,
        ],
        [
          'epoch ""',
          (st) => st.metadata.epoch = "",
          'its epoch metadata "" is not a non-negative integer',
          RangeError,
        ],
        [
          "step 1e300",
          (st) => st.metadata.step = "1e300",
          'its step metadata "1e300" is not a non-negative integer',
          RangeError,
        ],
        [
          "epoch 99",
          (st) => st.metadata.epoch = "99",
          "it has completed 99 epochs, more than this run's 2 (raise --epochs to continue it)",
          RangeError,
        ],
        [
          "step 5 at epoch 1",
          (st) => st.metadata.step = "5",
          "it was saved by a different run (step 5 there, but 1 epoch(s) of 2 steps make 2 " +
          "now (another --limit or --batch-size?)); pass --force-resume to continue it anyway",
          TypeError,
        ],
        [
          "another dataset, preset, batch size and seed",
          (st) => {
            st.metadata.dataset = "fashion-mnist";
            st.metadata.config = JSON.stringify({ quant: "daint8", batchSize: 16, seed: 9 });
          },
          'it was saved by a different run (--dataset "fashion-mnist" there, "mnist" now; ' +
          '--quant "daint8" there, "fp32" now; --batch-size 16 there, 32 now; --seed 9 ' +
          "there, 3 now); pass --force-resume to continue it anyway",
          TypeError,
        ],
        [
          "a broken rng state",
          (st) => (st.tensors["rng.data"]!.data as Uint32Array).fill(0),
          "its rng.data state is invalid (Cannot restore Rng: state [0, 0, 0, 0] is not a " +
          "valid state)",
          TypeError,
        ],
      ];
      for (const [what, edit, message, kind] of cases) {
        await rewrite(good, bad, edit);
        await assert.rejects(
          () => train(config({ epochs: 2 }), tr, te, { ...quiet, resume: bad }),
          rejectsWith(`Cannot resume from "${bad}": ${message}`, kind),
          what,
        );
      }
      // --force-resume turns an identity difference into a printed warning.
      await rewrite(good, bad, (st) => {
        st.metadata.config = st.metadata.config!.replace('"seed":3', '"seed":4');
      });
      lines.length = 0;
      const r = await train(config({ epochs: 2 }), tr, te, {
        ...quiet,
        resume: bad,
        forceResume: true,
      });
      r.model.dispose();
      assert.equal(
        lines[0],
        `warning: resuming "${bad}" despite differences (--seed 4 there, 3 now)`,
      );
      assert.equal(r.epochs.length, 1);
    });
  },
});

// ---- silently wrong: data and flags ----

function dataset(n: number, size: number, name: string): ImageDataset {
  return {
    images: new Uint8Array(n * size * size),
    labels: new Int32Array(n),
    n,
    height: size,
    width: size,
    channels: 1,
    classes: 10,
    name,
  };
}

Deno.test("train() refuses an empty test set and test images of another size before training", async () => {
  const tr = dataset(8, 28, "t-train");
  await assert.rejects(
    () => train(config({ batchSize: 4 }), tr, dataset(0, 28, "t-test"), quiet),
    rejectsWith('Cannot train: the test set "t-test" has no images', RangeError),
  );
  await assert.rejects(
    () => train(config({ batchSize: 4 }), tr, dataset(2, 32, "t-test"), quiet),
    rejectsWith(
      'Cannot train: test images "t-test" are 32x32x1 (height x width x channels), training ' +
        'images "t-train" are 28x28x1',
      TypeError,
    ),
  );
  await assert.rejects(
    () => train(config({ batchSize: 100_000_000 }), tr, dataset(2, 28, "t-test"), quiet),
    rejectsWith(
      'Cannot train: batch size 100000000 is larger than the 8 training images of "t-train" ' +
        "(use a batch size of at most 8)",
      RangeError,
    ),
  );
});

Deno.test("parseTrainArgs() merges repeated --quant-set flags, a later knob winning", async () => {
  const a = parseTrainArgs([
    "--quant=daint8",
    "--quant-set=lambda=0.25,A=0.7",
    "--quant-set=lambda=0.5",
  ]);
  const q = quantConfig("daint8", a.config.quantSet);
  assert.equal(q.lambda, 0.5);
  assert.equal(q.A, 0.7);
  await withDir("daint8-knobs-", async (dir) => {
    await Deno.writeTextFile(`${dir}/k.json`, JSON.stringify({ lambda: 0.1, A: 0.6 }));
    const set = parseQuantSet("daint8", ["A=0.8", `@${dir}/k.json`]);
    assert.deepEqual(set, { A: 0.6, lambda: 0.1 });
    assert.deepEqual(parseQuantSet("daint8", [`@${dir}/k.json`, "A=0.8"]), {
      A: "0.8",
      lambda: 0.1,
    });
  });
});

for (
  const [args, code, message] of [
    [["--out="], 2, 'error: --out must name a directory, got ""'],
    [["--resume="], 2, 'error: --resume must name a checkpoint file, got ""'],
    [
      ["--seed=1e20"],
      2,
      'error: --seed must be an integer >= 0 and at most 9007199254740991, got "1e20"',
    ],
    [
      ["--threads=2147483648"],
      2,
      'error: --threads must be an integer from 0 to 1024, got "2147483648"',
    ],
    [["--force-resume"], 2, "error: --force-resume needs --resume"],
    [
      ["--out=/dev/null"],
      1,
      'error: Cannot use output directory "/dev/null": it exists and is not a directory (pick a directory)',
    ],
  ] as const
) {
  Deno.test(`train CLI: ${args.join(" ")} exits ${code} with one line`, async () => {
    const r = await cli([...args]);
    assert.equal(r.code, code);
    assert.deepEqual(r.err, [message]);
  });
}

Deno.test("train CLI: --out on a file or a symbolic link loop exits 1 with one line", async () => {
  await withDir("daint8-outdir-", async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "x");
    await Deno.symlink(`${dir}/loop-a`, `${dir}/loop-b`);
    await Deno.symlink(`${dir}/loop-b`, `${dir}/loop-a`);
    for (
      const [out, why] of [
        [`${dir}/file`, "it exists and is not a directory (pick a directory)"],
        [`${dir}/loop-a`, "it is a symbolic link loop"],
        [`${dir}/loop-a/sub`, "it is a symbolic link loop"],
      ]
    ) {
      const r = await cli([`--out=${out}`]);
      assert.equal(r.code, 1);
      assert.deepEqual(r.err, [`error: Cannot use output directory "${out}": ${why}`]);
    }
  });
});

Deno.test({
  name: "train CLI: --batch-size 100000000 exits 1 naming the training set's size",
  ignore,
  async fn() {
    const r = await cli(["--limit=64", "--batch-size=100000000", "--out=/nonexistent/never"]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.err, [
      "error: Cannot train: batch size 100000000 is larger than the 64 training images of " +
      '"mnist-train" (use a batch size of at most 64)',
    ]);
  },
});

Deno.test("Tensor refuses a shape whose element or byte count is beyond 2^53", () => {
  assert.throws(
    () => Tensor.empty(backend, [2 ** 31, 2 ** 31]),
    rejectsWith(
      "Cannot create tensor of shape [2147483648, 2147483648]: 4611686018427388000 elements is " +
        "more than 9007199254740991",
      RangeError,
    ),
  );
  assert.throws(
    () => Tensor.empty(backend, [2 ** 51]),
    rejectsWith(
      "Cannot create tensor of shape [2251799813685248] f32: 9007199254740992 bytes is more " +
        "than 9007199254740991",
      RangeError,
    ),
  );
});

function idx(dims: number[], payload: number): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + payload);
  out[2] = 8;
  out[3] = dims.length;
  const v = new DataView(out.buffer);
  dims.forEach((d, i) => v.setUint32(4 + 4 * i, d, false));
  return out;
}

Deno.test("parseIdx() refuses gzip data beyond its header's size without expanding it all", () => {
  // 2 data bytes promised, 64 MiB of zeros delivered (64 KiB compressed).
  const bomb = gzipSync(idx([2], 64 << 20));
  assert.throws(
    () => parseIdx(bomb, "bomb.gz"),
    rejectsWith(
      'Cannot read IDX file "bomb.gz": the gzip data expands to more than the 10 bytes its IDX ' +
        "header promises",
      RangeError,
    ),
  );
  assert.throws(
    () => parseIdx(gzipSync(idx([60000, 200, 200], 16)), "big.gz"),
    rejectsWith(
      'Cannot read IDX file "big.gz": dimensions [60000, 200, 200] need 2400000000 data bytes, ' +
        "more than the limit of 1073741824",
      RangeError,
    ),
  );
  assert.throws(
    () => parseIdx(idx([4, 4], 16), "small", { maxBytes: 15 }),
    rejectsWith(
      'Cannot read IDX file "small": dimensions [4, 4] need 16 data bytes, more than the limit ' +
        "of 15",
      RangeError,
    ),
  );
});

Deno.test("reportError() prints an I/O error as one line, a bug with its stack", () => {
  const err: string[] = [];
  const e = console.error;
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    assert.equal(
      reportError(new Deno.errors.PermissionDenied("Permission denied (os error 13)")),
      1,
    );
    assert.deepEqual(err, ["error: Permission denied (os error 13)"]);
    err.length = 0;
    assert.equal(reportError(new SyntaxError("bug")), 1);
    assert.equal(err[0], "error: bug");
    assert.ok(err[1]?.startsWith("SyntaxError: bug\n    at "), err[1]);
  } finally {
    console.error = e;
  }
});
