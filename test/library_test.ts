/**
 * The native library loader and build: exit after multi-threaded ops, damaged library files
 * (truncated, corrupted), the build's staleness check, the source list of URL builds, and the
 * permission messages. Subprocesses, since a failure here would crash the process.
 */
import assert from "node:assert/strict";
import { KERNEL_SOURCES } from "../ffi/sources.ts";
import { VERSION } from "../ffi/release.ts";
import { elfProblem, libraryProblem, stampPath } from "../ffi/integrity.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const lib = `${root}build/libdaint8_cpu.so`;
const mod = new URL("../mod.ts", import.meta.url).href;
const dec = new TextDecoder();

async function deno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; signal: string | null; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, signal: r.signal, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test("a script exits cleanly right after multi-threaded ops (30 runs, also with setThreads(1e6))", async () => {
  const plain = `import * as d8 from "${mod}"; d8.Tensor.full(d8.getBackend("cpu"), [65536], 1);`;
  const many = `import * as d8 from "${mod}"; const b = d8.getBackend("cpu"); b.setThreads(1e6);
const t = d8.Tensor.full(b, [1 << 22], 1); console.log(b.info());`;
  const failures: string[] = [];
  for (let i = 0; i < 15; i++) {
    const rs = await Promise.all([deno(["eval", plain]), deno(["eval", many])]);
    for (const [k, r] of rs.entries()) {
      if (r.code !== 0) {
        failures.push(
          `run ${i} (${k ? "setThreads" : "plain"}): exit ${r.code} ${r.signal ?? ""} ${r.out}`,
        );
      }
    }
    if (i === 0) {
      // The cap: 1e6 requested threads become at most max(256, 4 x processors).
      const m = /(\d+) threads/.exec(rs[1]!.out);
      assert.ok(m, rs[1]!.out);
      assert.ok(Number(m[1]) <= Math.max(256, 4 * navigator.hardwareConcurrency), rs[1]!.out);
    }
  }
  assert.deepEqual(failures, []);
});

/** A temporary copy of the built library (and its stamp), changed by `damage`. */
async function damagedCopy(
  damage: (bytes: Uint8Array) => Uint8Array,
  withStamp: boolean,
): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "daint8-lib-" });
  const path = `${dir}/libdaint8_cpu.so`;
  await Deno.writeFile(path, damage(await Deno.readFile(lib)));
  if (withStamp) await Deno.copyFile(stampPath(lib), stampPath(path));
  return { dir, path };
}

async function loadWith(
  path: string,
): Promise<{ code: number; signal: string | null; out: string }> {
  const code = `import { loadLibrary } from "${new URL("../ffi/library.ts", import.meta.url)}";
try { loadLibrary("cpu"); console.log("loaded"); } catch (e) { console.log(e.name + ": " + e.message); }`;
  return await deno(["eval", code], { DAINT8_CPU_LIB: path });
}

