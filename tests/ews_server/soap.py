"""SOAP envelopes and EWS response messages, built with lxml."""

from __future__ import annotations

from typing import Any

from lxml import etree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
NSMAP = {"s": SOAP, "m": M, "t": T}


def m(tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    return _el(M, tag, text, attrs)


def t(tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    return _el(T, tag, text, attrs)


def _el(ns: str, tag: str, text: str | None, attrs: dict[str, Any]) -> etree._Element:
    el = etree.Element(f"{{{ns}}}{tag}", nsmap=NSMAP)
    for k, v in attrs.items():
        el.set(k, str(v))
    if text is not None:
        el.text = text
    return el


def sub(parent: etree._Element, child: etree._Element) -> etree._Element:
    parent.append(child)
    return child


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def bool_text(value: bool) -> str:
    return "true" if value else "false"


def response_message(
    op: str, code: str = "NoError", text: str | None = None, *, xml: etree._Element | None = None
) -> etree._Element:
    """``m:{op}ResponseMessage`` with ResponseClass, MessageText and ResponseCode."""
    ok = code == "NoError"
    msg = m(f"{op}ResponseMessage", ResponseClass="Success" if ok else "Error")
    if not ok:
        sub(msg, m("MessageText", text or code))
    sub(msg, m("ResponseCode", code))
    if not ok:
        sub(msg, m("DescriptiveLinkKey", "0"))
    if xml is not None:
        sub(msg, m("MessageXml")).append(xml)
    return msg


def response(op: str, messages: list[etree._Element]) -> etree._Element:
    """``m:{op}Response`` holding ``m:ResponseMessages``."""
    resp = m(f"{op}Response")
    container = sub(resp, m("ResponseMessages"))
    for msg in messages:
        container.append(msg)
    return resp


def envelope(body_child: etree._Element, version: tuple[int, int, int, int, str]) -> bytes:
    major, minor, build, rev, api = version
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap=NSMAP)
    header = etree.SubElement(env, f"{{{SOAP}}}Header")
    etree.SubElement(
        header,
        f"{{{T}}}ServerVersionInfo",
        MajorVersion=str(major),
        MinorVersion=str(minor),
        MajorBuildNumber=str(build),
        MinorBuildNumber=str(rev),
        Version=api,
    )
    etree.SubElement(env, f"{{{SOAP}}}Body").append(body_child)
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def fault(
    code: str, text: str, *, faultcode: str = "a:ErrorSchemaValidation", **values: str
) -> bytes:
    """A SOAP Fault as Exchange sends it: detail holds e:ResponseCode, e:Message and a
    t:MessageXml of ``<t:Value Name=...>`` pairs (BackOffMilliseconds for ErrorServerBusy)."""
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    body = etree.SubElement(env, f"{{{SOAP}}}Body")
    f = etree.SubElement(body, f"{{{SOAP}}}Fault")
    code_el = etree.SubElement(f, "faultcode", nsmap={"a": E})
    code_el.text = faultcode
    etree.SubElement(f, "faultstring").text = text
    detail = etree.SubElement(f, "detail")
    etree.SubElement(detail, f"{{{E}}}ResponseCode", nsmap={"e": E}).text = code
    etree.SubElement(detail, f"{{{E}}}Message", nsmap={"e": E}).text = text
    if values:
        xml = etree.SubElement(detail, f"{{{T}}}MessageXml", nsmap={"t": T})
        for name, value in values.items():
            etree.SubElement(xml, f"{{{T}}}Value", Name=name).text = value
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")
