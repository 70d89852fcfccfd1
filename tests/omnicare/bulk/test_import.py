"""$import and ``manage.py fhir_import``: the Synthea sample loads whole, bad lines are reported by line number
and never stop the others, conditional and dangling references are resolved or reported, a second import of
the same file changes nothing, a crash mid-import resumes without loss."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from django.core.management import call_command

from omnicare.bulk.models import BulkJob
from omnicare.fhir.models import Resource, ResourceVersion

from .conftest import BASE, client_for, kick_import, ndjson, synthea_files, wait_manifest

pytestmark = pytest.mark.django_db
NPI = "http://hl7.org/fhir/sid/us-npi"


def synthea_bytes() -> tuple[bytes, Counter[str], dict[tuple[str, str], dict[str, Any]]]:
    data = b""
    counts: Counter[str] = Counter()
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    # Deliberately reversed: Procedure/Encounter (which point at Practitioner?identifier=...) come before the
    # Practitioners and Locations they name, so resolution must not depend on file order.
    for path in reversed(synthea_files()):
        raw = path.read_bytes()
        data += raw if raw.endswith(b"\n") else raw + b"\n"
        for line in raw.splitlines():
            res = json.loads(line)
            counts[res["resourceType"]] += 1
            by_key[(res["resourceType"], res["id"])] = res
    return data, counts, by_key


def strip(res: dict[str, Any]) -> dict[str, Any]:
    out = dict(res)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    out.pop("meta", None)
    if meta:
        out["meta"] = meta
    return out


def resolve_conditionals(node: Any, by_identifier: dict[tuple[str, str, str], str]) -> Any:
    """What the import does to a conditional reference whose single target exists."""
    if isinstance(node, dict):
        out = {k: resolve_conditionals(v, by_identifier) for k, v in node.items() if k != "contained"}
        if "contained" in node:
            out["contained"] = node["contained"]
        ref = out.get("reference")
        if isinstance(ref, str) and "?identifier=" in ref:
            rtype, _, q = ref.partition("?identifier=")
            system, _, value = q.rpartition("|")
            if (rtype, system, value) in by_identifier:
                out["reference"] = f"{rtype}/{by_identifier[(rtype, system, value)]}"
        return out
    if isinstance(node, list):
        return [resolve_conditionals(v, by_identifier) for v in node]
    return node


def test_synthea_sample_imports_whole_exports_back_unchanged_syncs_and_reimports_as_a_no_op(
    integration: Any, django_capture_on_commit_callbacks: Any, django_user_model: Any, capsys: Any
) -> None:
    client = client_for(integration)
    data, counts, by_key = synthea_bytes()
    assert sum(counts.values()) == 7160
    manifest = wait_manifest(client, kick_import(client, data, django_capture_on_commit_callbacks))
    assert {o["type"]: o["count"] for o in manifest["output"]} == dict(counts)
    ext = manifest["extension"]
    assert ext["rejectedLines"] == 0 and ext["linesRead"] == 7160
    assert ext["conditionalReferencesResolved"] > 9000 and ext["conditionalReferencesUnresolved"] == 0
    for rtype, n in counts.items():  # what a FHIR client sees
        r = client.get(f"{BASE}/{rtype}", {"_summary": "count"})
        assert r.status_code == 200 and r.json()["total"] == n, rtype
    # A conditional reference became the literal one, as a transaction would have made it.
    enc = next(res for (rt, _), res in by_key.items() if rt == "Encounter")
    stored = Resource.objects.get(resource_type="Encounter", resource_id=enc["id"]).body
    assert stored["participant"][0]["individual"]["reference"].startswith("Practitioner/")
    assert "?" not in stored["participant"][0]["individual"]["reference"]

    # Round trip: $export of the same types returns every resource as imported (meta aside; conditional
    # references resolved): extensions, contained resources, unicode and decimals intact.
    with django_capture_on_commit_callbacks(execute=True):
        r = client.get(f"{BASE}/$export", {"_type": ",".join(sorted(counts))}, HTTP_PREFER="respond-async")
    assert r.status_code == 202, r.content
    out = wait_manifest(client, r["Content-Location"])
    by_identifier = {
        (rt, str(i.get("system") or ""), i["value"]): rid
        for (rt, rid), res in by_key.items() for i in res.get("identifier") or [] if "value" in i
    }
    exported: dict[tuple[str, str], dict[str, Any]] = {}
    for o in out["output"]:
        for res in ndjson(client, o["url"]):
            exported[(res["resourceType"], res["id"])] = res
        assert o["count"] == counts[o["type"]]
    assert set(exported) == set(by_key)
    differ = [k for k, res in by_key.items()
              if json.dumps(strip(exported[k]), sort_keys=True, ensure_ascii=False)
              != json.dumps(resolve_conditionals(strip(res), by_identifier), sort_keys=True, ensure_ascii=False)]
    assert not differ, differ[:5]
    _device_of_a_care_team_clinician_syncs_the_whole_record(django_user_model)
    _cli_reimport_is_a_no_op(capsys)


def _device_of_a_care_team_clinician_syncs_the_whole_record(django_user_model: Any) -> None:
    from django.test import Client

    from omnicare.access.roles import role_assign
    from omnicare.access.services import token_create
    from omnicare.fhir.models import ResourcePatient
    from omnicare.fhir.services import resources_import

    # A physician whose care team covers one imported patient: their device receives that whole record.
    patient = max(ResourcePatient.objects.values_list("patient_id", flat=True).distinct(),
                  key=lambda p: ResourcePatient.objects.filter(patient_id=p).count())
    dr = django_user_model.objects.create_user(username="dr.sync")
    role_assign(user=dr, role="physician")
    resources_import(resources=[
        {"resourceType": "Practitioner", "id": "pr-sync", "identifier": [{"system": "urn:omnicare:user", "value": "dr.sync"}]},
        {"resourceType": "CareTeam", "id": "ct-sync", "status": "active", "subject": {"reference": f"Patient/{patient}"},
         "participant": [{"member": {"reference": "Practitioner/pr-sync"}}]},
    ])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=dr, name='dev')}")
    # Pulls need a registered device (issue 10, item 14).
    assert client.post("/api/sync/devices", json.dumps({"deviceId": "tab-1"}), content_type="application/json").status_code == 200
    got: set[tuple[str, str]] = set()
    cursor = None
    for _ in range(200):
        r = client.post("/api/sync/pull?deviceId=tab-1", json.dumps({"cursor": cursor, "limit": 500}),
                        content_type="application/json")
        assert r.status_code == 200, r.content
        page = r.json()
        got |= {(c["resourceType"], c["id"]) for c in page["changes"]}
        cursor = page["cursor"]
        if not page["hasMore"]:
            break
    want = set(ResourcePatient.objects.filter(patient_id=patient, resource__deleted=False)
               .values_list("resource__resource_type", "resource__resource_id"))
    assert want - got == set()
    assert {t for t, _ in got} >= {"Patient", "Encounter", "Condition", "Procedure", "Immunization",
                                   "MedicationRequest", "DocumentReference", "CareTeam"}
    assert not {k for k in got if k[0] != "Practitioner"} - want  # nobody else's chart


def _cli_reimport_is_a_no_op(capsys: Any) -> None:
    """``manage.py fhir_import`` runs the same service: the same files again write nothing."""
    files = synthea_files()
    versions = ResourceVersion.objects.count()
    capsys.readouterr()
    call_command("fhir_import", *map(str, files))
    again = json.loads(capsys.readouterr().out)
    assert again["status"] == "completed" and again["rejectedLines"] == 0
    assert again["output"] == {} and again["extension"]["unchanged"] == 7160
    assert ResourceVersion.objects.count() == versions  # nothing written the second time




@pytest.mark.parametrize(("padding", "cores"), [(0, 1), (4100, 1), (4100, 2)],
                         ids=["inline", "one-worker", "two-workers"])
def test_bad_lines_are_reported_by_number_and_never_stop_the_others(
    integration: Any, django_capture_on_commit_callbacks: Any, padding: int, cores: int, monkeypatch: Any
) -> None:
    """Also with enough lines that validation runs in worker processes (``validate_pool``): the verdicts
    from there name the same lines and elements, and the search index they extract finds the same records."""
    from omnicare.bulk import validate_pool

    monkeypatch.setattr(validate_pool, "spare_cores", lambda: cores)  # even on a one-core runner
    used: list[bool] = []
    real_result = validate_pool.Validator.result

    def result(self: Any, fut: Any) -> Any:
        out = real_result(self, fut)
        used.append(out is not None)
        return out

    monkeypatch.setattr(validate_pool.Validator, "result", result)
    client = client_for(integration)
    lines = [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]},
        "this is not json",
        {"resourceType": "Observation", "id": "o1", "status": "not-a-status", "code": {"text": "hr"},
         "subject": {"reference": "Patient/p1"}},
        {"resourceType": "Unicorn", "id": "u1"},
        {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "hr"},
         "subject": {"reference": "Patient/p1"}, "performer": [{"reference": f"Practitioner?identifier={NPI}|404"}]},
        {"resourceType": "Condition", "id": "c1", "code": {"text": "asthma"}, "subject": {"reference": "Patient/p-later"}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "no id"}},
    ]
    lines += [{"resourceType": "Patient", "id": f"pad{i}", "name": [{"family": "Pad"}]} for i in range(padding)]
    body = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode() + b"\n"
    url = kick_import(client, body, django_capture_on_commit_callbacks)
    manifest = wait_manifest(client, url)
    assert used and all(used) == bool(padding)  # the workers validated every batch, or none did
    assert {o["type"]: o["count"] for o in manifest["output"]} == {"Patient": 1 + padding, "Observation": 1,
                                                                   "Condition": 1}
    assert manifest["extension"]["rejectedLines"] == 4
    assert manifest["extension"]["conditionalReferencesUnresolved"] == 1
    assert manifest["extension"]["referencesToAbsentResources"] == 1
    issues = ndjson(client, manifest["error"][0]["url"])
    where = {(i["extension"][0]["valueInteger"], i["issue"][0]["severity"]) for i in issues}
    assert {(2, "error"), (3, "error"), (4, "error"), (7, "error"), (5, "warning"), (6, "warning")} == where
    by_line = {i["extension"][0]["valueInteger"]: i["issue"][0] for i in issues if i["issue"][0]["severity"] == "error"}
    assert by_line[3]["expression"] == ["Observation.status"]
    # The unresolved conditional reference is kept as sent; the dangling one accepted.
    assert Resource.objects.get(resource_id="o2").body["performer"][0]["reference"].startswith("Practitioner?")
    assert Resource.objects.filter(resource_id="c1").exists()
    # Searchable by what the index holds (names, references into the compartment): whoever extracted it.
    for query, total in [({"family": "pad"}, padding), ({"patient": "p-later"}, 1), ({"patient": "p1"}, 1)]:
        rtype = "Patient" if "family" in query else ("Condition" if query["patient"] == "p-later" else "Observation")
        r = client.get(f"{BASE}/{rtype}", {**query, "_summary": "count"})
        assert r.status_code == 200 and r.json()["total"] == total, (query, r.content[:300])
    # One audit event per batch, naming the records it wrote (and only those).
    from omnicare.audit.models import AuditEvent

    audited: dict[str, set[str]] = {}
    for event in AuditEvent.objects.filter(action="import"):
        for rtype, ids in event.detail["resources"].items():
            audited.setdefault(rtype, set()).update(ids)
    assert audited == {"Patient": {"p1"} | {f"pad{i}" for i in range(padding)}, "Observation": {"o2"},
                       "Condition": {"c1"}}


def test_a_crash_mid_import_resumes_without_loss_or_duplicates(
    integration: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    from omnicare.bulk import services

    client = client_for(integration)
    monkeypatch.setattr(services, "IMPORT_BATCH", 10)
    body = b"".join(json.dumps({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": f"N{i}"}]}).encode()
                    + b"\n" for i in range(45))
    real = services._import_batch
    calls = {"n": 0}

    def crash_on_third(*a: Any, **k: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("worker killed")  # not an Exception: the job stays in progress
        return real(*a, **k)

    monkeypatch.setattr(services, "_import_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        kick_import(client, body, django_capture_on_commit_callbacks)
    job = BulkJob.objects.get()
    assert job.status == BulkJob.RUNNING and job.lines_done == 20
    assert Resource.objects.filter(resource_type="Patient").count() == 20
    monkeypatch.setattr(services, "_import_batch", real)
    from datetime import timedelta

    from django.utils import timezone

    assert services.jobs_resume(now=timezone.now()) == 0  # checkpointed just now: not stale
    with django_capture_on_commit_callbacks(execute=True):
        assert services.jobs_resume(now=timezone.now() + timedelta(minutes=11)) == 1  # beat re-queues it
    job.refresh_from_db()
    assert job.status == BulkJob.COMPLETED and job.lines_done == 45 and job.attempts == 2
    assert Resource.objects.filter(resource_type="Patient").count() == 45
    assert ResourceVersion.objects.filter(resource_type="Patient").count() == 45


def test_import_needs_ndjson_async_and_a_role_that_may_write(
    django_user_model: Any, integration: Any
) -> None:
    from omnicare.access.roles import role_assign

    client = client_for(integration)
    r = client.post(f"{BASE}/$import", b"{}", content_type="application/json", HTTP_PREFER="respond-async")
    assert r.status_code == 415
    r = client.post(f"{BASE}/$import", b"{}\n", content_type="application/fhir+ndjson")
    assert r.status_code == 400
    auditor = django_user_model.objects.create_user(username="aud")
    role_assign(user=auditor, role="auditor")
    r = client_for(auditor).post(f"{BASE}/$import", b"{}\n", content_type="application/fhir+ndjson",
                                 HTTP_PREFER="respond-async")
    assert r.status_code == 403
    assert not BulkJob.objects.exists()
