"""Trial pages by keyset cursor: every trial exactly once while trials change state, the same order as one big
page for every sort, and a cursor that does not fit is a 422 naming it."""

from __future__ import annotations

import random

from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.store import lifecycle, queue, studies
from service.store.db import session_scope
from tests.test_trial_counts import _study


def _walk(client: TestClient, sid: str, limit: int, between: object = None, **params: str) -> list[dict]:
    """Every page by cursor (calling `between()` after each page); the items in the order they came."""
    seen: list[dict] = []
    cursor = None
    while True:
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/studies/{sid}/trials", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += body["items"]
        cursor = body["next_cursor"]
        if callable(between):
            between()
        if cursor is None:
            return seen


def test_cursor_pages_every_trial_once_while_trials_change_state(client: TestClient, ctx: Context) -> None:
    sid = _study(ctx, 60, 60, "walk")
    rng = random.Random(7)

    def churn() -> None:  # claims, finishes and give-backs between pages, and more trials at the end
        for _ in range(3):
            got = queue.claim(ctx.sessions, None, 30)
            if got is not None:
                action = rng.choice(["finish", "release", "keep"])
                if action == "finish":
                    queue.finish(ctx.sessions, got[0].lease, queue.Finish(state="complete", value=rng.random()), 9)
                elif action == "release":
                    queue.release(ctx.sessions, got[0].lease)

    churn()
    numbers = [t["number"] for t in _walk(client, sid, 7, between=churn)]
    assert numbers == sorted(set(numbers)) and set(range(60)) <= set(numbers)

    # Extended while walked backwards: each trial of the walk once, none twice.
    grown = [False]

    def extend_once() -> None:
        churn()
        if not grown[0]:
            lifecycle.extend(ctx.sessions, sid, 5, 1000)
            grown[0] = True

    numbers = [t["number"] for t in _walk(client, sid, 9, between=extend_once, order="desc")]
    assert numbers == sorted(set(numbers), reverse=True) and set(range(60)) <= set(numbers)

    # Filtered by state: the trials that stay queued throughout come once each, none twice.
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET max_concurrent_trials = 1000 WHERE id = :s"), {"s": sid})
    before = {t.number for t in studies.list_trials(ctx.sessions, sid, 0, 1000, "queued").items}
    walked = [t["number"] for t in _walk(client, sid, 4, between=churn, state="queued")]
    with session_scope(ctx.sessions) as s:
        still = set(s.execute(text("SELECT number FROM trials WHERE study_id = :s AND state = 'queued'"),
                              {"s": sid}).scalars())
    assert len(walked) == len(set(walked)) and (before & still) <= set(walked)


def test_cursor_walk_matches_one_page_for_every_sort(client: TestClient, ctx: Context) -> None:
    sid = _study(ctx, 40, 40, "sorts")
    rng = random.Random(3)
    claims = [queue.claim(ctx.sessions, None, 30) for _ in range(30)]
    for i, got in enumerate(claims):
        assert got is not None
        if i < 20:
            value = round(rng.choice([0.1, 0.2, 0.3, rng.random()]), 3)  # ties on the value
            queue.finish(ctx.sessions, got[0].lease, queue.Finish(
                state=rng.choice(["complete", "pruned"]), value=value), 9)
        elif i < 24:
            queue.finish(ctx.sessions, got[0].lease, queue.Finish(state="failed", failure_reason="x"), 99)
        elif i < 27:
            queue.release(ctx.sessions, got[0].lease, fault="disk full")
    for sort in ("number", "state", "value", "attempts", "duration"):
        for order in ("asc", "desc"):
            for state in (None, "complete"):
                params = {"sort": sort, "order": order, **({"state": state} if state else {})}
                whole = client.get(f"/v1/studies/{sid}/trials", params={**params, "limit": "500"}).json()
                assert whole["next_cursor"] is None
                walked = _walk(client, sid, 7, **params)
                keys = [(t["number"], t["state"]) for t in walked]
                if sort == "duration":  # unfinished trials' durations grew since the one page: compare membership
                    assert sorted(keys) == sorted((t["number"], t["state"]) for t in whole["items"])
                    assert len(keys) == len(set(keys))
                else:
                    assert keys == [(t["number"], t["state"]) for t in whole["items"]], params


def test_a_cursor_that_does_not_fit_is_a_422_naming_it(client: TestClient, ctx: Context) -> None:
    sid = _study(ctx, 12, 2, "bad")
    url = f"/v1/studies/{sid}/trials"
    first = client.get(url, params={"limit": 5}).json()
    assert first["total"] == 12 and first["next_cursor"]
    cursor = first["next_cursor"]
    cases = [
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": "bm90IGpzb24"}, "cursor"),  # base64 of "not json"
        ({"cursor": "WzEsMiwzXQ"}, "cursor"),  # [1,2,3]
        ({"cursor": "WyJudW1iZXIiLCJhc2MiLG51bGwsIngiLDQsMV0"}, "cursor"),  # a number sort with a text key
        ({"cursor": cursor, "sort": "value"}, "cursor"),
        ({"cursor": cursor, "order": "desc"}, "cursor"),
        ({"cursor": cursor, "state": "queued"}, "cursor"),
        ({"cursor": cursor, "offset": 5}, "offset"),
        ({"cursor": "A" * 2000}, "cursor"),
    ]
    for params, field in cases:
        r = client.get(url, params={"limit": 5, **params})
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["field"] == field, (params, r.json())
    second = client.get(url, params={"limit": 5, "cursor": cursor}).json()
    assert [t["number"] for t in second["items"]] == [5, 6, 7, 8, 9]
    # OFFSET paging still works, and hands a cursor on too.
    deep = client.get(url, params={"limit": 5, "offset": 10}).json()
    assert [t["number"] for t in deep["items"]] == [10, 11] and deep["next_cursor"] is None


def test_the_client_walks_by_cursor_over_a_real_server(live_server: str, token: str, ctx: Context) -> None:
    from service.client import StsweepClient

    sid = _study(ctx, 23, 2, "client")
    with StsweepClient(live_server, token) as api:
        page = api.list_trials(sid, limit=10, order="desc")
        numbers = [t.number for t in page.items]
        while page.next_cursor:
            page = api.list_trials(sid, limit=10, order="desc", cursor=page.next_cursor)
            numbers += [t.number for t in page.items]
    assert numbers == list(range(22, -1, -1)) and page.total == 23
