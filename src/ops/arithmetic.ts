/**
 * The hook through which quantizers enter the convolution and linear GEMMs. Every conv and
 * linear layer runs its three GEMMs (fprop, dgrad, wgrad) through a `GemmArithmetic`; the
 * default `FP32` calls the backend's float kernels. An INT8 arithmetic quantizes the operands
 * (with its own per-layer state) and calls the integer kernels instead, without any change to
 * the layers, the tape or the models.
 *
 * A linear layer is a 1x1 convolution over a 1x1 image (n = batch, c = in features, k = out
 * features), so one interface covers both.
 *
 * @module
 */
import type { ConvShape } from "../backend/backend.ts";
import type { Tensor } from "../tensor.ts";
import type { Tape } from "../autograd/tape.ts";

/**
 * What a layer's backward needs from its forward, as the arithmetic chose to keep it (f32 x and
 * w for FP32; int8 x and w with their scales for INT8). Opaque to the layer.
 */
export type GemmSaved = { readonly kind: string };

/**
 * How a layer computes its three GEMMs. `forward` returns what `backward` reads (and declares
 * it to the tape with `tape.save`), so no tensor is matched by id. Outputs are overwritten, except
 * dx when `backward` is asked to accumulate into it.
 */
export interface GemmArithmetic {
  /** Name for logs (`fp32`, `int8-naive`, ...). */
  readonly name: string;
  /** y[n,p,q,k] = conv(x[n,h,w,c], w[k,r,s,c/g]) (+ bias[k]); returns what backward needs. */
  forward(
    tape: Tape,
    y: Tensor,
    x: Tensor,
    w: Tensor,
    bias: Tensor | null,
    shape: ConvShape,
  ): GemmSaved;
  /**
   * dx[n,h,w,c] (unless null) and dw[k,r,s,c/g] (unless null) from dy[n,p,q,k] and what forward
   * saved. With `accumulateDx` (never for linear shapes) the input gradient is added into dx.
   */
  backward(
    tape: Tape,
    saved: GemmSaved,
    dy: Tensor,
    dx: Tensor | null,
    dw: Tensor | null,
    shape: ConvShape,
    accumulateDx?: boolean,
  ): void;
}

/** Whether `shape` is a linear layer written as a 1x1 convolution. */
export function isLinearShape(s: ConvShape): boolean {
  return s.h === 1 && s.w === 1 && s.r === 1 && s.s === 1 && s.groups === 1 && s.padH === 0 &&
    s.padW === 0;
}

interface Fp32Saved extends GemmSaved {
  readonly kind: "fp32";
  readonly x: Tensor;
  readonly w: Tensor;
}

/** Float32 GEMMs on the backend (linear shapes take the backend's dense GEMM path). */
export const FP32: GemmArithmetic = {
  name: "fp32",
  forward(tape, y, x, w, bias, s) {
    if (isLinearShape(s)) tape.backend.linear(y, x, w, bias, s.n, s.k, s.c);
    else tape.backend.conv2d(y, x, w, bias, s);
    const saved: Fp32Saved = { kind: "fp32", x: tape.save(x), w: tape.save(w) };
    return saved;
  },
  backward(tape, saved, dy, dx, dw, s, accumulateDx = false) {
    const { x, w } = saved as Fp32Saved;
    const b = tape.backend;
    if (dx) {
      if (isLinearShape(s)) b.linearDgrad(dx, dy, w, s.n, s.k, s.c);
      else b.conv2dDgrad(dx, dy, w, s, accumulateDx);
    }
    if (dw) {
      if (isLinearShape(s)) b.linearWgrad(dw, x, dy, s.n, s.k, s.c);
      else b.conv2dWgrad(dw, x, dy, s);
    }
  },
};
