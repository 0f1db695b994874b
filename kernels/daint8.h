/*
 * daint8.h: the one C ABI between TypeScript (Deno FFI) and every native backend.
 *
 * Conventions (every backend, every function):
 *   - Plain C, fixed-width types, no C++ types or exceptions across the boundary.
 *   - Every function except d8_abi_version / d8_last_error(_copy) returns an int32_t status:
 *       0 = ok, D8_ERR_* otherwise. d8_last_error() returns the message of the last
 *       failure on the calling thread (valid until the next failing call on that thread).
 *   - Native code validates every argument (null handles, shapes, buffer sizes) and returns
 *     an error instead of crashing the host process. Nothing here prints, exits or aborts.
 *   - Destination first: outputs come before inputs in every argument list.
 *   - Layouts: activations NHWC, weights OHWI ([K, R, S, C/groups]), matrices row-major.
 *   - All tensor data live in backend buffers (d8_buffer handles) owned by a context; every
 *     op is enqueued on the context's stream (the cpu backend runs it synchronously);
 *     d8_synchronize waits for all enqueued work.
 *   - Handles (d8_context*, d8_buffer*) are opaque 64-bit values to the caller (Deno passes them
 *     as u64, so no native pointer object is needed).
 *   - Buffer arguments are untyped; each op states the element type it reads/writes and
 *     checks that every buffer holds enough bytes for the shape given.
 */
#ifndef DAINT8_H
#define DAINT8_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature or struct below changes; ffi/ refuses a library whose
 * version differs from the one it was written against. */
#define D8_ABI_VERSION 5

#define D8_OK 0
#define D8_ERR_INVALID_ARGUMENT 1 /* null handle, bad shape, buffer too small */
#define D8_ERR_OUT_OF_MEMORY 2
#define D8_ERR_UNSUPPORTED 3 /* valid request this backend cannot do (yet) */
#define D8_ERR_DEVICE 4      /* a device / driver failure */
#define D8_ERR_INTERNAL 5

typedef struct d8_context d8_context; /* opaque: one device + stream + thread settings */
typedef struct d8_buffer d8_buffer;   /* opaque: a byte range on the context's device */

/* Convolution and pooling geometry. Passed by pointer as 16 consecutive int32 values.
 * Pools use the same struct with k == c and groups == c (one window per channel).
 *   x: [n, h, w, c]   w: [k, r, s, c / groups]   y: [n, p, q, k]
 *   p = (h + 2*pad_h - r) / stride_h + 1,  q = (w + 2*pad_w - s) / stride_w + 1 (floor)
 * Implicit-GEMM view of fprop: M = n*p*q, N = k, K = r*s*c/groups (per group). */
typedef struct d8_conv_shape {
  int32_t n, h, w, c;
  int32_t k, r, s, groups;
  int32_t stride_h, stride_w, pad_h, pad_w;
  int32_t p, q;
  int32_t flags;     /* D8_CONV_ACCUMULATE on d8_conv2d_dgrad(_i8); 0 for every other op */
  int32_t reserved1; /* must be 0 */
} d8_conv_shape;
/* d8_conv2d_dgrad and d8_conv2d_dgrad_i8 add the input gradient into dx (dx += ...) instead of
 * overwriting it: a tensor read by several layers (a residual block's input) takes its gradients
 * without a separate add pass. dx must then not alias dy or w. */
#define D8_CONV_ACCUMULATE 1

#ifdef __cplusplus
static_assert(sizeof(d8_conv_shape) == 16 * sizeof(int32_t), "d8_conv_shape crosses the FFI");
#endif

/* ---- library, context, buffers ----------------------------------------------------- */
int32_t d8_abi_version(void);
const char* d8_last_error(void);
/* Copies the calling thread's last error message into out (NUL-terminated, truncated to
 * capacity - 1 bytes) and returns its full length: the message without a pointer crossing the
 * boundary (Deno's path-scoped --allow-ffi refuses native pointers). */
int32_t d8_last_error_copy(char* out, int32_t capacity);
/* Which backend this library is: writes a NUL-terminated name ("cpu", "cuda") into out. */
int32_t d8_backend_name(char* out, int32_t capacity);
/* Describes the machine / device (CPU features, thread count, GPU name) into out. */
int32_t d8_device_info(d8_context* ctx, char* out, int32_t capacity);

