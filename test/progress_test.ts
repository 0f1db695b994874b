import assert from "node:assert/strict";
import { formatDuration, formatValue, Progress } from "../src/train/progress.ts";

/** A writer that records its output, and a clock the test moves by hand. */
function harness(
  isTerminal: boolean,
  opts: { itemsPerStep?: number; plainEverySteps?: number } = {},
) {
  let text = "";
  let time = 0;
  const decoder = new TextDecoder();
  const writer = {
    writeSync(p: Uint8Array): number {
      text += decoder.decode(p);
      return p.length;
    },
  };
  const progress = new Progress({ writer, isTerminal, now: () => time, columns: 200, ...opts });
  return {
    progress,
    output: () => text,
    advance: (ms: number) => {
      time += ms;
    },
  };
}

Deno.test("Progress prints plain lines periodically and at the end of an epoch without a TTY", () => {
  const { progress, output, advance } = harness(false, { itemsPerStep: 64 });
  for (let step = 1; step <= 20; step++) {
    advance(50);
    progress.update(step, 20, { epoch: "1/2", loss: 0.5 / step, acc: "90.0%" });
  }
  progress.done("epoch 1/2  loss 0.0250  acc 90.0%");
  const lines = output().split("\n");
  assert.equal(lines.pop(), "");
  assert.ok(!output().includes("\r") && !output().includes("\x1b"), "no terminal control codes");
  // Every tenth of the epoch (2 steps) from the first update, the last step, then the summary.
  assert.equal(lines.length, 12);
  assert.equal(lines[0], "epoch 1/2 1/20  loss 0.5000  acc 90.0%  1280 img/s  eta 1s");
  assert.equal(lines[1], "epoch 1/2 3/20  loss 0.1667  acc 90.0%  1280 img/s  eta 1s");
  assert.equal(lines[9], "epoch 1/2 19/20  loss 0.0263  acc 90.0%  1280 img/s  eta 0s");
  assert.equal(lines[10], "epoch 1/2 20/20  loss 0.0250  acc 90.0%  1280 img/s  time 1s");
  assert.equal(lines[11], "epoch 1/2  loss 0.0250  acc 90.0%");

  // A second epoch restarts the timing; a slow step forces a line after 5 seconds.
  const before = output().length;
  advance(1000);
  progress.update(1, 20, { epoch: "2/2" });
  advance(6000);
  progress.update(2, 20, { epoch: "2/2" });
  const more = output().slice(before).split("\n").slice(0, -1);
  assert.deepEqual(more, [
    "epoch 2/2 1/20  64 img/s  eta 19s",
    "epoch 2/2 2/20  18 img/s  eta 1m03s",
  ]);
});

Deno.test("Progress prints every plainEverySteps steps and log() lines as they come", () => {
  const { progress, output, advance } = harness(false, { plainEverySteps: 5 });
  for (let step = 1; step <= 12; step++) {
    advance(10);
    progress.update(step, 12, { loss: 1 });
    if (step === 6) progress.log("checkpoint saved");
  }
  assert.deepEqual(output().split("\n").slice(0, -1), [
    "step 1/12  loss 1  eta 0s",
    "step 6/12  loss 1  eta 0s",
    "checkpoint saved",
    "step 11/12  loss 1  eta 0s",
    "step 12/12  loss 1  time 0s",
  ]);
});

Deno.test("Progress redraws one line in place with \\r on a TTY, at most every 100 ms", () => {
  const { progress, output, advance } = harness(true, { itemsPerStep: 100 });
  for (let step = 1; step <= 10; step++) {
    advance(40);
    progress.update(step, 10, { epoch: "1/1", loss: 0.2134, acc: "93.4%" });
  }
  const text = output();
  assert.ok(!text.includes("\n"), "no newline while the bar is drawn");
  const frames = text.split("\r\x1b[2K").slice(1);
  // Drawn at 40 ms, then at 160, 280 (>= 100 ms apart), and always at the last step.
  assert.equal(frames.length, 4);
  assert.equal(
    frames[0],
    "epoch 1/1 [==>                 ] 1/10  loss 0.2134  acc 93.4%  2500 img/s  eta 0s",
  );
  assert.equal(
    frames[3],
    "epoch 1/1 [====================] 10/10  loss 0.2134  acc 93.4%  2500 img/s  time 0s",
  );

  progress.log("note");
  assert.ok(output().endsWith(`\r\x1b[2Knote\n${frames[3]}`), "log() redraws the bar after");
  progress.done("epoch 1/1 done");
  assert.ok(output().endsWith("\r\x1b[2Kepoch 1/1 done\n"));
});

Deno.test("Progress truncates the bar to the terminal width", () => {
  let text = "";
  const writer = {
    writeSync: (p: Uint8Array) => ((text += new TextDecoder().decode(p)), p.length),
  };
  const progress = new Progress({ writer, isTerminal: true, columns: 30, now: () => 0 });
  progress.update(5, 10, { epoch: "1/1", loss: 0.5, acc: "50%" });
  assert.equal(text, "\r\x1b[2Kepoch 1/1 [==========>       ");
});

Deno.test("formatValue() and formatDuration() format numbers for display", () => {
  assert.equal(formatValue(0.21344), "0.2134");
  assert.equal(formatValue(93.44), "93.44");
  assert.equal(formatValue(1843.2), "1843.2");
  assert.equal(formatValue(7), "7");
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue("93.4%"), "93.4%");
  assert.equal(formatDuration(12.4), "12s");
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(3720), "1h02m");
  assert.equal(formatDuration(Infinity), "?");
});
