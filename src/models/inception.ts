/**
 * Inception v3 (Szegedy et al. 2016) as torchvision defines it: BasicConv2d units (conv without
 * bias, batch norm with eps 0.001, ReLU), Inception A-E blocks with factorized 1x7 / 7x1 and 1x3
 * / 3x1 kernels, branches joined by channel concatenation, and an optional auxiliary classifier
 * on Mixed_6e (`auxLogits`). Names match torchvision (`Conv2d_1a_3x3.conv.weight`,
 * `Mixed_6b.branch7x7_2.bn.running_var`, `AuxLogits.fc.weight`, `fc.weight`).
 *
 * `forward` returns the main logits. With `auxLogits`, a training-mode forward also computes the
 * auxiliary logits and keeps them in `lastAux`; the training step adds their cross-entropy with
 * weight `auxWeight` (0.4, as torchvision's reference recipe) to the loss it differentiates
 * (`deno task train --model inception_v3 --aux-logits`). The auxiliary head needs Mixed_6e maps
 * of at least 17x17 (its 5x5 average pool at stride 3, then a 5x5 conv): inputs of 299 pixels
 * and up, torchvision's size. Without the head, torchvision weights that hold
 * `AuxLogits.*` still load: those tensors are skipped.
 * The network needs inputs of at least 75x75 (torchvision's minimum); there is no CIFAR variant.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear } from "../nn/layers.ts";
import { type InitContext, Module } from "../nn/module.ts";
import { concatAll, Dropout, normalValues, setTensor } from "../nn/zoo_layers.ts";
import type { Pair } from "../ops/conv.ts";
import { avgPool2d, maxPool2d } from "../ops/pool.ts";
import type { ClassifierOptions } from "./lenet.ts";

/** Side of Mixed_6e's maps for a square input of side `size` (the stem and Mixed_6a shrink). */
function mixed6eSize(size: number): number {
  const down = (s: number) => Math.floor((s - 3) / 2) + 1; // 3x3 at stride 2, no padding
  let s = down(size) - 2; // Conv2d_1a_3x3, Conv2d_2a_3x3 (2b keeps the size)
  s = down(s) - 2; // max pool, Conv2d_4a_3x3 (3b is 1x1)
  return down(down(s)); // max pool, Mixed_6a
}

/** Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU. */
export class BasicConv2d extends Module {
  /** The convolution. */
  readonly conv: Conv2d;
  /** Its batch norm. */
  readonly bn: BatchNorm2d;
  /** A unit from `cin` to `cout` channels. */
  constructor(
    init: InitContext,
    cin: number,
    cout: number,
    kernel: Pair,
    opts: { stride?: Pair; padding?: Pair } = {},
  ) {
    super();
    this.conv = this.child("conv", new Conv2d(init, cin, cout, kernel, { ...opts, bias: false }));
    this.bn = this.child("bn", new BatchNorm2d(init, cout, { eps: 0.001 }));
  }
  /** relu(bn(conv(x))). */
  forward(tape: Tape, x: Tensor): Tensor {
    return this.bn.forwardRelu(tape, this.conv.forward(tape, x));
  }
}

type Units = Record<string, BasicConv2d>;

/** A block of named BasicConv2d units (created in order), joined by `run`. */
abstract class Block extends Module {
  protected readonly u: Units = {};
  protected unit(
    init: InitContext,
    name: string,
    cin: number,
    cout: number,
    kernel: Pair,
    opts: { stride?: Pair; padding?: Pair } = {},
  ): void {
    this.u[name] = this.child(name, new BasicConv2d(init, cin, cout, kernel, opts));
  }
  protected f(tape: Tape, name: string, x: Tensor): Tensor {
    return this.u[name]!.forward(tape, x);
  }
  protected chain(tape: Tape, names: string[], x: Tensor): Tensor {
    for (const n of names) x = this.f(tape, n, x);
    return x;
  }
}

const avg3 = (tape: Tape, x: Tensor) => avgPool2d(tape, x, 3, { stride: 1, padding: 1 });
const max3s2 = (tape: Tape, x: Tensor) => maxPool2d(tape, x, 3, { stride: 2 });

