"""What a clinician does in the PWA, as reusable steps for the e2e tests."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .conftest import PIN, REPO, USERS


def poll(page: Any, fn: str, arg: Any = None, *, timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Evaluate ``fn`` until it returns something truthy. (``wait_for_function`` evals strings, which the
    app's CSP forbids; ``evaluate`` goes through the DevTools protocol and is allowed.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(fn, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {fn[:120]}")
        time.sleep(interval)


def status_text(page: Any) -> str:
    return str(page.locator("#sync .sync-text").inner_text())


def wait_status(page: Any, predicate: str, timeout: float = 60_000) -> None:
    """Wait until the status pill's dataset matches a JS predicate over ``d`` (dataset)."""
    try:
        poll(page, f"() => {{ const d = document.getElementById('sync').dataset; return {predicate}; }}",
             timeout=timeout / 1000)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; status is {status_text(page)!r}") from None


def sign_in_and_sync(ctx: Any, user: str = "dr.adams", pin: str = PIN, *, shots: bool = False,
                     path: str = "/", cache: bool = True) -> Any:
    """Open the app (at ``path``, e.g. ``/?bench=1``), sign in, set the PIN, wait for the first sync and (unless
    ``cache=False``) the service worker's cache."""
    from .conftest import shot  # noqa: PLC0415

    page = ctx.new_page()
    page.goto(path)
    page.wait_for_selector("#signin")
    if shots:
        shot(page, "00a-sign-in", full_page=False)
    page.fill("#signin input[name=username]", user)
    page.fill("#signin input[name=password]", USERS[user])
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#pin-setup")
    page.fill("#pin-setup input[name=pin]", pin)
    page.fill("#pin-setup input[name=pin2]", pin)
    if shots:
        shot(page, "00b-set-pin", full_page=False)
    page.click("#pin-setup button[type=submit]")
    page.wait_for_selector("#patients li", timeout=120_000)
    if cache:
        wait_cache(page)
    return page


def wait_cache(page: Any) -> None:
    """The service worker controls the page and the versioned cache is complete (offline-ready)."""
    poll(page, """async () => {
        if (!navigator.serviceWorker.controller) return false;
        const names = (await caches.keys()).filter((n) => n.startsWith('omnicare-'));
        if (!names.length) return false;
        const c = await caches.open(names[0]);
        return !!(await c.match('/__version')) && !!(await c.match('/vendor/pyodide/pyodide.asm.wasm'));
    }""", timeout=120, interval=0.5)


def unlock(page: Any, pin: str = PIN) -> None:
    page.wait_for_selector("#unlock")
    page.fill("#unlock input[name=pin]", pin)
    page.click("#unlock button[type=submit]")


def open_patient(page: Any, query: str) -> None:
    page.goto("/#/patients")
    page.fill("#q", query)
    poll(page, "q => (document.getElementById('result-summary')?.textContent || '').includes(q)", query)
    page.locator("#patients li a").first.click()
    page.wait_for_selector("#patient-name")


# ---------------------------------------------------------------- accessibility (issue 18 item 13)
# axe-core, the npm package (package.json devDependency) in node_modules, or wherever OMNICARE_AXE_JS points
# (a private `npm install --prefix DIR axe-core` before the shared node_modules has it).
def _axe_path() -> Path:
    return Path(os.environ.get("OMNICARE_AXE_JS") or REPO / "node_modules" / "axe-core" / "axe.min.js")


AXE_VIEWPORTS = ({"width": 1024, "height": 768}, {"width": 768, "height": 1024})
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_AXE_RUN = """async (tags) => {
  const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
  return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ` + v.nodes.slice(0, 4).map(
    (n) => n.target.join(' ') + ' ' + (n.any.concat(n.all)[0]?.message || '')).join(' | '));
}"""


def axe_source() -> str:
    path = _axe_path()
    # Missing is a failure, not a skip: the accessibility check is part of the suite.
    assert path.exists(), f"axe-core not found at {path}: run `npm install` (devDependency) or set OMNICARE_AXE_JS"
    return path.read_text()


def axe_check(page: Any, where: str, found: dict[str, list[str]], *, sizes: Any = AXE_VIEWPORTS) -> None:
    """Run axe (WCAG 2.1 A + AA rules) at each viewport; collect violations under ``where``.

    Injected with ``page.evaluate`` (DevTools ``Runtime.evaluate``), which the page's CSP does not govern: the
    CSP stays as it is (a <script> tag would be refused by script-src 'self')."""
    if not page.evaluate("() => typeof axe === 'object'"):
        page.evaluate(axe_source())
    for size in sizes:
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        bad = page.evaluate(_AXE_RUN, AXE_TAGS)
        if bad:
            found[f"{where} {size['width']}x{size['height']}"] = bad


