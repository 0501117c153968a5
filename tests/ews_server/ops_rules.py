"""ResolveNames, and Inbox rules: GetInboxRules, UpdateInboxRules (create, set, delete)."""

from __future__ import annotations

import itertools

from lxml import etree

from .context import Context, OpError
from .paging import child
from .soap import M, T, local, m, response, response_message, sub, t
from .store import Rule

_rule_ids = itertools.count(1)


def resolve_names(ctx: Context, req: etree._Element) -> etree._Element:
    """Matches mailboxes by SMTP address or display name, as 'SMTP:' prefixed or bare text."""
    wanted = (child(req, "UnresolvedEntry").text or "").strip().lower()
    wanted = wanted.removeprefix("smtp:")
    found = [
        b
        for b in ctx.server.store.mailboxes.values()
        if wanted in (b.smtp.lower(), b.display_name.lower())
    ]
    if not found:
        msg = response_message(
            "ResolveNames", "ErrorNameResolutionNoResults", "No results were found."
        )
        return response("ResolveNames", [msg])
    msg = response_message("ResolveNames")
    if len(found) > 1:  # Exchange: a Warning with ErrorNameResolutionMultipleResults
        msg.set("ResponseClass", "Warning")
        msg.find(f"{{{M}}}ResponseCode").text = "ErrorNameResolutionMultipleResults"
    rset = sub(msg, m("ResolutionSet", TotalItemsInView=len(found), IncludesLastItemInRange="true"))
    for box in found:
        mailbox = sub(sub(rset, t("Resolution")), t("Mailbox"))
        sub(mailbox, t("Name", box.display_name))
        sub(mailbox, t("EmailAddress", box.smtp))
        sub(mailbox, t("RoutingType", "SMTP"))
        sub(mailbox, t("MailboxType", "Mailbox"))
    return response("ResolveNames", [msg])


def _direct(op: str, exc: OpError | None = None) -> etree._Element:
    """Inbox-rule responses are a response message themselves, with no ResponseMessages."""
    resp = m(f"{op}Response", ResponseClass="Error" if exc else "Success")
    if exc:
        sub(resp, m("MessageText", exc.text))
    sub(resp, m("ResponseCode", exc.code if exc else "NoError"))
    return resp


def get_inbox_rules(ctx: Context, req: etree._Element) -> etree._Element:
    try:
        box = ctx.mailbox(
            child(req, "MailboxSmtpAddress").text
            if child(req, "MailboxSmtpAddress") is not None
            else None
        )
    except OpError as exc:
        return _direct("GetInboxRules", exc)
    resp = _direct("GetInboxRules")
    sub(resp, m("OutlookRuleBlobExists", "false"))
    if box.rules:
        rules = sub(resp, m("InboxRules"))
        for rule in box.rules:
            rules.append(etree.fromstring(etree.tostring(rule.element)))
    return resp


def update_inbox_rules(ctx: Context, req: etree._Element) -> etree._Element:
    address = child(req, "MailboxSmtpAddress")
    try:
        box = ctx.mailbox(address.text if address is not None else None)
        for op in [o for o in child(req, "Operations") if isinstance(o.tag, str)]:
            name = local(op)
            if name in ("CreateRuleOperation", "SetRuleOperation"):
                rule = etree.fromstring(etree.tostring(op.find(f"{{{T}}}Rule")))
                given = rule.find(f"{{{T}}}RuleId")
                if name == "SetRuleOperation":
                    rule_id = given.text if given is not None else ""
                    _remove(box.rules, rule_id)
                else:
                    rule_id = str(next(_rule_ids))
                if given is not None:
                    rule.remove(given)
                rule.insert(0, t("RuleId", rule_id))
                display = rule.findtext(f"{{{T}}}DisplayName") or ""
                box.rules.append(Rule(rule_id, display, rule))
            elif name == "DeleteRuleOperation":
                _remove(box.rules, op.findtext(f"{{{T}}}RuleId") or "")
    except OpError as exc:
        return _direct("UpdateInboxRules", exc)
    return _direct("UpdateInboxRules")


def _remove(rules: list[Rule], rule_id: str) -> None:
    for rule in rules:
        if rule.id == rule_id:
            rules.remove(rule)
            return
    raise OpError("ErrorRuleNotFound", f"Rule {rule_id} was not found.")


OPERATIONS = {
    "ResolveNames": resolve_names,
    "GetInboxRules": get_inbox_rules,
    "UpdateInboxRules": update_inbox_rules,
}
