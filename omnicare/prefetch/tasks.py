"""Celery jobs of the prefetch domain: the per-site training run (beat, ``prefetch-train`` in settings)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="omnicare.prefetch.train", ignore_result=True)
def train(site: str | None = None) -> dict[str, object]:
    """Beat: train the site's ranking from its history (or store the heuristic fallback); counts only."""
    row = services.prefetch_train(site=site)
    return {"site": row.site, "version": row.version, "kind": row.kind, "examples": row.n_examples,
            "opens": row.n_positive}