def assert_axe_clean(found: dict[str, list[str]]) -> None:
    assert not found, "axe violations:\n" + "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in found.items())


def focus_on_heading(page: Any, timeout: float = 20) -> str:
    """After a screen change the focus is on the new screen's heading (never <body>) and the live region
    announced it; returns the heading's text."""
    return str(poll(page, """() => {
        const a = document.activeElement;
        const say = document.getElementById('announce')?.textContent || '';
        return a && a.matches('#main h1') && say.includes(a.textContent) ? a.textContent : '';
    }""", timeout=timeout))


# ---------------------------------------------------------------- plain words on every screen (issue 18 item 8)
# What never belongs on a clinician's screen: "null"/"undefined"/NaN, JSON ({"…" or [{), a stack or exception
# text. Checked on every screen of every e2e test through ``watch_junk`` (conftest's new_context).
JUNK = r'\bnull\b|\bundefined\b|\bNaN\b|\{"|\[\{|Traceback|\b\w*Error:|\b\w*Exception\b|\[object |\bat [\w.$<>]+ \([^)]*:\d+:\d+\)|File "'
_JUNK_WATCH = """(pattern) => {
  const junk = new RegExp(pattern);
  let timer = null, last = "";
  const check = () => {
    timer = null;
    // The app shell only (not a JSON API response or the ops dashboard opened in the same context).
    if (!document.body || !document.getElementById("main") || !document.getElementById("sync")) return null;
    const text = document.body.innerText;
    const m = junk.exec(text);
    if (!m) return null;
    const at = text.slice(Math.max(0, m.index - 100), m.index + m[0].length + 100).replace(/\\s+/g, " ");
    if (at === last) return null;
    last = at;
    const what = `${location.hash || "#/"}: ${JSON.stringify(m[0])} in "…${at}…"`;
    if (window.__omnicareJunk) window.__omnicareJunk(what);
    return what;
  };
  window.__omnicareJunkCheck = check;
  new MutationObserver(() => { if (!timer) timer = setTimeout(check, 25); })
    .observe(document, { subtree: true, childList: true, characterData: true, attributes: true,
                         attributeFilter: ["hidden", "open", "class"] });
}"""


def watch_junk(ctx: Any, found: list[str]) -> None:
    """Every page of ``ctx`` reports junk text (``JUNK``) the moment it appears on screen into ``found``.

    An init script (DevTools ``Page.addScriptToEvaluateOnNewDocument``, outside the page's CSP) watches the DOM;
    a binding carries each finding back to Python."""
    ctx.expose_binding("__omnicareJunk", lambda _source, what: found.append(str(what)))
    ctx.add_init_script(script=f"({_JUNK_WATCH})({json.dumps(JUNK)});")


def assert_no_junk(page: Any, where: str = "") -> None:
    """Nothing in ``JUNK`` on the screen now (a direct check for one screen, on top of ``watch_junk``)."""
    text = page.inner_text("body")
    m = re.search(JUNK, text)
    assert m is None, f"{where}: {m.group(0)!r} on screen: …{text[max(0, m.start() - 100):m.end() + 100]}…"


def fill_dosage(page: Any, scope: str, dose: str, unit: str, route: str = "oral", frequency: str = "daily",
                duration: str = "", as_needed: bool = False) -> None:
    """Fill the structured dosage form (issue 18 item 4) inside ``scope`` (a CSS selector)."""
    page.fill(f"{scope} [data-dosage=dose_value]", dose)
    page.select_option(f"{scope} [data-dosage=dose_unit]", unit)
    page.select_option(f"{scope} [data-dosage=route]", route)
    page.select_option(f"{scope} [data-dosage=frequency]", frequency)
    page.fill(f"{scope} [data-dosage=duration_value]", duration)
    box = page.locator(f"{scope} [data-dosage=as_needed]")
    if box.is_checked() != as_needed:
        box.click()


def decide_cds(page: Any) -> None:
    """Save an order through its medication safety check as a clinician would: "Save order" on a warning, or the
    first override reason and "Override and save" on a stop. Which one appears depends on the patient's other
    orders, which tests on a shared server change."""
    if page.locator("#cds-accept").count():
        page.click("#cds-accept")
    else:
        page.locator("input[name=override_reason]").first.check()
        page.click("#cds-override")
