"""What a clinician does in the PWA, as reusable steps for the e2e tests."""

from __future__ import annotations

import time
from typing import Any

from .conftest import PIN, USERS


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
                     path: str = "/") -> Any:
    """Open the app (at ``path``, e.g. ``/?bench=1``), sign in, set the PIN, wait for the first sync and the cache."""
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
