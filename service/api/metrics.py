"""`GET /metrics` in the Prometheus text format: the queue, read from our tables at scrape time, and the API's
own request latency by route template.

- `QueueCollector`: a custom collector built for each scrape, that reads one snapshot
  (service/store/metrics_reads.py), so what workers and reapers in other processes did is counted wherever it
  happened;
- `stsweep_http_request_duration_seconds`: a histogram in the app's own CollectorRegistry (never
  prometheus_client's global one) that `HttpMetrics`, a small ASGI middleware in front of everything (the token
  guard included), fills with the route's template (`/v1/studies/{study_id}`), never the raw path, so a client
  cannot make up new series.

Who scrapes decides what the queue part shows. Without a token: totals only, naming no study and no project.
With a token (`Authorization: Bearer`; the guard answers 401 for one it cannot verify, it never falls back to
the anonymous answer): the per-project and per-study series too, of every project for an admin, of its own
project for anyone else. Whether the endpoint needs a token at all is STSWEEP_METRICS_NEED_TOKEN
(service/api/guard.py); default: no.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import fastapi.routing
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.guard import METRICS_PATH, verified_principal
from service.context import Context
from service.core.access import Principal
from service.core.errors import DatabaseUnavailable
from service.store.metrics_reads import QueueSnapshot, Series, snapshot

UNMATCHED = "unmatched"  # the route label of a request no route answers (404s, mistyped paths)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. Up to 5 min: checkpoint downloads stream for a long time.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

router = APIRouter(tags=["metrics"])


@router.get(METRICS_PATH, include_in_schema=False)  # documented in the README (not JSON, no token by default)
def metrics(request: Request) -> Response:
    """Queue, worker and request metrics in the Prometheus text format (OpenMetrics if the scraper asks for it):
    totals for anyone (unless STSWEEP_METRICS_NEED_TOKEN), per-project and per-study series for a token."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    queue = QueueCollector(request.app.state.ctx, series_for(verified_principal(request.scope)))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(Scrape(queue, registry)), media_type=content_type)


def series_for(principal: Principal | None) -> Series | None:
    """The per-project and per-study series a scraper sees: none without a token, every project's for an admin,
    its own project's for anyone else."""
    return None if principal is None else Series(principal.project_filter(None))


class Scrape:
    """What one scrape encodes: the queue as this scraper may see it, then the app's registry (the latency)."""

    def __init__(self, queue: QueueCollector, registry: CollectorRegistry) -> None:
        self.queue = queue
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.queue.collect()
        yield from self.registry.collect()


def install(app: FastAPI) -> CollectorRegistry:
    """Give `app` its registry, the latency middleware (outermost: call this after every other middleware is
    added) and the /metrics route (which reads the queue through the app's context, `app.state.ctx`)."""
    registry = CollectorRegistry()
    latency = Histogram("stsweep_http_request_duration_seconds",
                        "Time to answer an HTTP request (to the last byte), by method, route template and status.",
                        ["method", "route", "status"], registry=registry, buckets=LATENCY_BUCKETS)
    app.state.metrics_registry = registry
    app.add_middleware(HttpMetrics, histogram=latency, fastapi_app=app)
    app.include_router(router)
    return registry


# ------------------------------------------------------------------ the queue, at scrape time


class QueueCollector:
    """The queue's gauges from one database snapshot, with the per-project and per-study series of `series`
    (None: totals only, and those families are left out). With the database down, only `stsweep_database_up 0`
    (the scrape itself still succeeds)."""

    def __init__(self, ctx: Context, series: Series | None) -> None:
        self.ctx = ctx
        self.series = series

    def collect(self) -> Iterator[Metric]:
        try:
            snap = snapshot(self.ctx.sessions, self.ctx.settings.lease_seconds, self.series)
        except DatabaseUnavailable:
            snap = None
        yield from _totals(snap)
        if self.series is not None:
            yield from _per_project(snap)