/* device: GPU ordinal for cuda, ignored (0) for cpu. */
int32_t d8_context_create(d8_context** out, int32_t device);
int32_t d8_context_destroy(d8_context* ctx);
/* cpu: number of OpenMP threads of this context's ops (0 = library default: all cores). Every op
 * runs with the settings of the context its first buffer argument belongs to. */
int32_t d8_set_num_threads(d8_context* ctx, int32_t threads);
int32_t d8_synchronize(d8_context* ctx);

/* Allocates `bytes` (> 0) bytes, 64-byte aligned, contents undefined. */
int32_t d8_buffer_alloc(d8_buffer** out, d8_context* ctx, int64_t bytes);
int32_t d8_buffer_free(d8_buffer* buf);
int32_t d8_buffer_size(int64_t* out_bytes, const d8_buffer* buf);
/* Host <-> buffer copies; offset and bytes in bytes, range checked. */
int32_t d8_buffer_upload(d8_buffer* dst, int64_t dst_offset, const void* src, int64_t bytes);
int32_t d8_buffer_download(void* dst, const d8_buffer* src, int64_t src_offset, int64_t bytes);
/* Buffer to buffer copy. */
int32_t d8_buffer_copy(d8_buffer* dst, int64_t dst_offset, const d8_buffer* src,
                       int64_t src_offset, int64_t bytes);

/* ---- elementwise (float32) ---------------------------------------------------------- */
/* y[i] = value */
int32_t d8_fill_f32(d8_buffer* y, int64_t n, float value);
/* y[i] = a[i] + b[i]; y may alias a or b. */
int32_t d8_add_f32(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t n);
/* y[i] += alpha * x[i] */
int32_t d8_axpy_f32(d8_buffer* y, float alpha, const d8_buffer* x, int64_t n);
/* y[i] = x[i] * scale + shift, x uint8. */
int32_t d8_u8_to_f32(d8_buffer* y, const d8_buffer* x, int64_t n, float scale, float shift);
/* y = max(x, 0); dx = dy * (y > 0). y may alias x; dx may alias dy. */
int32_t d8_relu_fwd(d8_buffer* y, const d8_buffer* x, int64_t n);
int32_t d8_relu_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* y, int64_t n);
/* ReLU that keeps a bit mask for its backward instead of its f32 output: y = max(x, 0) and
 * mask uint8 [ceil(n / 8)], bit (i % 8) of byte i / 8 set when x[i] > 0 (LSB first); the mask
 * bits past n are 0. dx = mask ? dy : 0. y may alias x; dx may alias dy. */
int32_t d8_relu_fwd_mask(d8_buffer* y, d8_buffer* mask, const d8_buffer* x, int64_t n);
int32_t d8_relu_bwd_mask(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* mask, int64_t n);
/* Channel concat of two NHWC tensors: y[rows, ca+cb] = [a[rows, ca], b[rows, cb]]. */
int32_t d8_concat_channels(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t rows,
                           int32_t ca, int32_t cb);
/* Its backward: da[rows, ca], db[rows, cb] = split of dy[rows, ca+cb]. */
int32_t d8_split_channels(d8_buffer* da, d8_buffer* db, const d8_buffer* dy, int64_t rows,
                          int32_t ca, int32_t cb);

/* ---- convolution (float32) --------------------------------------------------------- */
/* y[n,p,q,k] = sum x[n, p*sh - ph + r, q*sw - pw + s, g*C/G + c] * w[k, r, s, c] (+ bias[k]).
 * bias may be NULL. */
int32_t d8_conv2d_fwd(d8_buffer* y, const d8_buffer* x, const d8_buffer* w, const d8_buffer* bias,
                      const d8_conv_shape* shape);
