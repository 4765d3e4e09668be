"""The dashboard in a real headless Chromium (Debian's), against a real uvicorn server and database: the pages,
charts and live updates; and what each role's token is shown and offered.

Screenshots of both pages land in test-artifacts/ at the repository root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from service.store import projects, queue
from service.context import Context
from service.core.schemas import ProjectCreate
from service.store.db import session_scope
from service.store.tokens import create_token
from tests.test_dashboard_api import curve, make_study, run_trial, seed, start_trial

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 20_000


@pytest.fixture
def server(live_server: str) -> str:
    return live_server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium for the module; each test opens its own pages (each page its own context: its own
    sessionStorage, so its own sign-in)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (install Debian's chromium package); CI must run browser tests")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); set CI=true to make this a failure")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def charts(page: object) -> dict[str, tuple[int, int]]:
    """{chart id: (traces drawn, trials or params drawn)} from the charts' data attributes."""
    pairs = page.evaluate(  # type: ignore[attr-defined]
        "[...document.querySelectorAll('.chart')].map(d => [d.id, +d.dataset.traceCount, +d.dataset.items])")
    return {chart: (traces, items) for chart, traces, items in pairs}


def test_dashboard_end_to_end(server: str, browser: object, ctx: Context, token: str) -> None:
    seeded = seed(ctx)
    sid = seeded.study_id
    other = make_study(ctx, n_trials=4, name="mpnet-quora")
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # No token: a sign-in form and no data.
    response = page.goto(server + "/")
    # Everything below runs under the dashboard's Content-Security-Policy: no inline or eval'd script.
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#sign-in-form", state="visible")
    assert page.is_hidden("#app") and page.locator("[data-study-id]").count() == 0
    page.fill("#token-input", "wrong-token")
    page.click("#sign-in-button")
    page.wait_for_selector("#sign-in-error", state="visible")
    page.fill("#token-input", token)
    page.click("#sign-in-button")

    # Studies page: both studies, the right counts, one running worker.
    row = page.wait_for_selector(f"tr[data-study-id='{sid}']")
    assert page.locator(f"tr[data-study-id='{other}']").count() == 1
    for state, n in (("complete", 3), ("pruned", 1), ("failed", 1), ("running", 1), ("queued", 6)):
        assert row.query_selector(f"[data-count='{state}']").inner_text() == f"{n} {state}"
    assert row.query_selector(f"[data-workers='{sid}']").inner_text() == "1"
    assert "running" in row.inner_text() and "5 / 12 trials" in row.inner_text()
    assert page.evaluate("sessionStorage.getItem('stsweep.token')") == token
    page.select_option("#status-filter", "queued")
    page.wait_for_selector(f"tr[data-study-id='{sid}']", state="detached")
    page.select_option("#status-filter", "")
    page.wait_for_selector(f"tr[data-study-id='{sid}']")
    page.screenshot(path=str(ARTIFACTS / "dashboard-studies.png"), full_page=True)

    # Study page: every chart drawn with the right number of traces, the trials table filled.
    page.click(f"tr[data-study-id='{sid}'] a.study-link")
    for chart in ("chart-history", "chart-curves", "chart-parallel", "chart-importance"):
        page.wait_for_selector(f"#{chart}[data-ready='1']")
    # history: trial values + best so far; curves: one trace per group (best, complete, running, pruned) + the
    # "pruned here" marks; parallel: one trace per objective bin in use + the colour bar; importance: the bars.
    assert charts(page) == {"chart-history": (2, 3), "chart-curves": (5, 5), "chart-parallel": (4, 3),
                            "chart-importance": (1, 5)}
    assert page.locator("#chart-history .scatterlayer .point").count() == 3
    assert page.locator("#chart-curves .scatterlayer .trace").count() == 5
    assert page.locator("#chart-importance .barlayer .point").count() == 5
    assert page.locator("#trials-table tbody tr").count() == 12
    # Each finished trial's Attempts cell says how its attempts ended (the trial's history).
    assert page.get_attribute("#trials-table tr[data-trial='1'] td.attempts", "title").startswith(
        "attempt 1: complete")
    assert page.get_attribute("#study-status", "data-status") == "running"
    assert page.inner_text("#best-params").count("0.8500") == 1

    # Live: a trial reported and finished through the queue shows up without a reload.
    page.evaluate("window.__sameDocument = true")
    queue.report(ctx.sessions, seeded.running, 512, 0.74)
    queue.finish(ctx.sessions, seeded.running, queue.Finish(state="complete", value=0.87), 3)
    new = run_trial(ctx, seeded.workers["w1"], "complete", curve(0.75, 0.86, 0.91), 0.91, i=7)
    page.wait_for_selector(f"#trials-table tr[data-trial='{new}'][data-state='complete']")
    page.wait_for_selector("#chart-parallel[data-items='5']", state="attached")
    # the running trial finished and is no longer the only "running" group; #6 is the new best
    assert charts(page) == {"chart-history": (2, 5), "chart-curves": (4, 6), "chart-parallel": (6, 5),
                            "chart-importance": (1, 5)}
    page.wait_for_selector("#study-counts [data-count='complete']:text('5 complete')")
    assert page.evaluate("window.__sameDocument") is True
    assert "0.9100" in page.inner_text("#summary-cards")
    page.wait_for_selector("#chart-importance[data-ready='1']")
    page.screenshot(path=str(ARTIFACTS / "dashboard-study.png"), full_page=True)

    # Stop: the status changes on the page and in the database.
    page.click("#btn-stop")
    page.wait_for_selector("#study-status[data-status='stopped']")
    assert page.is_disabled("#btn-stop") and page.is_enabled("#btn-resume")
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT status FROM studies WHERE id = :id"), {"id": sid}).scalar_one() == "stopped"

    # Workers view: gpu-box-2 picks up the other study's first trial.
    start_trial(ctx, seeded.workers["w2"], curve(0.5), 0)
    page.click("nav a[data-nav='workers']")
    busy = page.wait_for_selector(f"#workers-table tr[data-worker-id='{seeded.workers['w2']}']")
    assert page.locator("#workers-table tbody tr[data-worker-id]").count() == 2
    assert "busy" in busy.inner_text().lower() and f"{other} #0" in busy.inner_text()
    assert "gpu-box-1" in page.inner_text("#workers-table")
    assert "bf16: cuda" in page.inner_text("#workers-table") and "no native bf16" in busy.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-workers.png"), full_page=True)
    assert errors == []


