/**
 * ResNets for small images (He et al. 2016, CIFAR variant): a 3x3 stem, stages of basic
 * blocks, global average pooling and a linear classifier. Names follow torchvision
 * (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`).
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear, Sequential } from "../nn/layers.ts";
import { type InitContext, Module, normalTensor } from "../nn/module.ts";
import type { ClassifierOptions } from "./lenet.ts";

function conv3x3(init: InitContext, cin: number, cout: number, stride = 1): Conv2d {
  return new Conv2d(init, cin, cout, 3, { stride, padding: 1, bias: false });
}

function conv1x1(init: InitContext, cin: number, cout: number, stride = 1): Conv2d {
  return new Conv2d(init, cin, cout, 1, { stride, bias: false });
}

/** conv3x3 -> bn -> relu -> conv3x3 -> bn, plus the shortcut, then relu. */
export class BasicBlock extends Module {
  /** First 3x3 convolution (stride `stride`), no bias. */
  readonly conv1: Conv2d;
  /** Batch norm after conv1. */
  readonly bn1: BatchNorm2d;
  /** Second 3x3 convolution (stride 1), no bias. */
  readonly conv2: Conv2d;
  /** Batch norm after conv2, before the shortcut is added. */
  readonly bn2: BatchNorm2d;
  /** 1x1 conv + bn when the shape changes, else identity (null). */
  readonly downsample: Sequential | null;

  /**
   * A block from `cin` to `cout` channels; `stride` 2 halves the height and width. A projection
   * shortcut (`downsample`) is created when the stride is not 1 or the channel count changes.
   */
  constructor(init: InitContext, cin: number, cout: number, stride = 1) {
    super();
    this.conv1 = this.child("conv1", conv3x3(init, cin, cout, stride));
    this.bn1 = this.child("bn1", new BatchNorm2d(init, cout));
    this.conv2 = this.child("conv2", conv3x3(init, cout, cout));
    this.bn2 = this.child("bn2", new BatchNorm2d(init, cout));
    this.downsample = stride !== 1 || cin !== cout
      ? this.child(
        "downsample",
        new Sequential(conv1x1(init, cin, cout, stride), new BatchNorm2d(init, cout)),
      )
      : null;
  }

  /**
   * relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) for x [n, h, w, cin]; returns [n, h/stride,
   * w/stride, cout] (rounded up).
   */
  forward(tape: Tape, x: Tensor): Tensor {
    const out = this.bn1.forwardRelu(tape, this.conv1.forward(tape, x));
    const identity = this.downsample ? this.downsample.forward(tape, x) : x;
    return this.bn2.forwardRelu(tape, this.conv2.forward(tape, out), identity);
  }
}

/** The configuration of a small-image ResNet. */
export interface ResNetConfig extends ClassifierOptions {
  /** Blocks per stage, e.g. [3, 3, 3] for ResNet-20. */
  blocks: readonly number[];
  /** Channels per stage, e.g. [16, 32, 64]. */
  widths: readonly number[];
}

/** A CIFAR-style ResNet built from `config`. */
export class ResNet extends Module {
  /** The stem: 3x3 convolution, inChannels -> widths[0], stride 1, no bias. */
  readonly conv1: Conv2d;
  /** Batch norm after the stem convolution. */
  readonly bn1: BatchNorm2d;
  /**
   * The stages (`layer1`, `layer2`, ...), each a Sequential of BasicBlocks; every stage after the
   * first starts with a stride-2 block.
   */
  readonly stages: Sequential[] = [];
  /** Global average pooling [n, h, w, c] -> [n, c] before the classifier. */
  readonly pool: GlobalAvgPool = new GlobalAvgPool();
  /** Linear classifier from the last width to `classes` logits. */
  readonly fc: Linear;

  /**
   * Builds the network and re-initializes every convolution with He (fan-out) normal weights.
   * Throws a RangeError unless `blocks` and `widths` are non-empty and of the same length.
   */
  constructor(init: InitContext, config: ResNetConfig) {
    super();
    if (config.blocks.length !== config.widths.length || config.blocks.length === 0) {
      throw new RangeError(
        `ResNet needs one width per stage: got ${config.blocks.length} stages and ` +
          `${config.widths.length} widths`,
      );
    }
    const w0 = config.widths[0]!;
    this.conv1 = this.child("conv1", conv3x3(init, config.inChannels ?? 3, w0));
    this.bn1 = this.child("bn1", new BatchNorm2d(init, w0));
    let cin = w0;
    config.blocks.forEach((n, i) => {
      const cout = config.widths[i]!;
      const blocks = [];
      for (let b = 0; b < n; b++) {
        blocks.push(new BasicBlock(init, cin, cout, b === 0 && i > 0 ? 2 : 1));
        cin = cout;
      }
      this.stages.push(this.child(`layer${i + 1}`, new Sequential(...blocks)));
    });
    this.fc = this.child("fc", new Linear(init, cin, config.classes ?? 10));
    // He initialization (fan_out, ReLU gain) for convolutions, as torchvision.
    for (const [, m] of this.namedModules()) {
      if (m instanceof Conv2d) {
        const [k, r, s] = m.weight.shape as [number, number, number, number];
        const fresh = normalTensor(init, [...m.weight.shape], Math.sqrt(2 / (k * r * s)));
        init.backend.copy(m.weight, fresh);
        fresh.dispose();
      }
    }
  }

  /** Logits [n, classes] for images x [n, h, w, inChannels] (NHWC, f32). */
  forward(tape: Tape, x: Tensor): Tensor {
    x = this.bn1.forwardRelu(tape, this.conv1.forward(tape, x));
    for (const stage of this.stages) x = stage.forward(tape, x);
    return this.fc.forward(tape, this.pool.forward(tape, x));
  }
}

/** ResNet-20: three stages of three basic blocks, 16/32/64 channels (0.27M parameters). */
export function resnet20(init: InitContext, opts: ClassifierOptions = {}): ResNet {
  return new ResNet(init, { blocks: [3, 3, 3], widths: [16, 32, 64], ...opts });
}

/** ResNet-56: three stages of nine basic blocks, 16/32/64 channels (0.86M parameters). */
export function resnet56(init: InitContext, opts: ClassifierOptions = {}): ResNet {
  return new ResNet(init, { blocks: [9, 9, 9], widths: [16, 32, 64], ...opts });
}