/* dx[n,h,w,c] = input gradient (overwritten; added into dx with D8_CONV_ACCUMULATE). */
int32_t d8_conv2d_dgrad(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                        const d8_conv_shape* shape);
/* dw[k,r,s,c/G] = weight gradient (overwritten). */
int32_t d8_conv2d_wgrad(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                        const d8_conv_shape* shape);
/* db[j] = sum_i dy[i, j] over rows i < m (bias gradient of conv and linear; overwritten). */
int32_t d8_bias_grad(d8_buffer* db, const d8_buffer* dy, int64_t m, int32_t n);

/* ---- linear (float32): y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]) -------------------- */
int32_t d8_linear_fwd(d8_buffer* y, const d8_buffer* x, const d8_buffer* w, const d8_buffer* bias,
                      int64_t m, int32_t n, int32_t k);
/* dx[m, k] = dy[m, n] . w[n, k] */
int32_t d8_linear_dgrad(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w, int64_t m,
                        int32_t n, int32_t k);
/* dw[n, k] = dy[m, n]^T . x[m, k] */
int32_t d8_linear_wgrad(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy, int64_t m,
                        int32_t n, int32_t k);

/* ---- batch norm (float32) over rows of [m, c] (m = N*H*W for NHWC) ------------------ */
/* Training: uses batch statistics (biased variance for normalization), writes the batch
 * mean and 1/sqrt(var + eps) to save_mean / save_invstd [c], and updates running stats:
 * running = (1 - momentum) * running + momentum * batch (unbiased variance for running_var). */
int32_t d8_batchnorm_fwd_train(d8_buffer* y, d8_buffer* save_mean, d8_buffer* save_invstd,
                               d8_buffer* running_mean, d8_buffer* running_var,
                               const d8_buffer* x, const d8_buffer* gamma, const d8_buffer* beta,
                               int64_t m, int32_t c, float momentum, float eps);
/* Inference: normalizes with the running statistics. */
int32_t d8_batchnorm_fwd_infer(d8_buffer* y, const d8_buffer* x, const d8_buffer* gamma,
                               const d8_buffer* beta, const d8_buffer* running_mean,
                               const d8_buffer* running_var, int64_t m, int32_t c, float eps);
/* Backward of the training forward: dx (overwritten), dgamma and dbeta (overwritten). */
int32_t d8_batchnorm_bwd(d8_buffer* dx, d8_buffer* dgamma, d8_buffer* dbeta, const d8_buffer* dy,
                         const d8_buffer* x, const d8_buffer* gamma, const d8_buffer* save_mean,
                         const d8_buffer* save_invstd, int64_t m, int32_t c);

/* Training forward fused with the ReLU after it: y = max(bn(x) + residual, 0) (residual may be
 * null: no add), statistics and running updates as d8_batchnorm_fwd_train, and mask
 * [ceil(m*c/8)] bytes as d8_relu_fwd_mask writes it (bit t of byte j: element 8j + t of y > 0).
 * cap > 0 (finite) makes the ReLU a clamp, y = min(max(v, 0), cap) with mask bit 0 < v < cap
 * (cap 6: MobileNetV2's ReLU6, the rule of d8_relu6_bwd); cap 0 is the plain ReLU.
 * One pass over x after the statistics instead of three ops (norm, add, relu). y may alias x (not
 * residual); mask aliases none of them. */
int32_t d8_batchnorm_relu_fwd_train(d8_buffer* y, d8_buffer* mask, d8_buffer* save_mean,
                                    d8_buffer* save_invstd, d8_buffer* running_mean,
                                    d8_buffer* running_var, const d8_buffer* x,
                                    const d8_buffer* residual, const d8_buffer* gamma,
                                    const d8_buffer* beta, int64_t m, int32_t c, float momentum,
                                    float eps, float cap);
/* Backward of d8_batchnorm_relu_fwd_train: g = dy where the mask bit is set, else 0;
 * dresidual = g when not null (the residual input's gradient); dx, dgamma, dbeta as
 * d8_batchnorm_bwd of g. dx may alias dy; dresidual aliases none of dx, x and mask. */
int32_t d8_batchnorm_relu_bwd(d8_buffer* dx, d8_buffer* dresidual, d8_buffer* dgamma,
                              d8_buffer* dbeta, const d8_buffer* dy, const d8_buffer* mask,
                              const d8_buffer* x, const d8_buffer* gamma,
                              const d8_buffer* save_mean, const d8_buffer* save_invstd, int64_t m,
                              int32_t c);

