"""Django's PostgreSQL backend with one addition: work that must run as the LAST statements of a transaction.

``connection.before_commit(fn)`` queues ``fn`` (no arguments) to run inside the transaction, right before
its ``COMMIT``, whoever opened the outermost ``transaction.atomic()`` (a service, the audited API request,
a Celery task). A rollback drops the queue. The change feed uses it to take its position at the very end
of the transaction (``omnicare.fhir.services``), so the one serialised section is microseconds long
instead of the whole request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._before_commit: list[Callable[[], None]] = []
        #: Per-transaction scratch space for the ``before_commit`` hooks; emptied at commit and rollback.
        self.tx_state: dict[str, Any] = {}

    def before_commit(self, fn: Callable[[], None]) -> None:
        self._before_commit.append(fn)

    def _commit(self) -> None:
        hooks, self._before_commit = self._before_commit, []
        try:
            for fn in hooks:
                fn()  # an error here makes Atomic roll back and re-raise: nothing half-committed
        finally:
            self.tx_state = {}
        super()._commit()

    def _rollback(self) -> None:
        self._before_commit, self.tx_state = [], {}
        super()._rollback()

    def _close(self) -> None:
        self._before_commit, self.tx_state = [], {}
        super()._close()
