/**
 * Import by URL, end to end: this test serves the repository and a release directory over HTTP
 * on 127.0.0.1 and runs a user's script that imports `mod.ts` by that URL from a separate
 * temporary project with its own empty caches (DENO_DIR and the daint8 cache), under the
 * narrow permissions the README documents, and trains a few LeNet-5 steps on synthetic images.
 *
 * One source build compiles the cpu library (portable flags, like the release); its output is
 * then served as the prebuilt file of the other scenarios: download + second run from the cache,
 * a tampered file, a truncated download, no compiler, offline, a missing permission, and two
 * first runs at once.
 */
import assert from "node:assert/strict";
import { prebuiltName } from "../ffi/release.ts";
import { manifestFor } from "../ffi/dist.ts";
import { sha256Hex } from "../ffi/integrity.ts";

const repo = decodeURIComponent(new URL("../", import.meta.url).pathname);

/** What one scenario's server offers. */
interface Scenario {
  manifest?: string; // dist/manifest.json beside the module; 404 when undefined
  release: Map<string, Uint8Array<ArrayBuffer>>; // files of the release directory
  delayMs?: number; // delay before answering a release file
  truncate?: boolean; // answer release files with their first half only
  requests: string[]; // paths asked for, in order
}

const scenarios = new Map<string, Scenario>();

function scenario(name: string, init: Partial<Scenario> = {}): Scenario {
  const s: Scenario = { release: new Map(), requests: [], ...init };
  scenarios.set(name, s);
  return s;
}

const TYPES: Record<string, string> = {
  ts: "application/typescript",
  json: "application/json",
  md: "text/markdown",
};

async function handle(req: Request): Promise<Response> {
  const path = decodeURIComponent(new URL(req.url).pathname);
  const m = /^\/s\/([^/]+)\/(mod|release)\/(.+)$/.exec(path);
  const s = m ? scenarios.get(m[1]!) : undefined;
  if (!m || !s || m[3]!.split("/").includes("..")) return new Response("no", { status: 404 });
  s.requests.push(`${m[2]}/${m[3]}`);
  const rel = m[3]!;
  if (m[2] === "release") {
    const bytes = s.release.get(rel);
    if (bytes === undefined) return new Response("not found", { status: 404 });
    if (s.delayMs) await new Promise((r) => setTimeout(r, s.delayMs));
    const body = s.truncate ? bytes.slice(0, bytes.length >> 1) : bytes;
    return new Response(body, { headers: { "content-type": "application/octet-stream" } });
  }
  if (rel === "dist/manifest.json") {
    return s.manifest === undefined
      ? new Response("not found", { status: 404 })
      : new Response(s.manifest, { headers: { "content-type": "application/json" } });
  }
  try {
    const bytes = await Deno.readFile(`${repo}${rel}`);
    const ext = rel.slice(rel.lastIndexOf(".") + 1);
    return new Response(bytes, {
      headers: { "content-type": TYPES[ext] ?? "application/octet-stream" },
    });
  } catch {
    return new Response("not found", { status: 404 });
  }
}

/** The README's import-by-URL example, importing `url` instead of its placeholder. */
function userScript(url: string): string {
  const readme = Deno.readTextFileSync(`${repo}README.md`);
  const at = readme.indexOf("<!-- url-example -->");
  const m = /```ts ignore\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(at >= 0 && m, "README.md lacks the url-example block");
  const placeholder = '"https://example.com/daint8/mod.ts"';
  assert.ok(m[1]!.includes(placeholder), "the README example imports another URL");
  return m[1]!.replace(placeholder, JSON.stringify(url));
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  out?: { losses: number[]; library: string };
}

/** Runs the user's script of scenario `name` with its own DENO_DIR and daint8 cache. */
async function runUser(
  base: string,
  tmp: string,
  name: string,
  dirs: { denoDir: string; cache: string },
  opts: { env?: Record<string, string>; noNet?: boolean; script?: string } = {},
): Promise<RunResult> {
  const proj = `${tmp}/proj-${name}`;
  await Deno.mkdir(proj, { recursive: true });
  const url = `${base}/s/${name}/mod/mod.ts`;
  await Deno.writeTextFile(
    `${proj}/main.ts`,
    opts.script?.replace("MOD_URL", JSON.stringify(url)) ?? userScript(url),
  );
  const host = new URL(base).host;
  // The README's narrowest flags.
  const flags = [
    `--allow-import=${host}`,
    ...(opts.noNet ? [] : [`--allow-net=${host}`]),
    `--allow-read=${dirs.cache}`,
    `--allow-write=${dirs.cache}`,
    `--allow-ffi=${dirs.cache}`, // scoped to the cache: handles cross as u64, no pointers
    "--allow-env=DAINT8_CACHE,XDG_CACHE_HOME,HOME,DAINT8_OFFLINE,DAINT8_RELEASE_URL,DAINT8_CPU_LIB,CXX,DAINT8_CXXFLAGS",
    "--allow-run=g++",
  ];
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, "main.ts"],
    cwd: proj,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: `${tmp}/home`,
      DENO_DIR: dirs.denoDir,
      DAINT8_CACHE: dirs.cache,
      DAINT8_RELEASE_URL: `${base}/s/${name}/release/`,
      NO_COLOR: "1",
      ...opts.env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const stdout = dec.decode(r.stdout), stderr = dec.decode(r.stderr);
  let out: RunResult["out"];
  try {
    out = JSON.parse(stdout.trim().split("\n").at(-1) ?? "");
  } catch { /* failed run */ }
  return { code: r.code, stdout, stderr, out };
}

/** Every file under `dir` (relative paths). */
function listTree(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      const rel = prefix + e.name;
      if (e.isDirectory) out.push(...listTree(`${dir}/${e.name}`, `${rel}/`));
      else out.push(rel);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

function assertTrained(r: RunResult, cache: string): void {
  assert.equal(r.code, 0, `the user's script failed:\n${r.stderr}`);
  assert.ok(r.out, `no result line:\n${r.stdout}\n${r.stderr}`);
  assert.ok(r.out.losses.every(Number.isFinite), `losses ${r.out.losses}`);
  assert.ok(
    r.out.losses.at(-1)! < r.out.losses[0]!,
    `training did not lower the loss: ${r.out.losses}`,
  );
  assert.ok(r.out.library.startsWith(`${cache}/`), `loaded ${r.out.library}, not from ${cache}`);
}

