from __future__ import annotations

from django.apps import AppConfig


class PrefetchConfig(AppConfig):
    name = "omnicare.prefetch"
    label = "prefetch"
