/**
 * LeNet-5 (LeCun et al. 1998) in its common modern form: ReLU and max pooling.
 *
 *   conv1 5x5 (pad 2) 6 -> relu -> maxpool 2 -> conv2 5x5 16 -> relu -> maxpool 2 -> flatten
 *   -> fc1 120 -> relu -> fc2 84 -> relu -> fc3 classes
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";
import { Conv2d, Flatten, Linear, MaxPool2d } from "../nn/layers.ts";
import { type InitContext, Module } from "../nn/module.ts";
import { relu } from "../ops/elementwise.ts";

/** Input geometry and number of classes of an image classifier. */
export interface ClassifierOptions {
  /** Input channels (default 1 for LeNet-5, 3 for ResNets). */
  inChannels?: number;
  /** Input height = width (LeNet-5 needs it to size fc1). */
  inputSize?: number;
  /** Number of output classes, the width of the logits (default 10). */
  classes?: number;
  /**
   * Build the auxiliary classifier and train on it (Inception v3 only; `createModel` refuses it
   * for other models).
   */
  auxLogits?: boolean;
}

/** LeNet-5 for 28x28 (MNIST) or 32x32 inputs. */
export class LeNet5 extends Module {
  /** 5x5 convolution, inChannels -> 6 channels, padding 2. */
  readonly conv1: Conv2d;
  /** 2x2 max pooling, stride 2, applied after each convolution. */
  readonly pool: MaxPool2d = new MaxPool2d(2);
  /** 5x5 convolution, 6 -> 16 channels, no padding. */
  readonly conv2: Conv2d;
  /** Flattens [n, side, side, 16] to [n, 16 * side * side] before fc1. */
  readonly flatten: Flatten = new Flatten();
  /** Linear 16 * side * side -> 120 (side = 5 for 28x28 inputs, 6 for 32x32). */
  readonly fc1: Linear;
  /** Linear 120 -> 84. */
  readonly fc2: Linear;
  /** Linear 84 -> classes: the logits. */
  readonly fc3: Linear;
  /** `fc1` reads a flattened [16, side, side] map (for torchvision-layout weight import). */
  readonly torchFlatten: Readonly<Record<string, readonly [number, number, number]>>;

  /**
   * Creates the layers with `init`'s backend and generator. Throws a RangeError when `inputSize` is
   * below 12, too small for the two convolutions and pools.
   */
  constructor(init: InitContext, opts: ClassifierOptions = {}) {
    super();
    const size = opts.inputSize ?? 28;
    const side = Math.floor((Math.floor(size / 2) - 4) / 2);
    if (side < 1) throw new RangeError(`LeNet-5 needs inputs of at least 12x12, got ${size}`);
    this.conv1 = this.child("conv1", new Conv2d(init, opts.inChannels ?? 1, 6, 5, { padding: 2 }));
    this.conv2 = this.child("conv2", new Conv2d(init, 6, 16, 5));
    this.fc1 = this.child("fc1", new Linear(init, 16 * side * side, 120));
    this.fc2 = this.child("fc2", new Linear(init, 120, 84));
    this.fc3 = this.child("fc3", new Linear(init, 84, opts.classes ?? 10));
    this.torchFlatten = { fc1: [16, side, side] };
  }

  /** Logits [n, classes] for images x [n, inputSize, inputSize, inChannels] (NHWC, f32). */
  forward(tape: Tape, x: Tensor): Tensor {
    x = this.pool.forward(tape, relu(tape, this.conv1.forward(tape, x)));
    x = this.pool.forward(tape, relu(tape, this.conv2.forward(tape, x)));
    x = this.flatten.forward(tape, x);
    x = relu(tape, this.fc1.forward(tape, x));
    x = relu(tape, this.fc2.forward(tape, x));
    return this.fc3.forward(tape, x);
  }
}

/** LeNet-5 factory. */
export function lenet5(init: InitContext, opts: ClassifierOptions = {}): LeNet5 {
  return new LeNet5(init, opts);
}
