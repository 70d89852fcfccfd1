"""CDS test fixtures: reuse the sync domain's tiny clinic helpers and its inline-Celery fixture."""

from tests.omnicare.sync.conftest import eager_celery  # noqa: F401 (fixture)