def signed_in(browser: object, server: str, token: str, errors: list[str]) -> object:
    """A new page (its own session) signed in with `token`, on the studies list."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    page.fill("#token-input", token)
    page.click("#sign-in-button")
    page.wait_for_selector("#studies-table tbody tr")
    return page


def whoami(page: object) -> tuple[str | None, str | None, str]:
    """The top bar's (project, role, text)."""
    get = page.get_attribute  # type: ignore[attr-defined]
    return get("#whoami", "data-project"), get("#whoami", "data-role"), page.inner_text("#whoami")  # type: ignore


def test_each_role_sees_its_project_and_role_and_only_the_controls_it_may_use(
        server: str, browser: object, ctx: Context, token: str) -> None:
    alpha, bravo = "team-alpha", "team-bravo"
    for name in (alpha, bravo):
        projects.create_project(ctx.sessions, ProjectCreate(name=name))
    ours = make_study(ctx, n_trials=2, name="alpha-sweep", project=alpha)
    theirs = make_study(ctx, n_trials=2, name="bravo-sweep", project=bravo)
    viewer = create_token(ctx.sessions, "alpha-viewer", project=alpha, role="viewer")
    member = create_token(ctx.sessions, "alpha-member", project=alpha, role="member")
    errors: list[str] = []

    # A viewer: its project and role in the top bar, its project's study only, no project column, and on the
    # study page no control that writes (the checkpoint download, a pull, stays).
    page = signed_in(browser, server, viewer, errors)
    project, role, shown = whoami(page)
    assert (project, role) == (alpha, "viewer") and alpha in shown and "viewer" in shown
    assert page.locator("tr[data-study-id]").count() == 1 and page.locator(f"tr[data-study-id='{theirs}']").count() == 0
    assert page.locator("#project-filter").count() == 0 and page.locator("#studies-table td[data-project]").count() == 0
    page.click(f"tr[data-study-id='{ours}'] a.study-link")
    page.wait_for_selector("#study-status[data-status='queued']")
    assert page.inner_text("#study-project") == alpha
    assert page.locator("#btn-pause, #btn-resume, #btn-stop").count() == 0
    assert page.locator("#btn-download").count() == 1
    page.close()

    # A member of the same project: the same study, with the controls that change it, and they work.
    page = signed_in(browser, server, member, errors)
    assert whoami(page)[:2] == (alpha, "member")
    page.click(f"tr[data-study-id='{ours}'] a.study-link")
    page.wait_for_selector("#study-status[data-status='queued']")
    assert page.locator("#btn-pause, #btn-resume, #btn-stop").count() == 3
    page.click("#btn-pause")
    page.wait_for_selector("#study-status[data-status='paused']")
    page.close()

    # An admin (of `default`): every project's studies, each with its project, and a filter by project.
    page = signed_in(browser, server, token, errors)
    assert whoami(page)[:2] == ("default", "admin")
    page.wait_for_selector(f"tr[data-study-id='{theirs}']")
    for sid, name in ((ours, alpha), (theirs, bravo)):
        assert page.inner_text(f"tr[data-study-id='{sid}'] td[data-project]") == name
    page.wait_for_selector(f"#project-filter option[value='{bravo}']", state="attached")
    page.select_option("#project-filter", bravo)
    page.wait_for_selector(f"tr[data-study-id='{ours}']", state="detached")
    assert page.locator("tr[data-study-id]").count() == 1
    page.screenshot(path=str(ARTIFACTS / "dashboard-admin-projects.png"), full_page=True)
    page.close()
    assert errors == []
