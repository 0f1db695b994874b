/**
 * Learning-rate schedules as pure functions of the step: constant, step decay, cosine, each with
 * an optional linear warm-up. Pure functions make resume exact: the rate depends only on the
 * step number.
 *
 * @module
 */

/** The schedule kinds the CLI accepts. */
export const SCHEDULES = ["constant", "step", "cosine"] as const;
/** A schedule kind. */
export type ScheduleKind = typeof SCHEDULES[number];

/** Schedule parameters. */
export interface ScheduleOptions {
  /**
   * `constant`, `step` (decay by `gamma` at the milestones) or `cosine` (annealing to `minFactor *
   * lr`).
   */
  kind: ScheduleKind;
  /** Peak learning rate. */
  lr: number;
  /** Total optimizer steps of the run. */
  totalSteps: number;
  /** Linear warm-up from lr/warmupSteps to lr over this many steps (0 = none). */
  warmupSteps?: number;
  /** Step decay: multiply by `gamma` at each of these fractions of the run (default 0.5, 0.75). */
  milestones?: readonly number[];
  /** Step decay: the factor applied at each milestone (default 0.1). */
  gamma?: number;
  /** Cosine: final rate as a fraction of lr (default 0). */
  minFactor?: number;
}

/**
 * Returns lr(step) for step = 0 .. totalSteps - 1.
 *
 * @example
 * ```ts
 * import { makeSchedule } from "./schedule.ts";
 * const lr = makeSchedule({ kind: "cosine", lr: 0.1, totalSteps: 100 });
 * console.assert(lr(0) === 0.1 && lr(100) < 1e-9);
 * ```
 */
export function makeSchedule(o: ScheduleOptions): (step: number) => number {
  if (!SCHEDULES.includes(o.kind)) {
    throw new RangeError(`Unknown schedule "${o.kind}": expected one of ${SCHEDULES.join(", ")}`);
  }
  if (!(o.lr > 0) || !Number.isFinite(o.lr)) {
    throw new RangeError(`Learning rate must be a positive number, got ${o.lr}`);
  }
  if (!Number.isInteger(o.totalSteps) || o.totalSteps < 1) {
    throw new RangeError(`Total steps must be a positive integer, got ${o.totalSteps}`);
  }
  const warm = o.warmupSteps ?? 0;
  const gamma = o.gamma ?? 0.1;
  const milestones = (o.milestones ?? [0.5, 0.75]).map((f) => Math.round(f * o.totalSteps));
  const minF = o.minFactor ?? 0;
  return (step: number) => {
    if (step < warm) return (o.lr * (step + 1)) / warm;
    switch (o.kind) {
      case "constant":
        return o.lr;
      case "step":
        return o.lr * gamma ** milestones.filter((m) => step >= m).length;
      case "cosine": {
        const t = Math.min(1, (step - warm) / Math.max(1, o.totalSteps - warm));
        return o.lr * (minF + (1 - minF) * 0.5 * (1 + Math.cos(Math.PI * t)));
      }
    }
  };
}
