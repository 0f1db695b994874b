/**
 * Every layer op on the cpu backend: forward against a double-precision naive reference,
 * backward against finite differences of it (test/helpers/check_op.ts).
 */
import { cpu } from "./helpers/check_op.ts";
import { defineOpTests } from "./helpers/op_cases.ts";

defineOpTests("", cpu);
