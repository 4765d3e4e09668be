"""`stsweep pull` against a hostile server: a small HTTP server on loopback (http.server in a thread) answers the
client's endpoints (the best checkpoint, the study, its trial) with broken or malicious variants, and the real
console script runs against each. Every refusal exits 1 within a few seconds with one `error:` line, writes
nothing outside the target folder, leaves no partial folder or download behind and prints no ESC byte.

One well-behaved answer proves the server and the checks are sound (the same pull succeeds)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.artifacts.archive import safe_extract
from service.artifacts.tar_guard import HeaderGuard, parse_pax_records
from service.core.errors import UnsafeArchive

STSWEEP = Path(sys.executable).parent / "stsweep"
STUDY = "st_0123456789abcdef"
WEIGHTS = os.urandom(3000)


# ---------------------------------------------------------------- archives, good and hostile


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes | None = b"payload", kind: bytes = tarfile.REGTYPE, link: str = "",
           **pax: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.pax_headers = pax
    if kind == tarfile.REGTYPE and data is not None:
        info.size = len(data)
    else:
        data = None
    return info, data


def model_tar() -> bytes:
    return tar_of([member("config.json", b'{"hidden_size": 8}'), member("model.safetensors", WEIGHTS)])


def raw_pax_tar(pax_data: bytes) -> bytes:
    """A pax header whose data is exactly `pax_data` (tarfile would not write a malformed one), then a file."""
    head = tarfile.TarInfo("././@PaxHeader")
    head.type = tarfile.XHDTYPE
    head.size = len(pax_data)
    block = head.tobuf(tarfile.USTAR_FORMAT)
    padding = b"\0" * (-len(pax_data) % tarfile.BLOCKSIZE)
    return block + pax_data + padding + tar_of([member("config.json")], fmt=tarfile.USTAR_FORMAT)


CVE_PAYLOAD = b"1" * (60 * 1024)  # under the size bound: tarfile's regexes would take seconds on 3.11.7


ARCHIVES: dict[str, Callable[[], bytes]] = {
    "huge_pax_header": lambda: tar_of([member("config.json", comment="x" * (512 * 1024))]),
    "quadratic_pax_header": lambda: raw_pax_tar(CVE_PAYLOAD),
    "huge_gnu_longname": lambda: tar_of([member("n" * (200 * 1024))], fmt=tarfile.GNU_FORMAT),
    "dotdot": lambda: tar_of([member("config.json"), member("../escape.txt")]),
    "absolute": lambda: tar_of([member("/tmp/stsweep-hostile-absolute.txt")]),
    "pax_path_dotdot": lambda: tar_of([member("innocent.txt", path="../escape.txt")]),
    "symlink": lambda: tar_of([member("link", kind=tarfile.SYMTYPE, link="/etc/passwd")]),
    "symlink_then_file": lambda: tar_of([member("d", kind=tarfile.SYMTYPE, link=".."),
                                         member("d/escape.txt")]),
    "hardlink": lambda: tar_of([member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")]),
    "device": lambda: tar_of([member("dev", kind=tarfile.CHRTYPE)]),
    "fifo": lambda: tar_of([member("fifo", kind=tarfile.FIFOTYPE)]),
}


# ---------------------------------------------------------------- the server


@dataclass
class Scenario:
    """How the server answers: the checkpoint (status, headers, body writer) and the JSON endpoints."""

    checkpoint: Callable[[BaseHTTPRequestHandler], None]
    study_json: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass
class Hostile:
    url: str = ""
    scenario: Scenario | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)


def study_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": STUDY, "name": "hostile", "project": "default", "status": "completed", "status_reason": None,
        "created_at": "2026-01-01T00:00:00Z", "started_at": None, "finished_at": None, "counts": {"complete": 1},
        "best": {"trial_number": 0, "value": 0.9, "params": {"learning_rate": 3e-5}}, "winner": None,
        "baseline": None, "test": None, "objective": {"metric": "spearman_cosine", "direction": "maximize"},
        "checkpoint_bytes": 0, "spec": {"base_model": "sentence-transformers/all-MiniLM-L6-v2"},
        "progress": {"trials_finished": 1, "n_trials": 1, "fraction": 1.0, "running": [], "elapsed_seconds": 1.0,
                     "eta_seconds": None},
    }
    body.update(overrides)
    return body


TRIAL = {"number": 0, "state": "complete", "params": {"learning_rate": 3e-5}, "value": 0.9, "attempts": 1,
         "failure_reason": None}


def send(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(body)


def send_json(h: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    send(h, status, {"Content-Type": "application/json", "Content-Length": str(len(data))}, data)


def checkpoint_headers(data: bytes, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/x-tar", "Content-Length": str(len(data)), "X-Trial-Number": "0",
               "X-Study-Id": STUDY, "X-Checksum-Sha256": hashlib.sha256(data).hexdigest(),
               "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
    headers.update(extra)
    return {k: v for k, v in headers.items() if v}


def serve_tar(data: bytes, **extra: str) -> Callable[[BaseHTTPRequestHandler], None]:
    return lambda h: send(h, 200, checkpoint_headers(data, **extra), data)


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    state = Hostile()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.requests.append(self.path)
            scenario = state.scenario
            assert scenario is not None
            try:
                if self.path.endswith("/best-checkpoint"):
                    scenario.checkpoint(self)
                elif self.path == f"/v1/studies/{STUDY}":
                    (scenario.study_json or (lambda h: send_json(h, 200, study_body())))(self)
                elif self.path == f"/v1/studies/{STUDY}/trials/0":
                    send_json(self, 200, TRIAL)
                else:
                    send_json(self, 404, {"error": {"code": "not_found", "message": "no such path"}})
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    state.stop.set()
    server.shutdown()
    server.server_close()


def drip(h: BaseHTTPRequestHandler, stop: threading.Event, piece: bytes, every: float) -> None:
    while not stop.wait(every):
        h.wfile.write(piece)
        h.wfile.flush()


def endless(h: BaseHTTPRequestHandler, stop: threading.Event, chunked: bool) -> None:
    block = b"\0" * 65536
    frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    while not stop.is_set():
        h.wfile.write(frame)


# ---------------------------------------------------------------- running the real CLI


def pull(hostile: Hostile, scenario: Scenario, tmp_path: Path, *extra: str,
         env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float, Path]:
    hostile.scenario = scenario
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    run_env.update(HOME=str(home), COLUMNS="200", TERM="xterm-256color", STSWEEP_URL=hostile.url,
                   STSWEEP_TOKEN="t", STSWEEP_READ_TIMEOUT="1.5", STSWEEP_CONNECT_TIMEOUT="2",
                   STSWEEP_MAX_DOWNLOAD_BYTES="4MiB", **(env or {}))
    start = time.monotonic()
    r = subprocess.run([str(STSWEEP), "pull", STUDY, "--out", str(work / "model"), *extra], env=run_env,
                       capture_output=True, text=True, timeout=60)
    return r, time.monotonic() - start, work


def refused(r: subprocess.CompletedProcess[str], seconds: float, work: Path, *needles: str) -> str:
    assert r.returncode == 1, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "\x1b" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert seconds < 10, f"took {seconds:.1f} s"
    assert list(work.iterdir()) == [], f"left behind: {list(work.iterdir())}"  # no folder, no part, no tar
    return lines[0]


def test_a_well_behaved_answer_is_pulled(hostile: Hostile, tmp_path: Path) -> None:
    r, _, work = pull(hostile, Scenario(serve_tar(model_tar())), tmp_path)
    assert r.returncode == 0, r.stderr
    assert (work / "model" / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in work.iterdir()) == ["model"]


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_hostile_archives_are_refused(hostile: Hostile, tmp_path: Path, case: str) -> None:
    outside = [Path("/tmp/stsweep-hostile-absolute.txt"), tmp_path / "escape.txt", tmp_path / "work" / "escape.txt"]
    r, seconds, work = pull(hostile, Scenario(serve_tar(ARCHIVES[case]())), tmp_path)
    refused(r, seconds, work, "archive")
    assert not any(p.exists() for p in outside)


@pytest.mark.parametrize("case", ["advertised_over_cap", "endless_close_delimited", "endless_chunked",
                                  "wrong_sha256", "gzip_bomb", "bad_headers"])
def test_hostile_downloads_are_refused(hostile: Hostile, tmp_path: Path, case: str) -> None:
    good = model_tar()
    stop = hostile.stop

    def advertised_over_cap(h: BaseHTTPRequestHandler) -> None:
        big = 64 * 1024 * 1024
        send(h, 200, checkpoint_headers(good, **{"Content-Length": str(big)}))
        endless(h, stop, chunked=False)

    def endless_body(chunked: bool) -> Callable[[BaseHTTPRequestHandler], None]:
        def answer(h: BaseHTTPRequestHandler) -> None:
            send(h, 200, checkpoint_headers(good, **{"Content-Length": "",
                                                     "Transfer-Encoding": "chunked" if chunked else ""}))
            endless(h, stop, chunked)
        return answer

    def gzip_bomb(h: BaseHTTPRequestHandler) -> None:
        bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
        send(h, 200, checkpoint_headers(bomb, **{"Content-Encoding": "gzip"}), bomb)

    answers: dict[str, tuple[Callable[[BaseHTTPRequestHandler], None], tuple[str, ...]]] = {
        "advertised_over_cap": (advertised_over_cap, ("67,108,864 bytes", "--max-bytes")),
        "endless_close_delimited": (endless_body(False), ("more than 4,194,304 bytes",)),
        "endless_chunked": (endless_body(True), ("more than 4,194,304 bytes",)),
        "wrong_sha256": (serve_tar(good, **{"X-Checksum-Sha256": "0" * 64}), ("sha256",)),
        "gzip_bomb": (gzip_bomb, ("Content-Encoding",)),
        "bad_headers": (serve_tar(good, **{"X-Trial-Number": "1; rm -rf"}), ("x-trial-number",)),
    }
    answer, needles = answers[case]
    r, seconds, work = pull(hostile, Scenario(answer), tmp_path)
    refused(r, seconds, work, *needles)


def test_bytes_past_the_announced_length_are_never_read(hostile: Hostile, tmp_path: Path) -> None:
    good = model_tar()
    answer = Scenario(lambda h: send(h, 200, checkpoint_headers(good), good + b"\0" * 1_000_000))
    r, _, work = pull(hostile, answer, tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["model"]
    assert (work / "model" / "model.safetensors").read_bytes() == WEIGHTS


def test_a_download_capped_below_its_size_by_max_bytes_is_refused(hostile: Hostile, tmp_path: Path) -> None:
    data = model_tar()
    r, seconds, work = pull(hostile, Scenario(serve_tar(data)), tmp_path, "--max-bytes", "1K")
    refused(r, seconds, work, f"{len(data):,} bytes", "1,024")


@pytest.mark.parametrize("case", ["drip_body", "drip_headers", "silent", "drip_study_answer"])
def test_slow_servers_cannot_hold_the_client(hostile: Hostile, tmp_path: Path, case: str) -> None:
    good = model_tar()
    stop = hostile.stop

    def drip_body(h: BaseHTTPRequestHandler) -> None:
        send(h, 200, checkpoint_headers(good, **{"Content-Length": "100000"}))
        drip(h, stop, b"\0", 0.1)

    def drip_headers(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
        drip(h, stop, b"a", 0.1)

    def silent(h: BaseHTTPRequestHandler) -> None:
        stop.wait(20)

    def drip_study(h: BaseHTTPRequestHandler) -> None:
        send(h, 200, {"Content-Type": "application/json", "Content-Length": "100000"}, b"{")
        drip(h, stop, b" ", 0.1)

    scenarios = {"drip_body": Scenario(drip_body), "drip_headers": Scenario(drip_headers),
                 "silent": Scenario(silent), "drip_study_answer": Scenario(serve_tar(good), drip_study)}
    r, seconds, work = pull(hostile, scenarios[case], tmp_path)
    line = refused(r, seconds, work)
    assert any(word in line for word in ("slow", "within 1.5 s", "ReadTimeout", "timed out")), line


def test_error_answers_are_printed_inert(hostile: Hostile, tmp_path: Path) -> None:
    message = ("no such study \x1b[2J\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\ [link=http://evil]x[/link]"
               "[/] \u202egnp.exe\x07\r")
    error = {"error": {"code": "not_found", "message": message, "field": "\x1b[31mid"}}
    r, seconds, work = pull(hostile, Scenario(lambda h: send_json(h, 404, error)), tmp_path)
    line = refused(r, seconds, work, "no such study click [link=http://evil]x[/link][/] gnp.exe")
    assert "\u202e" not in line and "\x07" not in line and "\r" not in line


# ---------------------------------------------------------------- the header guard, in process


def test_a_512_kib_pax_header_is_refused_in_well_under_a_second(tmp_path: Path) -> None:
    for name in ("huge_pax_header", "quadratic_pax_header", "huge_gnu_longname"):
        data = ARCHIVES[name]()
        start = time.monotonic()
        with pytest.raises(UnsafeArchive):
            safe_extract(io.BytesIO(data), tmp_path / name)
        assert time.monotonic() - start < 0.5, name
        assert not (tmp_path / name).exists()
    assert list(tmp_path.iterdir()) == []


def test_the_guard_follows_tarfiles_offsets_and_lets_good_archives_through(tmp_path: Path) -> None:
    # pax size records, long names, folders, empty files: everything build_tar and tarfile write
    data = tar_of([member("a" * 200 + "/" + "b" * 200 + ".txt", b"x" * 1000), member("dir", kind=tarfile.DIRTYPE),
                   member("dir/empty.txt", b""), member("dir/big.bin", os.urandom(70_000), comment="y" * 60_000)])
    safe_extract(io.BytesIO(data), tmp_path / "pax")
    assert (tmp_path / "pax" / "dir" / "big.bin").stat().st_size == 70_000
    gnu = tar_of([member("n" * 200 + "/" + "m" * 200, b"long"), member("ok.txt", b"fine")], fmt=tarfile.GNU_FORMAT)
    safe_extract(io.BytesIO(gnu), tmp_path / "gnu")
    assert (tmp_path / "gnu" / ("n" * 200) / ("m" * 200)).read_bytes() == b"long"
    # a pax size record of 0 puts the next header where the file's data seems to be: the guard reads it there
    pax = b"10 size=0\n"
    head = tarfile.TarInfo("././@PaxHeader")
    head.type, head.size = tarfile.XHDTYPE, len(pax)
    file_block = member("cover.txt", b"z" * 512)[0].tobuf(tarfile.USTAR_FORMAT)
    link_block = member("evil", kind=tarfile.SYMTYPE, link="/etc")[0].tobuf(tarfile.USTAR_FORMAT)
    crafted = (head.tobuf(tarfile.USTAR_FORMAT) + pax + b"\0" * (512 - len(pax)) + file_block + link_block
               + b"\0" * 1024)
    guard = HeaderGuard(io.BytesIO(crafted))
    with pytest.raises(UnsafeArchive, match="link or special"):
        while guard.read(100):
            pass


@pytest.mark.parametrize("data", [b"5 a=b\n", b"10 a=b\n", b"x a=b\n", b"6 ab\n\n", b"0 a=b\n", b"6 =bb\n",
                                  b"40 path=" + b"1" * 40 + b"\n"])
def test_malformed_pax_records_are_refused(data: bytes) -> None:
    with pytest.raises(UnsafeArchive):
        parse_pax_records(data)


def test_well_formed_pax_records_parse() -> None:
    assert parse_pax_records(b"10 size=5\n16 path=a/b.txt\n") == {b"size": b"5", b"path": b"a/b.txt"}
