"""Registering a walk-in during an outage (issue 18 items 1 and 6), in Chromium at 1024x768 and 768x1024.

Offline: the form says in words what is wrong (a date it cannot read), warns about a patient already on the
device (blind-index match on name + birth date) with "open the chart" or "register anyway", gives a local MRN
and opens the new chart at once; a note written there carries the clinician's Practitioner as its author.
Online again: everything syncs by itself and the registering clinician can read the new patient on the server.
"""

from __future__ import annotations

import re
from typing import Any

from .conftest import Server, shot
from .helpers import poll, sign_in_and_sync, wait_status
from .test_touch_targets import MEASURE

USER = "dr.chen"
LAND, PORT = {"width": 1024, "height": 768}, {"width": 768, "height": 1024}
TECHNICAL = re.compile(r"\bnull\b|\bundefined\b|\bNone\b|Traceback|[{}]")


def fill(page: Any, **values: str) -> None:
    for name, value in values.items():
        sel = f"#form-register [name={name}]"
        if name == "gender":
            page.select_option(sel, value)
        else:
            page.fill(sel, value)


def no_technical_text(page: Any) -> None:
    text = page.inner_text("#main")
    assert not TECHNICAL.search(text), text


def big_enough(page: Any, where: str) -> None:
    """Every control on the screen is at least 44x44 CSS px (the suite's touch-target measure)."""
    small = page.evaluate(MEASURE)
    assert not small, f"{where}: {small}"


def open_register(page: Any) -> None:
    page.goto("/#/patients")
    page.wait_for_selector("#register-open")
    page.click("#register-open")
    page.wait_for_selector("#form-register")


