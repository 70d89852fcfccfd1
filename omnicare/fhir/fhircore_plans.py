"""The same per-element checks of ``fhir_core`` (under ``fhir.resources``), with their per-class part worked out
once per model class instead of on every element of every resource.

Why: ``fhir_core.FHIRAbstractModel`` runs two Python hooks on every element it validates (~25 per Synthea line):
``reject_null_complex_elements`` (before) loops over *all* fields of the class to find the lists of complex
types, and ``validate_after_model_construction`` (after) builds the class's required-primitive and choice-type
tables (constant literals of the generated classes) to learn that, for most classes, they are empty. Together
they were ~55 % of ``validate_resource``'s CPU on the Synthea sample (cProfile, 7,160 lines: 6.3 + 5.2 of
21.5 s). The fields of a model class never change after it is built, so the loop's selection is computed once
per class (``_null_plan``) and the after-hook skips the two tables' checks only where the class's table is
empty; where it is not, fhir_core's own ``_validate_required_primitive_elements``/``_validate_one_of_many``
run unchanged. The verdict on every input is fhir_core's (tests/omnicare/fhir/test_fhircore_plans.py compares
both on the Synthea sample and on broken lines).

How: the hooks were bound into every model's compiled pydantic schema when the classes were built, so
replacing the class attributes would miss the classes built already. Instead the hooks' *code* is replaced
(``__code__``): every schema keeps calling the same function objects, which now run the planned version. Their
globals are fhir_core's module, so the plan helpers are placed there under ``_omnicare_`` names. ``install``
refuses (and changes nothing) unless fhir_core's hooks are the ones this was written against.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

from fhir_core import fhirabstractmodel as fam
from fhir_core.utils import is_list_type, is_primitive_type

_NULL_PLANS: dict[type, tuple[tuple[str, str | None], ...]] = {}
_AFTER_PLANS: dict[type, tuple[bool, bool]] = {}


def _null_plan(cls: Any) -> tuple[tuple[str, str | None], ...]:
    """The fields ``reject_null_complex_elements`` looks at: lists of complex types (not the ``__ext`` lists,
    whose nulls are positional placeholders), with their alias."""
    plan = tuple((name, field.alias or None) for name, field in cls.model_fields.items()
                 if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext"))
    _NULL_PLANS[cls] = plan
    return plan


def _after_plan(cls: Any) -> tuple[bool, bool]:
    """Whether the class has required primitive elements / choice types at all (generated literals)."""
    probe = cls.model_construct()
    plan = (len(probe.get_required_fields()) > 0, len(probe.get_one_of_many_fields()) > 0)
    _AFTER_PLANS[cls] = plan
    return plan


# The two functions below replace the code of fhir_core's hooks; they run with fhir_core's module globals.

def _reject_null_complex_elements(cls, data):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
    if not isinstance(data, dict):
        return data
    plan = _omnicare_null_plans.get(cls)  # type: ignore[name-defined]  # noqa: F821
    if plan is None:
        plan = _omnicare_null_plan(cls)  # type: ignore[name-defined]  # noqa: F821
    errors = []
    for name, alias in plan:
        key = alias if alias and alias in data else name
        value = data.get(key)
        # ``None in value`` finds a None by identity first: the exact test below runs only on a hit
        if isinstance(value, list) and None in value and any(item is None for item in value):
            errors.append({
                "type": PydanticCustomError(  # noqa: F821
                    "list_type", "None is not allowed as an element of {field}", {"field": key}),
                "loc": (key,),
                "input": value,
            })
    if errors:
        raise ValidationError.from_exception_data(cls.__name__, errors)  # noqa: F821
    return data


def _validate_after_model_construction(self):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
    cls = self.__class__
    plan = _omnicare_after_plans.get(cls)  # type: ignore[name-defined]  # noqa: F821
    if plan is None:
        plan = _omnicare_after_plan(cls)  # type: ignore[name-defined]  # noqa: F821
    if plan[0]:
        self._validate_required_primitive_elements()
    if plan[1]:
        self._validate_one_of_many()
    return self


def _hooks_digest() -> str:
    src = "".join(inspect.getsource(getattr(fam.FHIRAbstractModel, n)) for n in _HOOKS)
    return hashlib.sha256(src.encode()).hexdigest()


_HOOKS = ("reject_null_complex_elements", "validate_after_model_construction")
#: sha256 of the source of the two hooks as fhir_core 1.1.12 ships them (what the versions above reproduce):
#: another fhir_core keeps its own hooks until this module is checked against it.
KNOWN_DIGEST = "c92bbd393ab065271fab847d76887c58d70b7d8585ce894fcaea608f3c75359b"
_installed = False
_ORIGINAL = (fam.FHIRAbstractModel.__dict__["reject_null_complex_elements"].__func__.__code__,
             fam.FHIRAbstractModel.__dict__["validate_after_model_construction"].__code__)


def install() -> bool:
    """Swap in the planned hooks once per process; False (nothing changed) for an fhir_core whose hooks differ."""
    global _installed  # noqa: PLW0603
    if _installed:
        return True
    if _hooks_digest() != KNOWN_DIGEST:
        return False
    fam.__dict__.update(_omnicare_null_plans=_NULL_PLANS, _omnicare_null_plan=_null_plan,
                        _omnicare_after_plans=_AFTER_PLANS, _omnicare_after_plan=_after_plan)
    model = fam.FHIRAbstractModel
    model.__dict__["reject_null_complex_elements"].__func__.__code__ = _reject_null_complex_elements.__code__
    model.__dict__["validate_after_model_construction"].__code__ = _validate_after_model_construction.__code__
    _installed = True
    return True


def uninstall() -> None:
    """fhir_core's own hooks again (the equivalence test compares both)."""
    global _installed  # noqa: PLW0603
    if _installed:
        model = fam.FHIRAbstractModel
        model.__dict__["reject_null_complex_elements"].__func__.__code__ = _ORIGINAL[0]
        model.__dict__["validate_after_model_construction"].__code__ = _ORIGINAL[1]
        _installed = False
