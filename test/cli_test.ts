/**
 * The train command line: flags parse into a config, mistakes give one clear line and exit
 * status 2 (or 1 for a run that cannot start), never a stack trace.
 */
import assert from "node:assert/strict";
import { MODELS } from "../src/models/registry.ts";
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

const KNOBS = "int8, weightPerChannel, gvq, clip, stochastic, lambda, k, A, alpha, sharpFamily, " +
  "statsPeriod, fp32FirstLast, minInt8Channels, dsgcMinRatio, dsgcCandidates, lrScaling, lrScaleBeta, " +
  "lrScaleFloor";
for (
  const [args, message] of [
    [["--bogus"], "Unknown option '--bogus'. Run with --help for the flags."],
    [["--epochs=0"], '--epochs must be an integer >= 1, got "0"'],
    [["--epochs=two"], '--epochs must be an integer >= 1, got "two"'],
    [
      ["--epochs=1e300"],
      '--epochs must be an integer >= 1 and at most 9007199254740991, got "1e300"',
    ],
    [["--lr=-1"], '--lr must be a number >= 0, got "-1"'],
    [["--lr=0"], '--lr must be positive, got "0"'],
    [["--model=vgg"], `--model must be one of ${Object.keys(MODELS).join(", ")}, got "vgg"`],
    [["--quant=int4"], '--quant must be one of fp32, int8-naive, ui8, daint8, got "int4"'],
    [
      ["--quant=daint8", "--quant-set=lambda=2"],
      '--quant-set: Invalid quantization knob lambda="2": expected a number between 0 and 1',
    ],
    [
      ["--quant=daint8", "--quant-set=nope=1"],
      `--quant-set: Unknown quantization knob "nope": expected one of ${KNOBS}`,
    ],
    [
      ["--quant=daint8", "--quant-set=A=0.7", "--quant-set=nope=1"],
      `--quant-set: Unknown quantization knob "nope": expected one of ${KNOBS}`,
    ],
    [["--batch-size=1.5"], '--batch-size must be an integer >= 1, got "1.5"'],
    [
      ["--model=resnet20", "--aux-logits"],
      "--aux-logits needs a model with an auxiliary classifier (inception_v3), got --model resnet20",
    ],
    [
      ["positional"],
      "Unexpected argument 'positional'. This command does not take positional arguments. Run " +
      "with --help for the flags.",
    ],
  ] as const
) {
  Deno.test(`parseTrainArgs() rejects ${args.join(" ")} with a clear message`, () => {
    assert.throws(() => parseTrainArgs([...args]), (e: Error) => {
      assert.ok(e instanceof UsageError, `${e.name}: ${e.message}`);
      assert.equal(e.message, message);
      return true;
    });
  });
}

Deno.test("parseTrainArgs() rejects an unreadable --quant-set file naming it", () => {
  assert.throws(() => parseTrainArgs(["--quant-set=@/nonexistent.json"]), (e: Error) => {
    assert.ok(e instanceof UsageError, `${e.name}: ${e.message}`);
    // The rest is the operating system's reason.
    const prefix = '--quant-set: cannot read JSON knobs from "/nonexistent.json": ';
    assert.ok(e.message.startsWith(prefix), e.message);
    return true;
  });
});

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
