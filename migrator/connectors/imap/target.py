"""IMAP target adapter: resolves mapped folders on the target (SPECIAL-USE first),
indexes what a folder already holds, and APPENDs with flags and INTERNALDATE."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.appending import (
    Together,
    has_keywords,
    kept_flags,
    multiappend_uncopied,
    runs_of,
    wire_items,
)
from migrator.connectors.imap.connection import (
    as_text,
    connect,
    fetch_all,
    imap_error,
    imap_errors,
    logout,
)
from migrator.connectors.imap.listing import HEADER_ITEM, INDEX_ITEMS, Listed
from migrator.connectors.imap.targetsync import ImapSyncHooks, placements
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    MessageRefused,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.foldermap import SpecialFolder, TargetFolder, safe_subpath
from migrator.model import ConnectOptions, Login, ServerAddress
from migrator.recognition import (
    TargetCopy,
    content_key,
    epoch_seconds,
    message_digest,
    system_flags,
)
from migrator.syncstate import Placement
from migrator.targets.base import UNKNOWN_QUOTA, AppendItem, Outcome, QuotaInfo

# RFC 6154: where a target server marks its own folders, default folders go there.
_SPECIAL_USE_OF = {
    SpecialFolder.SENT_ITEMS: "\\sent",
    SpecialFolder.JUNK_EMAIL: "\\junk",
    SpecialFolder.DELETED_ITEMS: "\\trash",
    SpecialFolder.DRAFTS: "\\drafts",
}


# RFC 3502 MULTIAPPEND: this many messages in one APPEND command, one round trip; and
# while they hold less than MULTIAPPEND_SMALL_BYTES, more, up to MULTIAPPEND_SMALL_BATCH
# (targets.base.GrowingBatchTarget).  An APPEND is a transaction whose cost grows with
# the folder: appending 2.6 KB messages to a folder of 700,000 over four connections,
# Dovecot stores 1,800 a second in APPENDs of 25, 7,300 in APPENDs of 250 and 8,500 in
# APPENDs of 500 (in a folder of ten thousand: 12,100 and 15,200 a second).
MULTIAPPEND_BATCH = 25
MULTIAPPEND_SMALL_BATCH = 500
MULTIAPPEND_SMALL_BYTES = 1024 * 1024


class ImapTarget(ImapSyncHooks):
    batch_size = 1
    small_batch_size = 1  # GrowingBatchTarget: MULTIAPPEND_SMALL_BATCH with MULTIAPPEND
    small_batch_bytes = MULTIAPPEND_SMALL_BYTES
    throttled_seconds = 0.0  # IMAP servers do not ask for back-off

    def __init__(
        self,
        server: ServerAddress,
        credentials: Login,
        identity: str,
        options: ConnectOptions,
    ) -> None:
        self._what = f"target mailbox {identity}"
        self._address = (server, credentials, identity, options)
        self._client: IMAPClient = connect(server, credentials, options, what=self._what)
        self._delimiter = "/"
        self._existing: set[str] = set()
        self._special: dict[str, str] = {}
        self._keywords_ok: dict[str, bool] = {}
        self._placed: list[Placement | None] = []  # where the last append_batch put each item
        self._marks: dict[str, str] = {}  # folder -> "UIDVALIDITY:UIDNEXT" its SELECT gave
        self._listed_marks: dict[str, str] | None = None  # every folder's (targetsync.mark)
        self._created: set[str] = set()  # made by this connection, not appended to since
        self._refresh_folders()
        self._multiappend = self._client.has_capability("MULTIAPPEND")
        self._literal_plus = self._client.has_capability("LITERAL+")
        if self._multiappend:
            self.batch_size = MULTIAPPEND_BATCH
            self.small_batch_size = MULTIAPPEND_SMALL_BATCH

    def _refresh_folders(self) -> None:
        with imap_errors(self._what):
            listed = self._client.list_folders()
        for flags, delimiter, name in listed:
            name = as_text(name)
            if delimiter:
                self._delimiter = as_text(delimiter)
            self._existing.add(name)
            for flag in flags:
                self._special.setdefault(as_text(flag).lower(), name)

    def open_folder(self, folder: TargetFolder) -> str:
        name = self._name_of(folder)
        if name != "INBOX" and name not in self._existing:
            self._create(name)
        return name

    def _name_of(self, folder: TargetFolder) -> str:
        """The target's name for `folder` (SPECIAL-USE folders where the server marks
        them), whether it exists or not."""
        if folder.special is SpecialFolder.INBOX:
            top = ["INBOX"]
        elif folder.special is not None:
            flagged = self._special.get(_SPECIAL_USE_OF.get(folder.special, ""))
            top = [flagged] if flagged else [folder.special.value]
        else:
            top = []
        parts = top + list(safe_subpath(folder.subpath, self._delimiter) if folder.subpath else ())
        if not parts:
            parts = ["INBOX"]
        name = self._delimiter.join(parts)
        return "INBOX" if name.upper() == "INBOX" else name

    def _create(self, name: str) -> None:
        what = f"{self._what}, folder {name!r}"
        with imap_errors(what):
            created, subscribed = imapwire.create_subscribe(self._client, name)
        if created[0] == "OK":
            self._created.add(name)
        else:
            # As imapclient's create_folder would have raised it.
            exc = imap_error(IMAPClientError(f"create failed: {as_text(created[1])}"), what)
            # RFC 5530 [ALREADYEXISTS]: made by an earlier pass or a parallel one.
            if not isinstance(exc, PermanentError):
                raise exc
            if exc.code is not ErrorCode.ALREADYEXISTS:
                raise FolderRefused(f"{what}: cannot create: {exc}", code=exc.code) from exc
        if subscribed[0] != "OK":
            raise imap_error(IMAPClientError(f"subscribe failed: {as_text(subscribed[1])}"), what)
        self._existing.add(name)

    def index(self, name: str) -> list[TargetCopy]:
        if name in self._created:
            # Made by this connection and not appended to since: none of our copies can
            # be there (an earlier pass's would have made it exist), so no SELECT.
            return []
        what = f"{self._what}, folder {name!r}"
        info = self._select(name, what)
        if int(info.get(b"EXISTS", 0)) == 0:
            return []
        with imap_errors(what):
            listed = fetch_all(self._client, INDEX_ITEMS, HEADER_ITEM)
        return self._copies(listed, what)

    def _copies(
        self, listed: dict[int, Listed], what: str, *, folder: str | None = None
    ) -> list[TargetCopy]:
        """The index entries of `listed` (INDEX_ITEMS answers of the selected folder, or
        of `folder`, selected again where a message must be read whole)."""
        keys = {uid: content_key(m.fields or b"", complete=False) for uid, m in listed.items()}
        # No empty line where the server ends the header: the key comes from the whole
        # message, so that both sides find the header block by the same rule.
        whole = [uid for uid, key in keys.items() if key is None]
        if whole and folder is not None:
            self._select(folder, what)
        for uid, body in self._bodies(whole, what):
            keys[uid] = content_key(body, complete=True)
        return [
            TargetCopy(
                id=str(uid),
                key=keys[uid],
                flags=system_flags(m.flags),
                date=epoch_seconds(m.internaldate),
            )
            for uid, m in listed.items()
        ]

    def digests(self, name: str, copies: Sequence[TargetCopy]) -> dict[str, str]:
        what = f"{self._what}, folder {name!r}"
        self._select(name, what)
        return {
            str(uid): message_digest(body)
            for uid, body in self._bodies([int(c.id) for c in copies], what)
        }

    def _select(self, name: str, what: str) -> dict[bytes, Any]:
        with imap_errors(what):
            # SELECT, not EXAMINE: a read-only folder reports no PERMANENTFLAGS (RFC 3501).
            info: dict[bytes, Any] = self._client.select_folder(name)
        self._selected_now(name, info)
        return info

    def _selected_now(self, name: str, info: dict[bytes, Any]) -> None:
        """What folder `name`'s SELECT answer `info` tells: whether it keeps keywords, and
        its mark."""
        permanent = {as_text(f).lower() for f in info.get(b"PERMANENTFLAGS", ())}
        self._keywords_ok[name] = "\\*" in permanent
        if b"UIDVALIDITY" in info and b"UIDNEXT" in info:
            # The folder's mark as of now (targetsync.mark), until this connection appends.
            self._marks[name] = f"{int(info[b'UIDVALIDITY'])}:{int(info[b'UIDNEXT'])}"

    def _keywords(self, name: str) -> bool:
        """May folder `name` keep keywords (PERMANENTFLAGS has \\*)?  Learnt by SELECT,
        once per folder and connection, unless index() learnt it already."""
        if name not in self._keywords_ok:
            self._select(name, f"{self._what}, folder {name!r}")
        return self._keywords_ok[name]

    def _bodies(self, uids: list[int], what: str) -> Iterator[tuple[int, bytes]]:
        """Whole messages of the selected folder, a few at a time (memory stays flat)."""
        for start in range(0, len(uids), 20):
            with imap_errors(what):
                fetched = self._client.fetch(uids[start : start + 20], ["BODY.PEEK[]"])
            for uid, data in fetched.items():
                if b"BODY[]" in data:
                    yield int(uid), data[b"BODY[]"]

    def quota(self) -> QuotaInfo:
        if not self._client.has_capability("QUOTA"):
            return UNKNOWN_QUOTA
        with imap_errors(self._what):
            try:
                _, quotas = self._client.get_quota_root("INBOX")
            except IndexError:
                # imapclient 3 fails when no QUOTAROOT comes back (Dovecot: "OK No quota").
                return QuotaInfo(limit=None, usage=None, unlimited=True)
        for quota in quotas:
            if str(quota.resource).upper() == "STORAGE":
                # RFC 9208: STORAGE is counted in units of 1024 octets.
                return QuotaInfo(limit=int(quota.limit) * 1024, usage=int(quota.usage) * 1024)
        # No quota at all is no limit; a limit on other resources only (MESSAGE) may
        # still refuse a message, at a point nobody can tell in advance.
        return QuotaInfo(limit=None, usage=None, unlimited=not quotas)

    def placed(self) -> list[Placement | None]:
        return list(self._placed)

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        self._placed = []
        for item in items:
            self._marks.pop(item.folder, None)
            self._created.discard(item.folder)
        self._listed_marks = None
        outcomes: list[Outcome] = []
        start = 0
        while start < len(items):
            # MULTIAPPEND takes one mailbox: send each run of same-folder items at once.
            end = start + 1
            while end < len(items) and items[end].folder == items[start].folder:
                end += 1
            run = items[start:end]
            # Even one message goes as MULTIAPPEND: imapclient then sends a LITERAL+
            # (RFC 7888) literal, one round trip where imaplib's APPEND takes two.
            if not (self._multiappend and self._multiappend_run(run)):
                self._placed = self._placed[:start]
                run_outcomes = self._append_each(run)
                outcomes.extend(run_outcomes)
                if any(isinstance(o, QuotaExceeded) for o in run_outcomes):
                    return outcomes + [run_outcomes[-1]] * (len(items) - end)
            else:
                outcomes.extend([None] * len(run))
            start = end
        return outcomes

    def append_together(self, items: Sequence[AppendItem]) -> list[Outcome]:
        return self.land_together(self.send_together(items))

    def send_together(self, items: Sequence[AppendItem]) -> Together:
        """Write the MULTIAPPEND of every run of one folder in `items` and read no answer
        (wire.send_runs): one round trip for the batch, and the next batch may be written
        before this one's answers are in (land_together reads them)."""
        if not (self._multiappend and self._literal_plus):
            return Together(items, [], self.append_batch(items), self.placed())
        for item in items:
            self._marks.pop(item.folder, None)
            self._created.discard(item.folder)
        self._listed_marks = None
        runs = runs_of(items)
        # PERMANENTFLAGS (a SELECT) asked before the appends go out, where a keyword needs it.
        keep = [has_keywords(run) and self._keywords(run[0].folder) for run in runs]
        with imap_errors(self._what):
            tags = imapwire.send_runs(
                self._client,
                [(run[0].folder, wire_items(run, k)) for run, k in zip(runs, keep, strict=True)],
            )
        return Together(items, list(zip(runs, tags, strict=True)))

    def land_together(self, sent: Together) -> list[Outcome]:
        """The outcomes of a batch send_together wrote (placed() then says where each
        went).  A run refused is sent again one by one once every answer is in, so a
        message refused for itself is named as in append_batch.  For a batch the quota
        certainly has room for (the caller knows): a quota the plan misjudged may stop it
        after a later run was stored (not checkpointed with this batch; the next pass
        recognises it at the target)."""
        if sent.outcomes is not None:
            self._placed = list(sent.placed)
            return sent.outcomes
        with imap_errors(self._what):
            answers = imapwire.runs_answers(self._client, [tag for _, tag in sent.runs])
        self._placed = []
        outcomes: list[Outcome] = []
        full: QuotaExceeded | None = None  # once met, no run is sent again
        for (run, _), (typ, answer) in zip(sent.runs, answers, strict=True):
            if typ == "OK":
                self._placed += placements(run[0].folder, answer, len(run))
                outcomes.extend([None] * len(run))
                continue
            run_outcomes: list[Outcome] = (
                [full] * len(run) if full is not None else self._append_each(run)
            )
            outcomes.extend(run_outcomes)
            full = full or next((o for o in run_outcomes if isinstance(o, QuotaExceeded)), None)
            self._placed += [None] * (len(outcomes) - len(self._placed))
        return outcomes

    def _multiappend_run(self, run: Sequence[AppendItem]) -> bool:
        """True when the server stored the whole run.  On NO it stored none of them
        (RFC 3502 is all or nothing), and the caller finds the culprit one by one, so a
        quota stop still lands exactly at the first message that does not fit."""
        folder = run[0].folder
        # PERMANENTFLAGS (a SELECT) only asked where a message has a keyword to keep.
        keep_keywords = has_keywords(run) and self._keywords(folder)
        if self._literal_plus:
            with imap_errors(f"{self._what}, folder {folder!r}"):
                typ, answer = multiappend_uncopied(self._client, folder, run, keep_keywords)
            if typ == "OK":
                self._placed += placements(folder, answer, len(run))
            return typ == "OK"
        messages = []
        for item in run:
            entry: dict[str, Any] = {
                "msg": item.message,
                "flags": kept_flags(item.flags, keep_keywords),
            }
            if item.internaldate is not None:
                entry["date"] = item.internaldate
            messages.append(entry)
        with imap_errors(f"{self._what}, folder {folder!r}"):
            typ, data = self._client.multiappend(folder, messages)
        if typ == "OK":
            answer = data[0] if data and isinstance(data[0], bytes) else b""
            self._placed += placements(folder, answer, len(run))
        return bool(typ == "OK")

    def _append_each(self, items: Sequence[AppendItem]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, item in enumerate(items):
            try:
                answer = self._append(item)
            except MessageRefused as exc:
                outcomes.append(exc)
                self._placed.append(None)
                continue
            except QuotaExceeded as exc:
                return outcomes + [exc] * (len(items) - index)
            outcomes.append(None)
            self._placed += placements(item.folder, answer, 1)
        return outcomes

    def _append(self, item: AppendItem) -> bytes:
        """The tagged answer's text (RFC 4315 APPENDUID, where the server says it)."""
        kept = kept_flags(item.flags, has_keywords([item]) and self._keywords(item.folder))
        what = f"{self._what}, folder {item.folder!r}"
        try:
            with imap_errors(what):
                answer = self._client.append(item.folder, item.message, kept, item.internaldate)
            return answer if isinstance(answer, bytes) else b""
        except PermanentError as exc:
            # A plain NO to APPEND is about this message (size, content); quota and
            # login errors keep their own kind.
            if type(exc) is PermanentError:
                raise MessageRefused(str(exc), code=exc.code) from exc
            raise
        except TransientError as exc:
            # RFC 5530 [LIMIT] to an APPEND is this message past a server limit (Dovecot's
            # quota_max_mail_size); every retry would meet it again.
            if exc.code is ErrorCode.LIMIT:
                raise MessageRefused(str(exc), code=exc.code) from exc
            raise

    def has_capability(self, name: str) -> bool:
        with imap_errors(self._what):
            return bool(self._client.has_capability(name))

    def session(self) -> ImapTarget:
        other = ImapTarget(*self._address)
        # What index() learnt of each folder (may it keep keywords?) holds for every
        # connection; the new one lists the folders (created by now) itself.
        other._keywords_ok = dict(self._keywords_ok)
        return other

    def close(self) -> None:
        logout(self._client)
