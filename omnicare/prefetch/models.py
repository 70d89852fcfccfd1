"""The site's trained prefetch ranking, versioned (issue 13, item 2)."""

from __future__ import annotations

from django.db import models


class PrefetchModelVersion(models.Model):
    """One training run of the ranking for a site. The newest row of a site ranks its users' scopes.

    ``kind`` is ``learned`` (``blob`` holds the scikit-learn estimator, pickled; it is written and read only
    by the server) or ``heuristic`` (too little history: :func:`omnicare.prefetch.features.heuristic_scores`
    ranks, ``blob`` is empty). ``features`` names the feature columns, in order, so a row trained with
    another feature list is never applied to the wrong columns. No PHI: counts and feature names only."""

    LEARNED, HEURISTIC = "learned", "heuristic"

    site = models.CharField(max_length=64, default="default")
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=16)
    trained_at = models.DateTimeField()
    n_examples = models.PositiveIntegerField(help_text="user x patient x shift rows")
    n_positive = models.PositiveIntegerField(help_text="chart opens among them")
    features = models.JSONField(default=list)
    blob = models.BinaryField(blank=True, default=b"")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "version"], name="prefetch_site_version_uniq")]

    def __str__(self) -> str:
        return f"{self.site} v{self.version} ({self.kind}, {self.n_examples} examples)"

    @property
    def label(self) -> str:
        """What devices are told (``modelVersion``): ``<site>-v<n>`` or ``<site>-v<n>-heuristic``."""
        return f"{self.site}-v{self.version}" + ("-heuristic" if self.kind == self.HEURISTIC else "")
