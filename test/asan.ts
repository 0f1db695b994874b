/**
 * `deno task test:asan`: the test suite with the cpu library built under AddressSanitizer and
 * UndefinedBehaviorSanitizer (`-fsanitize=address,undefined`, into build-asan/), their runtimes
 * preloaded into Deno (and into every child process the tests start), so an out-of-bounds access,
 * a use after free or undefined behaviour (signed overflow, a misaligned or null access, a bad
 * shift) in a kernel stops the run with its report. It found a read one row past a per-thread
 * buffer in the INT8 row-split wgrad (its value unused; a fault had the buffer ended a page
 * there). Deno's own allocations are not leak-checked (detect_leaks=0). CI runs it after `deno
 * task test` (.ci/run).
 *
 * For CI's time limit: the library is built at -O1, the optimization level the sanitizers'
 * documentation suggests (on a 2-core Zen 5: 93 s to build at -O3, 23 s at -O1), and the run
 * leaves out the test files in {@link ASAN_SKIPS}, whose time goes to code the sanitizers do not
 * instrument.
 *
 * @module
 */
import { TEST_PERMISSIONS } from "./helpers/child_tests.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);

/** Test files this run leaves out, each with the reason: `deno task test` runs them all. */
export const ASAN_SKIPS: Readonly<Record<string, string>> = {
  "test/webgpu_test.ts": "WGSL on Mesa's lavapipe; its cpu-backend sides run in other files",
  "test/url_import_test.ts": "builds and loads its own (uninstrumented) copy of the library",
  "test/cuda_emu_test.ts": "the cuda emulation's own g++ build, not the cpu library",
  "test/interop_test.ts":
    "numerical agreement with PyTorch; models_test.ts drives the same models' ops natively",
};

function exists(f: string): boolean {
  try {
    return Deno.statSync(`${root}${f}`).isFile;
  } catch {
    return false;
  }
}

/** The test files of `test/` this run covers (test/gpu needs a device): all but {@link ASAN_SKIPS}. */
export function asanTestFiles(): string[] {
  const files = [...Deno.readDirSync(`${root}test`)]
    .filter((e) => e.isFile && e.name.endsWith("_test.ts"))
    .map((e) => `test/${e.name}`)
    .filter((f) => !(f in ASAN_SKIPS))
    .sort();
  const missing = Object.keys(ASAN_SKIPS).filter((f) => !exists(f));
  if (missing.length) throw new Error(`ASAN_SKIPS names files that do not exist: ${missing}`);
  return files;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  return new Deno.Command(cmd, { args, cwd: root, env, stdout: "piped", stderr: "piped" })
    .outputSync();
}

/** A sanitizer runtime of the compiler ("libasan.so", "libubsan.so"), or undefined. */
export function sanitizerRuntime(name: string, cxx = "g++"): string | undefined {
  try {
    const r = run(cxx, [`-print-file-name=${name}`]);
    const path = new TextDecoder().decode(r.stdout).trim();
    return path.startsWith("/") && Deno.statSync(path).isFile ? path : undefined;
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const cxx = Deno.env.get("CXX") ?? "g++";
  const runtimes = ["libasan.so", "libubsan.so"].map((n) => sanitizerRuntime(n, cxx));
  if (runtimes.some((r) => r === undefined)) {
    console.error("test:asan: the compiler lacks libasan.so or libubsan.so: nothing to run");
    Deno.exit(1);
  }
  const buildDir = `${root}build-asan`;
  const built = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-run", "ffi/build.ts"],
    cwd: root,
    env: {
      DAINT8_BUILD_DIR: buildDir,
      DAINT8_CXXFLAGS:
        "-fsanitize=address,undefined -fno-sanitize=vptr -fno-omit-frame-pointer -O1",
      DAINT8_NO_CUDA: "1",
    },
  }).outputSync();
  if (!built.success) {
    console.error(new TextDecoder().decode(built.stderr));
    Deno.exit(1);
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      ...TEST_PERMISSIONS,
      "--allow-net=127.0.0.1",
      "--parallel",
      "--doc",
      "mod.ts",
      "ffi/",
      "src/",
      ...asanTestFiles(),
    ],
    cwd: root,
    env: {
      LD_PRELOAD: runtimes.join(" "),
      ASAN_OPTIONS: "detect_leaks=0:halt_on_error=1",
      UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1",
      DAINT8_CPU_LIB: `${buildDir}/libdaint8_cpu.so`,
    },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const { code } = await child.status;
  if (code !== 0) console.error("test:asan: FAILED (a sanitizer's report, if any, is above)");
  Deno.exit(code);
}
