/**
 * Seeded fuzzing of the two file readers: a few hundred randomly corrupted IDX files (plain and
 * gzipped) and safetensors checkpoints. Each one must either load into something consistent or
 * fail with a clear error naming the file (TypeError, RangeError or Error); anything else, such
 * as an internal "Cannot read properties of undefined", counts as a crash.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { parseIdx } from "../src/data/idx.ts";
import { Rng } from "../src/data/rng.ts";
import { decodeSafetensors, encodeSafetensors } from "../src/io/safetensors.ts";
import { CHECKPOINT_FORMAT, parseCheckpoint } from "../src/train/checkpoint.ts";
import { checkResume } from "../src/train/validate.ts";

type Outcome = "loaded" | "refused";

/** Runs `load`; returns the outcome, or throws an AssertionError describing a crash. */
function classify(name: string, load: () => void): Outcome {
  try {
    load();
    return "loaded";
  } catch (e) {
    const clear = (e instanceof TypeError || e instanceof RangeError ||
      (e as Error).constructor === Error) && (e as Error).message.includes(`"${name}"`);
    if (!clear) {
      throw new assert.AssertionError({
        message: `${name}: crash instead of a clear error: ${(e as Error).stack ?? String(e)}`,
      });
    }
    return "refused";
  }
}

function corrupt(rng: Rng, base: Uint8Array, protect = 0): Uint8Array {
  let b = base.slice();
  const ops = 1 + rng.int(3);
  for (let k = 0; k < ops; k++) {
    const op = rng.int(5);
    if (op === 0 && b.length > protect) { // flip bits of a byte
      const i = protect + rng.int(b.length - protect);
      b[i] = b[i]! ^ (1 + rng.int(255));
    } else if (op === 1) { // truncate
      b = b.slice(0, rng.int(b.length + 1));
    } else if (op === 2) { // append garbage
      const extra = new Uint8Array(1 + rng.int(16)).map(() => rng.int(256));
      const c = new Uint8Array(b.length + extra.length);
      c.set(b);
      c.set(extra, b.length);
      b = c;
    } else if (op === 3 && b.length >= 8) { // a random 32-bit word anywhere in the first 32 bytes
      const i = rng.int(Math.min(b.length, 32) - 3);
      new DataView(b.buffer).setUint32(i, rng.nextU32(), rng.int(2) === 0);
    } else if (b.length > 0) { // a random byte
      b[rng.int(b.length)] = rng.int(256);
    }
  }
  return b;
}

Deno.test("parseIdx() on 300 corrupted IDX files: a consistent array or a clear error", () => {
  const rng = new Rng(1234);
  const plain = new Uint8Array(4 + 12 + 60);
  plain.set([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
  for (let i = 16; i < plain.length; i++) plain[i] = i;
  const gz = gzipSync(plain);
  const counts = { loaded: 0, refused: 0 };
  for (let i = 0; i < 300; i++) {
    const name = `fuzz-idx-${i}`;
    // Half the gzipped cases keep the gzip magic so that the decompressor is exercised.
    const bytes = i % 2 === 0 ? corrupt(rng, plain) : corrupt(rng, gz, i % 4 === 1 ? 2 : 0);
    counts[
      classify(name, () => {
        const { dims, data } = parseIdx(bytes, name, { maxBytes: 1 << 20 });
        assert.equal(data.length, dims.reduce((a, d) => a * d, 1), `${name}: data length`);
      })
    ]++;
  }
  // Both outcomes occur: the corruptions are neither all fatal nor all harmless.
  assert.ok(counts.loaded > 0 && counts.refused > 0, JSON.stringify(counts));
});

function checkpointBytes(): Uint8Array {
  return encodeSafetensors(
    {
      "model.fc.weight": { dtype: "F32", shape: [3, 2], data: Float32Array.of(1, 2, 3, 4, 5, 6) },
      "model.fc.bias": { dtype: "F32", shape: [3], data: Float32Array.of(0.5, -1, 2) },
      "optim.fc.weight.momentum_buffer": { dtype: "F32", shape: [3, 2], data: new Float32Array(6) },
      "rng.data": { dtype: "U32", shape: [4], data: Uint32Array.of(1, 2, 3, 4) },
    },
    {
      format: CHECKPOINT_FORMAT,
      model: "lenet5",
      dataset: "mnist",
      epoch: "1",
      step: "2",
      config: JSON.stringify({ quant: "fp32", batchSize: 32, seed: 0 }),
    },
  );
}

/** Replaces a random token of the JSON header with a hostile value, keeping the framing valid. */
function corruptHeader(rng: Rng, base: Uint8Array): Uint8Array {
  const n = Number(new DataView(base.buffer).getBigUint64(0, true));
  let text = new TextDecoder().decode(base.subarray(8, 8 + n));
  const tokens = [...text.matchAll(/-?[0-9]+|"[A-Za-z0-9_.:-]*"/g)];
  const hostile = [
    "-1",
    "1e400",
    "0.5",
    "9007199254740993",
    "null",
    "[]",
    "{}",
    '"__proto__"',
    '"F64"',
    '"I8"',
    '""',
    "[4294967296, 4294967296]",
    '"-5"',
    '"1e300"',
  ];
  for (let k = 0; k < 1 + rng.int(2); k++) {
    const t = tokens[rng.int(tokens.length)]!;
    const by = hostile[rng.int(hostile.length)]!;
    text = text.slice(0, t.index) + by + text.slice(t.index! + t[0].length);
    tokens.splice(0); // indices are stale after one edit
    tokens.push(...text.matchAll(/-?[0-9]+|"[A-Za-z0-9_.:-]*"/g));
  }
  const json = new TextEncoder().encode(text);
  const data = base.subarray(8 + n);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("decodeSafetensors() + parseCheckpoint() on 300 corrupted checkpoints: load or a clear error", () => {
  const rng = new Rng(4321);
  const base = checkpointBytes();
  const counts = { loaded: 0, refused: 0 };
  for (let i = 0; i < 300; i++) {
    const name = `fuzz-st-${i}`;
    const bytes = i % 3 === 0 ? corrupt(rng, base) : corruptHeader(rng, base);
    counts[
      classify(name, () => {
        const st = decodeSafetensors(bytes, name);
        for (const [tn, t] of Object.entries(st.tensors)) {
          assert.equal(t.data.length, t.shape.reduce((a, d) => a * d, 1), `${name}: ${tn}`);
        }
        const ck = parseCheckpoint(st, name);
        checkResume(name, ck, {
          model: "lenet5",
          dataset: "mnist",
          quant: "fp32",
          batchSize: 32,
          seed: 0,
          epochs: 2,
          stepsPerEpoch: 2,
        });
      })
    ]++;
  }
  assert.ok(counts.loaded > 0 && counts.refused > 0, JSON.stringify(counts));
});
