/**
 * Triage for the one short GPU session (bench/gpu/gpu_check.ts): when `test:gpu` fails, a CUDA
 * fault in one kernel (an illegal address is sticky: every later CUDA call of the process fails)
 * can fail every test after it. So each failed test is run again alone, in its own process, which
 * tells the tests that fail by themselves from the ones that only followed a fault; the first of
 * those then runs under compute-sanitizer (memcheck), which names the kernel and, with the
 * library's `-lineinfo`, the source line. The GPU benchmarks likewise keep what they measured when
 * a kernel version fails (see conv_int8_bench.ts), so a broken version costs its own numbers only.
 *
 * @module
 */

/** The names in the FAILURES section of `deno test` output (run with NO_COLOR=1), in order. */
export function failedTests(output: string): string[] {
  const at = output.lastIndexOf("\n FAILURES \n");
  if (at < 0) return [];
  const names: string[] = [];
  // "\n FAILURES \n\n" then one "name => file:line:col" a line, up to a blank line
  for (const line of output.slice(at + "\n FAILURES \n\n".length).split("\n")) {
    if (line.trim() === "") break;
    const m = line.match(/^(.*) => \S+:\d+:\d+$/);
    if (m) names.push(m[1]!);
  }
  return names;
}

/** A `deno test --filter` value that selects exactly the test called `name`. */
export function exactFilter(name: string): string {
  return `/^${name.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}$/`;
}

/** The summary line of `deno test` output ("ok | 3 passed | ..." or "FAILED | ..."), if any. */
export function testSummary(output: string): string | undefined {
  return output.match(/^(ok|FAILED) \| \d+ passed.*$/m)?.[0];
}

/** One failed test run again alone. */
export interface Isolated {
  name: string;
  /** failed alone too ("fails"), passed alone ("passes alone": it failed after another fault) */
  verdict: "fails" | "passes alone" | "timed out";
  seconds: number;
}

/** The markdown lines of a triage: per test its verdict, then the sanitizer's first errors. */
export function triageReport(isolated: Isolated[], sanitizer?: { test: string; out: string }) {
  const lines = ["# test:gpu triage", ""];
  for (const t of isolated) lines.push(`- ${t.verdict}: ${t.name} (${t.seconds} s alone)`);
  if (sanitizer) {
    lines.push("", `## compute-sanitizer memcheck: ${sanitizer.test}`, "");
    const errs = sanitizer.out.split("\n").filter((l) => l.startsWith("========="));
    lines.push("```", ...(errs.length > 0 ? errs.slice(0, 60) : ["(no sanitizer output)"]), "```");
  }
  return lines.join("\n") + "\n";
}
