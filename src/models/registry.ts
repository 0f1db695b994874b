/**
 * Models by name, for the CLI and checkpoints.
 *
 * @module
 */
import type { InitContext, Module } from "../nn/module.ts";
import { inceptionV3 } from "./inception.ts";
import { type ClassifierOptions, lenet5 } from "./lenet.ts";
import { mobilenetV2 } from "./mobilenet.ts";
import { resnet20, resnet56 } from "./resnet.ts";
import { resnet18, resnet34, resnet50 } from "./resnet_imagenet.ts";
import { alexnet, vgg16, vgg16Bn } from "./vgg.ts";

/** Constructors of the models the CLI knows, by name (torchvision's names where it has them). */
export const MODELS: Readonly<
  Record<string, (init: InitContext, opts: ClassifierOptions) => Module>
> = {
  lenet5,
  resnet20,
  resnet56,
  resnet18,
  resnet34,
  resnet50,
  mobilenet_v2: mobilenetV2,
  vgg16,
  vgg16_bn: vgg16Bn,
  alexnet,
  inception_v3: inceptionV3,
};

/** The models with an optional auxiliary classifier (`auxLogits`). */
export const AUX_MODELS: readonly string[] = ["inception_v3"];

/** Builds model `name`; throws a RangeError listing the known names otherwise. */
export function createModel(name: string, init: InitContext, opts: ClassifierOptions): Module {
  const make = MODELS[name];
  if (!make) {
    throw new RangeError(
      `Unknown model "${name}": expected one of ${Object.keys(MODELS).join(", ")}`,
    );
  }
  if (opts.auxLogits && !AUX_MODELS.includes(name)) {
    throw new RangeError(
      `Model "${name}" has no auxiliary classifier (auxLogits): only ${
        AUX_MODELS.join(", ")
      } has one`,
    );
  }
  return make(init, opts);
}
