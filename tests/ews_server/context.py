"""What an operation sees of one EWS call: who is acting, on which mailboxes, and the errors it
may answer with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from .soap import T, local
from .store import Folder, Item, Mailbox, id_mailbox

if TYPE_CHECKING:
    from .server import EwsServer


class OpError(Exception):
    """An EWS ResponseCode for one response message (ErrorFolderNotFound, ErrorQuotaExceeded...)."""

    def __init__(self, code: str, text: str | None = None) -> None:
        super().__init__(text or code)
        self.code = code
        self.text = text or code


class SoapFault(Exception):
    """A failure of the whole call, answered with a SOAP Fault (ErrorImpersonateUserDenied...)."""

    def __init__(self, code: str, text: str | None = None) -> None:
        super().__init__(text or code)
        self.code = code
        self.text = text or code


@dataclass
class Context:
    server: EwsServer
    user: str  # the authenticated account
    principal: str  # whose rights apply: the impersonated account, else ``user``

    def mailbox(self, smtp: str | None = None) -> Mailbox:
        """The mailbox ``smtp`` (default: the principal's own), if the principal may open it."""
        smtp = smtp or self.principal
        box = self.server.store.get(smtp)
        if box is None:
            raise OpError("ErrorNonExistentMailbox", f"No mailbox with such guid {smtp}")
        if not self.server.may_access(self.principal, box.smtp):
            raise OpError("ErrorAccessDenied", f"{self.principal} has no rights on {box.smtp}")
        return box

    def folder(self, ref: etree._Element) -> tuple[Mailbox, Folder]:
        """Resolve a t:FolderId or t:DistinguishedFolderId (with its optional t:Mailbox)."""
        if local(ref) == "DistinguishedFolderId":
            address = ref.findtext(f"{{{T}}}Mailbox/{{{T}}}EmailAddress")
            box = self.mailbox(address)
            try:
                return box, box.distinguished(ref.get("Id", ""))
            except KeyError:
                raise OpError(
                    "ErrorFolderNotFound", "The specified folder could not be found in the store."
                ) from None
        fid = ref.get("Id", "")
        owner = id_mailbox(fid)
        if owner is None:
            raise OpError("ErrorInvalidIdMalformed", "Id is malformed.")
        box = self.mailbox(owner)
        if fid not in box.folders:
            raise OpError(
                "ErrorFolderNotFound", "The specified folder could not be found in the store."
            )
        return box, box.folders[fid]

    def item(self, ref: etree._Element) -> tuple[Mailbox, Item]:
        iid = ref.get("Id", "")
        owner = id_mailbox(iid)
        if owner is None:
            raise OpError("ErrorInvalidIdMalformed", "Id is malformed.")
        box = self.mailbox(owner)
        if iid not in box.items:
            raise OpError("ErrorItemNotFound", "The specified object was not found in the store.")
        return box, box.items[iid]

    def check_room(self, box: Mailbox, size: int) -> None:
        """Message size limit, then the mailbox quota, then the injected quota fault."""
        limit = self.server.max_message_size
        if limit is not None and size > limit:
            raise OpError(
                "ErrorMessageSizeExceeded", f"The message exceeds the maximum size ({limit})."
            )
        if box.quota_bytes is not None and box.used_bytes + size > box.quota_bytes:
            raise OpError("ErrorQuotaExceeded", "The mailbox quota has been exceeded.")
        if not self.server.faults.take_quota_slot():
            raise OpError("ErrorQuotaExceeded", "The mailbox quota has been exceeded.")
