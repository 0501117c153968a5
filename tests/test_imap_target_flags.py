"""The IMAP target's flags for an incremental pass (ImapTarget.set_flags) against the test
Dovecot: each copy given exactly its source's flags, in every folder at once, and none in
a folder rebuilt since its copies were placed (their UIDs name other messages now)."""

from __future__ import annotations

from imapclient import IMAPClient
from servers.mailgen import Fill
from support import TargetUser

from migrator.syncstate import Placement

FOLDERS = ("INBOX", "Données/Été", "Sent Messages", "Rebuilt")


def _flags(client: IMAPClient, folder: str) -> dict[int, set[str]]:
    client.select_folder(folder, readonly=True)
    return {
        uid: {f.decode() for f in flags if f != b"\\Recent"}
        for uid, flags in client.get_flags(client.search("ALL")).items()
    }


def test_flags_are_set_in_every_folder_but_one_rebuilt_since(
    target_user: TargetUser, fill: Fill
) -> None:
    user = target_user.name
    fill(user, dict.fromkeys(FOLDERS, 6))
    with target_user.session() as client:
        validity = {
            f: int(client.folder_status(f, ["UIDVALIDITY"])[b"UIDVALIDITY"]) for f in FOLDERS
        }
        before = {f: _flags(client, f) for f in FOLDERS}
    wanted = {
        "INBOX": {1: ("\\Flagged",), 2: ("\\Flagged",), 5: ()},
        "Données/Été": {3: ("\\Answered", "\\Seen"), 4: ("\\Seen", "$Forwarded")},
        "Sent Messages": {uid: ("\\Seen", "\\Draft") for uid in range(1, 7)},
        "Rebuilt": {1: ("\\Deleted",), 2: ("\\Flagged",)},
    }
    changes = [
        (Placement(folder, validity[folder], str(uid)), flags)
        for folder, by_uid in wanted.items()
        for uid, flags in by_uid.items()
    ]
    # "Rebuilt" is deleted and made again: its UIDs 1 to 6 are other messages now.
    fill(user, {"Trash": 1}, seed=5)  # (a folder between, so the new one gets a new UIDVALIDITY)
    with target_user.session() as client:
        client.delete_folder("Rebuilt")
    fill(user, {"Rebuilt": 6}, seed=7)
    with target_user.session() as client:
        rebuilt = _flags(client, "Rebuilt")
        assert (
            int(client.folder_status("Rebuilt", ["UIDVALIDITY"])[b"UIDVALIDITY"])
            != (validity["Rebuilt"])
        )

    target = target_user.target()
    try:
        changed = target.set_flags(changes)
    finally:
        target.close()

    assert changed == 2 + 1 + 2 + 6  # none in the rebuilt folder
    with target_user.session() as client:
        after = {f: _flags(client, f) for f in FOLDERS}
    for folder in ("INBOX", "Données/Été", "Sent Messages"):
        expected = {
            uid: set(wanted[folder][uid]) if uid in wanted[folder] else flags
            for uid, flags in before[folder].items()
        }
        assert after[folder] == expected, folder
    assert after["Rebuilt"] == rebuilt
