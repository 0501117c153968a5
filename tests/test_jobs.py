"""The job payload: a frozen value that goes to JSON and back unchanged, whose version is
checked, and whose sealed secrets open only for the job as it was enqueued."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from migrator import jobs
from migrator.batch import AccessMethod, parse_server
from migrator.connectors.ews.settings import EwsAuth, EwsSettings, endpoint_address
from migrator.errors import BadJob, PayloadTampered
from migrator.model import AdminLogin, ConnectOptions, Credentials, MailboxJob
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.rewrite import RewriteMaps
from migrator.secrets import Secret, SecretBox, new_key

SOURCE_PASSWORD = "Sörce-pw-€"
ADMIN_PASSWORD = "Ädmin-pw"
CLIENT_SECRET = "client-secret"


def _mailbox(**kw: Any) -> MailboxJob:
    fields: dict[str, Any] = {
        "line": 7,
        "source_identity": "jdoe@old.example",
        "source_server": parse_server("imaps://mail.old.example"),
        "source_credentials": Credentials("jdoe", Secret(SOURCE_PASSWORD)),
        "source_root_folder": None,
        "target_identity": "john@new.example",
    }
    return MailboxJob(**(fields | kw))


def _options(**kw: Any) -> RunOptions:
    fields: dict[str, Any] = {
        "target": TargetSpec(
            server=parse_server("imaps://mail.new.example"),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin("admin", Secret(ADMIN_PASSWORD)),
        ),
        "connect": ConnectOptions(timeout=12, ca_file="/etc/ca.pem"),
        "since": datetime(2020, 1, 1, tzinfo=UTC),
        "quotas": {"john@new.example": 5_000_000},
        "rewrite": RewriteMaps(identities={"jdoe@old.example": "john@new.example"}),
        "foldermap_xml": b"<FolderMap/>",
        "connections_per_mailbox": 3,
    }
    return RunOptions(**(fields | kw))


def _job(box: SecretBox, **kw: Any) -> jobs.Job:
    (new,) = build_jobs([_mailbox()], _options(**kw), box)
    return jobs.Job.from_json(new.payload)


def test_a_job_round_trips_through_json_unchanged() -> None:
    job = _job(SecretBox(new_key()))

    assert jobs.Job.from_json(job.to_json()) == job
    assert job.version == jobs.VERSION
    assert job.activation_quota == 5_000_000
    assert job.options.connections_per_mailbox == 3
    assert job.options.since == datetime(2020, 1, 1, tzinfo=UTC)


def test_a_job_is_self_contained_rewrite_maps_and_folder_map_included() -> None:
    job = _job(SecretBox(new_key()))

    assert job.rewrite == RewriteMaps(identities={"jdoe@old.example": "john@new.example"})
    assert job.options.foldermap_xml == "<FolderMap/>"


def test_both_ends_open_to_what_was_sealed_and_the_payload_holds_no_secret() -> None:
    box = SecretBox(new_key())
    job = _job(box)

    source, target = jobs.open_source(job, box), jobs.open_target(job, box)

    assert source.job.source_credentials.password.reveal() == SOURCE_PASSWORD
    assert target.credentials.password.reveal() == ADMIN_PASSWORD
    assert target.credentials.authzid == "john@new.example"
    text = job.to_json()
    assert SOURCE_PASSWORD not in text and ADMIN_PASSWORD not in text
    assert json.dumps(SOURCE_PASSWORD)[1:-1] not in text


def test_a_connectors_settings_and_their_secret_travel_sealed() -> None:
    box = SecretBox(new_key())
    settings = EwsSettings(
        endpoint="https://ews.new.example/EWS/Exchange.asmx",
        auth=EwsAuth.OAUTH,
        tenant_id="t",
        client_id="c",
        client_secret=Secret(CLIENT_SECRET),
    )
    target = TargetSpec(
        server=endpoint_address(settings.endpoint),
        method=AccessMethod.PROXYAUTH,
        admin=AdminLogin("svc", Secret("")),
        kind="ews",
        settings=settings,
    )
    job = _job(box, target=target)

    opened = jobs.open_target(job, box).settings
    assert isinstance(opened, EwsSettings)
    assert opened.client_secret is not None and opened.client_secret.reveal() == CLIENT_SECRET
    assert CLIENT_SECRET not in job.to_json()


@pytest.mark.parametrize("version", [1, 3, None, "2"])
def test_a_payload_of_another_version_is_refused_saying_so(version: object) -> None:
    data = json.loads(_job(SecretBox(new_key())).to_json())
    data["version"] = version

    with pytest.raises(BadJob, match="enqueue the batch again"):
        jobs.Job.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "text", ["", "[]", "not json", '{"version": 2}', '{"version": 2, "line": "x"}']
)
def test_a_malformed_payload_is_refused_not_guessed_at(text: str) -> None:
    with pytest.raises(BadJob):
        jobs.Job.from_json(text)


def test_a_tampered_field_fails_to_open_before_anything_connects() -> None:
    box = SecretBox(new_key())
    data = json.loads(_job(box).to_json())
    data["target"]["server"]["host"] = "evil.example"
    changed = jobs.Job.from_json(json.dumps(data))

    with pytest.raises(PayloadTampered, match=r"target mailbox john@new\.example"):
        jobs.open_target(changed, box)
    assert jobs.open_source(changed, box)  # the source's secrets are not bound to it


def test_settings_a_connector_cannot_have_are_a_tampered_payload() -> None:
    box = SecretBox(new_key())
    data = json.loads(_job(box).to_json())
    data["target"]["settings"] = {"endpoint": "https://evil.example/EWS"}

    with pytest.raises(PayloadTampered):
        jobs.open_target(jobs.Job.from_json(json.dumps(data)), box)


def test_each_row_may_carry_its_own_target_login() -> None:
    box = SecretBox(new_key())
    own = Credentials("john", Secret("own-Pw"))
    target = TargetSpec(
        server=parse_server("imaps://mail.hoster.example"),
        method=AccessMethod.INDIVIDUAL,
        admin=AdminLogin("", Secret("")),
    )
    (new,) = build_jobs([_mailbox(target_credentials=own)], _options(target=target), box)

    opened = jobs.open_target(jobs.Job.from_json(new.payload), box).credentials
    assert (opened.login, opened.password.reveal(), opened.authzid) == ("john", "own-Pw", None)
