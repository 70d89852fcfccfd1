"""Operations data: device telemetry (history + latest per device) and the rollups the dashboard reads.

Nothing here holds patient data: devices report counts, sizes, ages and versions (``pyclient.telemetry``);
rollups hold counts per minute/day. The dashboard reads only these tables (and small operational tables such
as break-the-glass grants), never scans the audit trail or the FHIR store at render time.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class DeviceReport(models.Model):
    """One telemetry report as received (history; see PROTOCOL.md §6)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    device_id = models.CharField(max_length=64)
    report_id = models.CharField(max_length=64)
    received = models.DateTimeField(db_index=True)
    reason = models.CharField(max_length=10)
    app_version = models.CharField(max_length=64)
    pending = models.PositiveIntegerField()
    conflicted = models.PositiveIntegerField()
    rejected = models.PositiveIntegerField()
    oldest_pending_age = models.FloatField(null=True, blank=True, help_text="seconds")
    last_sync_age = models.FloatField(null=True, blank=True, help_text="seconds")
    storage_used = models.BigIntegerField(null=True, blank=True)
    storage_quota = models.BigIntegerField(null=True, blank=True)
    storage_persisted = models.BooleanField(null=True, blank=True)
    records = models.PositiveIntegerField(null=True, blank=True)
    storage_idb = models.BigIntegerField(null=True, blank=True, help_text="bytes in IndexedDB")
    failed_unlocks = models.PositiveIntegerField(default=0)
    interval_seconds = models.FloatField(default=0.0)
    offline_seconds = models.FloatField(default=0.0)
    offline_ready_seconds = models.FloatField(default=0.0)
    kb_versions = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "device_id", "report_id"], name="ops_report_uniq")]
        indexes = [models.Index(fields=["user", "device_id", "received"], name="ops_report_device")]

    def __str__(self) -> str:
        return f"{self.device_id} report {self.received:%Y-%m-%d %H:%M}"


