// `check` in Pyodide under Node (no browser): node bench/cds_pyodide_node.mjs <pyodide-dir> <source-root> <in.json>
// <source-root> holds pyclient/ and bench/cds_check_probe.py (mounted with NODEFS, imported from source);
// <in.json> = {"chart": "...", "draft": "...", "rounds": N, "batch": M}. Prints the probe's JSON.
import { loadPyodide } from "pyodide";
import fs from "node:fs";
import path from "node:path";

const [pyodideDir, root, input] = process.argv.slice(2);
const py = await loadPyodide({ indexURL: path.resolve(pyodideDir) + "/" });
py.FS.mkdirTree("/src");
py.FS.mount(py.FS.filesystems.NODEFS, { root: path.resolve(root) }, "/src");
py.globals.set("ARGS", fs.readFileSync(input, "utf8"));
const out = py.runPython(`
import json, sys
sys.path.insert(0, "/src"); sys.path.insert(0, "/src/bench")
from cds_check_probe import probe
a = json.loads(ARGS)
probe(a["chart"], a["draft"], a["rounds"], a["batch"])
`);
console.log(out);