Deno.test("a truncated library is refused with a message, not a SIGBUS", async () => {
  for (const withStamp of [true, false]) {
    const { dir, path } = await damagedCopy((b) => b.slice(0, 10 * 1024), withStamp);
    try {
      const r = await loadWith(path);
      assert.equal(r.signal, null, r.out);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /Daint8Error: The cpu library ".*libdaint8_cpu.so" is damaged/);
      assert.match(r.out, /truncated: 10240 bytes/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("a corrupted library (same size, other bytes) is refused against its stamp", async () => {
  const { dir, path } = await damagedCopy((b) => {
    const c = b.slice();
    c[c.length >> 1]! ^= 0xff;
    return c;
  }, true);
  try {
    const r = await loadWith(path);
    assert.equal(r.code, 0, r.out);
    assert.match(
      r.out,
      /is damaged and was not loaded: its SHA-256 is [0-9a-f]{64}, but .* records/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the ELF check: sound build output, and refusals of non-ELF, wrong class, cut files", async () => {
  const bytes = await Deno.readFile(lib);
  assert.equal(elfProblem(bytes), undefined);
  assert.equal(libraryProblem(lib), undefined);
  assert.match(elfProblem(new TextEncoder().encode("not a library".repeat(10)))!, /not an ELF/);
  const c32 = bytes.slice();
  c32[4] = 1;
  assert.match(elfProblem(c32)!, /64-bit/);
  assert.match(elfProblem(bytes.slice(0, 32))!, /too short/);
  // Cut anywhere past the header: some table or segment now lies beyond the end.
  for (const frac of [0.05, 0.5, 0.9]) {
    assert.match(elfProblem(bytes.slice(0, Math.floor(bytes.length * frac)))!, /truncated/);
  }
  assert.equal(libraryProblem("/nonexistent/libdaint8_cpu.so"), "it does not exist");
});

Deno.test("deno task build notices a truncated or corrupted library and would rebuild it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "daint8-build-" });
  try {
    await Deno.copyFile(lib, `${dir}/libdaint8_cpu.so`);
    await Deno.copyFile(stampPath(lib), stampPath(`${dir}/libdaint8_cpu.so`));
    const build = ["run", "--allow-all", `${root}ffi/build.ts`, "--dry-run"];
    const ok = await deno(build, { DAINT8_BUILD_DIR: dir });
    assert.match(ok.out, /is up to date/);
    const f = await Deno.open(`${dir}/libdaint8_cpu.so`, { write: true });
    await f.truncate(10 * 1024);
    f.close();
    const cut = await deno(build, { DAINT8_BUILD_DIR: dir });
    assert.match(cut.out, /would rebuild .*libdaint8_cpu.so: it is truncated: 10240 bytes/);
    // Same size, one byte changed: only the stamp's SHA-256 tells.
    const bytes = await Deno.readFile(lib);
    bytes[bytes.length >> 1]! ^= 0xff;
    await Deno.writeFile(`${dir}/libdaint8_cpu.so`, bytes);
    const flipped = await deno(build, { DAINT8_BUILD_DIR: dir });
    assert.match(flipped.out, /would rebuild .*: its SHA-256 is [0-9a-f]{64}, but .* records/);
    await Deno.remove(stampPath(`${dir}/libdaint8_cpu.so`));
    const noStamp = await deno(build, { DAINT8_BUILD_DIR: dir });
    assert.match(noStamp.out, /would rebuild .*: its stamp .* is missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the build stamps its output: size, SHA-256, flags with -z nodelete", async () => {
  const stamp = JSON.parse(await Deno.readTextFile(stampPath(lib)));
  assert.equal(stamp.size, (await Deno.stat(lib)).size);
  assert.equal(stamp.origin, "build");
  assert.ok(stamp.detail.flags.includes("-Wl,-z,nodelete"), JSON.stringify(stamp.detail));
});

Deno.test("KERNEL_SOURCES lists exactly the kernel sources (URL builds fetch these)", async () => {
  const files = (dir: string): string[] => {
    const out: string[] = [];
    for (const e of Deno.readDirSync(`${root}${dir}`)) {
      if (e.isDirectory) out.push(...files(`${dir}/${e.name}`));
      else if (/\.(h|cpp)$/.test(e.name)) out.push(`${dir}/${e.name}`);
    }
    return out;
  };
  const cpu = ["kernels/daint8.h", "kernels/arg_checks.inc", ...files("kernels/cpu")].sort();
  assert.deepEqual([...KERNEL_SOURCES.cpu!].sort(), cpu);
  const pkg = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  assert.equal(VERSION, pkg.version, "ffi/release.ts VERSION must equal deno.json version");
  assert.equal(typeof pkg.license, "string");
});

Deno.test("missing permissions name the flag to add", async () => {
  const code = `import * as d8 from "${mod}";
try {
  const b = d8.getBackend("cpu");
  const t = d8.Tensor.full(b, [3], 2);
  console.log("opened", (await t.read())[2]);
  d8.Tensor.full(b, [0], 1);
} catch (e) { console.log(e.name + ": " + e.message); }`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, code);
    // Path-scoped --allow-ffi is enough: handles cross as u64 values, never native pointers.
    // (The folder of the library the tests load: build/, or DAINT8_CPU_LIB's under test:asan.)
    const lib = Deno.env.get("DAINT8_CPU_LIB");
    const scope = lib ? lib.slice(0, lib.lastIndexOf("/")) : `${root}build`;
    const scoped = await deno([
      "run",
      "--allow-read",
      "--allow-env",
      `--allow-ffi=${scope}`,
      file,
    ]);
    assert.match(scoped.out, /^opened 2\n/);
    // ... but not for a library elsewhere: the message names the flag to add.
    const other = await Deno.makeTempDir(); // holds no library, and not the checkout
    const elsewhere = await deno([
      "run",
      "--allow-read",
      "--allow-env",
      `--allow-ffi=${other}`,
      file,
    ]);
    await Deno.remove(other);
    assert.match(
      elsewhere.out,
      new RegExp(
        `Daint8Error: daint8 needs permission to load the native library .* add --allow-ffi=${root}build`,
      ),
    );
    // No --allow-read for the library: the message names --allow-read; env reads just fall back.
    const noRead = await deno(["run", `--allow-read=${file}`, "--allow-ffi", file]);
    assert.match(noRead.out, /Daint8Error: daint8 needs permission to read .* add --allow-read=/);
    // Everything needed: it opens.
    const ok = await deno(["run", "--allow-read", "--allow-ffi", file]);
    assert.match(ok.out, /^opened 2\n/);
  } finally {
    await Deno.remove(file);
  }
});
