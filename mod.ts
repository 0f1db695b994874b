/**
 * daint8: INT8 training of convolutional networks for Deno, with the Distribution-Adaptive
 * INT8 method (Gradient Vectorized Quantization and the Magnitude-aware Clipping Strategy) and the
 * fp32, naive INT8 and UI8 baselines. TypeScript orchestrates models, training, quantizer state
 * and clipping solves; a native library (the C++ cpu backend) does the math behind one C ABI
 * loaded through Deno FFI.
 *
 * @example
 * ```ts
 * import * as d8 from "./mod.ts";
 * const backend = d8.getBackend("cpu");
 * const model = d8.lenet5({ backend, rng: new d8.Rng(0) });
 * // INT8 training: every conv/linear GEMM of the model runs in int8 with daint8's quantizers.
 * const quantizer = new d8.ModelQuantizer(model, d8.quantConfig("daint8", "lambda=0.3"), 0);
 * const opt = new d8.Sgd(backend, model.namedParameters(), { lr: 0.05, momentum: 0.9 });
 * const step = new d8.TrainStep(backend, model, quantizer, opt);
 * const x = d8.Tensor.full(backend, [8, 28, 28, 1], 0.5);
 * const y = d8.Tensor.from(backend, new Int32Array(8).fill(3), [8], "i32");
 * for (let i = 0; i < 3; i++) step.run(() => [x, y], 0.05); // no host read inside a step
 * const { loss } = await step.readLoss(); // read at the step edge
 * console.assert(Number.isFinite(loss) && step.profile!.syncs === 0);
 * // The clipping solver: the optimum of E(s) for a unit Gaussian truncated at 4 sigma.
 * console.assert(Math.abs(d8.optimalClip(d8.gaussian(1), { alpha: 0, max: 4 }).s - 2.868) < 1e-3);
 * for (const t of [x, y]) t.dispose();
 * step.dispose();
 * opt.dispose();
 * quantizer.dispose();
 * model.dispose();
 * ```
 *
 * @module
 */
