"""migrator.gmail: where a Gmail message goes, and its labels as keywords (tables)."""

from __future__ import annotations

import pytest

from migrator.gmail import (
    DRAFT,
    IMPORTANT,
    INBOX,
    SENT,
    SPAM,
    STARRED,
    TRASH,
    Folders,
    GmailSettings,
    LabelMode,
    keyword_label,
    keywords,
    label_keyword,
    places,
)

FOLDERS = Folders(
    system={INBOX: "INBOX", SENT: "[Gmail]/Sent Mail", DRAFT: "[Gmail]/Drafts",
            SPAM: "[Gmail]/Spam", TRASH: "[Gmail]/Trash"},
    user={"Work": "Work", "personal": "personal", "Projects/2024": "Projects/2024"},
    archive="[Gmail]/All Mail",
)  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "rule", "copies"),
    [
        ({INBOX, "Work"}, ["INBOX"], ["INBOX", "Work"]),
        ({SENT, "Work", INBOX}, ["INBOX"], ["INBOX", "[Gmail]/Sent Mail", "Work"]),
        ({SENT, "Work"}, ["[Gmail]/Sent Mail"], ["[Gmail]/Sent Mail", "Work"]),
        ({"Work", "personal"}, ["personal"], ["personal", "Work"]),  # case-folded order
        ({"Projects/2024", "Work"}, ["Projects/2024"], ["Projects/2024", "Work"]),
        ({DRAFT}, ["[Gmail]/Drafts"], ["[Gmail]/Drafts"]),
        (set(), ["[Gmail]/All Mail"], ["[Gmail]/All Mail"]),  # archived
        ({IMPORTANT, STARRED}, ["[Gmail]/All Mail"], ["[Gmail]/All Mail"]),
        ({"Hidden from IMAP"}, ["[Gmail]/All Mail"], ["[Gmail]/All Mail"]),
        ({SPAM}, [], []),
        ({TRASH, "Work"}, [], []),
    ],
)
def test_places(labels: set[str], rule: list[str], copies: list[str]) -> None:
    assert places(labels, FOLDERS, LabelMode.RULE, spam_trash=False) == rule
    assert places(labels, FOLDERS, LabelMode.COPIES, spam_trash=False) == copies


def test_spam_and_trash_when_asked_for() -> None:
    assert places({SPAM}, FOLDERS, LabelMode.RULE, spam_trash=True) == ["[Gmail]/Spam"]
    assert places({TRASH, "Work"}, FOLDERS, LabelMode.COPIES, spam_trash=True) == ["[Gmail]/Trash"]


def test_other_user_labels_become_keywords() -> None:
    labels = {INBOX, "Work", "personal", STARRED, "Hidden from IMAP"}
    assert keywords(labels, "INBOX", FOLDERS) == tuple(
        label_keyword(lb) for lb in ("Hidden from IMAP", "personal", "Work")
    )
    assert keywords({"Work", "personal"}, "personal", FOLDERS) == ("Work",)


@pytest.mark.parametrize(
    ("label", "keyword"),
    [
        ("Work", "Work"),
        ("Projects/2024", "Projects/2024"),
        ("My Label", "My_20Label"),
        ("a_b", "a_5Fb"),
        ("Zürich", "Z&APw-rich"),
        ("R&D (old)", "R&-D_20_28old_29"),
        ("[Gmail]x", "_5BGmail_5Dx"),
        ("日本", "&ZeVnLA-"),
    ],
)
def test_label_keywords_are_atoms_and_read_back(label: str, keyword: str) -> None:
    assert label_keyword(label) == keyword
    assert keyword_label(keyword) == label


def test_settings_round_trip_through_the_payload() -> None:
    settings = GmailSettings(labels=LabelMode.COPIES, include_spam_trash=True,
                             download_cap=20 * 2**20, cap_window=30.0, forced=True)  # fmt: skip
    assert GmailSettings.from_json(settings.to_json()) == settings
    assert GmailSettings.from_json({}) == GmailSettings()
    assert settings.secret is None and settings.bound() == {}
