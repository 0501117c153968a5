"""The IMAP target's index of what came after each folder's mark, many folders at once
(ImapTarget.indexes_since, one round trip), against the test Dovecot: exactly what
index_since finds folder by folder, whatever the folders hold."""

from __future__ import annotations

from servers.mailgen import Fill
from support import TargetUser

# In the order asked: "All header" (a message with no empty line, read whole, so its
# folder is selected again after the others were) comes before the folders after it.
FOLDERS = ("INBOX", "All header", "Données/Été", "Nothing new", "Empty", "Rebuilt")
ALL_HEADER = b"From: a@example.test\r\nSubject: no empty line, no body\r\nX-End: here"


def test_indexes_since_reads_every_folder_as_index_since_does(
    target_user: TargetUser, fill: Fill
) -> None:
    user = target_user.name
    fill(user, {"INBOX": 3, "All header": 2, "Données/Été": 2, "Nothing new": 4, "Rebuilt": 2})
    fill(user, {"Marked badly": 1}, seed=2)
    with target_user.session() as client:
        client.create_folder("Empty")
    target = target_user.target()
    try:
        marks = {name: target.mark(name) for name in FOLDERS}
    finally:
        target.close()

    # After the marks: new mail in three folders, one folder rebuilt under a new UIDVALIDITY.
    fill(user, {"INBOX": 2, "Données/Été": 1}, seed=3)
    fill(user, {"Trash": 1}, seed=5)  # (a folder between: the rebuilt one's UIDVALIDITY is new)
    with target_user.session() as client:
        client.append("All header", ALL_HEADER)
        client.delete_folder("Rebuilt")
    fill(user, {"Rebuilt": 3}, seed=7)

    asked = {name: mark for name, mark in marks.items() if mark is not None}
    asked["Marked badly"] = "not a mark"
    target = target_user.target()
    try:
        together = target.indexes_since(asked)
        one_by_one = {name: target.index_since(name, mark) for name, mark in asked.items()}
        assert target.indexes_since({"INBOX": "not a mark"}) == {"INBOX": None}  # nothing sent
    finally:
        target.close()

    assert together == one_by_one
    assert {name: None if got is None else len(got) for name, got in together.items()} == {
        "INBOX": 2,
        "All header": 1,
        "Données/Été": 1,
        "Nothing new": 0,
        "Empty": 0,
        "Rebuilt": None,  # its UIDs name other messages now: the caller indexes it whole
        "Marked badly": None,
    }
    (whole,) = together["All header"]
    assert whole.key is not None  # read whole, in its own folder
