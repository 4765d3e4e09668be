"""The CLI prints what the server holds as inert text: a data set file name, a study name, status reason, trial
parameters and failure reason full of rich markup (`[link=...]`, `[hidden]`, the unbalanced `[/]` that makes rich
raise) and terminal escapes (OSC 8 hyperlinks, CSI, bidi overrides) are shown literally, minus the control codes,
by the real `stsweep datasets ls`, `ls`, `status ID` and `best ID` against a live server. Values the API would
refuse are written with SQL, as old rows (or another server) may hold them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from service.client.study_files import parse_study_text
from service.context import Context
from service.store import queue
from tests.test_cli import PAIRS, STUDY_YAML, api, cli_env, ok, server, stsweep, write_jsonl  # noqa: F401

MARKUP = "[link=http://evil]x[/link][hidden]"
OSC_LINK = "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\"
NAME = "[bold red]n[/] [link=http://evil]y[/link]\x1b[2J"
REASON = "[/] \x1b[31mred\x1b[0m \u202eevil\u202c [hidden]secret[/hidden]\x07"
FAILURE = "[/]\x1b[5mblink \x9b31m [conceal]shh[/conceal]"
PARAM = "[link=http://evil]L[/link]\x1b]8;;http://evil\x07"


def test_server_text_is_printed_inert(cli_env: dict[str, str], server: str, token: str, ctx: Context,
                                      data_root: Path, tmp_path: Path) -> None:
    write_jsonl(data_root / "stsb" / "train.jsonl", PAIRS)
    write_jsonl(data_root / "stsb" / "dev.jsonl", PAIRS[:6])
    rows = "".join(json.dumps(r) + "\n" for r in PAIRS).encode()
    with api(server, token) as http:
        fields = {"task": "scored_pairs", "score_range": "[0, 5]"}
        first = http.post("/v1/datasets", data=fields, files={"file": ("first.jsonl", rows)})
        second = http.post("/v1/datasets", data=fields, files={"file": ("plain.jsonl", rows + rows.splitlines(keepends=True)[0])})
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        created = http.post("/v1/studies", json=parse_study_text(STUDY_YAML, "study.yaml", is_json=False))
        assert created.status_code == 201, created.text
    study_id = created.json()["id"]

    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None
    claim, _ = got
    queue.set_params(ctx.sessions, claim.lease, {"loss": PARAM, PARAM: 1}, claim.number)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.5, metrics={}),
                 pause_after_streak=3)
    with ctx.sessions() as s:
        for dataset, name in ((first, f"{MARKUP}.jsonl"), (second, f"{OSC_LINK}[/]")):  # (uploads keep a base name)
            s.execute(text("UPDATE datasets SET filename = :f WHERE id = :id"), {"f": name, "id": dataset.json()["id"]})
        s.execute(text("UPDATE studies SET name = :n, status_reason = :r WHERE id = :id"),
                  {"n": NAME, "r": REASON, "id": study_id})
        s.execute(text("UPDATE trials SET failure_reason = :f WHERE number = 0"), {"f": FAILURE})
        s.commit()

    outputs = {
        "datasets ls": ok(stsweep("datasets", "ls", env=cli_env)),
        "ls": ok(stsweep("ls", env=cli_env)),
        "status": ok(stsweep("status", study_id, env=cli_env)),
        "best": ok(stsweep("best", study_id, env=cli_env)),
    }
    for command, out in outputs.items():
        for byte in ("\x1b", "\x07", "\x9b", "\u202e", "\u202c"):
            assert byte not in out, (command, byte, out)
    assert f"{MARKUP}.jsonl" in outputs["datasets ls"]
    assert "click[/]" in outputs["datasets ls"] and "http://evil" not in outputs["datasets ls"].replace(MARKUP, "")
    for command in ("ls", "status", "best"):
        assert "[bold red]n[/] [link=http://evil]y[/link]" in outputs[command], (command, outputs[command])
    assert "[/] red evil [hidden]secret[/hidden]" in outputs["status"]
    assert "[/]blink [conceal]shh[/conceal]" in outputs["status"]
    assert "loss=[link=http://evil]L[/link]" in outputs["status"]
    assert "loss = [link=http://evil]L[/link]" in outputs["best"]
    assert "[link=http://evil]L[/link] = 1" in outputs["best"]
