/**
 * Every layer op on the cpu backend: forward against a double-precision naive reference,
 * backward against finite differences of it (test/helpers/check_op.ts).
 */
import { cpu } from "./helpers/check_op.ts";
import { defineOpTests } from "./helpers/op_cases.ts";
import { runChildTests } from "./helpers/child_tests.ts";

defineOpTests("", cpu);

// The cpu convolutions have two GEMM forms each (kernels/cpu/conv.cpp and int8_conv.cpp: im2col /
// scatter and implicit / by-phase), chosen per shape and per CPU; D8_CPU_CONV_PATH (read once per
// process) forces one. Run the fp32 and INT8 conv cases in a child process with each form forced,
// so both stay tested whichever this CPU picks.
const forced = Deno.env.get("D8_CPU_CONV_PATH");
for (const path of ["im2col", "implicit"]) {
  Deno.test({
    name: `conv cases pass with D8_CPU_CONV_PATH=${path} (child process)`,
    ignore: forced !== undefined, // the child itself
    fn: () => {
      const here = new URL(".", import.meta.url).pathname;
      return runChildTests({ D8_CPU_CONV_PATH: path }, "conv", [
        `${here}ops_test.ts`,
        `${here}quant_test.ts`,
      ], 40);
    },
  });
}
