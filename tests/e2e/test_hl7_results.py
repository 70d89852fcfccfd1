"""HL7 v2 into the tablet: an ORU over MLLP shows on the clinician's chart (critical flagged), an RDS marks the
order dispensed, and both are still there offline afterwards. Real listener process, real Chromium."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

from .conftest import PY, REPO, Server, shot
from .helpers import open_patient, poll, sign_in_and_sync, unlock

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def _mllp(port: int, message: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(VT + message.encode() + FS + CR)
        buf = b""
        while FS + CR not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("listener closed")
            buf += chunk
    return buf[1:buf.index(FS)].decode()


def _listener(server: Server) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([PY, "manage.py", "hl7_listen", "--port", str(port)], cwd=REPO, env=server.env,  # noqa: S603
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("listener did not start") from None
            time.sleep(0.2)


def test_lab_results_and_a_dispense_reach_the_chart_and_stay_offline(new_context: Any, server: Server) -> None:
    patients = server.fhir("Patient?_count=50")["entry"]
    meds_by_patient = {}
    for e in patients:
        pid = e["resource"]["id"]
        meds = server.fhir(f"MedicationRequest?patient={pid}&status=active")
        if meds.get("entry"):
            meds_by_patient[pid] = meds["entry"][0]["resource"]
            break
    assert meds_by_patient, "the demo physician has a patient with an active medication"
    pid, med = next(iter(meds_by_patient.items()))
    patient = next(e["resource"] for e in patients if e["resource"]["id"] == pid)
    mrn = next(i["value"] for i in patient["identifier"] if i["value"].startswith("MRN-"))
    pid3 = f"{mrn}^^^DEMO&2.16.840.1.113883.3.9999.1&ISO^MR"
    oru = "\r".join([
        "MSH|^~\\&|LABSYS|E2E-LAB|OMNICARE|OC|20261201080000+0000||ORU^R01^ORU_R01|E2E-ORU-1|P|2.5.1",
        f"PID|1||{pid3}||Test^Patient",
        "OBR|1|P-E2E|F-E2E^ELAB|24323-8^Metabolic panel^LN|||20261201073000+0000|||||||||||||||20261201080000+0000||CH|F",
        "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L^mmol/L^UCUM|3.5-5.1|HH|||F|||20261201073000+0000",
        "OBX|2|NM|2345-7^Glucose^LN||9.1|mmol/L^mmol/L^UCUM|3.9-7.8|H|||P|||20261201073000+0000",
    ]) + "\r"
    rds = "\r".join([
        "MSH|^~\\&|PHARMSYS|E2E-PHARM|OMNICARE|OC|20261201090000+0000||RDS^O13^RDS_O13|E2E-RDS-1|P|2.5.1",
        f"PID|1||{pid3}||Test^Patient",
        f"ORC|RE|{med['id']}^OMNICARE|RX-E2E^EPHARM",
        "RXD|1|197361^Amlodipine 5 MG Oral Tablet^RXNORM|20261201085500+0000|28|TAB^tablet^HL70292|||RX-E2E-1",
    ]) + "\r"

    proc, port = _listener(server)
    try:
        ctx = new_context()
        page = sign_in_and_sync(ctx)
        open_patient(page, mrn)
        assert "MSA|AA|E2E-ORU-1" in _mllp(port, oru)
        assert "MSA|AA" in _mllp(port, rds)

        def shows_results() -> bool:
            page.goto(f"/#/patient/{pid}")
            page.wait_for_selector("#patient-name")
            return page.locator("tr.critical").count() > 0 and page.locator(".badge.dispensed").count() > 0

        deadline = time.monotonic() + 120
        while not shows_results():
            assert time.monotonic() < deadline, "the new results never reached the chart"
            time.sleep(1)
        row = page.locator("tr.critical").first
        assert "Potassium" in row.inner_text() and "critical high" in row.inner_text()
        glucose = page.locator("tr.abnormal[data-id]", has_text="Glucose")  # "Recent labs" (the report lists it too)
        assert "high" in glucose.inner_text() and "preliminary" in glucose.inner_text()
        assert "dispensed 2026-12-01" in page.locator("#medications").inner_text()
        for w, h in ((1024, 768), (768, 1024)):
            page.set_viewport_size({"width": w, "height": h})
            page.locator("tr.critical").first.scroll_into_view_if_needed()
            shot(page, f"hl7-lab-results-{w}x{h}", full_page=False)

        ctx.set_offline(True)
        page.reload()
        unlock(page)
        page.wait_for_selector("#patients li, #patient-name", timeout=120_000)
        page.goto(f"/#/patient/{pid}")
        poll(page, "() => document.querySelectorAll('tr.critical').length > 0", timeout=60)
        assert "critical high" in page.locator("tr.critical").first.inner_text()
        assert "dispensed" in page.locator("#medications").inner_text()
        shot(page, "hl7-lab-results-offline", full_page=False)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
