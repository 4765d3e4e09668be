"""GET /metrics: a small study moved through every state with the queue's own functions (what workers and the
reaper do, without training), then scraped and parsed with prometheus_client's text parser; and what a scrape
shows to whom: totals only without a token, a project's series to its tokens, every project's to an admin."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import text

from service.api.app import create_app
from service.context import Context
from service.core.access import DEFAULT_PROJECT
from service.core.schemas import ProjectCreate
from service.core.spec import StudySpec
from service.settings import Settings
from service.store import projects, queue, studies
from service.store.db import session_scope
from service.store.reaper import reap_once
from service.store.tokens import create_token, revoke_token, verify_token
from tests.studyspecs import contract_study

LATENCY = "stsweep_http_request_duration_seconds"


def scrape(client: TestClient, **headers: str) -> dict[str, list[Sample]]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.samples for f in text_string_to_metric_families(r.text)}
    assert families and all(name.startswith("stsweep_") for name in families), sorted(families)
    return families


def by_label(samples: list[Sample], label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples}


def value(families: dict[str, list[Sample]], name: str) -> float:
    (sample,) = families[name]
    return sample.value


def new_study(ctx: Context, name: str, n_trials: int, max_attempts: int, project: str = DEFAULT_PROJECT) -> str:
    spec = StudySpec.model_validate(contract_study(
        name=name, budget={"n_trials": n_trials, "max_concurrent_trials": n_trials}, max_attempts=max_attempts))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", spec, None, {}, project=project)
    return study_id


def claim(ctx: Context, study_id: str) -> queue.Claim:
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None and got[1] == study_id
    return got[0]


def expire(ctx: Context, lease: queue.Lease) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": lease.trial_id})


def finish(ctx: Context, lease: queue.Lease, state: str) -> None:
    queue.finish(ctx.sessions, lease, queue.Finish(state=state, value=0.5 if state == "complete" else None,
                                                   failure_reason="boom" if state == "failed" else None),
                 pause_after_streak=3)


def test_trial_counts_claims_reaps_workers_and_rates_after_a_small_study(ctx: Context, client: TestClient) -> None:
    a = new_study(ctx, "a", n_trials=5, max_attempts=2)
    b = new_study(ctx, "b", n_trials=2, max_attempts=1)
    a0, a1, a2, a3, a4 = (claim(ctx, a) for _ in range(5))
    b0, b1 = claim(ctx, b), claim(ctx, b)
    finish(ctx, a0.lease, "complete")
    finish(ctx, a1.lease, "pruned")
    finish(ctx, a2.lease, "failed")
    queue.progress(ctx.sessions, b1.lease, 100, 1100, 10.0)  # the worker measured 100 examples/s
    queue.progress(ctx.sessions, a3.lease, 500, 1500, 2.0)  # 500/s, until its lease expires below
    expire(ctx, a3.lease)
    expire(ctx, b0.lease)

    m = scrape(client)
    assert value(m, "stsweep_database_up") == 1
    assert by_label(m["stsweep_trials"], "state") == {"queued": 0, "running": 4, "complete": 1, "pruned": 1,
                                                      "failed": 1}
    assert value(m, "stsweep_trial_claims") == 7
    assert by_label(m["stsweep_trial_give_backs"], "cause") == {"requested": 0, "fault": 0}
    assert value(m, "stsweep_leases_expired") == 2  # a3 and b0: expired, and no reaper ran yet
    assert value(m, "stsweep_trial_reaps") == 0
    assert value(m, "stsweep_training_examples_per_second") == pytest.approx(100.0)  # a3's lease is gone

    # The reaper re-queues a3 (an attempt left) and fails b0 (none left); a4 is given back twice, on a
    # graceful shutdown and after a transient fault (neither uses up an attempt); a3 is claimed again and
    # reports its new rate.
    assert {(r.number, r.state) for r in reap_once(ctx)} == {(3, "queued"), (0, "failed")}
    assert queue.release(ctx.sessions, a4.lease, "given back (worker stopping)")
    a3_again = claim(ctx, a)
    assert (a3_again.number, a3_again.attempt) == (3, 2)
    a4_again = claim(ctx, a)
    assert (a4_again.number, a4_again.attempt) == (4, 1)
    assert queue.release(ctx.sessions, a4_again.lease, "given back", "the database is unreachable")
    queue.progress(ctx.sessions, a3_again.lease, 600, 1600, 5.0)  # 200/s

    hosts = [("gpu-1", "cuda:0"), ("gpu-2", "cuda:0"), ("cpu-1", "cpu"), ("gpu-3", "cuda:0"), ("cpu-2", "cpu")]
    ids = [queue.register_worker(ctx.sessions, host, os.getpid(), device) for host, device in hosts]
    queue.worker_stopped(ctx.sessions, ids[3])
    with session_scope(ctx.sessions) as s:  # silent for longer than a lease (30 s in these settings)
        s.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '31 seconds' WHERE id = :w"),
                  {"w": ids[4]})

    m = scrape(client)
    trials = by_label(m["stsweep_trials"], "state")
    assert trials == {"queued": 1, "running": 2, "complete": 1, "pruned": 1, "failed": 2}
    with session_scope(ctx.sessions) as s:  # the same numbers the tables hold
        assert trials == {st: 0 for st in trials} | dict(s.execute(text(
            "SELECT state, count(*) FROM trials GROUP BY state")).all())
    per_study = {(s.labels["project"], s.labels["study_id"], s.labels["state"]): s.value
                 for s in m["stsweep_study_trials"]}  # the client's token is an admin's: it sees every study
    assert per_study == {("default", a, "complete"): 1, ("default", a, "pruned"): 1, ("default", a, "failed"): 1,
                         ("default", a, "running"): 1, ("default", a, "queued"): 1, ("default", b, "failed"): 1,
                         ("default", b, "running"): 1}
    assert by_label(m["stsweep_studies"], "status")["running"] == 2
    assert value(m, "stsweep_trial_claims") == 9  # a3 and a4 twice each, the other five once
    assert by_label(m["stsweep_trial_give_backs"], "cause") == {"requested": 1, "fault": 1}
    assert value(m, "stsweep_trial_reaps") == 2  # a3's first attempt, b0's only one
    assert value(m, "stsweep_leases_expired") == 0
    assert value(m, "stsweep_training_examples_per_second") == pytest.approx(300.0)
    assert by_label(m["stsweep_workers_alive"], "device") == {"cuda:0": 2, "cpu": 1}

    # Every trial finished: the study settles and leaves the per-study series; the rate drops to 0.
    finish(ctx, a3_again.lease, "complete")
    finish(ctx, claim(ctx, a).lease, "complete")  # a4
    finish(ctx, b1.lease, "complete")
    m = scrape(client)
    assert by_label(m["stsweep_trials"], "state") == {"queued": 0, "running": 0, "complete": 4, "pruned": 1,
                                                      "failed": 2}
    assert m["stsweep_study_trials"] == []
    assert by_label(m["stsweep_studies"], "status")["completed"] == 2
    assert value(m, "stsweep_training_examples_per_second") == 0
    assert value(m, "stsweep_trial_reaps") == 2 and value(m, "stsweep_trial_claims") == 10


def test_latency_is_recorded_by_route_template_never_the_raw_path(ctx: Context, client: TestClient) -> None:
    study = new_study(ctx, "lat", n_trials=1, max_attempts=1)
    assert client.get(f"/v1/studies/{study}").status_code == 200
    assert client.get("/v1/studies/st_0123456789abcdef").status_code == 404
    assert client.get(f"/v1/studies/{study}", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get(f"/v1/studies/{study}/trials/0").status_code == 200
    assert client.get("/v1/no/such/thing").status_code == 404
    assert client.request("BREW", "/v1/studies").status_code == 405

    m = scrape(client)
    counts = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
              for s in m[LATENCY] if s.name == f"{LATENCY}_count"}
    assert counts[("GET", "/v1/studies/{study_id}", "200")] == 1
    assert counts[("GET", "/v1/studies/{study_id}", "404")] == 1
    assert counts[("GET", "/v1/studies/{study_id}", "401")] == 1  # refused by the guard, before routing
    assert counts[("GET", "/v1/studies/{study_id}/trials/{number}", "200")] == 1
    assert counts[("GET", "unmatched", "404")] == 1
    assert counts[("other", "/v1/studies", "405")] == 1  # a made-up method is not a label value
    routes = {s.labels["route"] for s in m[LATENCY]}
    assert not any(study in r or "st_0123" in r or "such" in r for r in routes), routes
    buckets = [s for s in m[LATENCY] if s.name == f"{LATENCY}_bucket"
               and s.labels["route"] == "/v1/studies/{study_id}" and s.labels["status"] == "200"]
    assert {s.labels["le"] for s in buckets} >= {"0.005", "1.0", "300.0", "+Inf"}
    assert max(s.value for s in buckets) == 1

    assert ("GET", "/metrics", "200") in {(s.labels["method"], s.labels["route"], s.labels["status"])
                                          for s in scrape(client)[LATENCY]}


def test_each_app_has_its_own_registry(ctx: Context, client: TestClient) -> None:
    assert client.get("/v1/studies").status_code == 200
    with TestClient(create_app(ctx, run_reaper=False)) as other:
        routes = {s.labels["route"] for s in scrape(other).get(LATENCY, [])}
    assert "/v1/studies" not in routes, "a request to one app showed up in another's metrics"
    assert "/v1/studies" in {s.labels["route"] for s in scrape(client)[LATENCY]}


def test_openmetrics_when_the_scraper_asks(client: TestClient) -> None:
    r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF") and "stsweep_trials{state=\"queued\"} 0" in r.text


TOTALS = {"stsweep_database_up", "stsweep_trials", "stsweep_studies", "stsweep_trial_claims",
          "stsweep_trial_give_backs", "stsweep_trial_reaps", "stsweep_leases_expired", "stsweep_workers_alive",
          "stsweep_training_examples_per_second", LATENCY, f"{LATENCY}_created"}
PER_PROJECT = {"stsweep_project_trials", "stsweep_project_studies", "stsweep_study_trials"}
# Two projects with names (and study names) found nowhere else, so a leak is a plain substring.
ALPHA, BRAVO = "zebra-alpha-team", "quokka-bravo-lab"


@pytest.fixture
def two_projects(ctx: Context, client: TestClient) -> dict[str, list[str]]:
    """{project: its study ids}: ALPHA has a running study (2 trials running, 1 queued) and a stopped one (its
    trial stays queued), BRAVO a queued one (1 queued), `default` none. The admin client then reads both projects
    by name, so a route template or a raw path naming them would show in the latency series."""
    for name in (ALPHA, BRAVO):
        projects.create_project(ctx.sessions, ProjectCreate(name=name))
    running = new_study(ctx, "alpha-pangolin-sweep", n_trials=3, max_attempts=1, project=ALPHA)
    stopped = new_study(ctx, "alpha-narwhal-sweep", n_trials=1, max_attempts=1, project=ALPHA)
    assert client.post(f"/v1/studies/{stopped}/stop").status_code == 200
    for _ in range(2):  # before BRAVO has a study: whichever project the queue would pick, it is ALPHA's
        claim(ctx, running)
    bravo = new_study(ctx, "bravo-axolotl-sweep", n_trials=1, max_attempts=1, project=BRAVO)
    for name in (ALPHA, BRAVO):
        assert client.get(f"/v1/projects/{name}").status_code == 200
        assert client.get("/v1/studies", params={"project": name}).json()["total"] >= 1
    assert client.get(f"/v1/studies/{bravo}").status_code == 200
    return {ALPHA: [running, stopped], BRAVO: [bravo]}


def names_of(ctx: Context, ids: list[str]) -> list[str]:
    return [studies.get_study(ctx.sessions, i, with_spec=False).name for i in ids]


def by_labels(samples: list[Sample], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels[label] for label in labels): s.value for s in samples}


def test_without_a_token_totals_only_naming_no_study_and_no_project(
        ctx: Context, client: TestClient, two_projects: dict[str, list[str]]) -> None:
    with TestClient(create_app(ctx, run_reaper=False)) as anon:
        raw = anon.get("/metrics").text
        raw_openmetrics = anon.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
        m = scrape(anon)
    assert set(m) == TOTALS, sorted(m)
    ids = [i for group in two_projects.values() for i in group]
    for secret in [ALPHA, BRAVO, "default", *ids, *names_of(ctx, ids)]:
        assert secret not in raw and secret not in raw_openmetrics, secret
    # The totals count every project's trials and studies.
    assert by_label(m["stsweep_trials"], "state") == {"queued": 3, "running": 2, "complete": 0, "pruned": 0,
                                                      "failed": 0}
    assert by_label(m["stsweep_studies"], "status") == {"queued": 1, "running": 1, "stopped": 1, "paused": 0,
                                                        "completed": 0, "failed": 0}


def test_a_project_token_sees_its_project_and_nothing_of_another(
        ctx: Context, client: TestClient, two_projects: dict[str, list[str]]) -> None:
    member = create_token(ctx.sessions, "alpha-member", project=ALPHA, role="member")
    viewer = create_token(ctx.sessions, "bravo-viewer", project=BRAVO, role="viewer")
    (running, stopped), (bravo,) = two_projects[ALPHA], two_projects[BRAVO]

    r = client.get("/metrics", headers={"Authorization": f"Bearer {member}"})
    m = scrape(client, Authorization=f"Bearer {member}")
    assert set(m) == TOTALS | PER_PROJECT
    for secret in [BRAVO, "default", bravo, *names_of(ctx, [bravo])]:
        assert secret not in r.text, secret
    assert by_labels(m["stsweep_project_trials"], "project", "state") == {
        (ALPHA, "queued"): 2, (ALPHA, "running"): 2, (ALPHA, "complete"): 0, (ALPHA, "pruned"): 0,
        (ALPHA, "failed"): 0}
    assert {k: v for k, v in by_labels(m["stsweep_project_studies"], "project", "status").items() if v} == {
        (ALPHA, "running"): 1, (ALPHA, "stopped"): 1}
    assert by_labels(m["stsweep_study_trials"], "project", "study_id", "state") == {
        (ALPHA, running, "running"): 2, (ALPHA, running, "queued"): 1}  # the stopped study is not open
    assert sum(by_label(m["stsweep_trials"], "state").values()) == 5  # the totals: every project's trials

    m = scrape(client, Authorization=f"Bearer {viewer}")  # any role: what its project holds
    assert {labels[0] for labels in by_labels(m["stsweep_project_trials"], "project", "state")} == {BRAVO}
    assert by_labels(m["stsweep_study_trials"], "project", "study_id", "state") == {(BRAVO, bravo, "queued"): 1}
    assert stopped not in client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"}).text


def test_an_admin_sees_every_project(ctx: Context, client: TestClient, two_projects: dict[str, list[str]]) -> None:
    (running, _), (bravo,) = two_projects[ALPHA], two_projects[BRAVO]
    m = scrape(client)  # the client's token: an admin of `default`
    trials = by_labels(m["stsweep_project_trials"], "project", "state")
    assert {p for p, _ in trials} == {DEFAULT_PROJECT, ALPHA, BRAVO}  # every project, one without studies too
    assert {k: v for k, v in trials.items() if v} == {(ALPHA, "queued"): 2, (ALPHA, "running"): 2,
                                                      (BRAVO, "queued"): 1}
    assert {k: v for k, v in by_labels(m["stsweep_project_studies"], "project", "status").items() if v} == {
        (ALPHA, "running"): 1, (ALPHA, "stopped"): 1, (BRAVO, "queued"): 1}
    assert by_labels(m["stsweep_study_trials"], "project", "study_id", "state") == {
        (ALPHA, running, "running"): 2, (ALPHA, running, "queued"): 1, (BRAVO, bravo, "queued"): 1}


def test_a_token_that_fails_is_a_401_never_the_anonymous_answer(ctx: Context, client: TestClient) -> None:
    revoked = create_token(ctx.sessions, "gone", project=DEFAULT_PROJECT, role="viewer")
    revoke_token(ctx.sessions, verify_token(ctx.sessions, revoked).token_id)
    for header in ("Bearer sts_not-a-token", f"Bearer {revoked}", "Bearer ", "Basic cHJvbTpwcm9t"):
        r = client.get("/metrics", headers={"Authorization": header})
        assert r.status_code == 401, (header, r.text)
        assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


def test_no_token_needed_unless_the_setting_says_so(ctx: Context, settings: Settings) -> None:
    with TestClient(create_app(ctx, run_reaper=False)) as anon:
        assert anon.get("/metrics").status_code == 200
    locked = Context(settings.model_copy(update={"metrics_need_token": True}), settings.database_url or "")
    try:
        with TestClient(create_app(locked, run_reaper=False)) as c:
            r = c.get("/metrics")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert c.get("/metrics", headers={"Authorization": "Bearer sts_not-a-token"}).status_code == 401
            token = create_token(locked.sessions, "prometheus")
            assert value(scrape(c, Authorization=f"Bearer {token}"), "stsweep_database_up") == 1
            assert c.get("/healthz").status_code == 200  # the setting locks /metrics only
    finally:
        locked.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listening, so nobody else takes it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_with_the_database_down_the_scrape_says_so(settings: Settings, closed_port: int) -> None:
    down = Context(settings, f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port}/stsweep")
    try:
        with TestClient(create_app(down, run_reaper=False)) as c:
            m = scrape(c)
            # A scraper that sends a token (for the per-project series) still learns that the database is down:
            # no token can be checked, and the answer is the anonymous one, which says nothing else.
            with_token = scrape(c, Authorization="Bearer sts_cannot-be-checked")
    finally:
        down.close()
    for got in (m, with_token):
        assert value(got, "stsweep_database_up") == 0
        assert got["stsweep_trials"] == [] and got["stsweep_workers_alive"] == []
        assert not PER_PROJECT & set(got)
