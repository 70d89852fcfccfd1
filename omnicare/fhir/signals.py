"""Signals of the FHIR store.

``versions_written`` is sent by the write path (``services.resources_apply`` and everything built on it: REST,
transaction/batch Bundles, sync pushes, imports) right after the version rows are inserted, INSIDE the
transaction: ``sender`` is ``Resource``, ``versions`` the new ``ResourceVersion`` rows in seq order. Receivers
that talk to the outside world must defer with ``transaction.on_commit`` (a rolled-back write never happened).
"""

from __future__ import annotations

from django.dispatch import Signal

versions_written = Signal()
