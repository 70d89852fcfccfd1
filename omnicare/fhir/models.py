"""The versioned FHIR R4 store.

* ``Resource``: the current state of every resource (one row per type/id, tombstoned on delete).
* ``ResourceVersion``: append-only history; ``seq`` is the position in the one server-wide change feed.
* ``FeedCounter``: the single-row counter that hands out ``seq`` values on SQLite (PostgreSQL uses the sequence
  ``fhir_feed_seq`` and the snapshot horizon: ``omnicare.core.feed_horizon.feed_settled``).
* ``ResourcePatient``: patient-compartment membership of the current state (sync scope and access build on it).
* ``Search*``: search index rows computed on write for the parameters in ``omnicare.fhir.search``.
"""

from __future__ import annotations

from django.db import models


class FeedCounter(models.Model):
    """One row (id=1). ``value`` is the last ``seq`` handed out."""

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"feed counter at {self.value}"


class ResourceState(models.Model):
    """The columns of one version of a resource: the current row (:class:`Resource`) and every committed one
    (:class:`ResourceVersion`) are the same record (abstract: each table keeps its own keys and indexes)."""

    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    deleted = models.BooleanField(default=False)
    body = models.JSONField()

    class Meta:
        abstract = True


class Resource(ResourceState):
    """Current state of one resource. ``body`` is the stored JSON exactly, with server-set meta."""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resource_type", "resource_id"], name="fhir_resource_uniq")
        ]
        indexes = [models.Index(fields=["resource_type", "last_updated"], name="fhir_res_type_lu")]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id} v{self.version_id}{' (deleted)' if self.deleted else ''}"


class ResourceVersion(ResourceState):
    """One committed version (append-only). A delete is a version with ``deleted=True``."""

    seq = models.BigIntegerField(unique=True)
    # Patient compartment of this version (ids only): lets the sync feed filter by scope without a join.
    patient_ids = models.JSONField(default=list)
    # Who wrote this version, as a name ("Dr Alice Adams", else the user name); "" for imports. The conflict
    # screen says who made the change that won (issue 18 item 2). Not PHI: the staff member, not the patient.
    author = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["resource_type", "resource_id", "version_id"], name="fhir_version_uniq"
            )
        ]
        indexes = [models.Index(fields=["resource_type", "seq"], name="fhir_ver_type_seq")]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id} @{self.seq}"


class ResourcePatient(models.Model):
    """``resource`` belongs to the compartment of Patient ``patient_id`` (Patient → itself)."""

    # No index of its own: fhir_respat_uniq starts with it (a second index only cost every write its upkeep).
    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="patients", db_index=False)
    resource_type = models.CharField(max_length=64)
    patient_id = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resource", "patient_id"], name="fhir_respat_uniq")]
        indexes = [models.Index(fields=["patient_id", "resource_type", "resource"], name="fhir_respat_pat")]

    def __str__(self) -> str:
        return f"{self.resource_type} {self.resource_id} in Patient/{self.patient_id}"


class SearchRow(models.Model):
    """One indexed value of one search parameter of a resource: the columns every search table starts with
    (abstract: each table keeps its own columns and indexes)."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="+")
    resource_type = models.CharField(max_length=64)
    param = models.CharField(max_length=64)

    class Meta:
        abstract = True


class SearchToken(SearchRow):
    system = models.CharField(max_length=255, blank=True, default="")
    code = models.CharField(max_length=255)

    class Meta:
        # resource_id trails every lookup index: the "pk IN (subquery)" filters become index-only scans.
        indexes = [
            models.Index(
                fields=["resource_type", "param", "code", "system", "resource"], name="fhir_tok_lookup"
            )
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}.{self.param}={self.system}|{self.code}"


class SearchString(SearchRow):
    """``value`` is lowercased with diacritics removed; searched by prefix."""

    value = models.CharField(max_length=255)

    class Meta:
        indexes = [
            # varchar_pattern_ops makes LIKE 'abc%' use the index on PostgreSQL whatever the collation;
            # other backends ignore opclasses.
            models.Index(
                fields=["resource_type", "param", "value", "resource"],
                name="fhir_str_prefix",
                opclasses=["varchar_pattern_ops", "varchar_pattern_ops", "varchar_pattern_ops", "int8_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}.{self.param}={self.value}"


class SearchDate(SearchRow):
    """A date/period as the half-open instant range [start, end)."""

    start = models.DateTimeField()
    end = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(
                fields=["resource_type", "param", "start", "end", "resource"], name="fhir_date_start"
            ),
            models.Index(fields=["resource_type", "param", "end", "start", "resource"], name="fhir_date_end"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}.{self.param}=[{self.start},{self.end})"


class SearchReference(SearchRow):
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)

    class Meta:
        indexes = [
            models.Index(
                fields=["resource_type", "param", "target_id", "target_type", "resource"],
                name="fhir_ref_lookup",
            )
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}.{self.param}={self.target_type}/{self.target_id}"
