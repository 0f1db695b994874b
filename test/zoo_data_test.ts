/**
 * CIFAR-10 binary files, image folders (JPEG / PNG, the decoded cache and its invalidation, bad
 * input), augmentation and the prefetching input pipeline; the real CIFAR-10 JPEG archive from
 * ../shared/datasets/ when present.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
// deno-lint-ignore no-import-prefix
import jpeg from "npm:jpeg-js@0.4.4";
// deno-lint-ignore no-import-prefix
import { PNG } from "npm:pngjs@7.0.0";
import { decodeCifar10, loadCifar10 } from "../src/data/cifar.ts";
import { loadImageFolder } from "../src/data/folder.ts";
import { augmentInto, batchRng, channelMeanStd } from "../src/data/augment.ts";
import { DataLoader } from "../src/data/loader.ts";
import { InputPipeline } from "../src/data/pipeline.ts";
import { Rng } from "../src/data/rng.ts";
import type { ImageDataset } from "../src/data/datasets.ts";

function cifarRecords(labels: number[]): Uint8Array {
  const out = new Uint8Array(labels.length * 3073);
  labels.forEach((l, i) => {
    out[i * 3073] = l;
    for (let p = 0; p < 3072; p++) out[i * 3073 + 1 + p] = (p + i * 7) & 255;
  });
  return out;
}

Deno.test("CIFAR-10 binary: records decode to NHWC, bad sizes and labels are named", async () => {
  const ds = decodeCifar10(cifarRecords([3, 9]), "x.bin", "t");
  assert.equal(ds.n, 2);
  assert.deepEqual([...ds.labels], [3, 9]);
  // Pixel (0, 1) of image 1: red plane byte 1, green plane byte 1025, blue plane byte 2049.
  const px = 1 * 3072 + 1 * 3;
  assert.deepEqual([...ds.images.subarray(px, px + 3)], [
    (1 + 7) & 255,
    (1025 + 7) & 255,
    (2049 + 7) & 255,
  ]);
  assert.throws(
    () => decodeCifar10(new Uint8Array(3074), "bad.bin", "t"),
    (e: Error) =>
      e instanceof TypeError &&
      /"bad\.bin": 3074 bytes are not a whole number of 3073-byte/.test(e.message),
  );
  assert.throws(
    () => decodeCifar10(cifarRecords([1, 10]), "lab.bin", "t"),
    (e: Error) => e instanceof RangeError && /record 1 has label 10/.test(e.message),
  );
  const dir = await Deno.makeTempDir({ prefix: "daint8-cifar-" });
  try {
    for (let i = 1; i <= 5; i++) {
      await Deno.writeFile(join(dir, `data_batch_${i}.bin`), cifarRecords([i, i + 1]));
    }
    await Deno.writeFile(join(dir, "test_batch.bin"), cifarRecords([0]));
    const train = await loadCifar10(dir, "train");
    assert.equal(train.n, 10);
    assert.deepEqual([...train.labels], [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    assert.equal((await loadCifar10(dir, "train", { limit: 3 })).n, 3);
    assert.equal((await loadCifar10(dir, "test")).n, 1);
    await Deno.remove(join(dir, "data_batch_4.bin"));
    await assert.rejects(() => loadCifar10(dir, "train"), /data_batch_4\.bin/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function pngBytes(w: number, h: number, seed: number): Uint8Array {
  const png = new PNG({ width: w, height: h });
  for (let i = 0; i < w * h; i++) {
    png.data[4 * i] = (i * 3 + seed) & 255;
    png.data[4 * i + 1] = (i * 5 + seed) & 255;
    png.data[4 * i + 2] = (i * 7 + seed) & 255;
    png.data[4 * i + 3] = 255;
  }
  return new Uint8Array(PNG.sync.write(png));
}

function jpegBytes(w: number, h: number, seed: number): Uint8Array {
  const data = new Uint8Array(w * h * 4).map((_, i) => ((i >> 2) * 9 + seed) & 255);
  return new Uint8Array(jpeg.encode({ data, width: w, height: h }, 90).data);
}

async function makeFolder(root: string): Promise<void> {
  for (const [split, n] of [["train", 3], ["val", 1]] as const) {
    for (const cls of ["cat", "ant"]) {
      await Deno.mkdir(join(root, split, cls), { recursive: true });
      for (let i = 0; i < n; i++) {
        await Deno.writeFile(join(root, split, cls, `${i}.png`), pngBytes(6, 4, i));
      }
      await Deno.writeFile(join(root, split, cls, `z.jpg`), jpegBytes(6, 4, 1));
    }
  }
}

Deno.test("image folders: sorted classes, PNG exact, JPEG decoded, one cache until it changes", async () => {
  const root = await Deno.makeTempDir({ prefix: "daint8-folder-" });
  try {
    await makeFolder(root);
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    const ds = await loadImageFolder(root, "train", { log });
    assert.equal(ds.n, 8);
    assert.equal(ds.classes, 2);
    assert.deepEqual([ds.height, ds.width, ds.channels], [4, 6, 3]);
    assert.deepEqual([...ds.labels], [0, 0, 0, 0, 1, 1, 1, 1]); // ant = 0, cat = 1
    const png = pngBytes(6, 4, 2);
    const ref = PNG.sync.read(Buffer.from(png));
    for (let p = 0; p < 24; p++) {
      for (let c = 0; c < 3; c++) assert.equal(ds.images[2 * 72 + p * 3 + c], ref.data[p * 4 + c]);
    }
    assert.ok(lines.some((l) => l.startsWith("decoding 8 images")));
    lines.length = 0;
    const again = await loadImageFolder(root, "train", { log });
    assert.ok(lines.some((l) => l.startsWith("read 8 decoded images")), lines.join("\n"));
    assert.deepEqual(again.images, ds.images);
    // test/ is missing: val/ is used.
    assert.equal((await loadImageFolder(root, "test")).n, 4);
    // A new image invalidates the cache.
    await Deno.writeFile(join(root, "train", "cat", "9.png"), pngBytes(6, 4, 9));
    lines.length = 0;
    const changed = await loadImageFolder(root, "train", { log });
    assert.equal(changed.n, 9);
    assert.ok(lines.some((l) => l.startsWith("decoding 9 images")));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("image folders: bad input is a clear error and leaves no cache behind", async () => {
  const root = await Deno.makeTempDir({ prefix: "daint8-folder-" });
  const cache = join(root, ".daint8-cache");
  const noCache = async () => {
    const names = await Array.fromAsync(Deno.readDir(cache)).catch(() => []);
    assert.deepEqual(names.map((e) => e.name), []);
  };
  try {
    await makeFolder(root);
    const bad = join(root, "train", "cat", "z.jpg");
    const full = await Deno.readFile(bad);
    await Deno.writeFile(bad, full.subarray(0, full.length >> 1));
    await assert.rejects(
      () => loadImageFolder(root, "train"),
      (e: Error) =>
        e.message.includes(`Cannot decode image "${bad}"`) && /truncated/.test(e.message),
    );
    await noCache();
    await Deno.writeFile(bad, new TextEncoder().encode("not an image at all"));
    await assert.rejects(() => loadImageFolder(root, "train"), new RegExp(`"${bad}"`));
    await noCache();
    await Deno.writeFile(bad, full);
    await Deno.writeFile(join(root, "train", "cat", "big.png"), pngBytes(8, 8, 0));
    await assert.rejects(
      () => loadImageFolder(root, "train"),
      (e: Error) => e instanceof TypeError && /big\.png" is 8x8 but .* is 6x4/.test(e.message),
    );
    await noCache();
    await Deno.remove(join(root, "train", "cat", "big.png"));
    await Deno.mkdir(join(root, "train", "dog"));
    await assert.rejects(
      () => loadImageFolder(root, "train"),
      (e: Error) => e instanceof TypeError && /dog" holds no JPEG or PNG images/.test(e.message),
    );
    await assert.rejects(
      () => loadImageFolder(join(root, "nope"), "train"),
      /Cannot find the train split/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

function tinySet(n: number): ImageDataset {
  const rng = new Rng(1);
  const images = new Uint8Array(n * 5 * 5 * 3).map(() => rng.int(256));
  const labels = Int32Array.from({ length: n }, (_, i) => i % 10);
  return { images, labels, n, height: 5, width: 5, channels: 3, classes: 10, name: "tiny" };
}

Deno.test("augmentation: normalizes per channel, crops and flips only as seeded", () => {
  const ds = tinySet(4);
  const { mean, std } = channelMeanStd(ds.images, 3);
  const opts = { padding: 2, flip: true, mean, std };
  const plain = new Float32Array(4 * 75);
  augmentInto(plain, ds.images, [0, 1, 2, 3], ds, opts, null);
  for (let i = 0; i < plain.length; i++) {
    const c = i % 3;
    assert.ok(Math.abs(plain[i]! - (ds.images[i]! / 255 - mean[c]!) / std[c]!) < 1e-5);
  }
  const a = new Float32Array(4 * 75), b = new Float32Array(4 * 75);
  augmentInto(a, ds.images, [0, 1, 2, 3], ds, opts, batchRng(7, 1, 2));
  augmentInto(b, ds.images, [0, 1, 2, 3], ds, opts, batchRng(7, 1, 2));
  assert.deepEqual(a, b);
  // Each augmented image is one of the (2p+1)^2 shifts, mirrored or not, of its source.
  const pad = shift(mean, std);
  let changed = 0;
  for (let img = 0; img < 4; img++) {
    let found = false;
    for (let dy = -2; dy <= 2 && !found; dy++) {
      for (let dx = -2; dx <= 2 && !found; dx++) {
        for (const flip of [false, true]) {
          let same = true;
          for (let i = 0; i < 5 && same; i++) {
            for (let j = 0; j < 5 && same; j++) {
              const si = i + dy, sj = (flip ? 4 - j : j) + dx;
              for (let c = 0; c < 3; c++) {
                const want = si < 0 || si > 4 || sj < 0 || sj > 4
                  ? pad[c]!
                  : plain[img * 75 + (si * 5 + sj) * 3 + c]!;
                if (Math.abs(a[img * 75 + (i * 5 + j) * 3 + c]! - want) > 1e-5) same = false;
              }
            }
          }
          if (same) {
            found = true;
            if (dy !== 0 || dx !== 0 || flip) changed++;
            break;
          }
        }
      }
    }
    assert.ok(found, `image ${img} is not a crop / flip of its source`);
  }
  assert.ok(changed > 0);
});

function shift(mean: number[], std: number[]): number[] {
  return mean.map((m, i) => -m / std[i]!);
}

Deno.test("input pipeline: the worker's batches equal the main thread's, in the loader's order", async () => {
  const ds = tinySet(23);
  const order = (seed: number) =>
    new DataLoader(ds, { batchSize: 5, shuffle: true, rng: new Rng(seed) });
  const viaWorker = new InputPipeline(ds, { seed: 3, prefetch: 2 });
  const inline = new InputPipeline(ds, { seed: 3, prefetch: 0 });
  try {
    const w: Float32Array[] = [], m: Float32Array[] = [], labels: number[] = [];
    for await (const b of viaWorker.epoch(order(11), 2)) {
      w.push(b.x);
      labels.push(...b.labels);
    }
    for await (const b of inline.epoch(order(11), 2)) m.push(b.x);
    assert.equal(w.length, 5);
    assert.deepEqual(w, m);
    const want: number[] = [];
    for (const b of order(11).batches()) want.push(...b.labels);
    assert.deepEqual(labels, want);
    assert.ok(viaWorker.takeWait() >= 0 && viaWorker.waitMs === 0);
  } finally {
    viaWorker.close();
    inline.close();
  }
});

const archive = new URL("../../shared/datasets/cifar10-jpg.tar.gz", import.meta.url).pathname;
const haveArchive = await Deno.stat(archive).then(() => true, () => false);
if (!haveArchive) console.warn(`SKIP CIFAR-10 JPEG test: ${archive} not found`);

Deno.test({
  name: "CIFAR-10 JPEG archive: two test classes decode to 32x32 RGB, 1000 images each",
  ignore: !haveArchive,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "daint8-cifar-jpg-" });
    try {
      const tar = await new Deno.Command("tar", {
        args: ["xzf", archive, "-C", dir, "test/airplane", "test/cat"],
      }).output();
      assert.ok(tar.success, new TextDecoder().decode(tar.stderr));
      const ds = await loadImageFolder(dir, "test", { cacheDir: join(dir, "cache") });
      assert.equal(ds.n, 2000);
      assert.deepEqual([ds.height, ds.width, ds.channels, ds.classes], [32, 32, 3, 2]);
      assert.equal(ds.labels.filter((l) => l === 1).length, 1000);
      const { mean } = channelMeanStd(ds.images, 3);
      for (const m of mean) assert.ok(m > 0.3 && m < 0.7, `channel mean ${m}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