def _totals(snap: QueueSnapshot | None) -> Iterator[Metric]:
    """The families that name no study and no project."""
    up = GaugeMetricFamily("stsweep_database_up", "1 if the last scrape could read the database, else 0.")
    up.add_metric([], 0.0 if snap is None else 1.0)
    yield up
    trials = GaugeMetricFamily("stsweep_trials", "Trials by state, across all studies.", labels=["state"])
    studies = GaugeMetricFamily("stsweep_studies", "Studies by status.", labels=["status"])
    claims = GaugeMetricFamily("stsweep_trial_claims", "Claims of trial slots by workers, given back or not, over "
                               "the trials in the database.")
    give_backs = GaugeMetricFamily("stsweep_trial_give_backs", "Claims given back to the queue without using up an "
                                   "attempt: requested (worker stopping, study stopped) or after a transient fault.",
                                   labels=["cause"])
    reaps = GaugeMetricFamily("stsweep_trial_reaps", "Attempts the reaper took back after their lease expired, over "
                              "the trials in the database.")
    expired = GaugeMetricFamily("stsweep_leases_expired", "Running trials whose lease has expired and that no reaper "
                                "has handled yet.")
    workers = GaugeMetricFamily("stsweep_workers_alive", "Workers not stopped whose last heartbeat is younger than "
                                "STSWEEP_LEASE_SECONDS, by device.", labels=["device"])
    rate = GaugeMetricFamily("stsweep_training_examples_per_second", "Training examples per second, summed over "
                             "the running trials, as each worker measures its current attempt.")
    if snap is not None:
        for state, n in snap.trials_by_state.items():
            trials.add_metric([state], n)
        for status, n in snap.studies_by_status.items():
            studies.add_metric([status], n)
        claims.add_metric([], snap.claims)
        for cause, n in snap.give_backs.items():
            give_backs.add_metric([cause], n)
        reaps.add_metric([], snap.reaps)
        expired.add_metric([], snap.leases_expired)
        for device, n in sorted(snap.workers_alive.items()):
            workers.add_metric([device], n)
        rate.add_metric([], snap.examples_per_second)
    yield from (trials, studies, claims, give_backs, reaps, expired, workers, rate)


def _per_project(snap: QueueSnapshot | None) -> Iterator[Metric]:
    """The families that name projects and studies (those of the snapshot's `Series`)."""
    project_trials = GaugeMetricFamily("stsweep_project_trials", "Trials by state, by project.",
                                       labels=["project", "state"])
    project_studies = GaugeMetricFamily("stsweep_project_studies", "Studies by status, by project.",
                                        labels=["project", "status"])
    study_trials = GaugeMetricFamily("stsweep_study_trials", "Trials by state of each queued, running or paused "
                                     "study.", labels=["project", "study_id", "state"])
    if snap is not None:
        for (project, state), n in sorted(snap.project_trials.items()):
            project_trials.add_metric([project, state], n)
        for (project, status), n in sorted(snap.project_studies.items()):
            project_studies.add_metric([project, status], n)
        for (project, study_id, state), n in sorted(snap.open_study_trials.items()):
            study_trials.add_metric([project, study_id, state], n)
    yield from (project_trials, project_studies, study_trials)


# ------------------------------------------------------------------ request latency


class HttpMetrics:
    """Times every HTTP request and records it under its route template. Outermost, so requests the guard refuses
    before routing (401, 413) are timed too: their template is looked up among the app's routes."""

    def __init__(self, app: ASGIApp, histogram: Histogram, fastapi_app: FastAPI) -> None:
        self.app = app
        self.histogram = histogram
        self.fastapi_app = fastapi_app
        self._templates: RouteTemplates | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started becomes a 500 further out

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.histogram.labels(method, self._template(scope), str(status)).observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)  # set by the router when a route took the request
        if isinstance(path, str) and path:
            return path
        if self._templates is None:  # the routes are all there once requests arrive
            self._templates = RouteTemplates(self.fastapi_app)
        return self._templates.find(scope["method"], scope["path"])


class RouteTemplates:
    """The app's route templates, to name a request that no route saw (the guard answered it): the first route
    whose path and method match, else the first whose path matches (the router's 405), else UNMATCHED."""

    def __init__(self, app: FastAPI) -> None:
        # FastAPI keeps an included router as one entry of app.routes; iter_route_contexts (what it builds the
        # OpenAPI from) yields the routes inside with their full paths. Older FastAPI copies them flat.
        iterate: Callable[[Sequence[BaseRoute]], Iterable[Any]] | None = getattr(
            fastapi.routing, "iter_route_contexts", None)
        routes = iterate(app.router.routes) if iterate is not None else app.router.routes
        self.routes: list[tuple[re.Pattern[str], str, frozenset[str] | None]] = []
        for route in routes:
            path = getattr(route, "path", None)
            if isinstance(path, str) and path:
                methods = getattr(route, "methods", None)
                self.routes.append((compile_path(path)[0], path, frozenset(methods) if methods else None))

    def find(self, method: str, path: str) -> str:
        partial = None
        for regex, template, methods in self.routes:
            if regex.match(path):
                if methods is None or method in methods:
                    return template
                partial = partial or template
        return partial or UNMATCHED
