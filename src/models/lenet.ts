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
  inChannels?: number;
  /** Input height = width (LeNet-5 needs it to size fc1). */
  inputSize?: number;
  classes?: number;
}

/** LeNet-5 for 28x28 (MNIST) or 32x32 inputs. */
export class LeNet5 extends Module {
  readonly conv1: Conv2d;
  readonly pool: MaxPool2d = new MaxPool2d(2);
  readonly conv2: Conv2d;
  readonly flatten: Flatten = new Flatten();
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly fc3: Linear;

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
  }

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