/* ---- pooling (float32, NHWC, shape.k == shape.c, shape.groups == shape.c) ----------- */
/* Max pool; argmax [n,p,q,c] int32 holds the flat input index (h*W + w) of each max, or -1
 * when the window lies entirely in padding (then y = -inf is never produced: y = 0). */
int32_t d8_maxpool_fwd(d8_buffer* y, d8_buffer* argmax, const d8_buffer* x,
                       const d8_conv_shape* shape);
int32_t d8_maxpool_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* argmax,
                       const d8_conv_shape* shape);
/* Average pool, padding counted in the divisor (r*s), as PyTorch's count_include_pad=True. */
int32_t d8_avgpool_fwd(d8_buffer* y, const d8_buffer* x, const d8_conv_shape* shape);
int32_t d8_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_conv_shape* shape);
/* Global average pool: y[n, c] = mean over hw of x[n, hw, c]. */
int32_t d8_global_avgpool_fwd(d8_buffer* y, const d8_buffer* x, int32_t n, int32_t hw, int32_t c);
int32_t d8_global_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, int32_t n, int32_t hw, int32_t c);

/* ---- loss ---------------------------------------------------------------------------- */
/* Softmax cross-entropy over logits [n, classes] with int32 labels [n] in [0, classes).
 * stats [2] float: stats[0] = mean loss over the batch, stats[1] = number of rows whose
 * argmax equals the label. probs [n, classes] float: the softmax, kept for backward.
 * accum (may be NULL) [4] float, accumulated on the device so a trainer reads it only at step
 * edges: accum[0] += sum of the rows' losses, accum[1] += correct rows, accum[2] += n,
 * accum[3] += 1 (batches). An out-of-range label is an error (nothing is written). */
int32_t d8_softmax_xent_fwd(d8_buffer* stats, d8_buffer* probs, d8_buffer* accum,
                            const d8_buffer* logits, const d8_buffer* labels, int32_t n,
                            int32_t classes);
/* dlogits = scale * seed[0] * (probs - onehot(labels)); seed (may be NULL: 1) is the gradient
 * of the loss held on the device, so backward needs no read-back; scale is usually 1/n. */
int32_t d8_softmax_xent_bwd(d8_buffer* dlogits, const d8_buffer* probs, const d8_buffer* labels,
                            const d8_buffer* seed, int32_t n, int32_t classes, float scale);

/* ---- optimizer ------------------------------------------------------------------------ */
/* SGD with momentum (PyTorch semantics, dampening 0), in place on w and momentum_buf [n]:
 *   g = grad + weight_decay * w
 *   buf = momentum * buf + g          (buf starts at zero)
 *   g = nesterov ? g + momentum * buf : buf     (momentum == 0: g unchanged)
 *   w = w - lr * g                                                                        */
/* nonfinite (may be NULL) [1] uint32: set to 1 (never cleared here) when an element of grad or
 * of the updated w is NaN or infinite, a divergence check the trainer reads at step edges. */
int32_t d8_sgd_step(d8_buffer* w, d8_buffer* momentum_buf, d8_buffer* nonfinite,
                    const d8_buffer* grad, int64_t n, float lr, float momentum,
                    float weight_decay, int32_t nesterov);

/* ---- INT8 quantization (PAPER.md) --------------------------------------------------- *
 * Symmetric 8-bit: q = clamp(round(127 * clamp(x, s) / s), -127, 127), never -128; the
 * dequantized value is q * s / 127 (scale = s / 127). A clip s <= 0 (an all-zero channel) gives
 * q = 0. Clips and scales live in f32 backend buffers, so statistics measured on the device can
 * feed the next quantization without a host round trip.
 *
 * Tensors are viewed as [outer, inner] (NHWC activations: inner = channels; OHWI weights:
 * outer = output channels). The clip array layout says which index picks the clip. */
