import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  type Tensor,
  writeSafetensorsAtomic,
} from "../src/io/safetensors.ts";
import { MetricsLog } from "../src/train/metrics.ts";

function sampleTensors(): Record<string, Tensor> {
  return {
    "conv1.weight": {
      dtype: "F32",
      shape: [2, 1, 3, 3],
      data: Float32Array.from({ length: 18 }, (_, i) => i / 7 - 1),
    },
    "fc.bias": { dtype: "F64", shape: [3], data: new Float64Array([Math.PI, -0, 1e300]) },
    "quant.scale_index": {
      dtype: "I32",
      shape: [2, 2],
      data: new Int32Array([1, -2, 2 ** 31 - 1, -(2 ** 31)]),
    },
    "step": { dtype: "I64", shape: [], data: new BigInt64Array([123456789012345n]) },
    "q.weight": { dtype: "I8", shape: [5], data: new Int8Array([-128, -1, 0, 1, 127]) },
    "mask": { dtype: "U8", shape: [3], data: new Uint8Array([0, 200, 255]) },
    "empty": { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
  };
}

/** Builds a file from a raw header object and data bytes, padding the header to 8 bytes. */
function rawFile(header: unknown, data: Uint8Array, pad = true): Uint8Array {
  let json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  if (pad && json.length % 8 !== 0) {
    const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
    padded.set(json);
    json = padded;
  }
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("encodeSafetensors() and decodeSafetensors() round trip several dtypes", () => {
  const tensors = sampleTensors();
  const bytes = encodeSafetensors(tensors, { format: "pt", epoch: "3" });
  const decoded = decodeSafetensors(bytes, "round.safetensors");
  assert.deepEqual(decoded.metadata, { format: "pt", epoch: "3" });
  assert.deepEqual(Object.keys(decoded.tensors).sort(), Object.keys(tensors).sort());
  for (const [name, t] of Object.entries(tensors)) {
    const got = decoded.tensors[name]!;
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.equal(got.data.constructor, t.data.constructor, name);
    assert.deepEqual(got.data, t.data, name);
    assert.equal(got.data.byteOffset, 0, `${name} is a fresh, aligned copy`);
    assert.notEqual(got.data.buffer, bytes.buffer);
  }
  assert.ok(Object.is(decoded.tensors["fc.bias"]!.data[1], -0));
  assert.deepEqual(decodeSafetensors(encodeSafetensors({}), "empty").tensors, {});
});

Deno.test("encodeSafetensors() follows the byte layout of the spec", () => {
  const bytes = encodeSafetensors(
    {
      b: { dtype: "U8", shape: [2], data: new Uint8Array([7, 8]) },
      a: { dtype: "F32", shape: [1, 2], data: new Float32Array([1, -2]) },
    },
    { format: "pt" },
  );
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.match(text, /^\{.*\} *$/s, "a JSON object padded with spaces");
  assert.deepEqual(JSON.parse(text), {
    __metadata__: { format: "pt" },
    a: { dtype: "F32", shape: [1, 2], data_offsets: [0, 8] },
    b: { dtype: "U8", shape: [2], data_offsets: [8, 10] },
  });
  // F32 1.0 = 00 00 80 3F, -2.0 = 00 00 00 C0, little-endian, then the bytes of b.
  assert.deepEqual(
    Array.from(bytes.subarray(8 + n)),
    [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 7, 8],
  );
  assert.equal(bytes.length, 8 + n + 10);
});

Deno.test("decodeSafetensors() reads a file built by hand as the spec describes", () => {
  // The example of the safetensors README: one F32 tensor of shape [1, 2] and metadata.
  const header = '{"test":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},' +
    '"__metadata__":{"k":"v"}}';
  const data = new Uint8Array(new Float32Array([0.5, 3]).buffer);
  for (const pad of [true, false]) {
    const { tensors, metadata } = decodeSafetensors(rawFile(header, data, pad), "hand");
    assert.deepEqual(metadata, { k: "v" });
    assert.deepEqual(tensors.test, {
      dtype: "F32",
      shape: [1, 2],
      data: new Float32Array([0.5, 3]),
    });
  }
});

Deno.test("decodeSafetensors() rejects malformed files naming the problem", () => {
  const entry = (dtype: string, shape: number[], begin: number, end: number) => ({
    dtype,
    shape,
    data_offsets: [begin, end],
  });
  const data8 = new Uint8Array(8);
  const cases: [string, Uint8Array, RegExp][] = [
    ["too short", new Uint8Array(5), /5 bytes, shorter than the 8-byte header/],
    [
      "header length beyond the file",
      (() => {
        const b = rawFile({}, data8);
        new DataView(b.buffer).setBigUint64(0, 1000n, true);
        return b;
      })(),
      /header length 1000 exceeds the 16 bytes after it/,
    ],
    ["bad JSON", rawFile('{"a": {"dtype": ', data8), /the header is not valid JSON/],
    ["a JSON array", rawFile("[1, 2]", new Uint8Array(0)), /the header is not a JSON object/],
    [
      "unknown dtype",
      rawFile({ w: entry("F8", [2], 0, 8) }, data8),
      /tensor "w" has unknown dtype "F8"/,
    ],
    ["bad shape", rawFile({ w: entry("F32", [-2], 0, 8) }, data8), /tensor "w" has shape \[-2\]/],
    [
      "offsets out of range",
      rawFile({ w: entry("F32", [4], 0, 16) }, data8),
      /tensor "w" has data_offsets \[0, 16\] outside the 8-byte data/,
    ],
    [
      "size not matching the shape",
      rawFile({ w: entry("F32", [3], 0, 8) }, data8),
      /tensor "w" has 8 bytes, but shape \[3\] of F32 needs 12/,
    ],
    [
      "overlapping tensors",
      rawFile({ a: entry("F32", [2], 0, 8), b: entry("F32", [1], 4, 8) }, data8),
      /tensor "b" overlaps tensor "a"/,
    ],
    [
      "a hole",
      rawFile({ a: entry("F32", [1], 4, 8) }, data8),
      /bytes 0\.\.4 of the data belong to no tensor/,
    ],
    [
      "trailing bytes",
      rawFile({ a: entry("F32", [1], 0, 4) }, data8),
      /the data is 8 bytes, but the tensors cover only 4/,
    ],
    [
      "bad metadata",
      rawFile({ __metadata__: { epoch: 3 } }, new Uint8Array(0)),
      /metadata "epoch" is 3, not a string/,
    ],
  ];
  for (const [what, bytes, pattern] of cases) {
    assert.throws(
      () => decodeSafetensors(bytes, "/ckpt/bad.safetensors"),
      (e: unknown) =>
        e instanceof TypeError &&
        e.message.startsWith('Cannot read safetensors file "/ckpt/bad.safetensors": ') &&
        pattern.test(e.message),
      what,
    );
  }
});

Deno.test("encodeSafetensors() rejects mismatched dtypes and shapes", () => {
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [2], data: new Float64Array(2) } }),
    /Cannot encode tensor "w": dtype F32 needs a Float32Array, got Float64Array/,
  );
  assert.throws(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [3], data: new Float32Array(2) } }),
    /2 elements do not match shape \[3\]/,
  );
  assert.throws(
    () => encodeSafetensors({ __metadata__: { dtype: "U8", shape: [0], data: new Uint8Array() } }),
    TypeError,
  );
});

