/**
 * ImageNet ResNets as torchvision defines them (ResNet-18/34 of basic blocks, ResNet-50 of
 * bottlenecks with the stride on the 3x3 convolution, "v1.5"): a 7x7 stride-2 stem and a 3x3
 * stride-2 max pool, four stages of 64/128/256/512 planes, global average pooling, `fc`.
 * Parameter names and shapes (OHWI) match torchvision's state dicts one to one.
 *
 * CIFAR-style variant (`stem: "cifar"`, the default for inputs of 64 pixels or less): the stem
 * convolution runs at stride 1 and the max pool is left out (the 7x7 kernel stays, so the weights
 * still map to torchvision's); the stages keep their strides.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear, MaxPool2d, Sequential } from "../nn/layers.ts";
import { type InitContext, Module } from "../nn/module.ts";
import { kaimingFanOut } from "../nn/zoo_layers.ts";
import type { ClassifierOptions } from "./lenet.ts";
import { BasicBlock } from "./resnet.ts";

/** Options of the zoo models with an ImageNet and a CIFAR-style stem. */
export interface ZooOptions extends ClassifierOptions {
  /**
   * `imagenet` (torchvision's strides) or `cifar` (the stride changes each model documents);
   * default: `cifar` when `inputSize` is 64 or less, else `imagenet`.
   */
  stem?: "imagenet" | "cifar";
}

/** The stem a model gets for `opts`. */
export function stemOf(opts: ZooOptions): "imagenet" | "cifar" {
  return opts.stem ?? ((opts.inputSize ?? 224) <= 64 ? "cifar" : "imagenet");
}

/** 1x1 (reduce) -> 3x3 (stride) -> 1x1 (expand x4), each with batch norm, plus the shortcut. */
export class Bottleneck extends Module {
  /** Output channels are planes * 4. */
  static readonly expansion = 4;
  /** 1x1 reduction, cin -> planes. */
  readonly conv1: Conv2d;
  /** Batch norm after conv1. */
  readonly bn1: BatchNorm2d;
  /** 3x3 at `stride`, planes -> planes. */
  readonly conv2: Conv2d;
  /** Batch norm after conv2. */
  readonly bn2: BatchNorm2d;
  /** 1x1 expansion, planes -> 4 planes. */
  readonly conv3: Conv2d;
  /** Batch norm after conv3 (before the shortcut is added). */
  readonly bn3: BatchNorm2d;
  /** 1x1 conv + bn when the shape changes, else identity (null). */
  readonly downsample: Sequential | null;

  /** A bottleneck from `cin` channels to `planes * 4`; `stride` 2 halves height and width. */
  constructor(init: InitContext, cin: number, planes: number, stride = 1) {
    super();
    const cout = planes * Bottleneck.expansion;
    this.conv1 = this.child("conv1", new Conv2d(init, cin, planes, 1, { bias: false }));
    this.bn1 = this.child("bn1", new BatchNorm2d(init, planes));
    this.conv2 = this.child(
      "conv2",
      new Conv2d(init, planes, planes, 3, { stride, padding: 1, bias: false }),
    );
    this.bn2 = this.child("bn2", new BatchNorm2d(init, planes));
    this.conv3 = this.child("conv3", new Conv2d(init, planes, cout, 1, { bias: false }));
    this.bn3 = this.child("bn3", new BatchNorm2d(init, cout));
    this.downsample = stride !== 1 || cin !== cout
      ? this.child(
        "downsample",
        new Sequential(
          new Conv2d(init, cin, cout, 1, { stride, bias: false }),
          new BatchNorm2d(init, cout),
        ),
      )
      : null;
  }

  /** relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)). */
  forward(tape: Tape, x: Tensor): Tensor {
    let out = this.bn1.forwardRelu(tape, this.conv1.forward(tape, x));
    out = this.bn2.forwardRelu(tape, this.conv2.forward(tape, out));
    const identity = this.downsample ? this.downsample.forward(tape, x) : x;
    return this.bn3.forwardRelu(tape, this.conv3.forward(tape, out), identity);
  }
}

/** An ImageNet-style ResNet (torchvision's `ResNet`). */
export class ImageNetResNet extends Module {
  /** 7x7 stem convolution, stride 2 (1 in the CIFAR variant), padding 3, no bias. */
  readonly conv1: Conv2d;
  /** Batch norm after the stem. */
  readonly bn1: BatchNorm2d;
  /** 3x3 stride-2 max pool after the stem; null in the CIFAR variant. */
  readonly maxpool: MaxPool2d | null;
  /** `layer1` .. `layer4`. */
  readonly stages: Sequential[] = [];
  /** Global average pooling before `fc`. */
  readonly pool: GlobalAvgPool = new GlobalAvgPool();
  /** The classifier. */
  readonly fc: Linear;

  /** `blocks` per stage of `bottleneck` or basic blocks; torchvision's initialization. */
  constructor(
    init: InitContext,
    blocks: readonly [number, number, number, number],
    bottleneck: boolean,
    opts: ZooOptions = {},
  ) {
    super();
    const cifar = stemOf(opts) === "cifar";
    this.conv1 = this.child(
      "conv1",
      new Conv2d(init, opts.inChannels ?? 3, 64, 7, {
        stride: cifar ? 1 : 2,
        padding: 3,
        bias: false,
      }),
    );
    this.bn1 = this.child("bn1", new BatchNorm2d(init, 64));
    this.maxpool = cifar ? null : new MaxPool2d(3, { stride: 2, padding: 1 });
    const expansion = bottleneck ? Bottleneck.expansion : 1;
    let cin = 64;
    blocks.forEach((n, i) => {
      const planes = 64 << i;
      const list: Module[] = [];
      for (let b = 0; b < n; b++) {
        const stride = b === 0 && i > 0 ? 2 : 1;
        list.push(
          bottleneck
            ? new Bottleneck(init, cin, planes, stride)
            : new BasicBlock(init, cin, planes, stride),
        );
        cin = planes * expansion;
      }
      this.stages.push(this.child(`layer${i + 1}`, new Sequential(...list)));
    });
    this.fc = this.child("fc", new Linear(init, cin, opts.classes ?? 1000));
    for (const [, m] of this.namedModules()) if (m instanceof Conv2d) kaimingFanOut(init, m);
  }

  /** Logits [n, classes] for x [n, h, w, inChannels]. */
  forward(tape: Tape, x: Tensor): Tensor {
    x = this.bn1.forwardRelu(tape, this.conv1.forward(tape, x));
    if (this.maxpool) x = this.maxpool.forward(tape, x);
    for (const s of this.stages) x = s.forward(tape, x);
    return this.fc.forward(tape, this.pool.forward(tape, x));
  }
}

/** ResNet-18 (torchvision: 11,689,512 parameters at 1000 classes). */
export function resnet18(init: InitContext, opts: ZooOptions = {}): ImageNetResNet {
  return new ImageNetResNet(init, [2, 2, 2, 2], false, opts);
}

/** ResNet-34 (torchvision: 21,797,672 parameters at 1000 classes). */
export function resnet34(init: InitContext, opts: ZooOptions = {}): ImageNetResNet {
  return new ImageNetResNet(init, [3, 4, 6, 3], false, opts);
}

/** ResNet-50 (torchvision: 25,557,032 parameters at 1000 classes). */
export function resnet50(init: InitContext, opts: ZooOptions = {}): ImageNetResNet {
  return new ImageNetResNet(init, [3, 4, 6, 3], true, opts);
}
