/**
 * Training-time augmentation and normalization of NHWC byte images into f32 batches: random
 * crop with zero padding, random horizontal flip, per-channel mean / std normalization. Every
 * random choice comes from a generator seeded by (seed, epoch, batch), so a batch's pixels do not
 * depend on which thread makes it or when.
 *
 * @module
 */
import { Rng } from "./rng.ts";

/** How a batch is turned into network input. */
export interface AugmentOptions {
  /** Zero padding on each side before a random crop back to the original size (0: no crop). */
  padding: number;
  /** Mirror each image left-right with probability 1/2. */
  flip: boolean;
  /** Per-channel mean of the pixels in [0, 1]. */
  mean: readonly number[];
  /** Per-channel standard deviation of the pixels in [0, 1]. */
  std: readonly number[];
}

/** Image geometry. */
export interface ImageDims {
  /** Height in pixels. */
  height: number;
  /** Width in pixels. */
  width: number;
  /** Channels per pixel. */
  channels: number;
}

/** The generator of batch `index` of `epoch` for run seed `seed`. */
export function batchRng(seed: number, epoch: number, index: number): Rng {
  return new Rng(((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2 ** 52);
}

/**
 * Writes images `indices` of `images` ([n, h, w, c] bytes) into `out` ([indices.length, h, w, c]
 * f32), normalized, and cropped / flipped when `rng` is given (else only normalized).
 */
export function augmentInto(
  out: Float32Array,
  images: Uint8Array,
  indices: ArrayLike<number>,
  dims: ImageDims,
  opts: AugmentOptions,
  rng: Rng | null,
): void {
  const { height: h, width: w, channels: c } = dims;
  const px = h * w * c;
  const scale = opts.std.map((s) => 1 / (255 * s));
  const shift = opts.mean.map((m, i) => -m / opts.std[i]!);
  const pad = rng ? opts.padding : 0;
  for (let b = 0; b < indices.length; b++) {
    const src = indices[b]! * px, dst = b * px;
    const dy = pad > 0 ? rng!.int(2 * pad + 1) - pad : 0;
    const dx = pad > 0 ? rng!.int(2 * pad + 1) - pad : 0;
    const flip = rng !== null && opts.flip && rng.nextU32() < 2147483648;
    for (let i = 0; i < h; i++) {
      const si = i + dy;
      for (let j = 0; j < w; j++) {
        const sj = (flip ? w - 1 - j : j) + dx;
        const o = dst + (i * w + j) * c;
        if (si < 0 || si >= h || sj < 0 || sj >= w) {
          for (let k = 0; k < c; k++) out[o + k] = shift[k]!; // a zero pixel, normalized
        } else {
          const s = src + (si * w + sj) * c;
          for (let k = 0; k < c; k++) out[o + k] = images[s + k]! * scale[k]! + shift[k]!;
        }
      }
    }
  }
}

/** Per-channel mean and standard deviation of NHWC byte images, in [0, 1] units. */
export function channelMeanStd(
  images: Uint8Array,
  channels: number,
): { mean: number[]; std: number[] } {
  const s = new Float64Array(channels), s2 = new Float64Array(channels);
  for (let i = 0; i < images.length; i++) {
    const v = images[i]!, k = i % channels;
    s[k]! += v;
    s2[k]! += v * v;
  }
  const count = images.length / channels;
  const mean = Array.from(s, (v) => v / count / 255);
  const std = Array.from(
    s2,
    (v, k) => Math.sqrt(Math.max(v / count / 65025 - mean[k]! * mean[k]!, 1e-12)),
  );
  return { mean, std };
}
