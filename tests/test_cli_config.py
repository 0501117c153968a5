"""`--config wave.toml`: a command's options from TOML, the command line winning."""

from __future__ import annotations

from pathlib import Path

import pytest
from celerykit import cli
from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer, MakeUser
from support import batch_password, imaps, write_source_batch

from migrator.state import StateStore


def test_enqueue_takes_its_options_from_the_config_file_and_the_command_line_wins(
    dovecot: DovecotServer,
    make_user: MakeUser,
    tls_files: TlsFiles,
    tmp_path: Path,
    celery_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = batch_password("config")
    pairs = [(make_user(password), password, make_user())]
    batch = write_source_batch(tmp_path / "wave.csv", imaps(dovecot), pairs)
    (tmp_path / "admin.pw").write_text(MASTER_PASSWORD)
    config = tmp_path / "wave.toml"
    config.write_text(
        f'method = "individual"\n'
        f'target-server = "{imaps(dovecot)}"\n'
        f'target_admin = "{MASTER_USER}"\n'
        f'target-admin-password-file = "{tmp_path / "admin.pw"}"\n'
        f'ca-file = "{tls_files.ca_cert}"\n'
        'batch-id = "from-the-file"\n'
        'notify-email = ["ops@example.test", "desk@example.test"]\n'
        "insecure = false\n"
        "timeout = 12\n"
    )

    code, out = cli(["enqueue", str(batch), "--config", str(config), "--batch-id", "from-cli"])

    assert code == 0, out
    assert out.strip() == "from-cli"
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    assert not store.batch_exists("from-the-file")
    meta = store.batch_meta("from-cli")
    assert meta["method"] == "individual"
    assert meta["notify_email"] == "ops@example.test,desk@example.test"

    config.write_text(config.read_text() + 'quotas-file = "users.csv"\n')
    assert cli(["enqueue", str(batch), "--config", str(config)])[0] == 2
    assert "'quotas-file' is not an option of this command" in capsys.readouterr().err
    config.write_text('method = "sometimes"\n')
    assert cli(["enqueue", str(batch), "--config", str(config)])[0] == 2
    assert "method must be one of" in capsys.readouterr().err
