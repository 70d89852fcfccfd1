"""URL map: FHIR at /fhir/R4/, app APIs at /api/..., admin at /admin/, the PWA at / (WhiteNoise)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from omnicare.api import api
from omnicare.ops.views import prometheus

urlpatterns = [
    path("metrics", prometheus, name="metrics"),  # ops: Prometheus scrape (bearer token; off without one)
    path("admin/", admin.site.urls),
    path("", api.urls),
]

# scale: a database outage met in middleware answers 503 + Retry-After (see omnicare.core.views).
handler500 = "omnicare.core.views.server_error"
