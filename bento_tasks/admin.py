"""The "Bento" section of the Django admin: status, dead letters and failure reports, read from Redis.

Django's admin autodiscovery imports this module, which registers the three pages on the default
site; ``register(site)`` puts them on another ``AdminSite`` too. The pages read Redis at request
time (any web process shows the same numbers) and change it only on a confirmed POST: replaying
needs the ``change`` permission on dead letters, purging the ``delete`` one, viewing ``view``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.safestring import mark_safe

from . import policy
from .buffer import Buffer, DeadLetter, DeadLetterFilter, dead_letter_id, get_buffer
from .chart import last_hour_svg
from .exceptions import BufferUnavailable, ConfigurationError, InvalidEvent
from .models import DeadLetter as DeadLetterModel
from .models import FailureReport, Status
from .status import redis_text, snapshot

if TYPE_CHECKING:
    from django.db.models import Model

    # django-stubs makes ModelAdmin generic in its model; Django's class cannot be subscripted at run time.
    _ModelAdmin = admin.ModelAdmin[Model]
else:
    _ModelAdmin = admin.ModelAdmin

logger = logging.getLogger(__name__)

PAGE = 100  # dead letters per page
MAX_SCAN = 10_000  # entries a filtered page examines at most; the page says so and offers the next window
_REASON_LABELS = {
    policy.EXHAUSTED: "Retries exhausted",
    policy.UNANSWERED: "Unanswered (Bento may have them)",
    policy.WORKER_DIED: "A worker died posting them",
    policy.ISOLATED: "Failed while others passed",
    policy.REFUSED: "Refused by Bento",
    InvalidEvent.REASON: "Invalid event",
}
# Filter links for every kind of reason bento-tasks writes, from the code that writes them (any text
# works in ?reason=); a kind without a label here still gets a link.
REASONS = tuple(
    (text, _REASON_LABELS.get(text, text.capitalize())) for text in (*policy.BURY_REASONS, InvalidEvent.REASON)
)
STATUSES = ("none", "400", "408", "413", "422", "429", "500", "502", "503", "504")
STATUS_LABELS = {
    "queued": "Queued events",
    "in_flight": "Events in flight",
    "batches_in_flight": "Batches in flight",
    "dead": "Dead letters",
    "outbox": "Outbox rows waiting",
    "outbox_oldest_age": "Oldest outbox row",
    "delivered": "Events delivered",
    "failed": "Events Bento reported failed",
    "batches_delivered": "Batches delivered",
    "failure_reports": "Failure reports kept",
    "oldest_queued_age": "Oldest queued event",
    "paused_until": "Delivery paused until",
    "last_flush_age": "Last flush",
    "redis": "Redis",
    "settings": "Settings from",
}


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s ago" if value < 10 else f"{value:.0f} s ago"
    if value < 7200:
        return f"{value / 60:.0f} min ago"
    return f"{value / 3600:.1f} h ago"


def _display(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_age") and isinstance(value, (int, float)):
        return _seconds(float(value))
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _letter_row(index: int, letter: DeadLetter) -> dict[str, Any]:
    try:
        event: Any = json.loads(letter.event)
    except ValueError:
        event = None
    kind = event.get("type") if isinstance(event, dict) else None
    return {
        "index": index,
        "id": dead_letter_id(letter.raw),
        "ref": f"{index}:{dead_letter_id(letter.raw)}",
        "time": letter.time,
        "reason": letter.reason,
        "status": letter.status,
        "attempts": letter.attempts,
        "type": kind if isinstance(kind, str) else "",
        "email": letter.email or "",
    }


def _refs(values: Sequence[str]) -> list[tuple[int, str]]:
    refs = []
    for value in values[:PAGE]:
        index, _, letter_id = value.partition(":")
        if index.isdigit() and letter_id:
            refs.append((int(index), letter_id))
    return refs


class _RedisPages(_ModelAdmin):
    """Admin pages over Redis: the model is unmanaged, it gives the index entry and the permissions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def url(self, name: str, *args: Any) -> str:
        opts = self.opts
        return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}", args=args)

    def context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "title": title,
            "changelist_url": self.url("changelist"),
            **extra,
        }

    def page(self, request: HttpRequest, template: str, context: dict[str, Any]) -> TemplateResponse:
        request.current_app = self.admin_site.name
        return TemplateResponse(request, f"bento_tasks/{template}", context)

    def buffer(self) -> Buffer:
        try:
            return get_buffer()
        except ConfigurationError as exc:
            raise BufferUnavailable(str(exc)) from exc

    def view_only(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def check(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not self.has_view_permission(request):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(check)


class StatusAdmin(_RedisPages):
    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.view_only(self.status_view), name=name)]

    def status_view(self, request: HttpRequest) -> HttpResponse:
        context = self.context(request, "Bento status")
        try:
            buffer = self.buffer()
            status = snapshot(buffer)
            status["redis"] = redis_text(status["redis"])
            context["posts"] = buffer.recent_posts(20)
            context["chart"] = mark_safe(last_hour_svg(buffer.series(60)))  # numbers and escaped text only
        except BufferUnavailable as exc:
            context["error"] = str(exc)
            return self.page(request, "status.html", context)
        context["rows"] = [
            {
                "key": key,
                "label": STATUS_LABELS.get(key, key.replace("_", " ").capitalize()),
                "value": value,
                "display": _display(key, value),
                "text": isinstance(value, str),
            }
            for key, value in status.items()
            # the outbox figures only when it is on
            if not (key in ("outbox", "outbox_oldest_age") and status["outbox"] is None)
        ]
        context["paused"] = status.get("paused_until")
        return self.page(request, "status.html", context)


