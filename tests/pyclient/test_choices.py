"""The forms' pick lists live once (pyclient.choices): every screen shows, and every validator accepts, the same
codes with the same words (issue 11 item 6)."""

from __future__ import annotations

import pytest

from pyclient import choices as ch
from pyclient import forms, registration
from pyclient.chart import chart_view
from pyclient.errors import ValidationFailed
from pyclient.views import conflicts as vc
from pyclient.views import rejected as rj

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Ng", "given": ["Ana"]}], "gender": "female"}


def test_the_chart_view_model_carries_the_lists_the_forms_validate() -> None:
    c = chart_view(PATIENT, [PATIENT], lambda _r: False)["choices"]
    assert [v for v, _w in c["criticality"]] == list(forms.ALLERGY_CRITICALITIES)
    assert [v for v, _w in c["allergyStatus"]] == list(forms.ALLERGY_STATUSES)
    assert [v for v, _w in c["gender"]] == list(forms.GENDERS) == list(registration.GENDERS)
    assert dict(map(tuple, c["criticality"]))["unable-to-assess"] == "Unable to assess"


def test_the_conflict_and_refused_screens_offer_the_same_words() -> None:
    assert vc._OPTIONS["criticality"] == [list(x) for x in ch.ALLERGY_CRITICALITY]
    assert vc._OPTIONS["gender"] == [list(x) for x in ch.GENDER]
    r = rj.Rejected(entry_id="e1", op="put", resource_type="AllergyIntolerance", id="a1", created=False,
                    resource={"resourceType": "AllergyIntolerance", "id": "a1", "criticality": "high"},
                    reason="refused")
    [fix] = rj.fix_fields(r)
    assert fix["options"] == [list(x) for x in ch.ALLERGY_CRITICALITY]


@pytest.mark.parametrize(("choices", "sentence"), [
    (ch.ALLERGY_CRITICALITY, "Choose low, high or unable to assess."),
    (ch.GENDER, "Choose female, male, other or unknown."),
    (ch.ALLERGY_STATUS, "Choose active, inactive or resolved."),
])
def test_each_list_names_its_choices_in_an_error_sentence(choices: ch.Choices, sentence: str) -> None:
    assert ch.choose(choices) == sentence
    assert ch.word(choices, choices[0][0]) == choices[0][1] and ch.word(choices, "other-code") == "other-code"


def test_a_value_off_the_list_is_refused_in_the_lists_own_words() -> None:
    with pytest.raises(ValidationFailed) as exc:
        forms.contact_update({"resourceType": "Patient"}, phone=None, birth_date=None, gender="woman", today="2026-01-01")
    assert exc.value.fields["gender"] == ch.choose(ch.GENDER)
    with pytest.raises(ValidationFailed) as exc:
        forms.allergy_update({"resourceType": "AllergyIntolerance"}, criticality="severe", status="gone")
    assert exc.value.fields == {"criticality": ch.choose(ch.ALLERGY_CRITICALITY), "status": ch.choose(ch.ALLERGY_STATUS)}
