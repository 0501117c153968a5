"""Sizes and item counts of an IMAP source mailbox, for velocity plans.

Per mailbox: LIST, then for each folder that holds messages STATUS (MESSAGES SIZE)
where the server announces STATUS=SIZE (RFC 8438), else SELECT and the sum of
RFC822.SIZE over a FETCH of every message.  Item counts are kept per *target*
folder, as the folder map sends the source folder there ("Sent" -> "Sent Items"),
because the item thresholds the plan warns about are the target's.
"""

from __future__ import annotations

from typing import Any

from imapclient import IMAPClient

from migrator.connectors.imap.connection import connect, imap_errors, logout
from migrator.connectors.imap.gmail import GmailSource
from migrator.connectors.imap.source import ImapSource
from migrator.foldermap import FolderMap
from migrator.gmail import CAPABILITY as GMAIL_CAPABILITY
from migrator.gmail import GmailSettings
from migrator.model import ConnectOptions, MailboxJob
from migrator.velocity.plan import InventoryRow

# As the IMAP source adapter: folders without messages of their own, or RFC 6154
# virtual views (\All, \Flagged) whose mail also sits in a real folder.
_NOT_COUNTED = {"\\noselect", "\\nonexistent", "\\all", "\\flagged"}
_FETCH_CHUNK = 2000  # UIDs per FETCH RFC822.SIZE


def survey_mailbox(
    job: MailboxJob,
    options: ConnectOptions,
    folder_map: FolderMap,
    *,
    quota: int | None = None,
    use_status_size: bool = True,
) -> InventoryRow:
    """Size and item counts of one source mailbox (or the part under its root folder)."""
    what = f"source mailbox {job.source_identity}"
    client = connect(job.source_server, job.source_credentials, options, what=what)
    try:
        with imap_errors(what):
            gmail = client.has_capability(GMAIL_CAPABILITY)
        if gmail:
            logout(client)
            return survey_gmail(job, options, folder_map, quota=quota)
        with imap_errors(what):
            listed = client.list_folders()
            status_size = use_status_size and client.has_capability("STATUS=SIZE")
        size = 0
        items: dict[str, int] = {}
        for flags, delimiter, name in listed:
            flag_names = {_text(f) for f in flags}
            if {f.lower() for f in flag_names} & _NOT_COUNTED:
                continue
            path = _relative_path(_text(name), _text(delimiter) if delimiter else "", job)
            if path is None:
                continue
            with imap_errors(f"{what}, folder {_text(name)!r}"):
                count, folder_bytes = _measure(client, name, status_size)
            size += folder_bytes
            target = folder_map.map(path, flag_names).display()
            items[target] = items.get(target, 0) + count
    finally:
        logout(client)
    return InventoryRow(
        identity=job.source_identity,
        size_bytes=size,
        items=items,
        quota_bytes=quota,
        line=job.line,
    )


def survey_gmail(
    job: MailboxJob, options: ConnectOptions, folder_map: FolderMap, *, quota: int | None = None
) -> InventoryRow:
    """A Gmail mailbox as the copy will see it: each message once, counted in the folder
    the rule puts it in (Archive for archived mail), Spam and Trash left out."""
    source = GmailSource(ImapSource(job, options), GmailSettings())
    try:
        size = 0
        items: dict[str, int] = {}
        for folder in source.list_folders():
            refs = source.list_messages(folder)
            size += sum(ref.size for ref in refs)
            target = folder_map.map(folder.path, folder.special_use).display()
            items[target] = items.get(target, 0) + len(refs)
    finally:
        source.close()
    return InventoryRow(
        identity=job.source_identity, size_bytes=size, items=items, quota_bytes=quota, line=job.line
    )


def _measure(client: IMAPClient, name: Any, status_size: bool) -> tuple[int, int]:
    """(messages, bytes) of one folder."""
    if status_size:
        # RFC 8438: SIZE is the total of the messages' RFC822.SIZE.
        status = client.folder_status(name, [b"MESSAGES", b"SIZE"])
        return int(status[b"MESSAGES"]), int(status[b"SIZE"])
    info = client.select_folder(name, readonly=True)
    if int(info.get(b"EXISTS", 0)) == 0:
        return 0, 0
    uids = client.search("ALL")
    total = 0
    for start in range(0, len(uids), _FETCH_CHUNK):
        fetched = client.fetch(uids[start : start + _FETCH_CHUNK], ["RFC822.SIZE"])
        total += sum(int(data[b"RFC822.SIZE"]) for data in fetched.values())
    return len(uids), total


def _relative_path(name: str, delimiter: str, job: MailboxJob) -> tuple[str, ...] | None:
    """The folder's path below the job's root folder (None: outside it), as the IMAP
    source adapter computes it; the root folder itself stands for the Inbox."""
    parts = tuple(name.split(delimiter)) if delimiter else (name,)
    root = (job.source_root_folder or "").strip()
    if not root:
        return parts
    root_parts = tuple(p for p in (root.split(delimiter) if delimiter else (root,)) if p)
    if parts[: len(root_parts)] != root_parts:
        return None
    return parts[len(root_parts) :] or ("INBOX",)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