#define D8_SCALE_TENSOR 0 /* clips[0] for every element */
#define D8_SCALE_INNER 1  /* clips[inner index]: per channel of an NHWC tensor */
#define D8_SCALE_OUTER 2  /* clips[outer index]: per output channel of an OHWI weight */
#define D8_ROUND_NEAREST 0    /* round half away from zero */
#define D8_ROUND_STOCHASTIC 1 /* floor(127 x / s + u), u in [0,1) from a counter-based hash of
                                 (seed, element index): deterministic for any thread count */
/* The stochastic-rounding hash, 32-bit arithmetic only (every backend, WGSL included, computes
 * the same bits). mix32 is Wellons' lowbias32: x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
 * x *= 0x846ca68b; x ^= x >> 16. For the element with flat index i (lo = low 32 bits, hi = high):
 *   k0 = mix32(seed ^ 0x9e3779b9),  k1 = mix32(k0 + hi * 0x85ebca6b + 0x632be5ab)
 *   h  = mix32(mix32(lo ^ k0) + k1),  u = (h >> 8) * 2^-24                               */

/* y int8 [outer, inner] from x f32. */
int32_t d8_quantize_i8(d8_buffer* y, const d8_buffer* x, int64_t outer, int32_t inner,
                       const d8_buffer* clips, int32_t layout, int32_t rounding, uint32_t seed);
/* One pass over dY [rows, channels] writing both int8 versions: y_tensor with clip_tensor[0]
 * (for dgrad) and y_channel with clips_channel[c] (for wgrad, GVQ). Same rounding for both. */
int32_t d8_quantize_i8_dual(d8_buffer* y_tensor, d8_buffer* y_channel, const d8_buffer* x,
                            int64_t rows, int32_t channels, const d8_buffer* clip_tensor,
                            const d8_buffer* clips_channel, int32_t rounding, uint32_t seed);
/* y f32 = q * (clip / 127) with the same layouts (the scale the GEMM epilogues use; tests,
 * error measurement, analysis). */
int32_t d8_dequantize_i8(d8_buffer* y, const d8_buffer* q, int64_t outer, int32_t inner,
                         const d8_buffer* clips, int32_t layout);
/* out[0] = max |x| over n elements (f32). */
int32_t d8_absmax_f32(d8_buffer* out, const d8_buffer* x, int64_t n);
/* Max-clip quantization that writes its own scale, one call for X or W: with layout
 * D8_SCALE_TENSOR, s = max |x| over the whole tensor and scale[0] = s / 127; with
 * D8_SCALE_OUTER, s_o = max |x[o, :]| per row and scale[o] = s_o / 127. y int8 [outer, inner]
 * is d8_quantize_i8 of x with those clips and nearest rounding. */
int32_t d8_quantize_i8_maxscale(d8_buffer* y, d8_buffer* scale, const d8_buffer* x,
                                int64_t outer, int32_t inner, int32_t layout);
/* Per-channel statistics of x f32 [rows, channels]; out f32 [4, channels]:
 * out[0, c] = max |x|, out[1, c] = standard deviation (population, about the mean),
 * out[2, c] = fraction of rows with |x| > that standard deviation, out[3, c] = mean. */
int32_t d8_channel_stats_f32(d8_buffer* out, const d8_buffer* x, int64_t rows, int32_t channels);

