"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application does

from omnicare.core.asgi_handler import ReusedThreadASGIHandler  # noqa: E402  (needs the app registry)

django_asgi_app = ReusedThreadASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from omnicare.audit.lifespan import lifespan_app  # noqa: E402
from omnicare.core.admission import AdmissionLimit  # noqa: E402
from omnicare.core.origin import SameOriginValidator  # noqa: E402
from omnicare.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # API requests wait in line for one of the pool's connections (see omnicare.core.admission).
        "http": AdmissionLimit(
            django_asgi_app, limit=settings.OMNICARE_MAX_CONCURRENT, queue_seconds=settings.OMNICARE_QUEUE_SECONDS
        ),
        # Origin check (scheme, host and port): a page on another origin cannot use our session cookie.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        # Graceful shutdown signs the audit tail this process stored (uvicorn's default --lifespan auto).
        "lifespan": lifespan_app,
    }
)