/** 1x1, 5x5, double 3x3 and pooled branches: 224 + `poolFeatures` channels. */
export class InceptionA extends Block {
  /** From `cin` channels. */
  constructor(init: InitContext, cin: number, poolFeatures: number) {
    super();
    this.unit(init, "branch1x1", cin, 64, 1);
    this.unit(init, "branch5x5_1", cin, 48, 1);
    this.unit(init, "branch5x5_2", 48, 64, 5, { padding: 2 });
    this.unit(init, "branch3x3dbl_1", cin, 64, 1);
    this.unit(init, "branch3x3dbl_2", 64, 96, 3, { padding: 1 });
    this.unit(init, "branch3x3dbl_3", 96, 96, 3, { padding: 1 });
    this.unit(init, "branch_pool", cin, poolFeatures, 1);
  }
  /** The four branches concatenated. */
  forward(tape: Tape, x: Tensor): Tensor {
    return concatAll(tape, [
      this.f(tape, "branch1x1", x),
      this.chain(tape, ["branch5x5_1", "branch5x5_2"], x),
      this.chain(tape, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
      this.f(tape, "branch_pool", avg3(tape, x)),
    ]);
  }
}

/** Grid reduction: stride-2 3x3, stride-2 double 3x3 and max-pool branches. */
export class InceptionB extends Block {
  /** From `cin` channels to 480 + cin. */
  constructor(init: InitContext, cin: number) {
    super();
    this.unit(init, "branch3x3", cin, 384, 3, { stride: 2 });
    this.unit(init, "branch3x3dbl_1", cin, 64, 1);
    this.unit(init, "branch3x3dbl_2", 64, 96, 3, { padding: 1 });
    this.unit(init, "branch3x3dbl_3", 96, 96, 3, { stride: 2 });
  }
  /** The three branches concatenated. */
  forward(tape: Tape, x: Tensor): Tensor {
    return concatAll(tape, [
      this.f(tape, "branch3x3", x),
      this.chain(tape, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
      max3s2(tape, x),
    ]);
  }
}

/** Factorized 7x7 branches (1x7 then 7x1): 768 channels. */
export class InceptionC extends Block {
  /** From `cin` channels with `c7` channels inside the 7x7 branches. */
  constructor(init: InitContext, cin: number, c7: number) {
    super();
    const row = { padding: [0, 3] as const }, col = { padding: [3, 0] as const };
    this.unit(init, "branch1x1", cin, 192, 1);
    this.unit(init, "branch7x7_1", cin, c7, 1);
    this.unit(init, "branch7x7_2", c7, c7, [1, 7], row);
    this.unit(init, "branch7x7_3", c7, 192, [7, 1], col);
    this.unit(init, "branch7x7dbl_1", cin, c7, 1);
    this.unit(init, "branch7x7dbl_2", c7, c7, [7, 1], col);
    this.unit(init, "branch7x7dbl_3", c7, c7, [1, 7], row);
    this.unit(init, "branch7x7dbl_4", c7, c7, [7, 1], col);
    this.unit(init, "branch7x7dbl_5", c7, 192, [1, 7], row);
    this.unit(init, "branch_pool", cin, 192, 1);
  }
  /** The four branches concatenated. */
  forward(tape: Tape, x: Tensor): Tensor {
    return concatAll(tape, [
      this.f(tape, "branch1x1", x),
      this.chain(tape, ["branch7x7_1", "branch7x7_2", "branch7x7_3"], x),
      this.chain(tape, [
        "branch7x7dbl_1",
        "branch7x7dbl_2",
        "branch7x7dbl_3",
        "branch7x7dbl_4",
        "branch7x7dbl_5",
      ], x),
      this.f(tape, "branch_pool", avg3(tape, x)),
    ]);
  }
}

/** Grid reduction with a factorized 7x7 branch. */
export class InceptionD extends Block {
  /** From `cin` channels to 512 + cin. */
  constructor(init: InitContext, cin: number) {
    super();
    this.unit(init, "branch3x3_1", cin, 192, 1);
    this.unit(init, "branch3x3_2", 192, 320, 3, { stride: 2 });
    this.unit(init, "branch7x7x3_1", cin, 192, 1);
    this.unit(init, "branch7x7x3_2", 192, 192, [1, 7], { padding: [0, 3] });
    this.unit(init, "branch7x7x3_3", 192, 192, [7, 1], { padding: [3, 0] });
    this.unit(init, "branch7x7x3_4", 192, 192, 3, { stride: 2 });
  }
  /** The three branches concatenated. */
  forward(tape: Tape, x: Tensor): Tensor {
    return concatAll(tape, [
      this.chain(tape, ["branch3x3_1", "branch3x3_2"], x),
      this.chain(tape, ["branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"], x),
      max3s2(tape, x),
    ]);
  }
}

/** Expanded filter bank: 1x3 and 3x1 branches side by side, 2048 channels. */
export class InceptionE extends Block {
  /** From `cin` channels. */
  constructor(init: InitContext, cin: number) {
    super();
    const row = { padding: [0, 1] as const }, col = { padding: [1, 0] as const };
    this.unit(init, "branch1x1", cin, 320, 1);
    this.unit(init, "branch3x3_1", cin, 384, 1);
    this.unit(init, "branch3x3_2a", 384, 384, [1, 3], row);
    this.unit(init, "branch3x3_2b", 384, 384, [3, 1], col);
    this.unit(init, "branch3x3dbl_1", cin, 448, 1);
    this.unit(init, "branch3x3dbl_2", 448, 384, 3, { padding: 1 });
    this.unit(init, "branch3x3dbl_3a", 384, 384, [1, 3], row);
    this.unit(init, "branch3x3dbl_3b", 384, 384, [3, 1], col);
    this.unit(init, "branch_pool", cin, 192, 1);
  }
  /** The four branches (two of them split in two) concatenated. */
  forward(tape: Tape, x: Tensor): Tensor {
    const b3 = this.f(tape, "branch3x3_1", x);
    const d3 = this.chain(tape, ["branch3x3dbl_1", "branch3x3dbl_2"], x);
    return concatAll(tape, [
      this.f(tape, "branch1x1", x),
      this.f(tape, "branch3x3_2a", b3),
      this.f(tape, "branch3x3_2b", b3),
      this.f(tape, "branch3x3dbl_3a", d3),
      this.f(tape, "branch3x3dbl_3b", d3),
      this.f(tape, "branch_pool", avg3(tape, x)),
    ]);
  }
}

/** The auxiliary classifier on Mixed_6e. */
export class InceptionAux extends Module {
  /** 1x1 to 128 channels. */
  readonly conv0: BasicConv2d;
  /** 5x5 to 768 channels. */
  readonly conv1: BasicConv2d;
  /** Global average pooling. */
  readonly pool: GlobalAvgPool = new GlobalAvgPool();
  /** Linear 768 -> classes. */
  readonly fc: Linear;
  /** From `cin` channels to `classes` logits. */
  constructor(init: InitContext, cin: number, classes: number) {
    super();
    this.conv0 = this.child("conv0", new BasicConv2d(init, cin, 128, 1));
    this.conv1 = this.child("conv1", new BasicConv2d(init, 128, 768, 5));
    this.fc = this.child("fc", new Linear(init, 768, classes));
  }
  /** Logits from Mixed_6e's output (5x5 average pool at stride 3 first). */
  forward(tape: Tape, x: Tensor): Tensor {
    x = avgPool2d(tape, x, 5, { stride: 3 });
    x = this.conv1.forward(tape, this.conv0.forward(tape, x));
    return this.fc.forward(tape, this.pool.forward(tape, x));
  }
}

/** Options of {@linkcode inceptionV3}. */
export interface InceptionOptions extends ClassifierOptions {
  /**
   * Build the auxiliary classifier `AuxLogits` and train on it (default false; torchvision's
   * default is true). Needs inputs of 299 pixels and up.
   */
  auxLogits?: boolean;
}

/** Inception v3. */
export class InceptionV3 extends Module {
  /** The auxiliary head, or null. */
  readonly aux: InceptionAux | null = null;
  /** Auxiliary logits of the last training-mode forward (owned by its tape), or null. */
  lastAux: Tensor | null = null;
  /** Weight of the auxiliary cross-entropy in the training loss (torchvision's recipe: 0.4). */
  readonly auxWeight = 0.4;
  readonly #stem1: BasicConv2d[];
  readonly #stem2: BasicConv2d[];
  readonly #mid: Module[];
  readonly #late: Module[];
  /** Global average pooling before `fc`. */
  readonly pool: GlobalAvgPool = new GlobalAvgPool();
  /** Dropout 0.5 before `fc`. */
  readonly dropout: Dropout;
  /** Linear 2048 -> classes. */
  readonly fc: Linear;

