"""The test Graph server keeps clients to Microsoft's contract: the schema check itself
(tables of bodies and what is wrong with them), and a server of its own (not the
session's, whose violations must stay zero) recording what a careless client sends."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from graph_server import GraphServer, load_schema
from graphkit import GraphApp
from servers.certs import TlsFiles
from servers.oauth_server import TENANT, OAuthServer

from migrator.state import StateStore


@pytest.mark.parametrize(
    ("type_name", "body", "wrong"),
    [
        ("message", {"isRead": True, "flag": {"flagStatus": "flagged"}}, []),
        ("message", {"categories": ["a"], "receivedDateTime": "2024-01-02T03:04:05Z"}, []),
        ("message", {"id": "x", "@odata.etag": "W/1"}, []),  # entity's id, an annotation
        ("message", {"isRead": "yes"}, ["message.isRead: expected Edm.Boolean"]),
        ("message", {"flag": {"flagStatus": "red"}}, ["followupFlagStatus member"]),
        ("message", {"receivedDateTime": "2024-01-02"}, ["Edm.DateTimeOffset"]),
        ("message", {"importMime": "..."}, ["message has no property 'importMime'"]),
        ("mailFolder", {"displayName": "A", "wellKnownName": "inbox"}, ["no property"]),
        (
            "message",
            {"singleValueExtendedProperties": [{"id": "Integer 0x0E07", "value": 1}]},
            ["expected Edm.String"],
        ),
        ("messageRule", {"actions": {"redirectTo": [{"emailAddress": {"address": "a@b"}}]}}, []),
        ("messageRule", {"actions": {"redirectTo": "a@b"}}, ["expected a list"]),
        (  # a derived type's own property
            "message",
            {"@odata.type": "#microsoft.graph.eventMessage", "meetingMessageType": "none"},
            [],
        ),
    ],
)
def test_the_schema_check_finds_what_is_wrong(
    type_name: str, body: dict[str, Any], wrong: list[str]
) -> None:
    errors = load_schema().check(type_name, body)
    assert len(errors) == len(wrong), errors
    for error, expected in zip(errors, wrong, strict=True):
        assert expected in error


@pytest.fixture
def strict_graph(
    tls_files: TlsFiles, oauth_server: OAuthServer
) -> Iterator[tuple[GraphServer, dict[str, str]]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    with GraphServer(context, oauth_server.introspect) as server:
        server.add_mailbox("careless@example.test")
        yield server, {}


def _token(oauth: OAuthServer, app: GraphApp, ca_file: str) -> str:
    answer = requests.post(
        f"{oauth.url}/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.secret_file.read_text(),
            "scope": "x",
        },
        verify=ca_file,
        timeout=10,
    )
    return str(answer.json()["access_token"])


def test_a_careless_client_is_recorded_and_refused(
    strict_graph: tuple[GraphServer, dict[str, str]],
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    tls_files: TlsFiles,
) -> None:
    server, _ = strict_graph
    auth = {"Authorization": f"Bearer {_token(oauth_server, graph_app, str(tls_files.ca_cert))}"}
    user = "/users/careless@example.test"
    session = requests.Session()

    def post(url: str, **kw: Any) -> requests.Response:
        headers = {**auth, **kw.pop("headers", {})}
        return session.post(
            server.url + url, headers=headers, verify=str(tls_files.ca_cert), timeout=10, **kw
        )

    mime = base64.b64encode(b"Subject: hi\r\n\r\nbody\r\n")
    text = {"Content-Type": "text/plain"}
    patch = post(f"/v1.0{user}/mailFolders/inbox/childFolders", json={"name": "A"})
    as_json = post(f"/beta{user}/mailFolders/inbox/importMime", json={"mime": "x"})
    wrong_type = post(
        f"/beta{user}/mailFolders/inbox/importMime",
        data=mime,
        headers={"Content-Type": "message/rfc822"},
    )
    on_v1 = post(f"/v1.0{user}/mailFolders/inbox/importMime", data=mime, headers=text)
    inbox = {"method": "GET", "url": f"{user}/mailFolders/inbox"}
    batch = post("/v1.0/$batch", json={"requests": [{"id": str(n), **inbox} for n in range(21)]})
    anonymous = session.get(
        f"{server.url}/v1.0{user}/mailFolders/inbox", verify=str(tls_files.ca_cert), timeout=10
    )

    assert patch.status_code == 400
    assert (as_json.status_code, wrong_type.status_code, on_v1.status_code) == (400, 201, 400)
    assert (batch.status_code, anonymous.status_code) == (400, 401)
    said = "\n".join(text for _, text in server.violations)
    assert "mailFolder has no property 'name'" in said
    assert "JSON envelope" in said and "not base64" in said
    assert "'message/rfc822', not text/plain" in said
    assert "21 requests in one $batch" in said


def test_the_upload_budget_is_shared_and_waits_for_the_oldest_to_leave(redis_url: str) -> None:
    first, second = StateStore.from_url(redis_url), StateStore.from_url(redis_url)
    name = "graph:test:budget@example.test"
    assert first.reserve_upload(name, 600, 1000, 60.0) == 0
    assert second.reserve_upload(name, 300, 1000, 60.0) == 0  # another worker's, same budget
    wait = first.reserve_upload(name, 200, 1000, 60.0)
    assert 59.0 < wait <= 60.1  # once the first upload leaves the window
    assert second.reserve_upload(name, 100, 1000, 60.0) == 0  # fits exactly
    assert first.reserve_upload("graph:test:other@example.test", 5000, 1000, 60.0) == 0
