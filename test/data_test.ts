import assert from "node:assert/strict";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Rng } from "../src/data/rng.ts";
import { parseIdx, readIdx } from "../src/data/idx.ts";
import { defaultDataDir, type ImageDataset, loadMnistLike } from "../src/data/datasets.ts";
import { DataLoader } from "../src/data/loader.ts";

// ---------------------------------------------------------------------------------------------
// Rng

function draws(rng: Rng, count: number): number[] {
  return Array.from({ length: count }, () => rng.nextU32());
}

Deno.test("Rng gives the same stream for the same seed and unrelated streams for nearby seeds", () => {
  assert.deepEqual(draws(new Rng(123), 16), draws(new Rng(123), 16));
  const a = draws(new Rng(0), 64), b = draws(new Rng(1), 64), c = draws(new Rng(2), 64);
  const same = (x: number[], y: number[]) => x.filter((v, i) => v === y[i]).length;
  assert.equal(same(a, b), 0);
  assert.equal(same(b, c), 0);
  // Bits of consecutive seeds differ in about half the positions.
  let differing = 0;
  for (let i = 0; i < 64; i++) {
    let x = (a[i]! ^ b[i]!) >>> 0;
    while (x) {
      differing += x & 1;
      x >>>= 1;
    }
  }
  assert.ok(differing > 64 * 12 && differing < 64 * 20, `${differing} differing bits`);
});

Deno.test("Rng matches the xoshiro128** reference output", () => {
  // From the reference C implementation, state {1, 2, 3, 4}, then after jump().
  const rng = Rng.fromState([1, 2, 3, 4]);
  assert.deepEqual(draws(rng, 5), [11520, 0, 5927040, 70819200, 2031721883]);
  rng.jump();
  assert.deepEqual(draws(rng, 3), [3130903476, 2327035934, 1140626159]);
});

Deno.test("Rng.state() round trips through JSON exactly", () => {
  const rng = new Rng(2024);
  draws(rng, 7);
  rng.normal();
  const saved = JSON.parse(JSON.stringify(rng.state())) as number[];
  const expected = [rng.nextU32(), rng.next(), rng.int(1000), rng.normal()];
  const restored = Rng.fromState(saved);
  assert.deepEqual(
    [restored.nextU32(), restored.next(), restored.int(1000), restored.normal()],
    expected,
  );
  const other = new Rng(1);
  other.setState(saved);
  assert.equal(other.nextU32(), expected[0]);
});

Deno.test("Rng.fromState() rejects malformed states", () => {
  assert.throws(() => Rng.fromState([1, 2, 3]), TypeError);
  assert.throws(() => Rng.fromState([0, 0, 0, 0]), /not a valid state/);
  assert.throws(() => Rng.fromState([1, 2, 3, 2 ** 32]), /4294967296/);
  assert.throws(() => Rng.fromState([1, 2, 3, -1]), TypeError);
  assert.throws(() => new Rng(0.5), RangeError);
});

Deno.test("Rng.next(), int() and normal() have the right ranges and moments", () => {
  const rng = new Rng(7);
  const count = 20000;
  let sum = 0, sumSq = 0;
  const buckets = new Array<number>(6).fill(0);
  for (let i = 0; i < count; i++) {
    const x = rng.next();
    assert.ok(x >= 0 && x < 1);
    const k = rng.int(6);
    assert.ok(Number.isInteger(k) && k >= 0 && k < 6);
    buckets[k]!++;
    const z = rng.normal();
    sum += z;
    sumSq += z * z;
  }
  for (const b of buckets) assert.ok(Math.abs(b - count / 6) < 300, `bucket ${b}`);
  assert.ok(Math.abs(sum / count) < 0.03);
  assert.ok(Math.abs(sumSq / count - 1) < 0.05);
  assert.equal(rng.int(1), 0);
  assert.ok(rng.int(2 ** 32) < 2 ** 32);
  assert.throws(() => rng.int(0), RangeError);
  assert.throws(() => rng.int(2 ** 32 + 1), RangeError);
});

