"""`migrator validate BATCH.csv --method M`: names every bad line and column, counts the good
rows, exits 2 on any problem, and never prints a password, the row's or the admin's.

The command runs in-process through `migrator.cli.main`, its output captured by capsys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import COLUMNS, write_batch

from migrator.cli import main
from migrator.cliargs import ADMIN_PASSWORD_ENV
from migrator.terminal import EXIT_BAD_INPUT

ADMIN_PASSWORD = "Adm1n-Env-Secret-42"


def _row(identity: str, password: str, **cells: str) -> dict[str, str]:
    local = identity.split("@")[0]
    row = {
        "SourceIdentity": identity,
        "SourceServer": "imaps://mail.example.test",
        "SourceLoginID": local,
        "SourcePassword": password,
        "TargetIdentity": f"{local}@new.example.test",
    }
    row.update(cells)
    return row


# Line numbers count the header as line 1. Each password is unique, so a leak is found.
GOOD_ROWS = {
    2: _row("alice@example.test", "Pw-Alice-Good-1"),
    8: _row("erin@example.test", "Pw-Erin-Good-8"),
}
BAD_ROWS = {
    3: ("SourcePassword", _row("bob@example.test", "")),
    4: ("SourceIdentity", _row("alice@example.test", "Pw-Dup-Alice-4", TargetIdentity="c@n.test")),
    5: ("SourceIdentity", _row("dave.example.test", "Pw-Dave-NoAt-5")),
    6: (
        "SourceServer",
        _row(
            "frank@example.test", "Pw-Frank-Port-6", SourceServer="imap://mail.example.test:99999"
        ),
    ),
    7: (
        "SourceLoginID",
        _row("gina@example.test", "Pw-Gina-Formula-7", SourceLoginID="=cmd|' /C calc'!A0"),
    ),
}
PASSWORDS = [r["SourcePassword"] for r in GOOD_ROWS.values()] + [
    r["SourcePassword"] for _, r in BAD_ROWS.values() if r["SourcePassword"]
]


def _mixed_batch(path: Path) -> Path:
    by_line = {**GOOD_ROWS, **{line: row for line, (_, row) in BAD_ROWS.items()}}
    return write_batch(path, [by_line[line] for line in sorted(by_line)])


def _validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code, and stdout + stderr with rich's line wrapping undone."""
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_validate_names_each_bad_line_with_its_column_and_counts_the_good_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = _mixed_batch(tmp_path / "batch.csv")

    code, output = _validate(capsys, str(batch), "--method", "individual")

    assert code == EXIT_BAD_INPUT
    for line, (column, _) in BAD_ROWS.items():
        assert f"line {line}, column {column}:" in output
    assert "the same address is already on line 2" in output
    assert "2 good rows, 5 bad rows (lines 3, 4, 5, 6, 7)" in output
    for line in GOOD_ROWS:
        assert f"line {line}," not in output


def test_validate_never_prints_a_password_from_the_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = _mixed_batch(tmp_path / "batch.csv")

    code, output = _validate(capsys, str(batch), "--method", "individual")

    assert code == EXIT_BAD_INPUT
    for password in PASSWORDS:
        assert password not in output


def test_validate_prints_each_problem_on_one_line_that_starts_with_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A long path, as a real batch directory has, pushes the line past 80 characters.
    directory = tmp_path / "batches-for-the-spring-migration-of-the-example-test-domain"
    directory.mkdir()
    batch = write_batch(directory / "wave-01.csv", [GOOD_ROWS[2], BAD_ROWS[3][1]])

    assert main(["validate", str(batch), "--method", "individual"]) == EXIT_BAD_INPUT
    err_lines = capsys.readouterr().err.splitlines()

    assert any(
        line.startswith(f"{batch}:line 3, column SourcePassword: is empty") for line in err_lines
    ), err_lines


def test_validate_of_a_good_file_exits_0_and_counts_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = write_batch(tmp_path / "good.csv", list(GOOD_ROWS.values()))

    code, output = _validate(capsys, str(batch), "--method", "individual")

    assert code == 0
    assert "2 good rows, 0 bad rows" in output
    assert "line " not in output


def _combined_batch(path: Path) -> Path:
    columns = [c for c in COLUMNS if c != "SourcePassword"]
    rows = [
        {k: v for k, v in row.items() if k != "SourcePassword"}
        for row in (GOOD_ROWS[2], BAD_ROWS[5][1], GOOD_ROWS[8])
    ]
    return write_batch(path, rows, columns)


def test_validate_combined_takes_the_admin_password_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, ADMIN_PASSWORD)
    good = write_batch(
        tmp_path / "good.csv",
        [{k: v for k, v in r.items() if k != "SourcePassword"} for r in GOOD_ROWS.values()],
        [c for c in COLUMNS if c != "SourcePassword"],
    )

    code, output = _validate(
        capsys,
        str(good),
        "--method",
        "combined",
        "--admin",
        "admin",
        "--combined-template",
        "{user}*{admin}",
    )

    assert code == 0
    assert "2 good rows, 0 bad rows" in output
    assert ADMIN_PASSWORD not in output


def test_validate_combined_reports_bad_rows_without_printing_the_admin_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, ADMIN_PASSWORD)
    batch = _combined_batch(tmp_path / "batch.csv")

    code, output = _validate(capsys, str(batch), "--method", "combined", "--admin", "admin")

    assert code == EXIT_BAD_INPUT
    assert "line 3, column SourceIdentity:" in output
    assert "2 good rows, 1 bad rows (lines 3)" in output
    assert ADMIN_PASSWORD not in output


def test_validate_combined_with_admin_but_no_password_says_where_to_put_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    batch = _combined_batch(tmp_path / "batch.csv")

    code, output = _validate(capsys, str(batch), "--method", "combined", "--admin", "admin")

    assert code == EXIT_BAD_INPUT
    assert ADMIN_PASSWORD_ENV in output
    assert "good rows" not in output


def test_validate_combined_without_an_admin_refuses_the_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, ADMIN_PASSWORD)
    batch = _combined_batch(tmp_path / "batch.csv")

    code, output = _validate(capsys, str(batch), "--method", "combined")

    assert code == EXIT_BAD_INPUT
    assert "admin login and password" in output
    assert ADMIN_PASSWORD not in output


def test_a_short_row_is_named_as_short_not_as_an_empty_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "batch.csv"
    header = ",".join(COLUMNS)
    batch.write_text(f"{header}\r\nann@example.test,imaps://mail.example.test,ann\r\n")

    code, output = _validate(capsys, str(batch), "--method", "individual")

    assert code == EXIT_BAD_INPUT
    assert (
        "SourcePassword" in output and "is missing: the row has 3 cells but the header 5" in output
    )
    assert "is empty" not in output


def test_a_pop3s_server_in_an_imap_batch_suggests_the_source_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = _row("pat@example.test", "Pw-Pat-1", SourceServer="pop3s://mail.example.test")
    batch = write_batch(tmp_path / "batch.csv", [row])

    code, output = _validate(capsys, str(batch), "--method", "individual")

    assert code == EXIT_BAD_INPUT
    assert "pop3s:// is a POP3 address" in output and "--source-type pop" in output


def test_the_admin_problem_names_its_flags_and_version_and_help_say_enough(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    batch = write_batch(tmp_path / "batch.csv", [_row("al@example.test", "Pw-Al-1")])

    code, output = _validate(capsys, str(batch), "--method", "proxyauth")

    assert code == EXIT_BAD_INPUT
    assert "--admin and --admin-password-file" in output
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.startswith("migrator 0.")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "seconds a server may take" in text and "examples:" in text
