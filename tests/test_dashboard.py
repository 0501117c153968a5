"""`migrator dashboard` and /metrics, as an operator runs them: a process of its own over
the batches' Redis; the page in a real headless Chromium (Debian's) while a batch runs
through a Celery worker; /metrics read with prometheus_client's own parser."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests
from celerykit import cli, enqueue
from opskit import artifacts, big_message, chromium, dashboard
from prometheus_client.parser import text_string_to_metric_families
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from support import batch_password, eventually, imaps, individual_jobs, run_options, source_row

from migrator.report import MailboxResult, MailboxState
from migrator.runner import execute_job
from migrator.secrets import SecretBox
from migrator.state import StateStore


def one_good_one_bad(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    store: StateStore,
    batch_id: str,
) -> None:
    """A batch of two mailboxes run in this process: one copied with a message the target
    refuses, one whose source password is wrong."""
    password = batch_password("metrics")
    good, bad = make_user(password), make_user(password)
    fill(good, {"INBOX": 5, "Archive": 2}, password, size_hint=1_500)
    fill.append(good, "INBOX", [big_message(901)], password)
    box = SecretBox.from_env()
    rows = [
        source_row(imaps(dovecot), good, password, make_user(server=limited_dovecot)),
        source_row(imaps(dovecot), bad, "wrong-" + password, make_user(server=limited_dovecot)),
    ]
    jobs = individual_jobs(rows, run_options(limited_dovecot, tls_files.ca_cert), box)
    store.create_batch(batch_id, {}, jobs)
    for job in jobs:
        execute_job(store, batch_id, job.job_id, box)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_and_their_counters_match_the_status_totals(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    one_good_one_bad(dovecot, limited_dovecot, make_user, fill, tls_files, store, "m1")
    _, raw = cli(["status", "m1", "--json"])
    totals = json.loads(raw)["totals"]

    with dashboard(celery_env, tmp_path / "dashboard.log") as base:
        response = requests.get(base + "/metrics", timeout=10)

    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain; version=0.0.4"
    )
    got = samples(response.text)
    batch = (("batch", "m1"),)
    assert got[("migrator_messages_copied_total", batch)] == totals["copied_messages"] == 7
    assert got[("migrator_messages_done", batch)] == totals["done_messages"] == 7
    assert got[("migrator_messages_listed", batch)] == totals["total_messages"] == 8
    assert got[("migrator_bytes_done", batch)] == totals["done_bytes"]
    assert got[("migrator_messages_skipped_total", batch)] == totals["skipped_messages"] == 1
    assert got[("migrator_bytes_copied_total", batch)] > 0
    assert got[("migrator_mailboxes", (("batch", "m1"), ("state", "synced")))] == 1
    assert got[("migrator_mailboxes", (("batch", "m1"), ("state", "failed")))] == 1
    kind = (("batch", "m1"), ("kind", "AUTHENTICATIONFAILED"))
    assert got[("migrator_mailbox_errors", kind)] == 1
    assert ("migrator_throttle_wait_seconds_total", batch) in got


def test_off_loopback_the_dashboard_asks_for_its_token_and_is_read_only(
    celery_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["dashboard", "--host", "0.0.0.0"])[0] == 2
    assert "only with a token" in capsys.readouterr().err
    token = tmp_path / "token"
    token.write_text("s3cret-Tök\n")

    with dashboard(celery_env, tmp_path / "dashboard.log", "--token-file", str(token)) as base:
        bare = requests.get(base + "/api/batches", timeout=10)
        health = requests.get(base + "/healthz", timeout=10)  # for a container's healthcheck
        bearer = requests.get(
            base + "/metrics", headers={"Authorization": "Bearer s3cret-Tök"}, timeout=10
        )
        basic = base64.b64encode("ops:s3cret-Tök".encode()).decode()
        browser = requests.get(base + "/", headers={"Authorization": f"Basic {basic}"}, timeout=10)
        wrong = requests.get(base + "/", auth=("ops", "guess"), timeout=10)
        write = requests.post(
            base + "/api/batches", headers={"Authorization": f"Basic {basic}"}, timeout=10
        )

    assert bare.status_code == 401 and "Basic" in bare.headers["www-authenticate"]
    assert (health.status_code, health.text) == (200, "ok")
    assert bearer.status_code == 200 and browser.status_code == 200
    assert "default-src 'self'" in browser.headers["content-security-policy"]
    assert wrong.status_code == 401
    assert write.status_code == 405


def test_the_page_follows_a_batch_through_a_celery_worker_by_itself(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = batch_password("dashboard")
    good, bad = make_user(password), make_user(password)
    fill(good, {"INBOX": 30, "Archive/2019": 10}, password, size_hint=3_000)
    fill.append(good, "INBOX", [big_message(902)], password)
    pairs = [
        (good, password, make_user(server=limited_dovecot)),
        (bad, "wrong-" + password, make_user(server=limited_dovecot)),
    ]
    shot = artifacts()
    log = tmp_path / "dashboard.log"

    with dashboard(celery_env, log, "--refresh", "0.3") as base, chromium() as driver:
        # The page redraws itself: read it in one script each time, never hold an element.
        def text(selector: str) -> str:
            return str(
                driver.execute_script(
                    "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                    selector,
                )
            )

        def click(selector: str) -> None:
            driver.execute_script("document.querySelector(arguments[0]).click()", selector)

        driver.get(base + "/")
        eventually(lambda: bool(text("#no-batches")), what="the empty list")
        driver.execute_script("window.notReloaded = true")

        batch_id = enqueue(
            tmp_path, imaps(dovecot), imaps(limited_dovecot), tls_files.ca_cert, pairs
        )
        row = f'tr[data-batch="{batch_id}"]'
        eventually(lambda: bool(text(row)), what="the batch appearing by itself")
        assert "2 queued" in text(row)
        workers.start("worker1", concurrency=2)
        click(f"{row} a")
        states = "tr[data-job] td.state-cell"
        eventually(lambda: bool(text(states)), what="the batch page")

        def ended() -> bool:
            got = driver.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", states
            )
            return bool(got == ["synced", "failed"])

        eventually(ended, timeout=120, what="both mailboxes ending on the page")
        eventually(lambda: "AUTHENTICATIONFAILED" in text("#errors"), what="the error group")
        assert bad in text("#errors") and "authentication failed" in text("#errors").lower()
        assert "ended" in text(".cards")
        synced_at = driver.execute_script(
            "return [...document.querySelectorAll('tr[data-job] td.last-sync')]"
            ".map(e => e.innerText)"
        )
        assert synced_at[0].endswith(" ago") and synced_at[1] == "", synced_at
        driver.save_screenshot(str(shot / "dashboard-batch.png"))

        click("tr[data-job] a")
        eventually(lambda: "[LIMIT]" in text("#skipped"), what="the skipped message")
        assert "INBOX" in text("#skipped")
        eventually(lambda: "Archive" in text("#folders"), what="the folders")
        assert "INBOX" in text("#folders")
        eventually(lambda: "end" in text("#events"), what="the event log")
        assert "start" in text("#events") and "skip" in text("#events")
        assert "copy" in text("#passes") and "synced" in text("#passes")
        driver.save_screenshot(str(shot / "dashboard-mailbox.png"))
        assert driver.execute_script("return window.notReloaded") is True
        ticks = int(
            driver.execute_script("return document.getElementById('updated').dataset.ticks")
        )
        assert ticks > 3  # it read the figures again and again, by itself

    assert (shot / "dashboard-batch.png").stat().st_size > 10_000
    assert password not in log.read_text()
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    states = [r.state for r in store.mailboxes(batch_id)]
    assert states == [MailboxState.SYNCED, MailboxState.FAILED]


def test_a_paused_mailbox_shows_when_it_resumes(
    dovecot: DovecotServer,
    make_user: MakeUser,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    password = batch_password("paused")
    rows = [source_row(imaps(dovecot), make_user(password), password, make_user())]
    (job,) = individual_jobs(rows, run_options(dovecot, tls_files.ca_cert), SecretBox.from_env())
    store.create_batch("paused", {}, [job])
    resume_at = 1_900_000_000.0
    store.record_result(
        "paused",
        job.job_id,
        MailboxResult(MailboxState.PAUSED, error="Gmail's daily download cap", resume_at=resume_at),
    )

    with dashboard(celery_env, tmp_path / "dashboard.log") as base, chromium() as driver:
        driver.get(base + "/#/batch/paused")

        def note() -> str:
            script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''"
            return str(driver.execute_script(script, "tr[data-job] td.note"))

        eventually(lambda: "resumes" in note(), what="the resume time on the page")
        shown = driver.execute_script(
            "return new Date(arguments[0] * 1000).toLocaleString()", resume_at
        )
        assert note() == f"resumes {shown}: Gmail's daily download cap"