Deno.test("Rng.shuffle() returns a permutation, deterministically", () => {
  const input = Array.from({ length: 100 }, (_, i) => i);
  const a = new Rng(5).shuffle([...input]);
  const b = new Rng(5).shuffle([...input]);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, input);
  assert.deepEqual([...a].sort((x, y) => x - y), input);
  const typed = new Rng(5).shuffle(Int32Array.from(input));
  assert.deepEqual(Array.from(typed), a);
  assert.deepEqual(Array.from(new Rng(5).permutation(100)), a);
});

Deno.test("Rng.split() gives a deterministic child independent of its parent", () => {
  const p1 = new Rng(9), p2 = new Rng(9);
  const c1 = p1.split(), c2 = p2.split();
  assert.deepEqual(draws(c1, 8), draws(c2, 8));
  assert.deepEqual(draws(p1, 8), draws(p2, 8));
  const parent = new Rng(9);
  const child = parent.split();
  const pd = draws(parent, 32), cd = draws(child, 32);
  assert.equal(pd.filter((v, i) => v === cd[i]).length, 0);
});

// ---------------------------------------------------------------------------------------------
// IDX

function idxBytes(dims: number[], data: Uint8Array, type = 0x08): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  out[2] = type;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

const SAMPLE = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => i * 7);

Deno.test("parseIdx() reads a handmade uncompressed buffer", () => {
  const bytes = idxBytes([2, 3, 4], SAMPLE);
  const { dims, data } = parseIdx(bytes, "handmade");
  assert.deepEqual(dims, [2, 3, 4]);
  assert.deepEqual(data, SAMPLE);
  bytes[bytes.length - 1] = 255;
  assert.equal(data[data.length - 1], SAMPLE[SAMPLE.length - 1], "data is a copy");
});

Deno.test("parseIdx() reads a gzipped buffer", () => {
  const { dims, data } = parseIdx(gzipSync(idxBytes([2, 3, 4], SAMPLE)), "handmade.gz");
  assert.deepEqual(dims, [2, 3, 4]);
  assert.deepEqual(data, SAMPLE);
});

Deno.test("parseIdx() rejects corrupted gzip data naming the file", () => {
  const gz = gzipSync(idxBytes([2, 3, 4], SAMPLE));
  const truncated = gz.subarray(0, gz.length - 12);
  assert.throws(
    () => parseIdx(truncated, "/x/bad.gz"),
    (e: unknown) =>
      e instanceof TypeError && e.message.includes('"/x/bad.gz"') && e.message.includes("gzip"),
  );
  const garbled = gz.slice();
  for (let i = 10; i < garbled.length; i++) garbled[i] = 0xff ^ garbled[i]!;
  assert.throws(
    () => parseIdx(garbled, "/x/bad.gz"),
    /Cannot read IDX file "\/x\/bad\.gz": the gzip/,
  );
});

Deno.test("parseIdx() rejects a bad magic number", () => {
  assert.throws(
    () => parseIdx(idxBytes([2], new Uint8Array(8), 0x0d), "/x/floats"),
    (e: unknown) =>
      e instanceof TypeError &&
      e.message ===
        'Cannot read IDX file "/x/floats": magic number 0x00000D01 is not an IDX file of ' +
          "unsigned bytes (it holds floats)",
  );
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0]);
  assert.throws(() => parseIdx(png, "/x/a.png"), /magic number 0x89504E47 is not an IDX file/);
  assert.throws(() => parseIdx(new Uint8Array([0, 0]), "/x/tiny"), /2 bytes, too short/);
  assert.throws(() => parseIdx(idxBytes([1, 1, 1, 1, 1], new Uint8Array(1)), "/x/5d"), RangeError);
});

