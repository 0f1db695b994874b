/**
 * A python3 that imports `modules` (e.g. "torch, torchvision"): the first of python3 on PATH and
 * /usr/bin/python3 that does, else undefined (the tests that need it skip, with a warning).
 */
export function findPython(
  modules: string,
  order = ["python3", "/usr/bin/python3"],
): string | undefined {
  for (const py of order) {
    try {
      const r = new Deno.Command(py, {
        args: ["-c", `import ${modules}`],
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (r.success) return py;
    } catch {
      // not there
    }
  }
  return undefined;
}
