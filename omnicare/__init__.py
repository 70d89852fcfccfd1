"""OmniCare server: Django (ASGI) + django-ninja + Channels + Celery."""

from .celery import app as celery_app

__all__ = ["celery_app"]
