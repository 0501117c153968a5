"""A local source's path: relative to --source-root and never outside it, whatever the CSV
or a symbolic link says; checked where the batch is read and again by the worker; bound to
the job's seal; the mailbox named by its real path.  And the command line around it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import write_batch

from migrator import jobs, mailboxid
from migrator.batch import AccessMethod, parse_batch, parse_server
from migrator.cli import EXIT_BAD_INPUT, main
from migrator.connectors import connector
from migrator.connectors.base import SourceEnd
from migrator.connectors.local.enqueue import resolve_batch
from migrator.connectors.local.paths import relative_path
from migrator.connectors.local.settings import LocalSettings
from migrator.errors import BatchError, PathOutsideRoot, PayloadTampered, SourceNotFound
from migrator.forwarding import ForwardAction, ForwardState
from migrator.forwardjobs import run_forwarding
from migrator.model import AdminLogin, BatchResult, ConnectOptions, MailboxJob
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.secrets import Secret, SecretBox, new_key

HEADER = "SourceIdentity,SourceServer,TargetIdentity"


def local_batch(*rows: str, kind: str = "maildir", header: str = HEADER) -> BatchResult:
    return parse_batch("\n".join((header, *rows)) + "\n", AccessMethod.INDIVIDUAL, protocol=kind)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("jdoe", "jdoe"),
        ("Mail Archive/jdoe.mbox", "Mail Archive/jdoe.mbox"),
        ("./a//b/", "a/b"),
        ("a/../b", "b"),
        (".", "."),
    ],
)
def test_a_relative_path_is_normalised(cell: str, expected: str) -> None:
    assert relative_path(cell) == expected


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("/etc/passwd", "absolute path"),
        ("C:\\Mail\\jdoe", "absolute path"),
        ("\\\\server\\share", "absolute path"),
        ("..", "climbs out"),
        ("a/../../etc", "climbs out"),
        ("", "empty"),
    ],
)
def test_a_path_that_is_absolute_or_climbs_out_is_refused(cell: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        relative_path(cell)


def test_a_batch_row_names_its_line_for_a_bad_path_and_needs_no_login_or_password() -> None:
    result = local_batch(
        "a@example.com,boxes/a,",
        "b@example.com,/var/mail/b,",
        "c@example.com,../c,",
        "d@example.com,boxes/d with space,d2@example.com",
    )
    assert [(p.line, p.column) for p in result.problems] == [
        (3, "SourceServer"),
        (4, "SourceServer"),
    ]
    assert "absolute path" in str(result.problems[0])
    assert [(j.line, j.source_server.host) for j in result.jobs] == [
        (2, "boxes/a"),
        (5, "boxes/d with space"),
    ]
    assert not result.jobs[0].source_credentials.password


def test_a_local_source_reads_with_individual_only() -> None:
    with pytest.raises(BatchError, match="use --method individual"):
        parse_batch(
            HEADER + "\na@example.com,a,\n",
            AccessMethod.PROXYAUTH,
            admin=AdminLogin("admin", Secret("pw")),
            protocol="mbox",
        )


def test_a_symbolic_link_out_of_the_root_is_refused_where_the_batch_is_read(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "boxes" / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "boxes" / "escape").symlink_to(outside)
    (root / "inside").symlink_to(root / "boxes" / "a")

    result = resolve_batch(
        local_batch("a@example.com,boxes/a,", "b@example.com,boxes/escape,", "c@x.com,inside,"),
        str(root),
    )

    assert [(p.line, p.column) for p in result.problems] == [(3, "SourceServer")]
    assert "outside --source-root" in str(result.problems[0])
    real = str((root / "boxes" / "a").resolve())
    assert [j.source_server.host for j in result.jobs] == [real, real]


def _job(root: Path, cell: str, kind: str = "maildir") -> tuple[MailboxJob, dict[str, str]]:
    (job,) = resolve_batch(local_batch(f"a@example.com,{cell},", kind=kind), str(root)).jobs
    return job, LocalSettings(root=str(root)).to_json()


def open_local_source(kind: str, job: MailboxJob, settings: dict[str, str]) -> object:
    """What a worker does with a local source's end: its connector opens it."""
    local = LocalSettings.from_json(settings)
    return connector(kind).open_source(SourceEnd(job, ConnectOptions(), local))


def test_the_worker_checks_the_path_again(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "box" / "cur").mkdir(parents=True)
    (outside / "cur").mkdir(parents=True)
    job, settings = _job(root, "box")
    open_local_source("maildir", job, settings)  # there, inside: fine

    # Between enqueue and run, the directory becomes a link out of the root.
    os.rename(root / "box", tmp_path / "moved")
    (root / "box").symlink_to(outside)
    with pytest.raises(PathOutsideRoot, match=r"line 2.*outside --source-root") as refused:
        open_local_source("maildir", job, settings)
    assert refused.value.code == "NOPERM"

    (root / "box").unlink()
    with pytest.raises(SourceNotFound, match=r"a@example.com.*line 2.*does not exist") as missing:
        open_local_source("maildir", job, settings)
    assert missing.value.code == "NONEXISTENT"