def test_register_a_walk_in_offline_with_duplicate_check_then_sync(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, USER)
    page.set_viewport_size(LAND)
    existing_id = page.locator("#patients li a").first.get_attribute("data-id")
    ex = server.fhir(f"Patient/{existing_id}", user=USER)
    ex_name = next(n for n in ex["name"] if n.get("use") == "official") if any(
        n.get("use") == "official" for n in ex["name"]) else ex["name"][0]
    practitioner = server.api("GET", "/api/auth/me", user=USER)[1]["practitioner"]
    assert practitioner and practitioner["id"]

    ctx.set_offline(True)
    page.goto("/#/patients")
    page.wait_for_selector("#register-open")
    shot(page, "reg-00-patient-list-1024x768", full_page=False)
    big_enough(page, "patient list")
    open_register(page)
    shot(page, "reg-01-form-1024x768", full_page=False)
    big_enough(page, "registration form 1024x768")

    # Nothing filled in, then a date that cannot be one: each field says what is wrong, in words.
    page.click("#register-save")
    page.wait_for_selector("#form-register [data-field=family] .field-error:not(:empty)")
    fill(page, given="Wendy", family="Walker", birth_date="2002-18-04", gender="female")
    page.click("#register-save")
    page.wait_for_selector("#form-register [data-field=birth_date] .field-error:has-text('a month is 1 to 12')")
    no_technical_text(page)
    shot(page, "reg-02-date-in-words-1024x768")

    # The same person as a patient already on this device: warned before anything is saved.
    y, m, d = ex["birthDate"].split("-")
    fill(page, given=ex_name["given"][0], family=ex_name["family"], birth_date=f"{y}-{m}-{d}", gender=ex["gender"])
    page.click("#register-save")
    page.wait_for_selector("#dup-warning")
    warning = page.inner_text("#dup-warning")
    assert "Matches on same name and birth date." in warning and ex_name["family"] in warning
    no_technical_text(page)
    shot(page, "reg-03-duplicate-1024x768")
    page.set_viewport_size(PORT)
    shot(page, "reg-03-duplicate-768x1024")
    big_enough(page, "duplicate warning 768x1024")
    box = page.locator("#dup-warning").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PORT["width"]
    page.click("#dup-warning .dup-open")  # it is the same person: open the existing chart
    page.wait_for_selector("#patient-name")
    assert page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])") == existing_id

    # A new walk-in, typed day/month/year, at the portrait width.
    open_register(page)
    fill(page, given="Wendy", family="Walkin", birth_date="18/04/1990", gender="female", phone="+44 20 7946 0000",
         address_line="1 High Street", city="Leeds", postal_code="LS1 4AP", other_id="NHS 943 476 5919",
         contact_name="Sam Walkin", contact_phone="0113 496 0000")
    shot(page, "reg-04-filled-768x1024")
    page.click("#register-save")
    page.wait_for_selector("#patient-name:has-text('Walkin')")
    new_id = page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")
    head = page.inner_text(".patient-head")
    mrn = re.search(r"L-[0-9A-Z]{8}-\d{5}-[0-9A-Z]", head)
    assert mrn, head
    assert "1990-04-18" in head
    shot(page, "reg-05-new-chart-offline-768x1024")

    # A note on the new chart, still offline: its author is this clinician's Practitioner.
    page.click("text=Write note")
    page.wait_for_selector("#form-note")
    page.fill("#form-note textarea[name=text]", "Walk-in during the network outage; registered on the ward tablet.")
    page.click("#form-note button[type=submit]")
    page.wait_for_selector("#notes li")
    page.click("#notes summary")
    assert practitioner["display"] in page.inner_text("#notes")
    wait_status(page, "d.state === 'offline' && Number(d.pending) >= 2")

    # It is someone else with the same name and birth date: register anyway (landscape).
    page.set_viewport_size(LAND)
    open_register(page)
    fill(page, given="Wendy", family="Walkin", birth_date="18/04/1990", gender="female")
    page.click("#register-save")
    page.wait_for_selector("#dup-warning")
    assert "Walkin, Wendy" in page.inner_text("#dup-warning")
    page.click("#dup-anyway")
    page.wait_for_selector("#patient-name:has-text('Walkin')")
    second_id = page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")
    assert second_id != new_id
    second_mrn = re.search(r"L-[0-9A-Z]{8}-\d{5}-[0-9A-Z]", page.inner_text(".patient-head"))
    assert second_mrn and second_mrn.group(0) != mrn.group(0)
    shot(page, "reg-06-registered-anyway-1024x768")
    page.goto("/#/patients")
    page.wait_for_selector(f"#patients a[data-id='{new_id}']")

    # Back online: it syncs by itself, and the registering clinician can read the new patient on the server.
    ctx.set_offline(False)
    wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=90_000)
    on_server = server.fhir(f"Patient/{new_id}", user=USER)
    assert on_server["name"][0]["family"] == "Walkin" and on_server["birthDate"] == "1990-04-18"
    assert on_server["identifier"][0]["value"] == mrn.group(0)
    assert on_server["contact"][0]["name"]["text"] == "Sam Walkin"
    teams = server.fhir(f"CareTeam?patient={new_id}", user=USER)
    assert any(p["member"]["reference"] == f"Practitioner/{practitioner['id']}"
               for e in teams["entry"] for p in e["resource"]["participant"])
    notes = server.fhir(f"DocumentReference?patient={new_id}", user=USER)
    assert notes["entry"][0]["resource"]["author"] == [
        {"reference": f"Practitioner/{practitioner['id']}", "display": practitioner["display"]}]
    # Still on the device after the pull (it is in the clinician's scope now) and the chart opens.
    page.goto(f"/#/patient/{new_id}")
    page.wait_for_selector("#patient-name:has-text('Walkin')")
    poll(page, "() => !document.querySelector('.patient-head .badge.pending')")
    shot(page, "reg-07-synced-chart-1024x768")