export { cacheDir, Daint8Error, ensureLibrary, loadLibrary } from "./ffi/library.ts";
export type { NativeLibrary } from "./ffi/library.ts";
export { ABI_VERSION } from "./ffi/symbols.ts";
export { SYMBOLS, type Symbols } from "./ffi/symbols.ts";
export {
  type Backend,
  type BackendCounters,
  type BatchNormState,
  type ConvShape,
  type CpuBackend,
  INT8_KERNELS,
  type Int8Kernel,
  isCpuBackend,
  type QuantDecision,
  type QuantKnobs,
  quantStateWords,
  ScaleLayout,
  type SgdHyper,
  type Storage,
} from "./src/backend/backend.ts";
export { NativeBackend } from "./src/backend/native.ts";
export {
  autoBackend,
  BACKEND_NAMES,
  type BackendFactory,
  getBackend,
  openAutoBackend,
  openBackend,
  type PassedOver,
  registerBackend,
} from "./src/backend/registry.ts";
export { type LossTotals, type StepInput, type StepProfile, TrainStep } from "./src/train/step.ts";
export { type DType, DTYPE_BYTES, shapeSize, Tensor } from "./src/tensor.ts";
export { type BackwardFn, Tape } from "./src/autograd/tape.ts";
export { FP32, type GemmArithmetic, type GemmSaved, isLinearShape } from "./src/ops/arithmetic.ts";
export { conv2d, type Conv2dOptions, convShape, linear, type Pair } from "./src/ops/conv.ts";
export { add, concatChannels, flatten, relu } from "./src/ops/elementwise.ts";
export { batchNorm, type BatchNormOptions } from "./src/ops/norm.ts";
export { avgPool2d, globalAvgPool, maxPool2d, type PoolOptions } from "./src/ops/pool.ts";
export { type CrossEntropyResult, softmaxCrossEntropy } from "./src/ops/loss.ts";
export { type InitContext, Module } from "./src/nn/module.ts";
export {
  BatchNorm2d,
  Conv2d,
  Flatten,
  type GemmLayer,
  GlobalAvgPool,
  isGemmLayer,
  Linear,
  MaxPool2d,
  ReLU,
  Sequential,
} from "./src/nn/layers.ts";
export { type ClassifierOptions, LeNet5, lenet5 } from "./src/models/lenet.ts";
export { BasicBlock, ResNet, resnet20, resnet56, type ResNetConfig } from "./src/models/resnet.ts";
export {
  Bottleneck,
  ImageNetResNet,
  resnet18,
  resnet34,
  resnet50,
  type ZooOptions,
} from "./src/models/resnet_imagenet.ts";
export { InvertedResidual, MobileNetV2, mobilenetV2 } from "./src/models/mobilenet.ts";
export { AlexNet, alexnet, VGG, vgg16, vgg16Bn } from "./src/models/vgg.ts";
export {
  BasicConv2d,
  InceptionAux,
  type InceptionOptions,
  InceptionV3,
  inceptionV3,
} from "./src/models/inception.ts";
export { AdaptiveAvgPool2d, Dropout, ReLU6, type TorchFlatten } from "./src/nn/zoo_layers.ts";
export { adaptiveAvgPool2d, dropout, relu6 } from "./src/ops/zoo.ts";
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
export type { IdxArray } from "./src/data/idx.ts";
export { defaultDataDir, type ImageDataset, loadMnistLike } from "./src/data/datasets.ts";
export type { KnownDataset, LoadMnistLikeOptions } from "./src/data/datasets.ts";
export { DataLoader } from "./src/data/loader.ts";
export type { Batch } from "./src/data/loader.ts";
export { CIFAR10_CLASSES, decodeCifar10, loadCifar10 } from "./src/data/cifar.ts";
export {
  decodeImage,
  type ImageDecoders,
  type ImageFolderOptions,
  loadDecoders,
  loadImageFolder,
} from "./src/data/folder.ts";
export {
  augmentInto,
  type AugmentOptions,
  batchRng,
  channelMeanStd,
  type ImageDims,
} from "./src/data/augment.ts";
export { type FloatBatch, InputPipeline, type PipelineOptions } from "./src/data/pipeline.ts";
export {
  loadTorchvisionWeights,
  saveTorchvisionWeights,
  torchvisionState,
} from "./src/io/torchvision.ts";
export {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  writeSafetensorsAtomic,
} from "./src/io/safetensors.ts";
export type {
  Dtype as SafetensorsDtype,
  Safetensors,
  Tensor as SafetensorsTensor,
  TypedArray,
} from "./src/io/safetensors.ts";
export { readCheckpoint, saveCheckpoint } from "./src/train/checkpoint.ts";
export type {
  CheckpointContents,
  CheckpointMeta,
  LoadedCheckpoint,
} from "./src/train/checkpoint.ts";
export { evaluate, train, type TrainConfig, type TrainResult } from "./src/train/trainer.ts";
export type { EpochResult, RunOptions, RunProfile } from "./src/train/trainer.ts";
export { MetricsLog } from "./src/train/metrics.ts";
export type { MetricValue } from "./src/train/metrics.ts";
export { Progress } from "./src/train/progress.ts";
export {
  CLIP_RULES,
  type ClipRule,
  PRESETS,
  QUANT_NAMES,
  type QuantConfig,
  quantConfig,
} from "./src/quant/config.ts";
export { SHARP_FAMILIES, type SharpFamily } from "./src/quant/config.ts";
export {
  cosineDistance,
  decodeQuantState,
  Int8Gemm,
  type LayerQuantState,
  type LayerQuantStats,
  mix32,
  SOLVE_TABLE,
  solveTable,
} from "./src/quant/int8_gemm.ts";
export { ModelQuantizer } from "./src/quant/quantizer.ts";
export type { HostTensors } from "./src/quant/quantizer.ts";
export {
  type ChannelShape,
  classifyChannel,
  type ClipOptions,
  clippingError,
  dClippingError,
  density,
  type Family,
  familySigma,
  fitInvertedT,
  gaussian,
  type GaussianFamily,
  invertedT,
  type InvertedTFamily,
  laplace,
  type LaplaceFamily,
  laplaceFromSigma,
  type OptimalClip,
  optimalClip,
  shareAboveSigma,
} from "./src/quant/solve.ts";
