from __future__ import annotations

import logging

from django.apps import AppConfig


class Hl7Config(AppConfig):
    name = "omnicare.hl7"
    label = "hl7"
    verbose_name = "HL7 v2 interface"

    def ready(self) -> None:
        # python-hl7 logs the *field text* when an escape sequence is malformed (PHI): never let it through.
        logging.getLogger("hl7").setLevel(logging.CRITICAL)
        from . import signals  # noqa: F401, PLC0415 - outbound pharmacy orders on MedicationRequest writes; the app registry is ready only now