class DeadLetterAdmin(_RedisPages):
    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", self.view_only(self.list_view), name=f"{prefix}_changelist"),
            path("<int:index>/<str:letter_id>/", self.view_only(self.detail_view), name=f"{prefix}_detail"),
        ]

    @staticmethod
    def where(params: QueryDict) -> DeadLetterFilter:
        return DeadLetterFilter(
            reason=params.get("reason", "").strip(),
            status=params.get("status", "").strip().lower(),
            email=params.get("q", "").strip(),
        )

    @staticmethod
    def query(where: DeadLetterFilter, **extra: Any) -> str:
        params = {"reason": where.reason, "status": where.status, "q": where.email, **extra}
        return urlencode({k: v for k, v in params.items() if v not in ("", None)})

    def list_view(self, request: HttpRequest) -> HttpResponse:
        params = request.POST if request.method == "POST" else request.GET
        try:
            where = self.where(params)
        except ValueError as exc:
            messages.error(request, f"Ignored the status filter: {exc}")
            where = DeadLetterFilter(reason=params.get("reason", ""), email=params.get("q", ""))
        if request.method == "POST":
            return self.action(request, where)
        before = request.GET.get("before", "")
        context = self.context(
            request,
            "Dead letters",
            where=where,
            reasons=[(value, label, self.query(where, reason=value)) for value, label in REASONS],
            statuses=[(value, self.query(where, status=value)) for value in STATUSES],
            any_reason=self.query(DeadLetterFilter(status=where.status, email=where.email)),
            any_status=self.query(DeadLetterFilter(reason=where.reason, email=where.email)),
            filter_query=self.query(where),
            may_replay=self.has_change_permission(request),
            may_purge=self.has_delete_permission(request),
            max_scan=f"{MAX_SCAN:,}",
        )
        try:
            scan = self.buffer().scan_dead(where, int(before) if before.isdigit() else None, PAGE, MAX_SCAN)
        except BufferUnavailable as exc:
            context["error"] = str(exc)
            return self.page(request, "dead_letters.html", context)
        rows = [_letter_row(index, letter) for index, letter in scan.letters]
        for row in rows:
            row["url"] = self.url("detail", row["index"], row["id"])
        first = scan.total if not before.isdigit() else min(int(before), scan.total)
        context.update(
            scan=scan,
            rows=rows,
            total=f"{scan.total:,}",
            scanned=f"{scan.scanned:,}",
            high=f"{first:,}",
            low=f"{(scan.before or 0) + 1:,}",
            older=f"?{self.query(where, before=scan.before)}" if scan.before else None,
            newer=f"?{self.query(where, before=min(first + PAGE, scan.total))}"
            if where.empty and first < scan.total
            else None,
            newest=f"?{self.query(where)}" if before else None,
            oldest=f"?{self.query(where, before=min(PAGE, scan.total))}"
            if where.empty and scan.before and scan.before > PAGE
            else None,
        )
        return self.page(request, "dead_letters.html", context)

    def detail_view(self, request: HttpRequest, index: int, letter_id: str) -> HttpResponse:
        try:
            [found] = self.buffer().find_dead_letters([(index, letter_id)], window=1000)
        except BufferUnavailable as exc:
            context = self.context(request, "Dead letter", error=str(exc))
            return self.page(request, "dead_letter.html", context)
        if found is None:
            raise Http404("This dead letter is no longer in the list: it was replayed or purged.")
        at, letter = found
        event = letter.as_dict()["event"]
        context = self.context(
            request,
            "Dead letter",
            row=_letter_row(at, letter),
            event_json=json.dumps(event, indent=2, ensure_ascii=False) if not isinstance(event, str) else event,
            may_replay=self.has_change_permission(request),
            may_purge=self.has_delete_permission(request),
        )
        return self.page(request, "dead_letter.html", context)

    def action(self, request: HttpRequest, where: DeadLetterFilter) -> HttpResponse:
        action = request.POST.get("action", "")
        back = f"{self.url('changelist')}?{self.query(where)}"
        if action not in ("replay_selected", "replay_matching", "purge_selected"):
            messages.error(request, "Choose an action.")
            return HttpResponseRedirect(back)
        allowed = (
            self.has_delete_permission(request) if action == "purge_selected" else self.has_change_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        confirmed = request.POST.get("confirm") == "yes"
        user = request.user.get_username()
        try:
            buffer = self.buffer()
            if action == "replay_matching":
                if not confirmed:
                    sample = buffer.scan_dead(where, None, MAX_SCAN, MAX_SCAN)
                    return self.confirm(request, action, where, matched=len(sample.letters), scan=sample)
                moved = buffer.replay(where)
                logger.info("bento_tasks: %s replayed %d dead letter(s) matching %s from the admin", user, moved, where)
                self.message_user(request, f"{moved:,} event(s) put back on the queue.", messages.SUCCESS)
                return HttpResponseRedirect(back)
            found = [hit for hit in buffer.find_dead_letters(_refs(request.POST.getlist("selected"))) if hit]
            if not found:
                messages.warning(request, "No dead letter selected (or they were already replayed or purged).")
                return HttpResponseRedirect(back)
            if not confirmed:
                return self.confirm(request, action, where, rows=[_letter_row(i, letter) for i, letter in found])
            if action == "replay_selected":
                done = buffer.replay_letters(found)
                text = f"{done:,} event(s) put back on the queue."
            else:
                done = buffer.purge_letters(found)
                text = f"{done:,} dead letter(s) deleted."
        except BufferUnavailable as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(back)
        logger.info("bento_tasks: %s: %s of %d dead letter(s) from the admin: %d done", user, action, len(found), done)
        self.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(back)

    def confirm(self, request: HttpRequest, action: str, where: DeadLetterFilter, **extra: Any) -> HttpResponse:
        titles = {
            "replay_selected": "Replay the selected dead letters?",
            "replay_matching": "Replay every dead letter matching the filter?",
            "purge_selected": "Delete the selected dead letters for good?",
        }
        context = self.context(
            request,
            titles[action],
            action=action,
            where=where,
            selected=request.POST.getlist("selected")[:PAGE],
            back=f"{self.url('changelist')}?{self.query(where)}",
            **extra,
        )
        return self.page(request, "confirm.html", context)


class FailureReportAdmin(_RedisPages):
    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.view_only(self.list_view), name=name)]

    def list_view(self, request: HttpRequest) -> HttpResponse:
        offset = request.GET.get("offset", "")
        start = int(offset) if offset.isdigit() else 0
        context = self.context(request, "Failure reports")
        try:
            total, reports = self.buffer().failure_reports(PAGE, start)
        except BufferUnavailable as exc:
            context["error"] = str(exc)
            return self.page(request, "failure_reports.html", context)
        context.update(
            reports=reports,
            total=total,
            first=start + 1,
            last=start + len(reports),
            older=f"?offset={start + PAGE}" if start + PAGE < total else None,
            newer=f"?offset={max(0, start - PAGE)}" if start else None,
        )
        return self.page(request, "failure_reports.html", context)


def register(site: admin.AdminSite) -> None:
    """Put the Bento pages (status, dead letters, failure reports) on ``site``."""
    site.register(Status, StatusAdmin)
    site.register(DeadLetterModel, DeadLetterAdmin)
    site.register(FailureReport, FailureReportAdmin)


register(admin.site)
