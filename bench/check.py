"""Every run checked message by message at the target: the bodies there, as a multiset of
digests, must be the source's (folders aside: imapsync and dsync keep the source's names,
migrator maps them), and nothing may be there twice."""

from __future__ import annotations

import hashlib
import ssl
from collections import Counter

from imapclient import IMAPClient


def digests(port: int, ctx: ssl.SSLContext, login: str, password: str) -> Counter[str]:
    """The SHA-256 of every message body in the mailbox `login` opens."""
    found: Counter[str] = Counter()
    # By message sequence numbers, in ranges: a SEARCH ALL of a folder of 700,000 messages
    # answers in one line longer than imaplib takes (1,000,000 bytes).
    with IMAPClient("127.0.0.1", port, ssl_context=ctx, timeout=300, use_uid=False) as client:
        client.login(login, password)
        for flags, _delimiter, name in client.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            exists = int(client.select_folder(name, readonly=True)[b"EXISTS"])
            for start in range(1, exists + 1, 200):
                numbers = list(range(start, min(exists, start + 199) + 1))
                fetched = client.fetch(numbers, ["BODY.PEEK[]"])
                for data in fetched.values():
                    found[hashlib.sha256(data[b"BODY[]"]).hexdigest()] += 1
    return found


def verdict(source: Counter[str], target: Counter[str]) -> str:
    """ "" when the target holds exactly the source's messages, else what differs."""
    missing = sum((source - target).values())
    extra = sum((target - source).values())
    if not missing and not extra:
        return ""
    return f"{missing} missing, {extra} extra at the target"
