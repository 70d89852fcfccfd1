"""BrowserApp's part for issue 18 item 10 (unsaved work kept across the idle lock) and the sealed meta values
break-the-glass keeps. The rules are in ``pyclient.drafts``; this mixin seals, stores and opens.

A sealed meta value is one envelope (``BrowserApp._seal``: the device's data key, a reserved nonce, the AAD
binding its type and key), base64 in the meta store: IndexedDB never holds the draft's text in the clear.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

from pyclient import drafts as dr
from pyclient.errors import AppError


class DraftsMixin:
    """Relies on BrowserApp's ``_seal``, ``_open``, ``store`` and ``_keyring``."""

    async def _meta_seal(self, rtype: str, key: str, value: Mapping[str, Any] | None) -> None:
        store: Any = self.store  # type: ignore[attr-defined]
        if value is None:
            await store.meta_put(key, None)
            return
        blob = (await self._seal([(rtype, key, 0, value)]))[0]  # type: ignore[attr-defined]
        await store.meta_put(key, base64.b64encode(blob).decode("ascii"))

    async def _meta_open(self, rtype: str, key: str) -> dict[str, Any] | None:
        store: Any = self.store  # type: ignore[attr-defined]
        raw = await store.meta_get(key)
        if not raw:
            return None
        try:
            blob = base64.b64decode(raw)
        except ValueError:
            return None
        opened: list[dict[str, Any] | None] = await self._open([(rtype, key, 0, blob)])  # type: ignore[attr-defined]
        return opened[0]

    async def draft_keep(self, patient_id: str, form: str, values: Mapping[str, Any],
                         target: str = "") -> dict[str, Any]:
        """The lock is about to fire on an open form: seal what was typed (before the keys leave memory)."""
        if getattr(self, "_keyring", None) is None:
            return {"kept": False}
        draft = dr.draft_from(patient_id=patient_id, form=form, values=values, saved_at=int(time.time()), target=target)
        if draft is None:
            return {"kept": False}
        await self._meta_seal(dr.DRAFT_TYPE, dr.META_DRAFT, draft)
        return {"kept": True}

    async def draft_take(self, patient_id: str, form: str, target: str = "") -> dict[str, Any] | None:
        """The kept draft for this form, if any (it stays sealed on the device until saved or cancelled)."""
        if getattr(self, "_keyring", None) is None:
            raise AppError("The app is locked. Enter your PIN.", kind="locked")
        draft = await self._meta_open(dr.DRAFT_TYPE, dr.META_DRAFT)
        if not dr.draft_matches(draft, patient_id=patient_id, form=form, target=target):
            return None
        assert draft is not None
        return {"values": draft.get("values") or {}, "message": dr.draft_words()}

    async def draft_discard(self) -> dict[str, Any]:
        """Saved or cancelled: the draft goes."""
        store: Any = self.store  # type: ignore[attr-defined]
        await store.meta_put(dr.META_DRAFT, None)
        return {"discarded": True}
