/**
 * VGG-16 (with and without batch norm) and AlexNet as torchvision defines them: a `features`
 * Sequential, adaptive average pooling to 7x7 (6x6 for AlexNet) and a `classifier` Sequential of
 * linear layers with ReLU and dropout. Names and indices match torchvision (`features.0.weight`,
 * `classifier.6.weight`). The first linear layer reads the pooled map flattened in our NHWC
 * order; `torchFlatten` tells the weight importer to permute its columns from PyTorch's c-h-w.
 *
 * Small inputs: VGG-16 works from 32x32 (five 2x2 pools end at 1x1, pooled up to 7x7 as in
 * torchvision). AlexNet needs 63x63 with torchvision's strides; its CIFAR-style variant (`stem:
 * "cifar"`, default for inputs of 64 pixels or less) runs the 11x11 stem at stride 1 instead of 4
 * (the same weights), which fits 32x32 inputs.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential } from "../nn/layers.ts";
import { type InitContext, Module } from "../nn/module.ts";
import {
  AdaptiveAvgPool2d,
  Dropout,
  type TorchFlatten,
  torchvisionInit,
} from "../nn/zoo_layers.ts";
import { stemOf, type ZooOptions } from "./resnet_imagenet.ts";

const VGG16_CFG: readonly (number | "M")[] = [
  64,
  64,
  "M",
  128,
  128,
  "M",
  256,
  256,
  256,
  "M",
  512,
  512,
  512,
  "M",
  512,
  512,
  512,
  "M",
];

/** VGG (configuration D: 13 convolutions, 3 linear layers). */
export class VGG extends Module implements TorchFlatten {
  /** Convolutions (+ batch norm), ReLUs and max pools. */
  readonly features: Sequential;
  /** Adaptive average pooling to 7x7. */
  readonly avgpool: AdaptiveAvgPool2d = new AdaptiveAvgPool2d(7);
  /** Flattens [n, 7, 7, 512]. */
  readonly flatten: Flatten = new Flatten();
  /** Linear 25088 -> 4096 -> 4096 -> classes with ReLU and dropout 0.5. */
  readonly classifier: Sequential;
  /** `classifier.0` reads a flattened [512, 7, 7] map. */
  readonly torchFlatten: Readonly<Record<string, readonly [number, number, number]>> = {
    "classifier.0": [512, 7, 7],
  };

  /** VGG-16, with batch norm after every convolution when `batchNorm`; torchvision's init. */
  constructor(init: InitContext, batchNorm: boolean, opts: ZooOptions = {}) {
    super();
    const layers: Module[] = [];
    let cin = opts.inChannels ?? 3;
    for (const v of VGG16_CFG) {
      if (v === "M") {
        layers.push(new MaxPool2d(2));
        continue;
      }
      layers.push(new Conv2d(init, cin, v, 3, { padding: 1 }));
      if (batchNorm) layers.push(new BatchNorm2d(init, v));
      layers.push(new ReLU());
      cin = v;
    }
    this.features = this.child("features", new Sequential(...layers));
    this.classifier = this.child(
      "classifier",
      new Sequential(
        new Linear(init, 512 * 7 * 7, 4096),
        new ReLU(),
        new Dropout(init, 0.5),
        new Linear(init, 4096, 4096),
        new ReLU(),
        new Dropout(init, 0.5),
        new Linear(init, 4096, opts.classes ?? 1000),
      ),
    );
    torchvisionInit(init, this, 0.01);
  }

  /** Logits [n, classes] for x [n, h, w, inChannels] (h, w >= 32). */
  forward(tape: Tape, x: Tensor): Tensor {
    x = this.avgpool.forward(tape, this.features.forward(tape, x));
    return this.classifier.forward(tape, this.flatten.forward(tape, x));
  }
}

/** VGG-16 (torchvision: 138,357,544 parameters at 1000 classes). */
export function vgg16(init: InitContext, opts: ZooOptions = {}): VGG {
  return new VGG(init, false, opts);
}

/** VGG-16 with batch norm (torchvision: 138,365,992 parameters at 1000 classes). */
export function vgg16Bn(init: InitContext, opts: ZooOptions = {}): VGG {
  return new VGG(init, true, opts);
}

/** AlexNet (torchvision's single-tower version). */
export class AlexNet extends Module implements TorchFlatten {
  /** Five convolutions with ReLU, three 3x3 stride-2 max pools. */
  readonly features: Sequential;
  /** Adaptive average pooling to 6x6. */
  readonly avgpool: AdaptiveAvgPool2d = new AdaptiveAvgPool2d(6);
  /** Flattens [n, 6, 6, 256]. */
  readonly flatten: Flatten = new Flatten();
  /** Dropout, Linear 9216 -> 4096, ReLU, dropout, 4096 -> 4096, ReLU, 4096 -> classes. */
  readonly classifier: Sequential;
  /** `classifier.1` reads a flattened [256, 6, 6] map. */
  readonly torchFlatten: Readonly<Record<string, readonly [number, number, number]>> = {
    "classifier.1": [256, 6, 6],
  };

  /** Builds AlexNet with PyTorch's default (uniform) initialization, as torchvision. */
  constructor(init: InitContext, opts: ZooOptions = {}) {
    super();
    const cifar = stemOf(opts) === "cifar";
    this.features = this.child(
      "features",
      new Sequential(
        new Conv2d(init, opts.inChannels ?? 3, 64, 11, { stride: cifar ? 1 : 4, padding: 2 }),
        new ReLU(),
        new MaxPool2d(3, { stride: 2 }),
        new Conv2d(init, 64, 192, 5, { padding: 2 }),
        new ReLU(),
        new MaxPool2d(3, { stride: 2 }),
        new Conv2d(init, 192, 384, 3, { padding: 1 }),
        new ReLU(),
        new Conv2d(init, 384, 256, 3, { padding: 1 }),
        new ReLU(),
        new Conv2d(init, 256, 256, 3, { padding: 1 }),
        new ReLU(),
        new MaxPool2d(3, { stride: 2 }),
      ),
    );
    this.classifier = this.child(
      "classifier",
      new Sequential(
        new Dropout(init, 0.5),
        new Linear(init, 256 * 6 * 6, 4096),
        new ReLU(),
        new Dropout(init, 0.5),
        new Linear(init, 4096, 4096),
        new ReLU(),
        new Linear(init, 4096, opts.classes ?? 1000),
      ),
    );
  }

  /** Logits [n, classes] for x [n, h, w, inChannels]. */
  forward(tape: Tape, x: Tensor): Tensor {
    x = this.avgpool.forward(tape, this.features.forward(tape, x));
    return this.classifier.forward(tape, this.flatten.forward(tape, x));
  }
}

/** AlexNet (torchvision: 61,100,840 parameters at 1000 classes). */
export function alexnet(init: InitContext, opts: ZooOptions = {}): AlexNet {
  return new AlexNet(init, opts);
}
