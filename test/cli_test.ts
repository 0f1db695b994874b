/**
 * The train command line: flags parse into a config, mistakes give one clear line and exit
 * status 2 (or 1 for a run that cannot start), never a stack trace.
 */
import assert from "node:assert/strict";
import { parseTrainArgs, UsageError } from "../src/cli/train.ts";

const script = new URL("../src/cli/train.ts", import.meta.url).pathname;

async function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-ffi", script, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("parseTrainArgs() has the documented defaults", () => {
  const a = parseTrainArgs([]);
  assert.equal(a.config.model, "lenet5");
  assert.equal(a.config.dataset, "mnist");
  assert.equal(a.config.epochs, 1);
  assert.equal(a.config.batchSize, 64);
  assert.equal(a.config.quant, "fp32");
  assert.equal(a.backend, "cpu");
  assert.equal(a.out, "runs/lenet5-mnist-fp32-s0");
});

Deno.test("parseTrainArgs() reads every flag", () => {
  const a = parseTrainArgs([
    "--model=resnet20",
    "--dataset=fashion-mnist",
    "--data-dir=/tmp/x",
    "--epochs=3",
    "--batch-size=128",
    "--lr=0.1",
    "--momentum=0.8",
    "--nesterov",
    "--weight-decay=1e-4",
    "--schedule=step",
    "--warmup=0.5",
    "--seed=5",
    "--backend=auto",
    "--threads=2",
    "--out=/tmp/o",
    "--resume=/tmp/o/checkpoint.safetensors",
    "--limit=100",
    "--test-limit=50",
    "--quant=daint8",
    "--quant-set=lambda=0.25,A=0.7",
  ]);
  assert.deepEqual(a.config, {
    model: "resnet20",
    dataset: "fashion-mnist",
    epochs: 3,
    batchSize: 128,
    lr: 0.1,
    momentum: 0.8,
    nesterov: true,
    weightDecay: 1e-4,
    schedule: "step",
    warmupEpochs: 0.5,
    seed: 5,
    quant: "daint8",
    quantSet: "lambda=0.25,A=0.7",
  });
  assert.equal(a.dataDir, "/tmp/x");
  assert.equal(a.threads, 2);
  assert.equal(a.limit, 100);
  assert.equal(a.testLimit, 50);
});

for (
  const [args, pattern] of [
    [["--bogus"], /bogus/],
    [["--epochs=0"], /--epochs must be an integer >= 1, got "0"/],
    [["--epochs=two"], /--epochs/],
    [["--lr=-1"], /--lr/],
    [
      ["--model=vgg"],
      /--model must be one of lenet5, resnet20, resnet56, .*inception_v3, got "vgg"/,
    ],
    [["--quant=int4"], /--quant must be one of/],
    [["--quant=daint8", "--quant-set=lambda=2"], /lambda=.*between 0 and 1/],
    [["--quant=daint8", "--quant-set=nope=1"], /Unknown quantization knob "nope"/],
    [["--quant-set=@/nonexistent.json"], /cannot read JSON knobs/],
    [["--batch-size=1.5"], /--batch-size/],
    [["positional"], /positional|Unexpected argument/i],
  ] as const
) {
  Deno.test(`parseTrainArgs() rejects ${args.join(" ")} with a clear message`, () => {
    assert.throws(() => parseTrainArgs([...args]), (e: Error) => {
      assert.ok(e instanceof UsageError, `${e.name}: ${e.message}`);
      assert.match(e.message, pattern);
      return true;
    });
  });
}

Deno.test("train CLI: an unknown flag exits 2 with one line and no stack trace", async () => {
  const r = await runCli(["--epoch=3"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /error: .*epoch/);
  assert.doesNotMatch(r.err, /\bat .*\.ts:\d+/);
});

Deno.test("train CLI: a missing data directory exits 1 naming it", async () => {
  const r = await runCli(["--data-dir=/nonexistent/mnist", "--out=/tmp/daint8-cli-none"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /\/nonexistent\/mnist/);
  assert.doesNotMatch(r.err, /\bat .*\.ts:\d+/);
});

Deno.test("train CLI: --help lists the flags", async () => {
  const r = await runCli(["--help"]);
  assert.equal(r.code, 0);
  for (const flag of ["--model", "--dataset", "--resume", "--limit", "--quant"]) {
    assert.ok(r.out.includes(flag), `help lacks ${flag}`);
  }
});