  /**
   * Builds the network with torchvision's initialization (truncated normal, std 0.1, for every
   * conv and linear layer). Throws a RangeError for inputs below 75x75.
   */
  constructor(init: InitContext, opts: InceptionOptions = {}) {
    super();
    const size = opts.inputSize ?? 299;
    if (size < 75) {
      throw new RangeError(`Inception v3 needs inputs of at least 75x75, got ${size}`);
    }
    if (opts.auxLogits && mixed6eSize(size) < 17) {
      throw new RangeError(
        `Inception v3's auxiliary head needs inputs of at least 299x299 (Mixed_6e maps of ` +
          `17x17 for its 5x5 pool at stride 3 and 5x5 conv), got ${size}: leave auxLogits off`,
      );
    }
    const classes = opts.classes ?? 1000;
    const bc = (name: string, cin: number, cout: number, k: Pair, o = {}) =>
      this.child(name, new BasicConv2d(init, cin, cout, k, o));
    this.#stem1 = [
      bc("Conv2d_1a_3x3", opts.inChannels ?? 3, 32, 3, { stride: 2 }),
      bc("Conv2d_2a_3x3", 32, 32, 3),
      bc("Conv2d_2b_3x3", 32, 64, 3, { padding: 1 }),
    ];
    this.#stem2 = [bc("Conv2d_3b_1x1", 64, 80, 1), bc("Conv2d_4a_3x3", 80, 192, 3)];
    this.#mid = [
      this.child("Mixed_5b", new InceptionA(init, 192, 32)),
      this.child("Mixed_5c", new InceptionA(init, 256, 64)),
      this.child("Mixed_5d", new InceptionA(init, 288, 64)),
      this.child("Mixed_6a", new InceptionB(init, 288)),
      this.child("Mixed_6b", new InceptionC(init, 768, 128)),
      this.child("Mixed_6c", new InceptionC(init, 768, 160)),
      this.child("Mixed_6d", new InceptionC(init, 768, 160)),
      this.child("Mixed_6e", new InceptionC(init, 768, 192)),
    ];
    if (opts.auxLogits) this.aux = this.child("AuxLogits", new InceptionAux(init, 768, classes));
    this.#late = [
      this.child("Mixed_7a", new InceptionD(init, 768)),
      this.child("Mixed_7b", new InceptionE(init, 1280)),
      this.child("Mixed_7c", new InceptionE(init, 2048)),
    ];
    this.dropout = this.child("dropout", new Dropout(init, 0.5));
    this.fc = this.child("fc", new Linear(init, 2048, classes));
    for (const [name, m] of this.namedModules()) {
      if (m instanceof Conv2d || m instanceof Linear) {
        const std = name === "AuxLogits.conv1.conv" ? 0.01 : name === "AuxLogits.fc" ? 0.001 : 0.1;
        setTensor(init, m.weight, normalValues(init, m.weight.size, std, true));
      }
    }
  }

  /** Without the auxiliary head, torchvision's `AuxLogits.*` tensors are skipped on load. */
  override optionalStatePrefixes(): string[] {
    return this.aux ? [] : ["AuxLogits."];
  }

  /** Main logits [n, classes] for x [n, h, w, inChannels] (h, w >= 75). */
  forward(tape: Tape, x: Tensor): Tensor {
    for (const u of this.#stem1) x = u.forward(tape, x);
    x = maxPool2d(tape, x, 3, { stride: 2 });
    for (const u of this.#stem2) x = u.forward(tape, x);
    x = maxPool2d(tape, x, 3, { stride: 2 });
    for (const m of this.#mid) x = m.forward(tape, x);
    this.lastAux = this.aux && this.training ? this.aux.forward(tape, x) : null;
    for (const m of this.#late) x = m.forward(tape, x);
    x = this.dropout.forward(tape, this.pool.forward(tape, x));
    return this.fc.forward(tape, x);
  }
}

/** Inception v3 (torchvision: 27,161,264 parameters at 1000 classes with the aux head). */
export function inceptionV3(init: InitContext, opts: InceptionOptions = {}): InceptionV3 {
  return new InceptionV3(init, opts);
}
