"""The Prometheus metrics view (``bento_tasks.urls``).

Who may scrape: a request with ``Authorization: Bearer <BENTO_METRICS_TOKEN>`` (Prometheus'
``authorization`` scrape option), or a logged-in user with the ``bento_tasks.view_status``
permission (to look at it in a browser). Anyone else gets 401 (a token is set) or 403.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .conf import get_settings
from .exceptions import BufferUnavailable

_TEXT = "text/plain; charset=utf-8"


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    try:
        from .prometheus import bearer_matches, exposition
    except ImportError:
        return HttpResponse(
            "prometheus-client is not installed: pip install 'bento-tasks[prometheus]'\n",
            status=501,
            content_type=_TEXT,
        )
    token = get_settings().metrics_token
    user = getattr(request, "user", None)
    if not bearer_matches(request.headers.get("Authorization"), token) and not (
        user is not None and user.has_perm("bento_tasks.view_status")
    ):
        if token:
            response = HttpResponse(
                "send Authorization: Bearer <BENTO_METRICS_TOKEN>\n", status=401, content_type=_TEXT
            )
            response["WWW-Authenticate"] = "Bearer"
            return response
        return HttpResponse(
            "set BENTO_METRICS_TOKEN and scrape with it, or log in with the bento_tasks.view_status permission\n",
            status=403,
            content_type=_TEXT,
        )
    try:
        body, content_type = exposition()
    except BufferUnavailable as exc:
        return HttpResponse(f"{exc}\n", status=503, content_type=_TEXT)
    return HttpResponse(body, content_type=content_type)
