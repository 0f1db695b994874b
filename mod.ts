/**
 * daint8: INT8-ready CNN training for Deno. TypeScript orchestrates models, training and
 * (soon) quantizer state; a native library (C++ cpu backend, CUDA to come) does the math behind
 * one C ABI loaded through Deno FFI.
 *
 * @example
 * ```ts ignore
 * import * as d8 from "./mod.ts";
 * const backend = d8.getBackend("cpu");
 * const model = d8.lenet5({ backend, rng: new d8.Rng(0) });
 * using tape = new d8.Tape(backend);
 * const x = d8.Tensor.full(backend, [8, 28, 28, 1], 0.5);
 * const logits = model.forward(tape, x); // [8, 10]
 * ```
 *
 * @module
 */
export { Daint8Error, loadLibrary } from "./ffi/library.ts";
export { ABI_VERSION } from "./ffi/symbols.ts";
export type {
  Backend,
  BatchNormState,
  ConvShape,
  SgdHyper,
  Storage,
} from "./src/backend/backend.ts";
export { getBackend, NativeBackend } from "./src/backend/native.ts";
export { type DType, DTYPE_BYTES, shapeSize, Tensor } from "./src/tensor.ts";
export { type BackwardFn, Tape } from "./src/autograd/tape.ts";
export { FP32, type GemmArithmetic, isLinearShape } from "./src/ops/arithmetic.ts";
export { conv2d, type Conv2dOptions, convShape, linear, type Pair } from "./src/ops/conv.ts";
export { add, concatChannels, flatten, relu } from "./src/ops/elementwise.ts";
export { batchNorm, type BatchNormOptions } from "./src/ops/norm.ts";
export { avgPool2d, globalAvgPool, maxPool2d, type PoolOptions } from "./src/ops/pool.ts";
export { type CrossEntropyResult, softmaxCrossEntropy } from "./src/ops/loss.ts";
export { type InitContext, Module } from "./src/nn/module.ts";
export {
  AvgPool2d,
  BatchNorm2d,
  Conv2d,
  Flatten,
  type GemmLayer,
  GlobalAvgPool,
  isGemmLayer,
  Linear,
  MaxPool2d,
  ReLU,
  Residual,
  Sequential,
} from "./src/nn/layers.ts";
export { type ClassifierOptions, LeNet5, lenet5 } from "./src/models/lenet.ts";
export { BasicBlock, ResNet, resnet20, type ResNetConfig } from "./src/models/resnet.ts";
export { createModel, MODELS } from "./src/models/registry.ts";
export { Sgd, type SgdOptions } from "./src/optim/sgd.ts";
export {
  makeSchedule,
  type ScheduleKind,
  type ScheduleOptions,
  SCHEDULES,
} from "./src/optim/schedule.ts";
export { Rng } from "./src/data/rng.ts";
export { parseIdx, readIdx } from "./src/data/idx.ts";
export { defaultDataDir, type ImageDataset, loadMnistLike } from "./src/data/datasets.ts";
export { DataLoader } from "./src/data/loader.ts";
export {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  writeSafetensorsAtomic,
} from "./src/io/safetensors.ts";
export { readCheckpoint, saveCheckpoint } from "./src/train/checkpoint.ts";
export { evaluate, train, type TrainConfig, type TrainResult } from "./src/train/trainer.ts";
export { MetricsLog } from "./src/train/metrics.ts";
export { Progress } from "./src/train/progress.ts";
