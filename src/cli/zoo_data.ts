/**
 * CLI plumbing for the RGB datasets (CIFAR-10 binary, image folders) and their input pipeline.
 *
 * @module
 */
import { loadCifar10 } from "../data/cifar.ts";
import type { ImageDataset } from "../data/datasets.ts";
import { loadImageFolder } from "../data/folder.ts";
import { InputPipeline } from "../data/pipeline.ts";
import { UsageError } from "./args.ts";

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** Training and test sets of `cifar10` (binary batches) or `folder` (ImageFolder layout). */
export async function loadRgbData(
  dataset: "cifar10" | "folder",
  dataDir: string | undefined,
  limit: number | undefined,
  testLimit: number | undefined,
): Promise<[ImageDataset, ImageDataset]> {
  if (dataset === "cifar10") {
    const dir = dataDir ?? env("DAINT8_CIFAR10_DIR");
    if (!dir) {
      throw new UsageError(
        "--dataset cifar10 needs --data-dir DIR (or DAINT8_CIFAR10_DIR) holding data_batch_1.bin " +
          ".. data_batch_5.bin and test_batch.bin; for the JPEG copy use --dataset folder",
      );
    }
    return [
      await loadCifar10(dir, "train", { limit }),
      await loadCifar10(dir, "test", { limit: testLimit }),
    ];
  }
  if (!dataDir) throw new UsageError("--dataset folder needs --data-dir DIR with train/ and test/");
  const log = (l: string) => console.log(l);
  return [
    await loadImageFolder(dataDir, "train", { limit, log }),
    await loadImageFolder(dataDir, "test", { limit: testLimit, log }),
  ];
}

/**
 * The input pipeline of a run: for cifar10 and folder datasets, per-channel normalization and
 * (unless `augment` is false) random crop + flip on a prefetching worker; none for MNIST-like
 * data (the trainer's own upload).
 */
export function makeInput(
  a: { config: { dataset: string; seed: number }; augment: boolean },
  trainSet: ImageDataset,
): InputPipeline | undefined {
  if (a.config.dataset !== "cifar10" && a.config.dataset !== "folder") return undefined;
  return new InputPipeline(trainSet, { augment: a.augment, seed: a.config.seed });
}