Deno.test("writeSafetensorsAtomic() writes a file that readSafetensors() reads back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "model.safetensors");
    await writeSafetensorsAtomic(path, sampleTensors(), { step: "1" });
    await writeSafetensorsAtomic(path, sampleTensors(), { step: "2" }); // replaces it
    const { tensors, metadata } = await readSafetensors(path);
    assert.deepEqual(metadata, { step: "2" });
    assert.deepEqual(tensors["conv1.weight"]!.data, sampleTensors()["conv1.weight"]!.data);
    assert.deepEqual(Array.from(Deno.readDirSync(dir), (e) => e.name), ["model.safetensors"]);
    const missing = join(dir, "nope.safetensors");
    await assert.rejects(
      () => readSafetensors(missing),
      new RegExp(`Cannot read safetensors file "${missing}": the file is missing`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSafetensorsAtomic() leaves the old file intact when writing fails", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "ckpt.safetensors");
    await writeSafetensorsAtomic(path, sampleTensors(), { step: "1" });
    const before = await Deno.readFile(path);

    // Encoding fails before anything is written.
    const bad: Record<string, Tensor> = {
      w: { dtype: "F32", shape: [3], data: new Float32Array(2) },
    };
    await assert.rejects(() => writeSafetensorsAtomic(path, bad), TypeError);
    assert.deepEqual(await Deno.readFile(path), before);

    // The rename fails: the target is a non-empty directory. The temp file must be gone.
    const blocked = join(dir, "blocked.safetensors");
    await Deno.mkdir(blocked);
    await Deno.writeTextFile(join(blocked, "keep"), "x");
    await assert.rejects(
      () => writeSafetensorsAtomic(blocked, sampleTensors()),
      (e: unknown) =>
        e instanceof Error && e.message.startsWith(`Cannot write safetensors file "${blocked}"`),
    );
    assert.deepEqual(await Deno.readTextFile(join(blocked, "keep")), "x");

    // The directory does not exist: the temp file cannot even be created.
    await assert.rejects(() => writeSafetensorsAtomic(join(dir, "no", "x.safetensors"), {}), Error);

    assert.deepEqual(
      Array.from(Deno.readDirSync(dir), (e) => e.name).sort(),
      ["blocked.safetensors", "ckpt.safetensors"],
    );
    assert.deepEqual(await Deno.readFile(path), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("MetricsLog appends one JSON object per line and writes non-finite numbers as null", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "metrics.jsonl");
    const log = new MetricsLog(path);
    log.append({ epoch: 1, loss: 0.25, lr: 1e-3, tag: "train" });
    log.append({ epoch: 1, loss: NaN, grad: Infinity, low: -Infinity, nested: { x: NaN }, n: 5n });
    log.close();
    log.close();
    assert.throws(() => log.append({ a: 1 }), /metrics log ".*" is closed|it is closed/);
    using again = new MetricsLog(path); // appends, never truncates
    again.append({ epoch: 2 });
    const lines = (await Deno.readTextFile(path)).split("\n");
    assert.equal(lines.pop(), "");
    assert.deepEqual(lines.map((l) => JSON.parse(l)), [
      { epoch: 1, loss: 0.25, lr: 0.001, tag: "train" },
      { epoch: 1, loss: null, grad: null, low: null, nested: { x: null }, n: 5 },
      { epoch: 2 },
    ]);
    assert.throws(() => new MetricsLog(join(dir, "no", "m.jsonl")), /Cannot open metrics log/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Interoperability with the reference implementation (the Python `safetensors` package), when
// the interpreter at $DAINT8_PYTHON or /usr/bin/python3 has it.

const PYTHON = Deno.env.get("DAINT8_PYTHON") ?? "/usr/bin/python3";
const PY_SCRIPT = `
import sys, json, ctypes, safetensors
mode, path = sys.argv[1], sys.argv[2]
if mode == "read":
    with open(path, "rb") as f:
        items = safetensors.deserialize(f.read())
    print(json.dumps({n: {"dtype": t["dtype"], "shape": list(t["shape"]),
                          "hex": bytes(t["data"]).hex()} for n, t in items}))
else:
    bufs = {"w": (ctypes.create_string_buffer(bytes(range(24)), 24), "float32", [2, 3]),
            "i": (ctypes.create_string_buffer(bytes([1, 0, 0, 0, 0, 0, 0, 0]), 8), "int64", [1]),
            "u": (ctypes.create_string_buffer(bytes([5, 6, 7]), 3), "uint8", [3])}
    specs = {n: safetensors.TensorSpec(dtype=dt, shape=shape, data_ptr=ctypes.addressof(b),
                                       data_len=len(b)) for n, (b, dt, shape) in bufs.items()}
    safetensors.serialize_file(specs, path, metadata={"format": "pt"})
`;

function pythonHasSafetensors(): boolean {
  try {
    const cmd = new Deno.Command(PYTHON, { args: ["-c", "import safetensors"], stderr: "null" });
    return cmd.outputSync().success;
  } catch {
    return false;
  }
}

const hasPySafetensors = pythonHasSafetensors();
if (!hasPySafetensors) {
  console.warn(
    `Skipping the safetensors interoperability test: ${PYTHON} lacks the safetensors package ` +
      "(set DAINT8_PYTHON to an interpreter that has it)",
  );
}

Deno.test({
  name: "safetensors files interoperate with the Python reference implementation" +
    (hasPySafetensors ? "" : " (skipped: no Python safetensors)"),
  ignore: !hasPySafetensors,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const hex = (a: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) =>
      Array.from(
        new Uint8Array(a.buffer, a.byteOffset, a.byteLength),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
    const run = async (...args: string[]) => {
      const out = await new Deno.Command(PYTHON, { args: ["-c", PY_SCRIPT, ...args] }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout);
    };
    try {
      const ours = join(dir, "ours.safetensors");
      const tensors = sampleTensors();
      await writeSafetensorsAtomic(ours, tensors, { format: "pt" });
      const seen = JSON.parse(await run("read", ours)) as Record<
        string,
        { dtype: string; shape: number[]; hex: string }
      >;
      assert.deepEqual(Object.keys(seen).sort(), Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        assert.deepEqual(seen[name], { dtype: t.dtype, shape: t.shape, hex: hex(t.data) }, name);
      }

      const theirs = join(dir, "theirs.safetensors");
      await run("write", theirs);
      const { tensors: read, metadata } = await readSafetensors(theirs);
      assert.deepEqual(metadata, { format: "pt" });
      assert.equal(read.w!.dtype, "F32");
      assert.deepEqual(read.w!.shape, [2, 3]);
      assert.equal(hex(read.w!.data), hex(Uint8Array.from({ length: 24 }, (_, i) => i)));
      assert.deepEqual(read.i!.data, new BigInt64Array([1n]));
      assert.deepEqual(read.u!.data, new Uint8Array([5, 6, 7]));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
