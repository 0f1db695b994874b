/**
 * A small, fast, seeded pseudo-random number generator with a serializable state, so that a
 * training run (shuffling, initialization, augmentation) can be reproduced and resumed exactly.
 *
 * The generator is xoshiro128** 1.1 (Blackman and Vigna) in 32-bit integer arithmetic, seeded
 * through splitmix32, so that nearby seeds (0, 1, 2) give unrelated streams.
 *
 * @module
 */

const TWO_POW_32 = 4294967296;

/** The jump polynomial of xoshiro128**: advances the state by 2^64 steps. */
const JUMP: readonly number[] = [0x8764000b, 0xf542d2d3, 0x6fa035c3, 0x77f2db5b];

/** One step of splitmix32 on `x`; returns the new counter and the mixed output. */
function splitmix32(x: number): [next: number, out: number] {
  const next = (x + 0x9e3779b9) >>> 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return [next, (z ^ (z >>> 15)) >>> 0];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * A seeded xoshiro128** generator. Its whole state is four unsigned 32-bit integers, which
 * {@linkcode Rng.state} returns and {@linkcode Rng.fromState} restores exactly.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const a = new Rng(42);
 * const saved = a.state();
 * const x = a.nextU32();
 * const b = Rng.fromState(saved);
 * if (b.nextU32() !== x) throw new Error("not reproducible");
 * ```
 */
export class Rng {
  #s0 = 0;
  #s1 = 0;
  #s2 = 0;
  #s3 = 0;

  /**
   * Creates a generator from a seed.
   *
   * @param seed Any safe integer (negative ones included); equal seeds give equal streams.
   * @throws {RangeError} If `seed` is not a safe integer.
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`Cannot seed Rng: seed ${String(seed)} is not a safe integer`);
    }
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    // Fold the high word into the counter first; for a fixed high word this is a bijection of
    // the low word, so distinct 32-bit seeds always give distinct starting counters.
    let x = (splitmix32(hi)[1] ^ lo) >>> 0;
    let out: number;
    [x, out] = splitmix32(x);
    this.#s0 = out;
    [x, out] = splitmix32(x);
    this.#s1 = out;
    [x, out] = splitmix32(x);
    this.#s2 = out;
    [x, out] = splitmix32(x);
    this.#s3 = out;
    // splitmix32 is a bijection of the counter, so at most one of the four words can be zero.
  }

  /**
   * Restores a generator from a state previously returned by {@linkcode Rng.state}.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const r = Rng.fromState(new Rng(7).state());
   * ```
   * @throws {TypeError} If `state` is not four unsigned 32-bit integers, not all zero.
   */
  static fromState(state: readonly number[]): Rng {
    const rng = new Rng(0);
    rng.setState(state);
    return rng;
  }

  /**
   * Returns a copy of the generator's state: four unsigned 32-bit integers, JSON-serializable.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const s = new Rng(1).state(); // e.g. store JSON.stringify(s) in a checkpoint
   * ```
   */
  state(): number[] {
    return [this.#s0, this.#s1, this.#s2, this.#s3];
  }

  /**
   * Replaces the generator's state with `state` (as returned by {@linkcode Rng.state}).
   *
   * @throws {TypeError} If `state` is not four unsigned 32-bit integers, not all zero.
   */
  setState(state: readonly number[]): void {
    if (!Array.isArray(state) || state.length !== 4) {
      throw new TypeError(
        `Cannot restore Rng: state ${JSON.stringify(state)} is not an array of 4 integers`,
      );
    }
    for (const word of state) {
      if (!Number.isInteger(word) || word < 0 || word >= TWO_POW_32) {
        throw new TypeError(
          `Cannot restore Rng: state word ${String(word)} is not an unsigned 32-bit integer`,
        );
      }
    }
    const [s0 = 0, s1 = 0, s2 = 0, s3 = 0] = state;
    if ((s0 | s1 | s2 | s3) === 0) {
      throw new TypeError("Cannot restore Rng: state [0, 0, 0, 0] is not a valid state");
    }
    this.#s0 = s0;
    this.#s1 = s1;
    this.#s2 = s2;
    this.#s3 = s3;
  }

  /** Returns a new generator with the same state; the two then produce the same stream. */
  clone(): Rng {
    return Rng.fromState(this.state());
  }

  /**
   * Returns the next uniformly distributed unsigned 32-bit integer.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const u = new Rng(3).nextU32(); // 0 <= u < 2 ** 32
   * ```
   */
  nextU32(): number {
    const s0 = this.#s0, s1 = this.#s1;
    let s2 = this.#s2, s3 = this.#s3;
    const result = Math.imul(rotl(Math.imul(s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    s2 = (s2 ^ s0) >>> 0;
    s3 = (s3 ^ s1) >>> 0;
    this.#s1 = (s1 ^ s2) >>> 0;
    this.#s0 = (s0 ^ s3) >>> 0;
    this.#s2 = (s2 ^ t) >>> 0;
    this.#s3 = rotl(s3, 11);
    return result;
  }

  /**
   * Returns a uniformly distributed float in [0, 1) with 53 random bits.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const x = new Rng(3).next(); // 0 <= x < 1
   * ```
   */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /**
   * Returns a uniformly distributed integer in [0, n), without modulo bias (rejection sampling).
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const die = new Rng(5).int(6) + 1; // 1..6
   * ```
   * @throws {RangeError} If `n` is not an integer in [1, 2^32].
   */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`Cannot draw Rng.int(n): n ${String(n)} is not an integer in [1, 2^32]`);
    }
    // Accept only draws below the largest multiple of n that fits in 2^32.
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const r = this.nextU32();
      if (r < limit) return r % n;
    }
  }

  /**
   * Returns a normally distributed number (Box-Muller transform).
   *
   * @param mean The mean of the distribution (default 0).
   * @param std The standard deviation (default 1).
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const w = new Rng(9).normal(0, 0.01);
   * ```
   */
  normal(mean = 0, std = 1): number {
    const u1 = 1 - this.next(); // (0, 1], so log() stays finite
    const u2 = this.next();
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /**
   * Shuffles `array` in place (Fisher-Yates) and returns it.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const a = new Rng(1).shuffle([1, 2, 3, 4]); // a permutation of [1, 2, 3, 4]
   * ```
   */
  shuffle<A extends { length: number; [index: number]: unknown }>(array: A): A {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }

  /**
   * Returns a random permutation of 0..n-1.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const order = new Rng(1).permutation(10); // Int32Array of 0..9 in random order
   * ```
   * @throws {RangeError} If `n` is not a non-negative integer below 2^31.
   */
  permutation(n: number): Int32Array {
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** 31) {
      throw new RangeError(`Cannot build a permutation of ${String(n)} elements`);
    }
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    return this.shuffle(order);
  }

  /**
   * Advances this generator by 2^64 steps (the xoshiro128** jump function).
   * Used by {@linkcode Rng.split}.
   */
  jump(): void {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (const word of JUMP) {
      for (let b = 0; b < 32; b++) {
        if ((word >>> b) & 1) {
          s0 ^= this.#s0;
          s1 ^= this.#s1;
          s2 ^= this.#s2;
          s3 ^= this.#s3;
        }
        this.nextU32();
      }
    }
    this.#s0 = s0 >>> 0;
    this.#s1 = s1 >>> 0;
    this.#s2 = s2 >>> 0;
    this.#s3 = s3 >>> 0;
  }

  /**
   * Returns an independent child generator, deterministically: the child continues this
   * generator's current stream, and this generator jumps 2^64 steps ahead, so the two streams
   * cannot overlap within 2^64 draws.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const root = new Rng(1);
   * const initRng = root.split();
   * const dataRng = root.split();
   * ```
   */
  split(): Rng {
    const child = this.clone();
    this.jump();
    return child;
  }
}
