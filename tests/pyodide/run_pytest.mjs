// Runs tests/pyclient inside the real Pyodide runtime (npm `pyodide`) under Node.
//
// Usage: node tests/pyodide/run_pytest.mjs <pyodide-dir> <wheel-dir> [pytest args...]
// - <pyodide-dir>: the npm pyodide package (index URL), e.g. node_modules/pyodide/
// - <wheel-dir>: pure-Python wheels to install (pytest and its deps, hypothesis, and the pyclient wheel)
// The host `tests/` folder is mounted at /tests with NODEFS, so the SAME test files run here and on CPython.
// If tests/pyclient/_pyodide_prelude.py exists it runs first with top-level await (for async WebCrypto checks
// that pytest, being synchronous, cannot await itself). Exit code = pytest's.
import { loadPyodide } from "pyodide";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const testsDir = path.resolve(here, "..");
const [pyodideDir, wheelDir, ...pytestArgs] = process.argv.slice(2);
if (!pyodideDir || !wheelDir) {
  console.error("usage: run_pytest.mjs <pyodide-dir> <wheel-dir> [pytest args...]");
  process.exit(2);
}

const t0 = performance.now();
const pyodide = await loadPyodide({ indexURL: path.resolve(pyodideDir) + "/" });
const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
for (const name of fs.readdirSync(wheelDir).filter((n) => n.endsWith(".whl")).sort()) {
  const buf = fs.readFileSync(path.join(wheelDir, name));
  pyodide.unpackArchive(new Uint8Array(buf), "wheel", { extractDir: sitePackages });
}
pyodide.FS.mkdirTree("/tests");
pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: testsDir }, "/tests");
console.log(`pyodide ${pyodide.version} ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

pyodide.runPython(`
import os, sys
os.chdir("/")
sys.path.insert(0, "/")  # so 'tests.pyclient...' imports resolve to the mounted folder
import pyclient
print("pyclient from", pyclient.__file__)
`);
// The app's own WebCrypto half (pwa/app/crypto.js), so the prelude drives the browser's one crypto path
// (pyclient.adapters.webcrypto) over the same JavaScript. A data: URL, because the repository's package.json
// declares no module type and Node would warn about reparsing the file.
const cryptoJs = fs.readFileSync(path.resolve(testsDir, "..", "pwa", "app", "crypto.js"), "utf8");
pyodide.registerJsModule("omnicare_crypto_js", await import("data:text/javascript," + encodeURIComponent(cryptoJs)));
if (fs.existsSync(path.join(testsDir, "pyclient", "_pyodide_prelude.py"))) {
  const prelude = fs.readFileSync(path.join(testsDir, "pyclient", "_pyodide_prelude.py"), "utf8");
  await pyodide.runPythonAsync(prelude, { filename: "/tests/pyclient/_pyodide_prelude.py" });
}
pyodide.globals.set("PYTEST_ARGS", pyodide.toPy(pytestArgs.length ? pytestArgs : ["/tests/pyclient"]));
const rc = pyodide.runPython(`
import pytest
# No cache writes onto the host tree; no plugins that expect a real OS.
int(pytest.main(["-p", "no:cacheprovider", "-p", "no:django", "-q", "--rootdir=/tests", *PYTEST_ARGS]))
`);
process.exit(rc);