def test_a_chart_message_does_not_follow_the_clinician_to_the_next_patient(new_context: Any, server: Server) -> None:
    """"X is registered" belongs to X's chart: opening another patient clears it (it was still on patient B's
    chart, read as if it were about B). A message about the whole app (here: sent by the app itself, unscoped)
    stays across screens until dealt with."""
    ctx = new_context()
    page = sign_in_and_sync(ctx, USER)
    page.set_viewport_size(LAND)
    other = page.locator("#patients li a").first
    other_id = other.get_attribute("data-id")
    open_register(page)
    fill(page, given="Bea", family="Bannerman", birth_date="1971-02-03", gender="female")
    page.click("#register-save")
    page.wait_for_selector("#patient-name:has-text('Bannerman')")
    page.wait_for_selector("#banner:not([hidden]):has-text('Bannerman, Bea is registered')")
    shot(page, "reg-08-registered-banner-1024x768", full_page=False)

    page.goto("/#/patients")
    page.click(f"#patients a[data-id='{other_id}']")
    page.wait_for_selector("#patient-name")
    assert page.is_hidden("#banner"), page.inner_text("#banner")
    page.set_viewport_size(PORT)
    shot(page, "reg-09-next-patient-no-banner-768x1024", full_page=False)
    assert page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])") == other_id

    # An app-wide warning (no scope) is still there after moving between screens.
    page.evaluate("""async () => (await import('/app/ui.js')).banner(
        'Your session has ended. Your changes are kept on this device; sign in again to sync them.', { kind: 'warn' })""")
    page.goto("/#/patients")
    page.wait_for_selector("#patients li")
    page.click(f"#patients a[data-id='{other_id}']")
    page.wait_for_selector("#patient-name")
    assert "session has ended" in page.inner_text("#banner")


DESK = ("desk.e2e", "front-desk-lobby-5150")
MAKE_DESK = ("from django.contrib.auth.models import User; from omnicare.access import roles; "
             "u, _ = User.objects.get_or_create(username='{0}'); u.set_password('{1}'); u.save(); "
             "roles.role_assign(user=u, role=roles.FRONT_DESK)")


def test_the_front_desk_registers_a_walk_in_offline_for_a_responsible_clinician(
        new_context: Any, server: Server) -> None:
    """The front desk is on no care team (demographics only): the form asks who takes the patient on, and on
    sync that clinician's care team gets the patient — the walk-in is somebody's patient, not nobody's."""
    server.manage("shell", "-c", MAKE_DESK.format(*DESK))
    adams = server.api("GET", "/api/auth/me", user="dr.adams")[1]["practitioner"]
    ctx = new_context()
    page = ctx.new_page()
    page.set_viewport_size(LAND)
    page.goto("/")
    page.wait_for_selector("#signin")
    page.fill("#signin input[name=username]", DESK[0])
    page.fill("#signin input[name=password]", DESK[1])
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#pin-setup")
    for name in ("pin", "pin2"):  # a role that sees every patient's demographics: a passphrase, not a PIN
        page.fill(f"#pin-setup input[name={name}]", "lantern harbor 42")
    page.click("#pin-setup button[type=submit]")
    page.wait_for_selector("#register-open", timeout=120_000)

    ctx.set_offline(True)
    open_register(page)
    options = page.locator("#form-register select[name=responsible] option").all_inner_texts()
    assert adams["display"] in options and not any("desk" in o for o in options), options
    fill(page, given="Walter", family="Deskwalk", birth_date="1984-07-09", gender="male")
    page.click("#register-save")  # no clinician chosen: said in words, nothing saved
    page.wait_for_selector("#form-register [data-field=responsible] .field-error:has-text('responsible')")
    no_technical_text(page)
    page.select_option("#form-register select[name=responsible]", adams["id"])
    # Choosing a clinician takes the error away (it no longer describes the field).
    assert page.inner_text("#form-register [data-field=responsible] .field-error") == ""
    assert page.get_attribute("#form-register select[name=responsible]", "aria-invalid") is None
    shot(page, "reg-10-front-desk-responsible-1024x768")
    page.set_viewport_size(PORT)
    shot(page, "reg-10-front-desk-responsible-768x1024")
    big_enough(page, "front-desk registration 768x1024")
    page.set_viewport_size(LAND)
    page.click("#register-save")
    page.wait_for_selector("#patient-name:has-text('Deskwalk')")
    pid = page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")

    ctx.set_offline(False)
    poll(page, "() => document.getElementById('sync').dataset.pending === '0'", timeout=90)
    teams = server.fhir(f"CareTeam?patient={pid}", user="dr.adams")
    members = [p["member"]["reference"] for e in teams["entry"] for p in e["resource"]["participant"]]
    assert members == [f"Practitioner/{adams['id']}"]  # the clinician, not the front desk
    assert server.fhir(f"Patient/{pid}", user="dr.adams")["generalPractitioner"][0]["reference"] == \
        f"Practitioner/{adams['id']}"