class DeviceHealth(models.Model):
    """The latest known state of one device (one row per device, updated by every report)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    device_id = models.CharField(max_length=64)
    first_report = models.DateTimeField()
    last_report = models.DateTimeField(db_index=True)
    reports = models.PositiveIntegerField(default=0)
    app_version = models.CharField(max_length=64, blank=True)
    pending = models.PositiveIntegerField(default=0)
    conflicted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    oldest_pending_at = models.DateTimeField(null=True, blank=True, db_index=True,
                                             help_text="server time of the oldest unsynced change")
    last_sync_at = models.DateTimeField(null=True, blank=True)
    storage_used = models.BigIntegerField(null=True, blank=True)
    storage_quota = models.BigIntegerField(null=True, blank=True)
    storage_persisted = models.BooleanField(null=True, blank=True)
    records = models.PositiveIntegerField(null=True, blank=True)
    storage_idb = models.BigIntegerField(null=True, blank=True, help_text="bytes in IndexedDB")
    kb_versions = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "device_id"], name="ops_health_uniq")]
        verbose_name_plural = "device health"

    def __str__(self) -> str:
        return f"{self.device_id} ({self.user})"


class Counter(models.Model):
    """A rollup: ``value`` summed per (``bucket``, ``key``). Minute buckets for rates, day buckets for history.

    Keys are fixed names (``audit.login.failure``, ``push.merged``, ``telemetry.interval_s``, ...), never data.
    """

    bucket = models.DateTimeField()
    key = models.CharField(max_length=100)
    value = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "bucket"], name="ops_counter_uniq")]
        indexes = [models.Index(fields=["bucket"], name="ops_counter_bucket")]  # retention deletes by age

    def __str__(self) -> str:
        return f"{self.key}@{self.bucket:%Y-%m-%d %H:%M} = {self.value:g}"


#: Request latency histogram bucket upper bounds in ms (the same buckets as the Prometheus histogram).
LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class RequestMinute(models.Model):
    """Requests per minute, route pattern (never the path: ids stay out), method and status, with a histogram."""

    minute = models.DateTimeField()
    route = models.CharField(max_length=120)
    method = models.CharField(max_length=8)
    status = models.PositiveSmallIntegerField()
    count = models.BigIntegerField(default=0)
    sum_ms = models.FloatField(default=0.0)
    # b0..b11: counts with latency <= LATENCY_BUCKETS_MS[i]; b11 = above the last bound.
    b0 = models.BigIntegerField(default=0)
    b1 = models.BigIntegerField(default=0)
    b2 = models.BigIntegerField(default=0)
    b3 = models.BigIntegerField(default=0)
    b4 = models.BigIntegerField(default=0)
    b5 = models.BigIntegerField(default=0)
    b6 = models.BigIntegerField(default=0)
    b7 = models.BigIntegerField(default=0)
    b8 = models.BigIntegerField(default=0)
    b9 = models.BigIntegerField(default=0)
    b10 = models.BigIntegerField(default=0)
    b11 = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "route", "method", "status"], name="ops_reqmin_uniq")]

    def __str__(self) -> str:
        return f"{self.minute:%H:%M} {self.method} {self.route} {self.status} x{self.count}"


class Watermark(models.Model):
    """How far an incremental rollup has read a source (e.g. the audit trail up to seq N)."""

    name = models.CharField(max_length=40, primary_key=True)
    position = models.BigIntegerField(default=0)
    updated = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.position}"


class Gauge(models.Model):
    """A measured value refreshed by a beat job (database size by resource type, queue depth, ...)."""

    key = models.CharField(max_length=100, primary_key=True)
    value = models.FloatField(default=0.0)
    detail = models.JSONField(default=dict)
    measured = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key} = {self.value:g}"


class VerifyRun(models.Model):
    """The result of one audit chain verification (``audit_verify``), run by a beat job."""

    started = models.DateTimeField()
    finished = models.DateTimeField()
    ok = models.BooleanField()
    events = models.BigIntegerField(default=0)
    problems = models.JSONField(default=list)

    class Meta:
        ordering = ["-started"]

    def __str__(self) -> str:
        return f"verify {self.started:%Y-%m-%d %H:%M} {'ok' if self.ok else 'FAILED'}"


class Alert(models.Model):
    """An alert raised by a threshold (settings ``OMNICARE_OPS_ALERT_*``); logged when it first fires."""

    key = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=40)
    audience = models.CharField(max_length=10)  # ops | security
    message = models.CharField(max_length=300)
    link = models.CharField(max_length=300, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    cleared = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return self.message


class Dashboard(models.Model):
    """No table: the admin entry ("Operations dashboard") whose page is ``omnicare.ops.views``."""

    class Meta:
        managed = False
        verbose_name = "operations dashboard"
        verbose_name_plural = "operations dashboard"
        default_permissions = ()

    def __str__(self) -> str:
        return "Operations dashboard"


class ResolutionCheck(models.Model):
    """Watches one stale edit's outcome for a later correction (conflict resolution accuracy).

    ``merge``: an automatic merge wrote ``version``; ``resolve``: a person resolved conflict ``ref`` and the
    record's version became ``version``. If, within ``OMNICARE_OPS_CORRECTION_HOURS``, a later version by anyone
    puts a field the outcome decided back to a value it overrode, the outcome was corrected. Ids only (no
    values are stored: the scan reads them from the record's history).
    """

    MERGE, RESOLVE = "merge", "resolve"

    kind = models.CharField(max_length=8)
    ref = models.CharField(max_length=64, blank=True, help_text="the conflict id (resolve)")
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    at = models.DateTimeField(db_index=True)
    corrected = models.BooleanField(null=True, blank=True, help_text="None while the window is open")
    corrected_version = models.PositiveIntegerField(null=True, blank=True)
    decided = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "resource_type", "resource_id", "version"],
                                               name="ops_rescheck_uniq")]
        indexes = [models.Index(fields=["decided", "at"], name="ops_rescheck_open")]

    def __str__(self) -> str:
        return f"{self.kind} {self.resource_type}/{self.resource_id}@{self.version}"
