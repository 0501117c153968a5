"""Emptying an IMAP target mailbox between the points of a velocity run: every message
of every folder (UID STORE +FLAGS \\Deleted, then EXPUNGE; RFC 3501 6.4.6 and 6.4.3)."""

from __future__ import annotations

from migrator.connectors.base import TargetEnd
from migrator.connectors.imap.connection import connect, imap_errors, logout

# Folders that hold no messages of their own (cannot be selected).
_NOT_SELECTABLE = {b"\\noselect", b"\\nonexistent"}
_STORE_CHUNK = 1000  # UIDs per STORE: keeps command lines short


def empty_mailbox(target: TargetEnd) -> int:
    """Delete every message of every folder of a target mailbox; how many."""
    what = f"pilot target mailbox {target.identity}"
    client = connect(target.server, target.credentials, target.connect, what=what)
    deleted = 0
    try:
        with imap_errors(what):
            folders = client.list_folders()
        for flags, _delimiter, name in folders:
            if {f.lower() for f in flags} & _NOT_SELECTABLE:
                continue
            with imap_errors(f"{what}, folder {name!r}"):
                client.select_folder(name)
                uids = client.search("ALL")
                for start in range(0, len(uids), _STORE_CHUNK):
                    client.add_flags(uids[start : start + _STORE_CHUNK], [b"\\Deleted"])
                if uids:
                    client.expunge()
                client.close_folder()
            deleted += len(uids)
    finally:
        logout(client)
    return deleted