Deno.test("readIdx() rejects a truncated file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "train-images-idx3-ubyte");
    await Deno.writeFile(path, idxBytes([2, 3, 4], SAMPLE).subarray(0, 30));
    await assert.rejects(
      () => readIdx(path),
      (e: unknown) =>
        e instanceof TypeError &&
        e.message ===
          `Cannot read IDX file "${path}": the file is truncated, expected 24 data bytes for ` +
            "dimensions [2, 3, 4], found 14",
    );
    await Deno.writeFile(path, idxBytes([2, 3, 4], SAMPLE).subarray(0, 10));
    await assert.rejects(() => readIdx(path), /truncated, expected a 16-byte header/);
    await Deno.writeFile(path, idxBytes([2, 3, 4], new Uint8Array(25)));
    await assert.rejects(() => readIdx(path), /1 trailing bytes/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readIdx() reads plain and gzipped files and names a missing one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(join(dir, "a"), idxBytes([24], SAMPLE));
    await Deno.writeFile(join(dir, "a.gz"), gzipSync(idxBytes([24], SAMPLE)));
    assert.deepEqual((await readIdx(join(dir, "a"))).data, SAMPLE);
    assert.deepEqual((await readIdx(join(dir, "a.gz"))).data, SAMPLE);
    const missing = join(dir, "nope");
    await assert.rejects(
      () => readIdx(missing),
      (e: unknown) =>
        e instanceof Error &&
        e.message === `Cannot read IDX file "${missing}": the file is missing`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// loadMnistLike on handmade files

async function writeFakeMnist(dir: string, n: number, labels?: number[], gz = false) {
  const images = Uint8Array.from({ length: n * 4 * 3 }, (_, i) => i % 256);
  const labelBytes = Uint8Array.from(labels ?? Array.from({ length: n }, (_, i) => i % 10));
  const wrap = (b: Uint8Array) => (gz ? gzipSync(b) : b);
  const ext = gz ? ".gz" : "";
  await Deno.writeFile(
    join(dir, `train-images-idx3-ubyte${ext}`),
    wrap(idxBytes([n, 4, 3], images)),
  );
  await Deno.writeFile(
    join(dir, `train-labels-idx1-ubyte${ext}`),
    wrap(idxBytes([labelBytes.length], labelBytes)),
  );
  return images;
}

Deno.test("loadMnistLike() loads plain and gzipped files and applies limit", async () => {
  for (const gz of [false, true]) {
    const dir = await Deno.makeTempDir();
    try {
      const images = await writeFakeMnist(dir, 7, undefined, gz);
      const ds = await loadMnistLike(dir, "train", { name: "fake" });
      assert.equal(ds.n, 7);
      assert.deepEqual([ds.height, ds.width, ds.channels, ds.classes], [4, 3, 1, 10]);
      assert.equal(ds.name, "fake-train");
      assert.deepEqual(ds.images, images);
      assert.deepEqual(Array.from(ds.labels), [0, 1, 2, 3, 4, 5, 6]);
      const small = await loadMnistLike(dir, "train", { limit: 3 });
      assert.equal(small.n, 3);
      assert.equal(small.images.length, 3 * 12);
      assert.deepEqual(Array.from(small.labels), [0, 1, 2]);
      assert.equal((await loadMnistLike(dir, "train", { limit: 100 })).n, 7);
      await assert.rejects(() => loadMnistLike(dir, "train", { limit: -1 }), RangeError);
      await assert.rejects(
        () => loadMnistLike(dir, "test"),
        /Cannot find "t10k-images-idx3-ubyte"/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("loadMnistLike() rejects a missing directory with a hint", async () => {
  await assert.rejects(
    () => loadMnistLike("/nonexistent/daint8-data", "train"),
    (e: unknown) =>
      e instanceof Error &&
      e.message.startsWith('Data directory "/nonexistent/daint8-data" does not exist.') &&
      e.message.includes("apt-get install dataset-fashion-mnist"),
  );
});

Deno.test("loadMnistLike() rejects mismatched counts and labels out of range", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeFakeMnist(dir, 5, [1, 2, 3, 4]);
    await assert.rejects(() => loadMnistLike(dir, "train"), /has 5 images but .* has 4 labels/);
    await writeFakeMnist(dir, 4, [1, 2, 10, 4]);
    await assert.rejects(
      () => loadMnistLike(dir, "train"),
      (e: unknown) => e instanceof RangeError && /label 10 at index 2/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// DataLoader

function fakeDataset(n: number): ImageDataset {
  const images = new Uint8Array(n * 2);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    images[2 * i] = i;
    images[2 * i + 1] = 255 - i;
    labels[i] = i;
  }
  return { images, labels, n, height: 1, width: 2, channels: 1, classes: 10, name: "fake" };
}

/** Runs one epoch, returning the sample indices (labels) of each batch, checking images. */
function epoch(loader: DataLoader): number[][] {
  const out: number[][] = [];
  for (const batch of loader.batches()) {
    assert.equal(batch.labels.length, batch.size);
    assert.equal(batch.images.length, batch.size * 2);
    for (let k = 0; k < batch.size; k++) {
      const i = batch.labels[k]!;
      assert.deepEqual([batch.images[2 * k], batch.images[2 * k + 1]], [i, 255 - i]);
    }
    out.push(Array.from(batch.labels));
  }
  return out;
}

Deno.test("DataLoader covers every sample once per epoch", () => {
  const loader = new DataLoader(fakeDataset(23), { batchSize: 5, shuffle: true, rng: new Rng(1) });
  assert.equal(loader.batchesPerEpoch, 5);
  const batches = epoch(loader);
  assert.deepEqual(batches.map((b) => b.length), [5, 5, 5, 5, 3]);
  const seen = batches.flat().sort((a, b) => a - b);
  assert.deepEqual(seen, Array.from({ length: 23 }, (_, i) => i));

  const dropping = new DataLoader(fakeDataset(23), {
    batchSize: 5,
    shuffle: true,
    rng: new Rng(1),
    dropLast: true,
  });
  assert.equal(dropping.batchesPerEpoch, 4);
  assert.deepEqual(epoch(dropping).map((b) => b.length), [5, 5, 5, 5]);

  const ordered = new DataLoader(fakeDataset(7), { batchSize: 3, shuffle: false, rng: new Rng(1) });
  assert.deepEqual(epoch(ordered), [[0, 1, 2], [3, 4, 5], [6]]);
  assert.throws(
    () => new DataLoader(fakeDataset(7), { batchSize: 0, shuffle: false, rng: new Rng(1) }),
    RangeError,
  );
});

Deno.test("DataLoader reshuffles each epoch, deterministically from the rng state", () => {
  const rng = new Rng(42);
  const loader = new DataLoader(fakeDataset(50), { batchSize: 8, shuffle: true, rng });
  const saved = rng.state();
  const e1 = epoch(loader);
  const e2 = epoch(loader);
  assert.notDeepEqual(e1, e2);
  const replay = new DataLoader(fakeDataset(50), {
    batchSize: 8,
    shuffle: true,
    rng: Rng.fromState(saved),
  });
  assert.deepEqual(epoch(replay), e1);
  assert.deepEqual(epoch(replay), e2);
});

// ---------------------------------------------------------------------------------------------
// Real data, when installed

const mnistDir = defaultDataDir("mnist");
const fashionDir = defaultDataDir("fashion-mnist");
if (mnistDir === undefined) {
  console.warn(
    "Skipping the MNIST tests: MNIST not found (run `deno install`, or set DAINT8_MNIST_DIR)",
  );
}
if (fashionDir === undefined) {
  console.warn(
    "Skipping the Fashion-MNIST tests: not found (apt-get install dataset-fashion-mnist)",
  );
}

for (
  const [name, dir] of [["MNIST", mnistDir], ["Fashion-MNIST", fashionDir]] as const
) {
  Deno.test({
    name: `loadMnistLike() loads real ${name}` +
      (dir === undefined ? " (skipped: data not found)" : ""),
    ignore: dir === undefined,
    fn: async () => {
      const test = await loadMnistLike(dir!, "test");
      assert.deepEqual([test.n, test.height, test.width, test.channels], [10000, 28, 28, 1]);
      assert.equal(test.images.length, 10000 * 28 * 28);
      const counts = new Array<number>(10).fill(0);
      for (const label of test.labels) counts[label]!++;
      assert.ok(counts.every((c) => c > 800 && c < 1200), `label counts ${counts}`);
      const train = await loadMnistLike(dir!, "train", { limit: 1000 });
      assert.equal(train.n, 1000);
      const full = await readIdx(join(dir!, "train-labels-idx1-ubyte")).catch(() =>
        readIdx(join(dir!, "train-labels-idx1-ubyte.gz"))
      );
      assert.deepEqual(full.dims, [60000]);
      if (name === "Fashion-MNIST") {
        // The SHA-256 of the uncompressed t10k-labels file, from shared/datasets/README.md.
        const labels = await readIdx(join(dir!, "t10k-labels-idx1-ubyte.gz"));
        const file = new Uint8Array(8 + labels.data.length);
        file.set([0, 0, 8, 1, 0, 0, 0x27, 0x10]);
        file.set(labels.data, 8);
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", file));
        assert.equal(
          Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
          "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        );
      }
    },
  });
}
