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

/** How a layer computes its three GEMMs. Outputs are overwritten, never accumulated. */
export interface GemmArithmetic {
  /** Name for logs (`fp32`, `int8-naive`, ...). */
  readonly name: string;
  /** y[n,p,q,k] = conv(x[n,h,w,c], w[k,r,s,c/g]) (+ bias[k]). */
  forward(tape: Tape, y: Tensor, x: Tensor, w: Tensor, bias: Tensor | null, shape: ConvShape): void;
  /** dx[n,h,w,c] from dy[n,p,q,k] and w. */
  dgrad(tape: Tape, dx: Tensor, dy: Tensor, w: Tensor, shape: ConvShape): void;
  /** dw[k,r,s,c/g] from x and dy. */
  wgrad(tape: Tape, dw: Tensor, x: Tensor, dy: Tensor, shape: ConvShape): void;
}

/** Whether `shape` is a linear layer written as a 1x1 convolution. */
export function isLinearShape(s: ConvShape): boolean {
  return s.h === 1 && s.w === 1 && s.r === 1 && s.s === 1 && s.groups === 1 && s.padH === 0 &&
    s.padW === 0;
}

/** Float32 GEMMs on the backend (linear shapes take the backend's dense GEMM path). */
export const FP32: GemmArithmetic = {
  name: "fp32",
  forward(tape, y, x, w, bias, s) {
    if (isLinearShape(s)) tape.backend.linear(y, x, w, bias, s.n, s.k, s.c);
    else tape.backend.conv2d(y, x, w, bias, s);
  },
  dgrad(tape, dx, dy, w, s) {
    if (isLinearShape(s)) tape.backend.linearDgrad(dx, dy, w, s.n, s.k, s.c);
    else tape.backend.conv2dDgrad(dx, dy, w, s);
  },
  wgrad(tape, dw, x, dy, s) {
    if (isLinearShape(s)) tape.backend.linearWgrad(dw, x, dy, s.n, s.k, s.c);
    else tape.backend.conv2dWgrad(dw, x, dy, s);
  },
};