/* ---- the quantizer decision (PAPER.md's MCS, GVQ, UI8's DSGC), on the device ----------- *
 * One call per layer and step on dY [rows, channels] f32: measures dY's per-channel statistics
 * into stats [4, channels] (d8_channel_stats_f32's), reads them and the layer's state, updates
 * the state and writes every clip and scale the dY quantizers and the GEMM epilogues read, with
 * no host round trip. All float arithmetic is f32 without contraction
 * (bit-identical across backends), except the DSGC cosine sums (f64 on cpu and cuda).
 *
 * state: uint32/f32 words, (D8_QSTATE_HEADER + 2 * channels) * 4 bytes, zero = fresh:
 *   [0,1] step (uint64 as lo, hi: backward passes seen)   [2,3] bell channels counted (uint64)
 *   [4,5] channels classified (uint64)   [6] f32 dsgc ratio (0 = not searched yet: 1 is used)
 *   [7] f32 dsgc cosine distance   [8] 1 once the EMA holds values   [9..15] 0
 *   [16, 16 + c) f32 EMA of each channel's max   [16 + c, 16 + 2c) uint32 class: 1 bell, 0 inv-T
 * Per step: gmax = max_c max[c]; refresh = step % stats_period == 0.
 *   EMA: first step ema = max; later ema = (1 - k*A) * ema + A * max, every channel every step.
 *   refresh: bell[c] = share[c] > lambda (bell = 1 before the first classification); counters.
 *   refresh and clip == DSGC: ratio = the candidate r_i = min + (1 - min) * i / (n - 1) (n = 1:
 *     r = 1) minimizing the cosine distance 1 - cos(dy, q(dy)) of nearest rounding at clip
 *     r * gmax (first best on ties).
 *   tensor clip: DSGC ? ratio * gmax : gmax.
 *   channel clips (gvq): MAX m; DSGC ratio * m; MCS bell ? m : min(ema, m);
 *     MCS_SOLVE (sigma = std[c], m = max[c]; m when sigma or m is 0): r = min(m / sigma,
 *     table_max); the optimum s/sigma linearly interpolated in the channel's family row at
 *     position r / table_step (row[i] = the optimum at max/sigma = i * table_step), times sigma,
 *     capped at m. Family rows of the table [3, table_size] f32: 0 Gaussian (bell channels),
 *     1 Laplace, 2 inverted-T (inverted-T channels with r > sqrt(3) * 1.001 when
 *     knobs.sharp_inverted_t, else Laplace).
 *   step += 1.
 * Outputs f32: clip_tensor [1], scale_tensor [1] (= clip / 127), and when gvq clips_channel [c],
 * scales_channel [c] (else they may be NULL). record [8] f32 for logs (read lagged): tensor clip,
 * channel clip mean, min, max (the tensor clip without gvq), gmax, share of bell channels now,
 * dsgc cosine distance, and [7] left for d8_quant_error. */
#define D8_QSTATE_HEADER 16
#define D8_CLIP_MAX 0
#define D8_CLIP_MCS 1
#define D8_CLIP_MCS_SOLVE 2
#define D8_CLIP_DSGC 3
typedef struct d8_quant_knobs {
  int32_t channels, clip, gvq, stats_period;
  int32_t dsgc_candidates, sharp_inverted_t, table_size, reserved0; /* reserved0 must be 0 */
  float lambda, k, a, dsgc_min_ratio;
  float table_max, table_step, reserved1, reserved2; /* reserved1, 2 must be 0 */
} d8_quant_knobs;
#ifdef __cplusplus
static_assert(sizeof(d8_quant_knobs) == 16 * 4, "d8_quant_knobs crosses the FFI");
#endif
int32_t d8_quant_decide(d8_buffer* state, d8_buffer* clip_tensor, d8_buffer* scale_tensor,
                        d8_buffer* clips_channel, d8_buffer* scales_channel, d8_buffer* record,
                        d8_buffer* stats, const d8_buffer* dy, const d8_buffer* table,
                        int64_t rows, const d8_quant_knobs* knobs);
/* record[7] = relative L2 error ||x - deq(q)|| / ||x|| (0 when x is 0) of q int8 [rows,
 * channels] against x f32 with clips by layout (D8_SCALE_TENSOR or D8_SCALE_INNER), f64 sums. */
int32_t d8_quant_error(d8_buffer* record, const d8_buffer* x, const d8_buffer* q,
                       const d8_buffer* clips, int64_t rows, int32_t channels, int32_t layout);

/* ---- INT8 GEMMs: int8 x int8 -> int32 accumulation, rescaled to f32 in the epilogue ---- *
 * Scales (clip / 127) are f32 buffers. Outputs f32, overwritten. Int8 operands must lie in
 * [-127, 127] (what d8_quantize_i8 writes); -128 is outside the contract (the AVX2 kernel's sign
 * trick cannot negate -128). */
/* y[n,p,q,k] = sum(xq * wq) * x_scale[0] * w_scale[k or 0] (+ bias[k]); w_layout is
 * D8_SCALE_TENSOR or D8_SCALE_OUTER. bias may be NULL. x int8 NHWC, w int8 OHWI. */
