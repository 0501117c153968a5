"""The forwarding script as text: what `set` writes, what `remove` reads back, and where
our command goes in a script that is wrapped rather than included."""

from __future__ import annotations

import pytest

from migrator.forwarding import refuse_reason
from migrator.sieve import (
    Marker,
    check_address,
    forward_script,
    read_marker,
    sieve_string,
    split_requires,
)


@pytest.mark.parametrize(
    ("script", "head"),
    [
        ("", ""),
        ('require "fileinto";\nfileinto "X";\n', 'require "fileinto";\n'),
        ('require ["fileinto", "copy"];\r\nkeep;', 'require ["fileinto", "copy"];\r\n'),
        (
            '# mine\n/* block; with "quotes" */\nrequire "a";\nrequire ["b"];\n\nif true { stop; }',
            '# mine\n/* block; with "quotes" */\nrequire "a";\nrequire ["b"];\n\n',
        ),
        ('REQUIRE "fileinto"; keep;', 'REQUIRE "fileinto"; '),
        ('require "semi;colon\\"";\nkeep;', 'require "semi;colon\\"";\n'),
        ('keep;\nrequire "late";', ""),  # a require after a command: not ours to move
        ('require "unterminated', ""),  # not understood: split before it, never inside
        ("# only a comment", "# only a comment"),
    ],
)
def test_split_requires_takes_leading_comments_and_requires(script: str, head: str) -> None:
    got_head, rest = split_requires(script)
    assert (got_head, got_head + rest) == (head, script)


def test_the_marker_names_the_target_and_the_script_that_was_active() -> None:
    for previous in (None, "roundcube", 'odd "name" \\ é'):
        script = forward_script("new@example.net", previous, "keep;\n", use_include=True)
        assert read_marker(script) == Marker("new@example.net", previous)


def test_a_script_that_is_not_ours_has_no_marker() -> None:
    assert read_marker('require "fileinto";\nfileinto "X";\n') is None
    assert read_marker("# migrator-forward-to: a@b\n# migrator-previous-active: [1]\n") is None


def test_include_keeps_the_users_script_by_name() -> None:
    script = forward_script("new@example.net", "roundcube", None, use_include=True)
    body = [line for line in script.splitlines() if not line.startswith("#")]
    assert body == [
        'require ["copy", "include"];',
        'redirect :copy "new@example.net";',
        'include :personal "roundcube";',
    ]


def test_wrapping_puts_the_redirect_after_the_users_requires_and_keeps_the_rest() -> None:
    user = (
        '# user\r\nrequire ["fileinto"];\r\n'
        'if header :contains "Subject" "x" {\r\n  fileinto "X";\r\n}\r\n'
    )
    script = forward_script("new@example.net", "mine", user, use_include=False)
    head, rest = split_requires(user)
    assert script.endswith(head + 'require ["copy"];\nredirect :copy "new@example.net";\n' + rest)


def test_no_previous_script_means_the_redirect_alone() -> None:
    script = forward_script("new@example.net", None, None, use_include=False)
    body = [line for line in script.splitlines() if not line.startswith("#")]
    assert body == ['require ["copy"];', 'redirect :copy "new@example.net";']


@pytest.mark.parametrize(
    "address",
    ["new", "a b@example.net", 'a"b@example.net', "a@b@c", "a\n@b", "<a@b>", "a@b\\c", ""],
)
def test_only_plain_addresses_go_into_a_script(address: str) -> None:
    with pytest.raises(ValueError, match="not a plain mail address"):
        check_address(address)
    assert refuse_reason(["old@example.com"], address) is not None


def test_sieve_strings_escape_quotes_and_backslashes() -> None:
    assert sieve_string('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize(
    ("sources", "target", "loop"),
    [
        (["old@example.com"], "new@example.net", False),
        (["old@example.com"], "OLD@Example.com", True),
        (["old@example.com", "admin@example.com"], "admin@example.com", True),
    ],
)
def test_forwarding_a_mailbox_to_itself_is_refused(
    sources: list[str], target: str, loop: bool
) -> None:
    reason = refuse_reason(sources, target)
    assert (reason is not None and "loop" in reason) == loop
