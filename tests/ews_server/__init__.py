"""An EWS server of our own for the tests: real HTTP, schema-checked SOAP, in-memory mailboxes.

with EwsServer() as server:
    server.add_user("alice@example.com", "pw")
    account = ews_account(server, "alice@example.com", password="pw")
    account.inbox.total_count
    server.assert_no_violations()
"""

from .client import ews_account, ews_config
from .faults import Faults
from .schema import EwsSchema, load_schema, schema_dir
from .server import SERVER_VERSION, EwsServer
from .store import Folder, Item, Mailbox, Store

__all__ = [
    "SERVER_VERSION",
    "EwsSchema",
    "EwsServer",
    "Faults",
    "Folder",
    "Item",
    "Mailbox",
    "Store",
    "ews_account",
    "ews_config",
    "load_schema",
    "schema_dir",
]
