/**
 * The C ABI of kernels/daint8.h as a Deno FFI symbol table, declared once for every backend
 * library (cpu and cuda export the same symbols). Each parameter's C type is in a comment.
 *
 * @module
 */

/** ABI version this TypeScript was written against (D8_ABI_VERSION in kernels/daint8.h). */
export const ABI_VERSION = 5;

const status = "i32" as const;
// Handles cross as u64 values (0 = NULL): no Deno.UnsafePointer is needed, so the library works
// under a path-scoped --allow-ffi=<dir>.
const buf = "u64" as const; // d8_buffer*
const ctx = "u64" as const; // d8_context*
const shape = "buffer" as const; // const d8_conv_shape* (16 x int32)
const knobs = "buffer" as const; // const d8_quant_knobs* (8 x int32, 8 x f32)

/** Every exported symbol of a daint8 native library. */
export const SYMBOLS = {
  d8_abi_version: { parameters: [], result: "i32" },
  d8_last_error_copy: { parameters: ["buffer", "i32"], result: "i32" }, // char* out, capacity
  d8_backend_name: { parameters: ["buffer", "i32"], result: status }, // char* out, int32 capacity
  d8_device_info: { parameters: [ctx, "buffer", "i32"], result: status },

  d8_context_create: { parameters: ["buffer", "i32"], result: status }, // d8_context** out, device
  d8_context_destroy: { parameters: [ctx], result: status },
  d8_set_num_threads: { parameters: [ctx, "i32"], result: status },
  d8_synchronize: { parameters: [ctx], result: status },

  d8_buffer_alloc: { parameters: ["buffer", ctx, "i64"], result: status }, // d8_buffer** out
  d8_buffer_free: { parameters: [buf], result: status },
  d8_buffer_size: { parameters: ["buffer", buf], result: status }, // int64* out
  d8_buffer_upload: { parameters: [buf, "i64", "buffer", "i64"], result: status },
  d8_buffer_download: { parameters: ["buffer", buf, "i64", "i64"], result: status },
  d8_buffer_copy: { parameters: [buf, "i64", buf, "i64", "i64"], result: status },

  d8_fill_f32: { parameters: [buf, "i64", "f32"], result: status },
  d8_add_f32: { parameters: [buf, buf, buf, "i64"], result: status },
  d8_axpy_f32: { parameters: [buf, "f32", buf, "i64"], result: status },
  d8_u8_to_f32: { parameters: [buf, buf, "i64", "f32", "f32"], result: status },
  d8_relu_fwd: { parameters: [buf, buf, "i64"], result: status },
  d8_relu_bwd: { parameters: [buf, buf, buf, "i64"], result: status },
  d8_relu_fwd_mask: { parameters: [buf, buf, buf, "i64"], result: status }, // y, mask, x, n
  d8_relu_bwd_mask: { parameters: [buf, buf, buf, "i64"], result: status }, // dx, dy, mask, n
  d8_concat_channels: { parameters: [buf, buf, buf, "i64", "i32", "i32"], result: status },
  d8_split_channels: { parameters: [buf, buf, buf, "i64", "i32", "i32"], result: status },

  d8_conv2d_fwd: { parameters: [buf, buf, buf, buf, shape], result: status },
  d8_conv2d_dgrad: { parameters: [buf, buf, buf, shape], result: status },
  d8_conv2d_wgrad: { parameters: [buf, buf, buf, shape], result: status },
  d8_bias_grad: { parameters: [buf, buf, "i64", "i32"], result: status },

  d8_linear_fwd: { parameters: [buf, buf, buf, buf, "i64", "i32", "i32"], result: status },
  d8_linear_dgrad: { parameters: [buf, buf, buf, "i64", "i32", "i32"], result: status },
  d8_linear_wgrad: { parameters: [buf, buf, buf, "i64", "i32", "i32"], result: status },

  // y, save_mean, save_invstd, running_mean, running_var, x, gamma, beta, m, c, momentum, eps
  d8_batchnorm_fwd_train: {
    parameters: [buf, buf, buf, buf, buf, buf, buf, buf, "i64", "i32", "f32", "f32"],
    result: status,
  },
  // y, x, gamma, beta, running_mean, running_var, m, c, eps
  d8_batchnorm_fwd_infer: {
    parameters: [buf, buf, buf, buf, buf, buf, "i64", "i32", "f32"],
    result: status,
  },
  // dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd, m, c
  d8_batchnorm_bwd: {
    parameters: [buf, buf, buf, buf, buf, buf, buf, buf, "i64", "i32"],
    result: status,
  },

  // y, mask, save_mean, save_invstd, running_mean, running_var, x, residual (nullable), gamma,
  // beta, m, c, momentum, eps, cap (0: ReLU, 6: ReLU6)
  d8_batchnorm_relu_fwd_train: {
    parameters: [
      buf,
      buf,
      buf,
      buf,
      buf,
      buf,
      buf,
      buf,
      buf,
      buf,
      "i64",
      "i32",
      "f32",
      "f32",
      "f32",
    ],
    result: status,
  },
  // dx, dresidual (nullable), dgamma, dbeta, dy, mask, x, gamma, save_mean, save_invstd, m, c
  d8_batchnorm_relu_bwd: {
    parameters: [buf, buf, buf, buf, buf, buf, buf, buf, buf, buf, "i64", "i32"],
    result: status,
  },

  d8_maxpool_fwd: { parameters: [buf, buf, buf, shape], result: status },
  d8_maxpool_bwd: { parameters: [buf, buf, buf, shape], result: status },
  d8_avgpool_fwd: { parameters: [buf, buf, shape], result: status },
  d8_avgpool_bwd: { parameters: [buf, buf, shape], result: status },
  d8_global_avgpool_fwd: { parameters: [buf, buf, "i32", "i32", "i32"], result: status },
  d8_global_avgpool_bwd: { parameters: [buf, buf, "i32", "i32", "i32"], result: status },

  // stats, probs, accum (nullable), logits, labels, n, classes
  d8_softmax_xent_fwd: { parameters: [buf, buf, buf, buf, buf, "i32", "i32"], result: status },
  // dlogits, probs, labels, seed (nullable), n, classes, scale
  d8_softmax_xent_bwd: { parameters: [buf, buf, buf, buf, "i32", "i32", "f32"], result: status },

  // w, momentum_buf, nonfinite (nullable), grad, n, lr, momentum, weight_decay, nesterov
  d8_sgd_step: {
    parameters: [buf, buf, buf, buf, "i64", "f32", "f32", "f32", "i32"],
    result: status,
  },

  // ---- INT8 ----
  // y, x, outer, inner, clips, layout, rounding, seed
  d8_quantize_i8: {
    parameters: [buf, buf, "i64", "i32", buf, "i32", "i32", "u32"],
    result: status,
  },
  // y_tensor, y_channel, x, rows, channels, clip_tensor, clips_channel, rounding, seed
  d8_quantize_i8_dual: {
    parameters: [buf, buf, buf, "i64", "i32", buf, buf, "i32", "u32"],
    result: status,
  },
  d8_dequantize_i8: { parameters: [buf, buf, "i64", "i32", buf, "i32"], result: status },
  d8_absmax_f32: { parameters: [buf, buf, "i64"], result: status },
  // y, scale, x, outer, inner, layout
  d8_quantize_i8_maxscale: { parameters: [buf, buf, buf, "i64", "i32", "i32"], result: status },
  // state, clip_tensor, scale_tensor, clips_channel, scales_channel, record, stats, dy, table,
  // rows, knobs
  d8_quant_decide: {
    parameters: [buf, buf, buf, buf, buf, buf, buf, buf, buf, "i64", knobs],
    result: status,
  },
  // record, x, q, clips, rows, channels, layout
  d8_quant_error: { parameters: [buf, buf, buf, buf, "i64", "i32", "i32"], result: status },
  d8_channel_stats_f32: { parameters: [buf, buf, "i64", "i32"], result: status },
  // y, x, w, bias, x_scale, w_scale, w_layout, shape
  d8_conv2d_fwd_i8: { parameters: [buf, buf, buf, buf, buf, buf, "i32", shape], result: status },
  // dx, dy, w, dy_scale, w_scale, shape
  d8_conv2d_dgrad_i8: { parameters: [buf, buf, buf, buf, buf, shape], result: status },
  // dw, x, dy, x_scale, dy_scale, dy_layout, shape
  d8_conv2d_wgrad_i8: { parameters: [buf, buf, buf, buf, buf, "i32", shape], result: status },
  d8_gemm_i8: { parameters: [buf, buf, buf, "i64", "i32", "i32"], result: status },
  d8_set_int8_kernel: { parameters: [ctx, "i32"], result: status },
  d8_int8_kernel_name: { parameters: [ctx, "buffer", "i32"], result: status },

  // ---- model-zoo ops (kernels/cpu/zoo_ops.cpp) ----
  d8_mul_f32: { parameters: [buf, buf, buf, "i64"], result: status },
  d8_relu6_fwd: { parameters: [buf, buf, "i64"], result: status },
  d8_relu6_bwd: { parameters: [buf, buf, buf, "i64"], result: status },
  // y / dx, x / dy, n, h, w, c, p, q
  d8_adaptive_avgpool_fwd: {
    parameters: [buf, buf, "i32", "i32", "i32", "i32", "i32", "i32"],
    result: status,
  },
  d8_adaptive_avgpool_bwd: {
    parameters: [buf, buf, "i32", "i32", "i32", "i32", "i32", "i32"],
    result: status,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbol table type. */
export type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
