"""Authors are references to the user's Practitioner (issue 18 item 6): built, found and shown the same way by
the device and the server."""

from __future__ import annotations

from pyclient import authors, forms
from pyclient.views.fullchart import note_rows


def test_the_author_is_a_practitioner_reference_with_the_persons_name() -> None:
    ref = authors.author_reference("pr-a", "Dr. Alice Adams", "dr.adams")
    assert ref == {"reference": "Practitioner/pr-a", "display": "Dr. Alice Adams"}
    assert authors.author_reference(None, "", "dr.adams") == {"display": "dr.adams"}  # the server completes it


def test_every_form_writes_the_reference_where_the_server_looks_for_it() -> None:
    ref = authors.author_reference("pr-a", "Dr. Alice Adams")
    made = [
        *forms.vitals("p1", {"hr": "80"}, now="2026-12-01T10:00:00Z", author=ref),
        forms.allergy_new("p1", id="a", substance="Latex", criticality="low", reaction="", status="active",
                          now="2026-12-01T10:00:00Z", author=ref),
        forms.medication_new("p1", id="m", name="Metformin", dosage="500 mg", now="2026-12-01T10:00:00Z", author=ref),
        forms.note_new("p1", id="n", title="", text="Seen", now="2026-12-01T10:00:00Z", author=ref),
    ]
    for res in made:
        assert authors.author_refs(res["resourceType"], res) == [ref], res["resourceType"]


def test_set_author_and_the_actor_wrapped_types() -> None:
    proc: dict[str, object] = {"resourceType": "Procedure"}
    authors.set_author("Procedure", proc, {"reference": "Practitioner/pr-a"})
    assert proc["performer"] == [{"actor": {"reference": "Practitioner/pr-a"}}]
    assert authors.author_refs("Procedure", proc) == [{"reference": "Practitioner/pr-a"}]


def test_the_chart_shows_the_note_authors_name() -> None:
    ref = authors.author_reference("pr-a", "Dr. Alice Adams")
    note = forms.note_new("p1", id="n", title="Visit", text="Seen", now="2026-12-01T10:00:00Z", author=ref)
    assert note_rows([note], lambda _r: False)[0]["author"] == "Dr. Alice Adams"
    assert authors.practitioner_display({"name": [{"family": "Adams", "given": ["Alice"], "prefix": ["Dr."]}]}) == \
        "Dr. Alice Adams"