int32_t d8_conv2d_fwd_i8(d8_buffer* y, const d8_buffer* x, const d8_buffer* w,
                         const d8_buffer* bias, const d8_buffer* x_scale,
                         const d8_buffer* w_scale, int32_t w_layout, const d8_conv_shape* shape);
/* dx[n,h,w,c] = sum_k(dyq * wq) * dy_scale[0] * w_scale[0] (or dx += that with
 * D8_CONV_ACCUMULATE in shape->flags). Both scales per tensor: the output
 * channel is the reduction dimension here, so a per-channel weight scale must be folded into dY
 * by the caller before quantizing it. */
int32_t d8_conv2d_dgrad_i8(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* w,
                           const d8_buffer* dy_scale, const d8_buffer* w_scale,
                           const d8_conv_shape* shape);
/* dw[k,r,s,c/G] = sum_m(dyq[m,k] * xq_col[m,rsc]) * dy_scale[k or 0] * x_scale[0]; dy_layout
 * D8_SCALE_TENSOR or D8_SCALE_INNER (per output channel: GVQ). The reduction over
 * M = n*p*q is split into chunks short enough that no int32 partial sum can overflow
 * (|q| <= 127: at most 133,000 products), and the partials are summed in double. */
int32_t d8_conv2d_wgrad_i8(d8_buffer* dw, const d8_buffer* x, const d8_buffer* dy,
                           const d8_buffer* x_scale, const d8_buffer* dy_scale, int32_t dy_layout,
                           const d8_conv_shape* shape);
/* c int32 [m, n] = a int8 [m, k] . b int8 [n, k]^T (tests and benchmarks). Exact for
 * k <= 133,144 (127 * 127 * k < 2^31); longer reductions wrap in int32. */
int32_t d8_gemm_i8(d8_buffer* c, const d8_buffer* a, const d8_buffer* b, int64_t m, int32_t n,
                   int32_t k);
/* The int8 inner-loop variant of this context's ops: 0 = auto (best the CPU has, chosen at run
 * time), 1 = portable, 2 = AVX2, 3 = AVX-512 VNNI, 4 = AVX-VNNI (256-bit VEX vpdpbusd, no
 * AVX-512), 5 = AMX (tdpbusd tiles; needs Linux's tile permission, requested on first use).
 * Choosing one the CPU lacks is D8_ERR_UNSUPPORTED (avx-vnni and amx also run, emulated with
 * AVX2, when the environment has D8_CPU_INT8_EMULATE_AVXVNNI=1 / D8_CPU_INT8_EMULATE_AMX=1:
 * tests). */
int32_t d8_set_int8_kernel(d8_context* ctx, int32_t variant);
/* Writes the context's variant in use ("portable", "avx2", "avx512-vnni", "avx-vnni", "amx") into
 * out. */
int32_t d8_int8_kernel_name(d8_context* ctx, char* out, int32_t capacity);

/* ---- Model-zoo ops (kernels/cpu/zoo_ops.cpp) ---- */
/* y = a * b elementwise (y may alias a or b): dropout masks forward and backward. */
int32_t d8_mul_f32(d8_buffer* y, const d8_buffer* a, const d8_buffer* b, int64_t n);
/* y = min(max(x, 0), 6) (NaN -> 0); dx = dy where 0 < y < 6, else 0. */
int32_t d8_relu6_fwd(d8_buffer* y, const d8_buffer* x, int64_t n);
int32_t d8_relu6_bwd(d8_buffer* dx, const d8_buffer* dy, const d8_buffer* y, int64_t n);
/* Adaptive average pooling x [n, h, w, c] -> y [n, p, q, c], torchvision's windows: rows
 * floor(i*h/p) .. ceil((i+1)*h/p), columns likewise. */
int32_t d8_adaptive_avgpool_fwd(d8_buffer* y, const d8_buffer* x, int32_t n, int32_t h, int32_t w,
                                int32_t c, int32_t p, int32_t q);
int32_t d8_adaptive_avgpool_bwd(d8_buffer* dx, const d8_buffer* dy, int32_t n, int32_t h,
                                int32_t w, int32_t c, int32_t p, int32_t q);

#ifdef __cplusplus
}
#endif

#endif /* DAINT8_H */
