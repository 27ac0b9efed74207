"""`crop job` against a real projector server (uvicorn on loopback) with its jobs in the real Redis, run as the
user runs it: `crop` subprocesses. The submit --wait + results path runs a real `crop worker` (the fixture of
test_jobs_api) and compares the results with `crop project` on the same file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import test_jobs_api
from servers import free_port
from test_jobs_api import CROP, SPANISH, crop_project, projector

from crop.jobs.settings import JobSettings

# the fixtures of test_jobs_api: a database without workers, and one with a real `crop worker`
idle = test_jobs_api.idle
worker_jobs = test_jobs_api.worker_jobs


def crop_job(*args: str, server: str, api_key: str | None = None, cwd: Path | None = None,
             env_key: bool = False) -> subprocess.CompletedProcess[str]:
    """`crop job ARGS` with the server in CROP_SERVER_URL (and the key in --api-key, or CROP_API_KEY)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROP_")} | {"CROP_SERVER_URL": server}
    extra = []
    if api_key and env_key:
        env["CROP_API_KEY"] = api_key
    elif api_key:
        extra = ["--api-key", api_key]
    return subprocess.run([CROP, "job", *args, *extra], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_submit_wait_then_results_equal_crop_project(worker_jobs: JobSettings, tmp_path: Path) -> None:
    data = ("\n".join(SPANISH) + "\n").encode() + b"Caf\xe9 en Lima.\n"
    (tmp_path / "es.txt").write_bytes(data)
    ref_jsonl, ref_conll = crop_project(tmp_path, "es.txt", "--src-lang", "es")
    with projector(worker_jobs) as url:
        sub = crop_job("submit", "es.txt", "--src-lang", "es", "--wait", "--poll", "0.2", server=url, cwd=tmp_path)
        assert sub.returncode == 0, sub.stderr
        job = sub.stdout.splitlines()[-1]
        assert len(job) == 32 and "succeeded" in sub.stderr and "6/6 sentences" in one_line(sub.stderr)
        got = crop_job("results", job, "--output", "out.jsonl", server=url, cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert "warning" not in got.stderr
        conll = crop_job("results", job, "--output", "out.conll", "--format", "conll", server=url, cwd=tmp_path)
        assert conll.returncode == 0, conll.stderr
        status = crop_job("status", job, "--json", server=url)
        listed = crop_job("list", server=url)
    assert (tmp_path / "out.jsonl").read_bytes() == ref_jsonl
    assert (tmp_path / "out.conll").read_bytes() == ref_conll
    info = json.loads(status.stdout)
    assert info["id"] == job and info["state"] == "succeeded" and info["counts"]["failed"] == 1
    assert any(line.startswith(f"{job}\tsucceeded\t6/6\tes.txt") for line in listed.stdout.splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["es.txt", "out.conll", "out.jsonl", "ref.conll",
                                                          "ref.jsonl"]  # no temporary files left


def test_submit_wait_exits_1_when_the_job_fails(worker_jobs: JobSettings, tmp_path: Path) -> None:
    """Every line an object with a language but no text: each is a failed line, so the job fails."""
    (tmp_path / "bad.jsonl").write_text('{"lang": "es"}\n{"lang": "ca", "id": "x"}\n', encoding="utf-8")
    with projector(worker_jobs) as url:
        sub = crop_job("submit", str(tmp_path / "bad.jsonl"), "--wait", "--poll", "0.2", server=url)
    assert sub.returncode == 1, sub.stderr
    assert "failed" in sub.stderr and "every sentence failed" in one_line(sub.stderr)
    assert len(sub.stdout.splitlines()[-1]) == 32  # the id, even so


def test_submit_refused_names_the_problem_and_exits_2(idle: JobSettings, tmp_path: Path) -> None:
    (tmp_path / "es.txt").write_text("hola Juan\n", encoding="utf-8")
    with projector(idle) as url:
        no_lang = crop_job("submit", str(tmp_path / "es.txt"), server=url)
        bad_option = crop_job("submit", str(tmp_path / "es.txt"), "--src-lang", "es", "--policy", "loose",
                              server=url)
        missing = crop_job("submit", str(tmp_path / "nope.txt"), "--src-lang", "es", server=url)
        listed = crop_job("list", server=url)
    assert no_lang.returncode == 2 and "HTTP 422" in no_lang.stderr and "give src_lang" in one_line(no_lang.stderr)
    assert no_lang.stdout == ""
    assert bad_option.returncode == 2 and "query.policy" in one_line(bad_option.stderr)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert listed.stdout == ""  # no job


def test_server_down_exits_1(tmp_path: Path) -> None:
    (tmp_path / "es.txt").write_text("hola Juan\n", encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["submit", str(tmp_path / "es.txt"), "--src-lang", "es"], ["status", "x"], ["list"]):
        proc = crop_job(*args, server=url)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "connection failed" in one_line(proc.stderr) or "cannot be reached" in one_line(proc.stderr)


def test_cancel_status_and_partial_results_with_api_keys(idle: JobSettings, tmp_path: Path) -> None:
    (tmp_path / "es.txt").write_text("\n".join(SPANISH) + "\n", encoding="utf-8")
    (tmp_path / "out.jsonl").write_text("before\n", encoding="utf-8")
    with projector(idle, api_keys=("alice", "bob")) as url:
        sub = crop_job("submit", str(tmp_path / "es.txt"), "--src-lang", "es", server=url, api_key="alice",
                       env_key=True)
        assert sub.returncode == 0, sub.stderr
        job = sub.stdout.strip()
        assert crop_job("status", job, server=url, api_key="alice").stdout.strip() == "queued"
        other = crop_job("status", job, server=url, api_key="bob")
        assert other.returncode == 2 and "404" in other.stderr
        theirs = crop_job("results", job, "--output", str(tmp_path / "out.jsonl"), server=url, api_key="bob")
        assert theirs.returncode == 2 and "404" in theirs.stderr
        assert (tmp_path / "out.jsonl").read_text() == "before\n"  # a refused download leaves the output as it was
        cancel = crop_job("cancel", job, server=url, api_key="alice")
        assert cancel.returncode == 0 and cancel.stdout.strip() == "cancelled", cancel.stderr
        got = crop_job("results", job, "--output", str(tmp_path / "out.jsonl"), server=url, api_key="alice")
        assert got.returncode == 0, got.stderr
        assert "warning" in got.stderr and "cancelled" in got.stderr
        assert (tmp_path / "out.jsonl").read_text() == ""
        assert crop_job("list", server=url, api_key="bob").stdout == ""
        assert crop_job("list", server=url, api_key="alice").stdout.startswith(f"{job}\tcancelled\t0/5\tes.txt")


@pytest.mark.parametrize("args", [["results", "x", "--output", "o", "--format", "xml"], ["list", "--limit", "0"]])
def test_bad_usage_exits_2(args: list[str], tmp_path: Path) -> None:
    proc = crop_job(*args, server="http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr


def test_a_gzip_input_is_sent_decompressed(idle: JobSettings, tmp_path: Path) -> None:
    import gzip

    text = ("\n".join(SPANISH) + "\n").encode()
    (tmp_path / "es.txt.gz").write_bytes(gzip.compress(text))
    with projector(idle) as url:
        sub = crop_job("submit", str(tmp_path / "es.txt.gz"), "--src-lang", "es", server=url)
        assert sub.returncode == 0, sub.stderr
        info = json.loads(crop_job("status", sub.stdout.strip(), "--json", server=url).stdout)
    assert info["name"] == "es.txt.gz" and info["total"] == 5 and info["format"] == "text"
    assert (Path(idle.storage_root) / "jobs" / info["id"] / "input").read_bytes() == text
