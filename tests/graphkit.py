"""Microsoft Graph as the tests meet it: an Entra ID app registered with the test OAuth
server with Graph's application permissions, the options that name it, a batch enqueued
into the test Graph server, one mailbox copied in this process, and where the shipped
folder map puts IMAP mail in a Graph mailbox."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from celerykit import LATE_COMMIT_GRACE, cli
from graph_server import GRAPH_ROLES, Folder, GraphServer, Message
from graph_server.store import new_id
from servers.mailgen import PopulatedMessage
from servers.oauth_server import TENANT, OAuthServer
from support import run_in_process, write_source_batch

from migrator.batch import AccessMethod
from migrator.connectors.graph.settings import GraphApi, GraphSettings, url_address
from migrator.model import AdminLogin, ConnectOptions
from migrator.prepare import RunOptions, TargetSpec
from migrator.secrets import Secret
from migrator.state import MailboxStatus, StateStore

# Where the shipped folder map sends each IMAP folder the tests fill, as paths from a
# well-known folder on the test Graph server (GraphServer.store.messages_at).
IMAP_TO_GRAPH_FOLDER = {
    "INBOX": ("inbox",),
    "Sent Messages": ("sentitems",),
    "Spam": ("junkemail",),
    "Projects/2024": ("msgfolderroot", "Projects", "2024"),
    "INBOX/Important": ("inbox", "Important"),
}


START = datetime(2024, 2, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class GraphApp:
    client_id: str
    secret_file: Path


def new_graph_app(
    oauth: OAuthServer, tmp_path: Path, roles: tuple[str, ...] = GRAPH_ROLES
) -> GraphApp:
    client_id = f"graph-app-{secrets.token_hex(4)}"
    secret = f"cs~{secrets.token_urlsafe(24)}"
    oauth.add_app(client_id, secret=secret, roles=roles)
    path = tmp_path / f"{client_id}.secret"
    path.write_text(secret)
    return GraphApp(client_id, path)


def graph_arguments(oauth: OAuthServer, app: GraphApp) -> list[str]:
    return [
        "--graph-tenant", TENANT, "--graph-client-id", app.client_id,
        "--graph-client-secret-file", str(app.secret_file), "--graph-authority", oauth.authority,
    ]  # fmt: skip


def enqueue_to_graph(
    tmp_path: Path,
    graph: GraphServer,
    oauth: OAuthServer,
    app: GraphApp,
    source_url: str,
    pairs: list[tuple[str, str, str]],
    *extra: str,
) -> str:
    """`migrator enqueue --target graph` of (source, password, target) rows; the batch id."""
    batch = write_source_batch(tmp_path / "batch.csv", source_url, pairs)
    code, out = cli(
        ["enqueue", str(batch), "--method", "individual", "--target", "graph",
         "--target-server", graph.url, *graph_arguments(oauth, app),
         "--late-commit-grace", str(LATE_COMMIT_GRACE), *extra]
    )  # fmt: skip
    assert code == 0, out
    return out.strip().splitlines()[-1]


def graph_settings(
    graph: GraphServer, oauth: OAuthServer, app: GraphApp, ca_file: Path, api: str = "beta"
) -> GraphSettings:
    return GraphSettings(
        url=graph.url,
        api=GraphApi(api),
        tenant_id=TENANT,
        client_id=app.client_id,
        authority=oauth.authority,
        client_secret=Secret(app.secret_file.read_text()),
        connect=ConnectOptions(timeout=30, ca_file=str(ca_file)),
    )


def copy_to_graph(
    store: StateStore,
    graph: GraphServer,
    oauth: OAuthServer,
    app: GraphApp,
    ca_file: Path,
    source_url: str,
    source: str,
    password: str,
    target: str,
    *,
    batch_id: str = "g1",
    api: str = "beta",
    **options: object,
) -> MailboxStatus:
    """One mailbox into the test Graph server through runner.execute_job, in this process."""
    settings = graph_settings(graph, oauth, app, ca_file, api)
    run = RunOptions(
        target=TargetSpec(
            server=url_address(graph.url),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin("", Secret("")),
            kind="graph",
            settings=settings,
        ),
        connect=settings.connect,
        late_commit_grace=0.2,
        **options,  # type: ignore[arg-type]
    )
    return run_in_process(store, batch_id, run, source_url, source, password, target)


def seed_graph(graph: GraphServer, address: str, count: int = 30) -> list[PopulatedMessage]:
    """Mail in a Graph mailbox's Inbox, Sent Items and Inbox/Projects (made in the server's
    store, as mail delivered there), some read, some flagged; what the copier must carry
    over, described as the IMAP tests describe what they append (the folder as the Graph
    source names it for the folder map)."""
    box = graph.store.get(address)
    assert box is not None
    inbox = box.folder("inbox")
    assert inbox is not None
    projects = Folder(new_id("F"), "Projects", inbox.id)
    box.folders[projects.id] = projects
    folders = {"INBOX": inbox, "Sent Items": box.folder("sentitems"), "INBOX/Projects": projects}
    seeded = []
    for n in range(count):
        name = list(folders)[n % 3]
        folder = folders[name]
        assert folder is not None
        when = START + timedelta(hours=n * 7)
        raw = (
            f"Received: from mx.example.org by mail.example.test; {format_datetime(when)}\r\n"
            f"From: Person {n} <p{n}@example.org>\r\nTo: {address}\r\n"
            f"Subject: Graph source message {n}\r\nMessage-ID: <graph{n}@example.org>\r\n"
            f"Date: {format_datetime(when - timedelta(minutes=3))}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nBody {n}: {'ü' * (n % 5)}\r\n"
        ).encode()
        flags = tuple(f for f, on in (("\\Seen", n % 2 == 0), ("\\Flagged", n % 5 == 0)) if on)
        message = Message(new_id("M"), folder.id, raw, received=when)
        message.sent = when - timedelta(minutes=3)
        message.is_read = "\\Seen" in flags
        message.flag_status = "flagged" if "\\Flagged" in flags else "notFlagged"
        box.messages[message.id] = message
        box.touch(message)
        seeded.append(PopulatedMessage(name, n, raw, when, flags, f"<graph{n}@example.org>"))
    return seeded