Deno.test({
  name:
    "import by URL: source build, checked download, cache reuse, refusals, concurrent first runs",
  sanitizeResources: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "daint8-url-" });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handle);
    const base = `http://127.0.0.1:${server.addr.port}`;
    const dirs = (n: string) => ({ denoDir: `${tmp}/deno-${n}`, cache: `${tmp}/cache-${n}` });
    try {
      // 1. No manifest: the library is built from the sources beside the module URL.
      const src = scenario("source");
      // -O1 (appended through DAINT8_CXXFLAGS) halves the compile; the -O3 build is what the
      // rest of the suite tests.
      const built = await runUser(base, tmp, "source", dirs("source"), {
        env: { DAINT8_CXXFLAGS: "-O1" },
      });
      assertTrained(built, dirs("source").cache);
      assert.match(built.stderr, /building it from the sources/);
      assert.ok(src.requests.includes("mod/kernels/cpu/conv.cpp"), "no kernel source fetched");
      assert.ok(!src.requests.some((p) => p.startsWith("release/")), "a release file was asked");
      const lib = await Deno.readFile(built.out!.library);
      const stamp = JSON.parse(
        await Deno.readTextFile(built.out!.library.replace(/\.so$/, ".stamp.json")),
      );
      assert.equal(stamp.origin, "source");
      assert.equal(stamp.sha256, sha256Hex(lib));
      assert.ok(stamp.detail.flags.includes("-Wl,-z,nodelete"));
      assert.ok(!stamp.detail.flags.includes("-march=native"), "the source build is portable");
      assert.equal(stamp.detail.flags.at(-1), "-O1", "DAINT8_CXXFLAGS is appended");

      // The release of the other scenarios: that library and its manifest.
      const file = prebuiltName("cpu");
      const manifest = JSON.stringify(manifestFor({ cpu: lib })); // what deno task dist writes
      const tampered = lib.slice();
      tampered[tampered.length >> 1]! ^= 0x55;
      const release = (bytes: Uint8Array<ArrayBuffer>) => new Map([[file, bytes]]);
      const dl = scenario("download", { manifest, release: release(lib) });
      const bad = scenario("tampered", { manifest, release: release(tampered) });
      const cut = scenario("truncated", { manifest, release: release(lib), truncate: true });
      scenario("nocxx");
      const off = scenario("offline", { manifest, release: release(lib) });
      scenario("noperm", { manifest, release: release(lib) });
      const race = scenario("race", { manifest, release: release(lib), delayMs: 300 });
      const raceDirs = dirs("race");
      const noCompiler = `${tmp}/empty-path`;
      await Deno.mkdir(noCompiler);
      const nosetup = scenario("nosetup", { manifest, release: release(lib) });
      const [first, tamper, trunc, nocxx, offline, noperm, raceA, raceB, sync] = await Promise.all([
        runUser(base, tmp, "download", dirs("download")),
        runUser(base, tmp, "tampered", dirs("tampered")),
        runUser(base, tmp, "truncated", dirs("truncated")),
        runUser(base, tmp, "nocxx", dirs("nocxx"), { env: { PATH: noCompiler } }),
        runUser(base, tmp, "offline", dirs("offline"), { env: { DAINT8_OFFLINE: "1" } }),
        runUser(base, tmp, "noperm", dirs("noperm"), { noNet: true }),
        runUser(base, tmp, "race", raceDirs),
        runUser(base, tmp, "race", raceDirs),
        runUser(base, tmp, "nosetup", dirs("nosetup"), {
          script: `import * as d8 from MOD_URL;
try { d8.getBackend("cpu"); } catch (e) { console.log(e.name + ": " + e.message); }`,
        }),
      ]);

      // 2. Download: checked against the manifest, then cached; a second run asks for nothing.
      assertTrained(first, dirs("download").cache);
      assert.equal(dl.requests.filter((p) => p === `release/${file}`).length, 1);
      assert.ok(
        !dl.requests.some((p) => p.includes("kernels/")),
        "sources fetched despite a prebuilt",
      );
      assert.deepEqual(await Deno.readFile(first.out!.library), lib);
      const before = dl.requests.length;
      const second = await runUser(base, tmp, "download", dirs("download"));
      assertTrained(second, dirs("download").cache);
      assert.deepEqual(dl.requests.slice(before), [], "the second run made requests");
      assert.doesNotMatch(second.stderr, /downloading|building/);
      // Offline mode uses that cache, and asks for nothing.
      const cachedOffline = await runUser(base, tmp, "download", dirs("download"), {
        env: { DAINT8_OFFLINE: "1" },
      });
      assertTrained(cachedOffline, dirs("download").cache);
      assert.deepEqual(dl.requests.slice(before), []);
      // A damaged cache entry is never loaded: it is downloaded again.
      await Deno.truncate(first.out!.library, 10 * 1024);
      const again = await runUser(base, tmp, "download", dirs("download"));
      assertTrained(again, dirs("download").cache);
      assert.deepEqual(dl.requests.slice(before), ["mod/dist/manifest.json", `release/${file}`]);
      assert.deepEqual(await Deno.readFile(again.out!.library), lib);

      // 3. A tampered prebuilt file is refused, naming both digests; nothing is cached.
      assert.notEqual(tamper.code, 0);
      assert.match(tamper.stderr, /Refusing the downloaded cpu library/);
      assert.ok(tamper.stderr.includes(sha256Hex(tampered)), tamper.stderr);
      assert.ok(tamper.stderr.includes(sha256Hex(lib)), tamper.stderr);
      assert.ok(bad.requests.includes(`release/${file}`));
      assert.deepEqual(listTree(dirs("tampered").cache).filter((f) => f.endsWith(".so")), []);

      // A partial download is refused too, and never cached.
      assert.notEqual(trunc.code, 0);
      assert.match(trunc.stderr, /Refusing the downloaded cpu library/);
      assert.ok(cut.requests.includes(`release/${file}`));
      assert.deepEqual(listTree(dirs("truncated").cache), []);

      // 4. No prebuilt file and no compiler: a clear error.
      assert.notEqual(nocxx.code, 0);
      assert.match(nocxx.stderr, /No prebuilt cpu library for .* and no C\+\+ compiler/);
      assert.match(nocxx.stderr, /install g\+\+/);

      // Offline with an empty cache: only the cache is used, nothing is asked.
      assert.notEqual(offline.code, 0);
      assert.match(offline.stderr, /DAINT8_OFFLINE=1 and the cpu library is not in the cache/);
      assert.ok(!off.requests.some((p) => p.startsWith("release/") || p.endsWith("manifest.json")));

      // A missing permission names the flag to add.
      assert.notEqual(noperm.code, 0);
      assert.ok(
        noperm.stderr.includes(`add --allow-net=${new URL(base).host}`),
        noperm.stderr,
      );

      // getBackend is synchronous: without ensureLibrary it says what to call, and fetches nothing.
      assert.equal(sync.code, 0, sync.stderr);
      assert.match(
        sync.stdout,
        /Daint8Error: Cannot find the cpu library for this module .* It is not in the cache/,
      );
      assert.match(sync.stdout, /await ensureLibrary\("cpu"\)/);
      assert.ok(!nosetup.requests.some((p) => p.startsWith("release/")));

      // 5. Two first runs at once both succeed, with one sound cache entry and no leftovers.
      assertTrained(raceA, raceDirs.cache);
      assertTrained(raceB, raceDirs.cache);
      assert.equal(raceA.out!.library, raceB.out!.library);
      assert.deepEqual(await Deno.readFile(raceA.out!.library), lib);
      assert.ok(race.requests.filter((p) => p === `release/${file}`).length >= 1);
      const leftovers = listTree(raceDirs.cache).filter((f) => /\.(tmp|old)-/.test(f));
      assert.deepEqual(leftovers, []);
    } finally {
      await server.shutdown();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