def test_a_local_mailbox_is_named_by_its_real_path(tmp_path: Path) -> None:
    (tmp_path / "boxes" / "a").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "boxes")
    target = parse_server("imaps://mail.example.test")
    direct, _ = _job(tmp_path, "boxes/a")
    linked, _ = _job(tmp_path, "alias/./a")

    assert mailboxid.server_id(direct.source_server) == f"file://{(tmp_path / 'boxes/a').resolve()}"
    assert mailboxid.mailbox_key(direct, target) == mailboxid.mailbox_key(linked, target)
    assert str(direct.source_server) == f"file://{(tmp_path / 'boxes/a').resolve()}"


def test_a_payload_whose_path_or_root_changed_in_redis_is_refused(tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    job, _ = _job(tmp_path, "box")
    box = SecretBox(new_key())
    options = RunOptions(
        target=TargetSpec(
            parse_server("imaps://mail.example.test"),
            AccessMethod.PROXYAUTH,
            AdminLogin("admin", Secret("Adm1n-pw")),
        ),
        source_kind="maildir",
        source_settings=LocalSettings(root=str(tmp_path)),
    )
    (new,) = build_jobs([job], options, box)
    opened = jobs.open_source(jobs.Job.from_json(new.payload), box)
    assert opened.job.source_server.host == job.source_server.host

    for change in (
        lambda p: p["source"]["server"].update(host="/etc"),
        lambda p: p["source"]["settings"].update(root="/"),
        lambda p: p["source"]["settings"].update(mbox_format="mboxo"),
    ):
        changed = json.loads(new.payload)
        change(changed)
        with pytest.raises(PayloadTampered):
            jobs.open_source(jobs.Job.from_json(json.dumps(changed)), box)


# -- the command line ---------------------------------------------------------------------


def _csv(tmp_path: Path, cells: list[str]) -> Path:
    return write_batch(
        tmp_path / "batch.csv",
        [
            {"SourceIdentity": f"u{i}@example.com", "SourceServer": cell, "TargetIdentity": ""}
            for i, cell in enumerate(cells)
        ],
        columns=["SourceIdentity", "SourceServer", "TargetIdentity"],
    )


def test_validate_names_each_path_that_leaves_the_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    batch = _csv(tmp_path, ["a", "/srv/mail/b", "out/x", "../../c"])

    code = main(
        ["validate", str(batch), "--method", "individual", "--source-type", "maildir",
         "--source-root", str(root)]
    )  # fmt: skip

    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "line 3, column SourceServer: is an absolute path" in err
    assert "line 4, column SourceServer: leads outside --source-root" in err
    assert "line 5, column SourceServer: climbs out of --source-root" in err


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ([], "give --source-root DIR"),
        (["--source-root", "/nonexistent/dir"], "not a directory"),
        (["--source-root", "{root}", "--forward-after-copy"], "nothing to forward"),
    ],
)
def test_enqueue_refuses_what_a_local_source_cannot_do(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    problem: str,
) -> None:
    monkeypatch.setenv("MIGRATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", "Adm1n-pw")
    batch = _csv(tmp_path, ["a"])
    extra = [e.replace("{root}", str(tmp_path)) for e in extra]
    code = main(
        ["run", str(batch), "--method", "individual", "--source-type", "mbox",
         "--target-server", "imaps://127.0.0.1:1", "--target-admin", "admin", *extra]
    )  # fmt: skip
    assert code == EXIT_BAD_INPUT
    assert problem in capsys.readouterr().err


def test_forwarding_from_a_local_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = _csv(tmp_path, ["a"])
    code = main(
        ["forwarding", "set", str(batch), "--method", "individual", "--source-type", "maildir",
         "--source-root", str(tmp_path)]
    )  # fmt: skip
    assert code == EXIT_BAD_INPUT
    assert "no forwarding to set" in capsys.readouterr().err


def test_a_forwarding_job_for_a_local_source_is_manual_not_attempted(tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    (job,) = resolve_batch(local_batch("a@example.com,box,b@example.com"), str(tmp_path)).jobs
    box = SecretBox(new_key())
    options = RunOptions(
        target=TargetSpec(
            parse_server("imaps://mail.example.test"),
            AccessMethod.PROXYAUTH,
            AdminLogin("admin", Secret("Adm1n-pw")),
        ),
        source_kind="mbox",
        source_settings=LocalSettings(root=str(tmp_path)),
    )
    (new,) = build_jobs([job], options, box)

    outcome = run_forwarding(ForwardAction.SET, jobs.Job.from_json(new.payload), box)

    assert outcome.state is ForwardState.MANUAL
    assert "nothing to forward" in outcome.detail
