/**
 * Models by name, for the CLI and checkpoints.
 *
 * @module
 */
import type { InitContext, Module } from "../nn/module.ts";
import { type ClassifierOptions, lenet5 } from "./lenet.ts";
import { resnet20 } from "./resnet.ts";

/** Constructors of the models the CLI knows, by name. */
export const MODELS: Readonly<
  Record<string, (init: InitContext, opts: ClassifierOptions) => Module>
> = {
  lenet5,
  resnet20,
};

/** Builds model `name`; throws a RangeError listing the known names otherwise. */
export function createModel(name: string, init: InitContext, opts: ClassifierOptions): Module {
  const make = MODELS[name];
  if (!make) {
    throw new RangeError(
      `Unknown model "${name}": expected one of ${Object.keys(MODELS).join(", ")}`,
    );
  }
  return make(init, opts);
}
