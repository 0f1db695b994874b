/**
 * MobileNetV2 (Sandler et al. 2018) as torchvision defines it (width 1.0): a 3x3 stem, 17
 * inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear projection, ReLU6), a 1x1
 * conv to 1280 channels, global average pooling, dropout 0.2 and the classifier. Names match
 * torchvision (`features.0.0.weight`, `features.1.conv.0.0.weight`, `classifier.1.weight`).
 * Every convolution, depthwise ones included, is a Conv2d, so a quantizer runs all of them in
 * INT8 (groups = channels for the depthwise ones).
 *
 * CIFAR-style variant (`stem: "cifar"`, default for inputs of 64 pixels or less): the stem
 * convolution and the first block of the 24-channel stage run at stride 1 instead of 2 (total
 * stride 8 instead of 32: 32x32 inputs end at 4x4), as is usual for CIFAR MobileNetV2.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { BatchNorm2d, Conv2d, GlobalAvgPool, Linear, Sequential } from "../nn/layers.ts";
import { type InitContext, Module } from "../nn/module.ts";
import { Dropout, ReLU6, torchvisionInit } from "../nn/zoo_layers.ts";
import { add } from "../ops/elementwise.ts";
import { stemOf, type ZooOptions } from "./resnet_imagenet.ts";

/**
 * Conv (no bias) -> BatchNorm -> ReLU6, torchvision's Conv2dNormActivation (children "0", "1",
 * "2"), with the batch norm and the ReLU6 run as one fused op (`BatchNorm2d.forwardRelu`).
 */
class ConvBnRelu6 extends Sequential {
  readonly conv: Conv2d;
  readonly bn: BatchNorm2d;
  constructor(conv: Conv2d, bn: BatchNorm2d) {
    super(conv, bn, new ReLU6());
    this.conv = conv;
    this.bn = bn;
  }
  override forward(tape: Tape, x: Tensor): Tensor {
    return this.bn.forwardRelu(tape, this.conv.forward(tape, x), null, "relu6");
  }
}

function convBnRelu6(
  init: InitContext,
  cin: number,
  cout: number,
  kernel: number,
  stride = 1,
  groups = 1,
): Sequential {
  return new ConvBnRelu6(
    new Conv2d(init, cin, cout, kernel, {
      stride,
      padding: (kernel - 1) >> 1,
      groups,
      bias: false,
    }),
    new BatchNorm2d(init, cout),
  );
}

/** An inverted residual block; the shortcut is used when stride is 1 and cin = cout. */
export class InvertedResidual extends Module {
  /** The body, torchvision's `conv` Sequential. */
  readonly conv: Sequential;
  /** Whether x is added to the body's output. */
  readonly residual: boolean;

  /** cin -> cin * expand (1x1) -> depthwise 3x3 at `stride` -> cout (1x1, linear). */
  constructor(init: InitContext, cin: number, cout: number, stride: number, expand: number) {
    super();
    const hidden = Math.round(cin * expand);
    const layers: Module[] = [];
    if (expand !== 1) layers.push(convBnRelu6(init, cin, hidden, 1));
    layers.push(
      convBnRelu6(init, hidden, hidden, 3, stride, hidden),
      new Conv2d(init, hidden, cout, 1, { bias: false }),
      new BatchNorm2d(init, cout),
    );
    this.conv = this.child("conv", new Sequential(...layers));
    this.residual = stride === 1 && cin === cout;
  }

  /** conv(x) (+ x). */
  forward(tape: Tape, x: Tensor): Tensor {
    const y = this.conv.forward(tape, x);
    return this.residual ? add(tape, y, x) : y;
  }
}

/** [expansion t, channels c, blocks n, stride s] per stage, torchvision's setting. */
const SETTING: readonly (readonly [number, number, number, number])[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/** MobileNetV2 (width 1.0). */
export class MobileNetV2 extends Module {
  /** Stem, 17 inverted residual blocks and the 1x1 conv to 1280 channels. */
  readonly features: Sequential;
  /** Global average pooling. */
  readonly pool: GlobalAvgPool = new GlobalAvgPool();
  /** Dropout (0.2) and Linear(1280, classes). */
  readonly classifier: Sequential;

  /** Builds the network with torchvision's initialization (linear weights N(0, 0.01^2)). */
  constructor(init: InitContext, opts: ZooOptions = {}) {
    super();
    const cifar = stemOf(opts) === "cifar";
    const layers: Module[] = [convBnRelu6(init, opts.inChannels ?? 3, 32, 3, cifar ? 1 : 2)];
    let cin = 32;
    SETTING.forEach(([t, c, n, s], stage) => {
      for (let i = 0; i < n; i++) {
        const stride = i === 0 ? (cifar && stage === 1 ? 1 : s) : 1;
        layers.push(new InvertedResidual(init, cin, c, stride, t));
        cin = c;
      }
    });
    layers.push(convBnRelu6(init, cin, 1280, 1));
    this.features = this.child("features", new Sequential(...layers));
    this.classifier = this.child(
      "classifier",
      new Sequential(new Dropout(init, 0.2), new Linear(init, 1280, opts.classes ?? 1000)),
    );
    torchvisionInit(init, this, 0.01);
  }

  /** Logits [n, classes] for x [n, h, w, inChannels]. */
  forward(tape: Tape, x: Tensor): Tensor {
    return this.classifier.forward(tape, this.pool.forward(tape, this.features.forward(tape, x)));
  }
}

/** MobileNetV2 (torchvision: 3,504,872 parameters at 1000 classes). */
export function mobilenetV2(init: InitContext, opts: ZooOptions = {}): MobileNetV2 {
  return new MobileNetV2(init, opts);
}
