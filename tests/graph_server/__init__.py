"""A Microsoft Graph server of our own for the tests: real HTTPS on loopback, bearer tokens
from the test OAuth server, JSON held to Microsoft's published v1.0 schema, importMime to
the contract in ../shared/graph-schema/README.md, mailboxes in memory.

with GraphServer(tls_context, oauth.introspect) as graph:
    graph.add_mailbox("alice@example.test")
    ...
    graph.assert_no_violations()
"""

from .faults import Faults
from .schema import GraphSchema, load_schema
from .server import GRAPH_ROLES, IMPORT_ROLE, MAIL_ROLE, GraphServer
from .store import Folder, Mailbox, Message, Store

__all__ = [
    "GRAPH_ROLES",
    "IMPORT_ROLE",
    "MAIL_ROLE",
    "Faults",
    "Folder",
    "GraphSchema",
    "GraphServer",
    "Mailbox",
    "Message",
    "Store",
    "load_schema",
]
