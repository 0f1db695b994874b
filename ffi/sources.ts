/**
 * The kernel source files of each backend, relative to the repository root. An HTTP server
 * cannot list a directory, so the loader fetches exactly these from beside the module URL when
 * it builds a library from source (test/library_test.ts checks the list against kernels/).
 *
 * @module
 */

/** Source files (headers and translation units) per backend, relative to the repository root. */
export const KERNEL_SOURCES: Readonly<Record<string, readonly string[]>> = {
  cpu: [
    "kernels/daint8.h",
    "kernels/arg_checks.inc",
    "kernels/cpu/batchnorm.cpp",
    "kernels/cpu/common.h",
    "kernels/cpu/conv.cpp",
    "kernels/cpu/conv_geom.h",
    "kernels/cpu/elementwise.cpp",
    "kernels/cpu/gemm.cpp",
    "kernels/cpu/gemm.h",
    "kernels/cpu/int8_conv.cpp",
    "kernels/cpu/int8_gemm.cpp",
    "kernels/cpu/int8_gemm.h",
    "kernels/cpu/linear.cpp",
    "kernels/cpu/loss.cpp",
    "kernels/cpu/pool.cpp",
    "kernels/cpu/quant.cpp",
    "kernels/cpu/runtime.cpp",
    "kernels/cpu/sgd.cpp",
    "kernels/cpu/team.cpp",
    "kernels/cpu/zoo_ops.cpp",
  ],
};
