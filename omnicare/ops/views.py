"""The operations and security dashboard (an admin page) and the Prometheus scrape endpoint.

The dashboard is server-rendered; ``static/ops/dashboard.js`` (served from our origin) re-fetches the
panels every ``OMNICARE_OPS_REFRESH_SECONDS`` and swaps them in. Every page view is audited; refreshes of
an open page are audited at most once per ``OMNICARE_OPS_AUDIT_REFRESH_SECONDS`` per session (with the
number of refreshes), so an open tab does not flood the trail.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from omnicare.access.roles import user_roles
from omnicare.audit.services import audit_record

from . import charts, metrics, services
from . import dashboard as figures

SESSION_AUDITED = "ops_dash_audited"


def _audit_view(request: HttpRequest, audiences: frozenset[str], *, refresh: bool) -> None:
    now = time.time()
    every = float(getattr(settings, "OMNICARE_OPS_AUDIT_REFRESH_SECONDS", 300))
    if refresh and now - float(request.session.get(SESSION_AUDITED, 0)) < every:
        return  # an open page refreshing: audited again once the interval has passed (no session write)
    audit_record(user=request.user, action="dashboard-view", category="security", purpose="HOPERAT",
                 resource_type="", detail={"panels": sorted(audiences), "view": "refresh" if refresh else "page"})
    request.session[SESSION_AUDITED] = now


def _refresh_rollups() -> None:
    """Without a beat (the embedded default) the page folds new audit events itself, a bounded batch; with a
    worker (``OMNICARE_OPS_INLINE_ROLLUP`` 0) the page only reads."""
    limit = int(getattr(settings, "OMNICARE_OPS_INLINE_ROLLUP", 20_000))
    read = services.audit_rollup_refresh(limit=limit) if limit > 0 else 0
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):  # no beat: alerts and storage, every 30 s at most
        services.ops_refresh(limit=0, min_interval=30.0)
    if read > 0:
        figures.snapshot_clear()  # without a beat the page just folded the latest events: show them


def context(request: HttpRequest, audiences: frozenset[str]) -> dict[str, Any]:
    metrics.BUFFER.flush()  # this process's last seconds of requests count too
    _refresh_rollups()
    data = figures.snapshot(audiences=audiences)
    ctx: dict[str, Any] = {"d": data, "ops": services.OPS in audiences, "security": services.SECURITY in audiences,
                           "refresh_seconds": int(getattr(settings, "OMNICARE_OPS_REFRESH_SECONDS", 15)),
                           "roles": sorted(user_roles(request.user))}
    if "sync" in data:
        s = data["sync"]
        labels = [f"{60 - i} min ago" for i in range(60)]
        ctx["chart_push"] = charts.bars(s["per_minute"]["push"], labels=labels, title="Pushes per minute, last hour")
        ctx["chart_pull"] = charts.bars(s["per_minute"]["pull"], labels=labels, title="Pulls per minute, last hour",
                                        color=charts.PALETTE[1])
        states = [(s["labels"][k], v) for k, v in s["by_state"].items()]
        ctx["chart_states"] = charts.stacked(states, title="Devices by state")
        ctx["state_rows"] = [{"key": k, "label": s["labels"][k], "n": v, "color": charts.legend_color(i)}
                             for i, (k, v) in enumerate(s["by_state"].items())]
    if "conflicts" in data:
        c = data["conflicts"]
        ctx["chart_conflicts"] = charts.bars(c["per_day"], labels=c["day_labels"], title="Conflicts per day",
                                             color=charts.PALETTE[3])
    if "storage" in data:
        dist = data["storage"]["distribution"]
        ctx["chart_storage"] = charts.bars(list(dist.values()), labels=list(dist.keys()),
                                           title="Devices by local storage used", color=charts.PALETTE[2])
    return ctx


@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    audiences = services.dashboard_audiences(user=request.user)
    services.forbid_unless(audiences)
    _audit_view(request, audiences, refresh=False)
    ctx = {**context(request, audiences), "title": "Operations and security", "has_permission": True,
           "site_header": "OmniCare administration", "site_title": "OmniCare"}
    return TemplateResponse(request, "ops/dashboard.html", ctx)


@never_cache
def panels(request: HttpRequest) -> HttpResponse:
    audiences = services.dashboard_audiences(user=request.user)
    services.forbid_unless(audiences)
    _audit_view(request, audiences, refresh=True)
    return TemplateResponse(request, "ops/_panels.html", context(request, audiences))


def prometheus(request: HttpRequest) -> HttpResponse:
    """``/metrics``: off (404) without ``OMNICARE_METRICS_TOKEN``; otherwise ``Authorization: Bearer <token>``."""
    token = str(getattr(settings, "OMNICARE_METRICS_TOKEN", "") or "")
    if not token:
        raise Http404("metrics are off")
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    metrics.BUFFER.flush()
    from prometheus_client import CONTENT_TYPE_LATEST

    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
