"""FHIR Bulk Data jobs ($export and $import): one row per kick-off, its issues, and where its files are.

Files live under ``settings.OMNICARE_BULK_DIR/<job id>/`` (NDJSON per type for an export; the uploaded
NDJSON for an import) and are deleted with the job when it expires or is cancelled. No clinical content
is kept in these rows: counts, ids, line numbers and OperationOutcomes whose text names elements only.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class BulkJob(models.Model):
    EXPORT, IMPORT = "export", "import"
    ACCEPTED, RUNNING, COMPLETED, FAILED, CANCELLED = "accepted", "in-progress", "completed", "failed", "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=10)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=12, default=ACCEPTED)
    request_url = models.TextField()
    # export: {"level": "system|patient|group", "group": id, "types": [...], "since": iso, "format": ...}
    params = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    transaction_time = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    # Progress checkpoint: an import resumes after ``lines_done``; an export after the type/pk it reached.
    lines_done = models.BigIntegerField(default=0)
    lines_total = models.BigIntegerField(null=True, blank=True)
    checkpoint = models.JSONField(default=dict)
    counts = models.JSONField(default=dict)  # per type: resources written (import) / exported
    output = models.JSONField(default=list)  # manifest output[]: {"type", "file", "count"}
    attempts = models.PositiveIntegerField(default=0)
    failure = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "expires"], name="bulk_job_expiry")]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} {self.status}"


class BulkIssue(models.Model):
    """One problem with one input line (import) or one resource type (export), written with its batch."""

    job = models.ForeignKey(BulkJob, on_delete=models.CASCADE, related_name="issues")
    line = models.BigIntegerField(null=True, blank=True)
    severity = models.CharField(max_length=12)  # error | warning | information
    code = models.CharField(max_length=32)
    diagnostics = models.TextField()
    expression = models.JSONField(default=list)

    class Meta:
        indexes = [models.Index(fields=["job", "line"], name="bulk_issue_line")]

    def __str__(self) -> str:
        return f"{self.job_id} line {self.line}: {self.severity} {self.code}"
