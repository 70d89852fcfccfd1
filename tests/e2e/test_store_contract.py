"""The IndexedDB store passes the same contract checks as the CPython stores, in real Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import REPO, Server
from .helpers import poll

CONTRACT = REPO / "tests" / "pyclient" / "store_contract.py"

RUN = """async ([src]) => {
  const py = window.omnicare.py.pyodide;
  py.FS.mkdirTree('/e2e');
  py.FS.writeFile('/e2e/store_contract.py', src);
  py.globals.set('make_idb', window.omnicare.makeIdb);
  return await py.runPythonAsync(`
import json, sys
sys.path.insert(0, '/e2e')
import store_contract
from pyclient.adapters.indexeddb_store import IndexedDBStore
results = []
for n, check in enumerate(store_contract.CHECKS):
    store = IndexedDBStore(make_idb(f"contract-{n}"))
    try:
        await check(store)
        results.append([check.__name__, "ok"])
    except BaseException as exc:
        results.append([check.__name__, repr(exc)])
json.dumps(results)
`);
}"""


def test_indexeddb_store_passes_the_store_contract(new_context: Any, server: Server) -> None:
    page = new_context().new_page()
    page.goto("/")
    poll(page, "() => !!(window.omnicare && window.omnicare.py)", timeout=90)
    results = json.loads(page.evaluate(RUN, [Path(CONTRACT).read_text()]))
    assert len(results) >= 9
    failed = [r for r in results if r[1] != "ok"]
    assert not failed, failed
