"""Batch and activation CSV parsing: text in, jobs and problems out."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.batch import (
    AccessMethod,
    parse_batch,
    parse_server,
    read_batch_file,
    resolve_credentials,
)
from migrator.csvtable import decode_csv_bytes
from migrator.errors import BadBatchRow, BatchError
from migrator.model import AdminLogin, BatchResult, Credentials, ServerAddress, TlsMode
from migrator.names import email_address_problem
from migrator.quotas import parse_quotas, read_quota_file
from migrator.secrets import Secret

ADMIN = AdminLogin(login="admin", password=Secret("admin-pw-7"))
HEADER = "SourceIdentity,SourceServer,SourceLoginID,SourcePassword,TargetIdentity,SourceRootFolder"
ROW_PASSWORD = "row-pw-3"
STARTTLS = TlsMode.STARTTLS


def batch(*rows: str, header: str = HEADER) -> str:
    return "\n".join((header, *rows)) + "\n"


def individual(text: str) -> BatchResult:
    return parse_batch(text, AccessMethod.INDIVIDUAL)


def problems_of(result: BatchResult) -> list[tuple[int, str]]:
    return [(p.line, p.column) for p in result.problems]


def only_problem(result: BatchResult) -> BadBatchRow:
    assert len(result.problems) == 1, result.problems
    return result.problems[0]


# --- access methods -> credentials -------------------------------------------------


ONE_ROW = batch(f"u1@example.com,mail.example.com,user01,{ROW_PASSWORD},,Shared/user01")


@pytest.mark.parametrize(
    ("method", "template", "expected"),
    [
        (AccessMethod.COMBINED, "{admin}/{user}", Credentials("admin/user01", ADMIN.password)),
        (AccessMethod.COMBINED, "{user}*{admin}", Credentials("user01*admin", ADMIN.password)),
        (AccessMethod.ROOTFOLDER, "{admin}/{user}", Credentials("user01", ADMIN.password)),
        (AccessMethod.INDIVIDUAL, "{admin}/{user}", Credentials("user01", Secret(ROW_PASSWORD))),
        (AccessMethod.MANUAL, "{admin}/{user}", Credentials("user01", Secret(ROW_PASSWORD))),
        (
            AccessMethod.PROXYAUTH,
            "{admin}/{user}",
            Credentials("admin", ADMIN.password, authzid="user01"),
        ),
    ],
)
def test_each_access_method_logs_in_with_its_own_credentials(
    method: AccessMethod, template: str, expected: Credentials
) -> None:
    result = parse_batch(ONE_ROW, method, admin=ADMIN, combined_template=template)
    assert result.problems == ()
    (job,) = result.jobs
    assert job.source_credentials == expected


def test_manual_login_is_used_exactly_as_written() -> None:
    text = batch(f"u1@example.com,mail.example.com,user01*admin,{ROW_PASSWORD},,")
    (job,) = parse_batch(text, AccessMethod.MANUAL).jobs
    assert job.source_credentials == Credentials("user01*admin", Secret(ROW_PASSWORD))


@pytest.mark.parametrize("method", list(AccessMethod))
def test_passwords_appear_only_in_credentials_password(method: AccessMethod) -> None:
    (job,) = parse_batch(ONE_ROW, method, admin=ADMIN).jobs
    password = job.source_credentials.password.reveal()
    assert password in (ROW_PASSWORD, "admin-pw-7")
    assert password not in job.source_credentials.login
    assert password not in (job.source_credentials.authzid or "")
    for text in (repr(job), str(job), f"{job}"):
        assert ROW_PASSWORD not in text
        assert "admin-pw-7" not in text


def test_a_row_longer_than_the_header_is_one_problem_and_no_other_checks() -> None:
    shifted = batch(f"u1@example.com,mail.example.com,us,er01,{ROW_PASSWORD},t@x.org,Folder")
    problem = only_problem(individual(shifted))
    assert (problem.line, problem.column) == (2, "7")
    assert ROW_PASSWORD not in str(problem)


def test_problems_never_quote_a_cell_so_a_shifted_password_stays_hidden() -> None:
    # An unquoted comma in the login puts the password under TargetIdentity.
    shifted = batch(f"u1@example.com,mail.example.com,us,er01,{ROW_PASSWORD},")
    problem = only_problem(individual(shifted))
    assert (problem.line, problem.column) == (2, "TargetIdentity")
    assert ROW_PASSWORD not in str(problem)


def test_a_shifted_row_does_not_claim_its_identity_for_later_rows() -> None:
    text = batch("u1@example.com,h,us,er01,pw,t@x.org,F", "u1@example.com,h,user01,pw,,")
    result = individual(text)
    assert problems_of(result) == [(2, "7")]
    assert [job.line for job in result.jobs] == [3]


def test_combined_template_may_put_the_user_first_for_dovecot() -> None:
    (job,) = parse_batch(
        ONE_ROW, AccessMethod.COMBINED, admin=ADMIN, combined_template="{user}/{admin}"
    ).jobs
    assert job.source_credentials.login == "user01/admin"


def test_combined_template_without_both_placeholders_is_a_batch_error() -> None:
    with pytest.raises(BatchError, match="template"):
        parse_batch(ONE_ROW, AccessMethod.COMBINED, admin=ADMIN, combined_template="{admin}")


def test_combined_template_does_not_interpret_braces_in_logins() -> None:
    text = batch("u1@example.com,mail.example.com,{admin.__class__},,,")
    (job,) = parse_batch(text, AccessMethod.COMBINED, admin=ADMIN).jobs
    assert job.source_credentials.login == "admin/{admin.__class__}"


@pytest.mark.parametrize("method", [AccessMethod.COMBINED, AccessMethod.ROOTFOLDER, "proxyauth"])
def test_methods_that_need_an_admin_refuse_the_batch_without_one(method: AccessMethod) -> None:
    with pytest.raises(BatchError, match="admin"):
        parse_batch(ONE_ROW, method)


def test_combined_does_not_need_a_source_password() -> None:
    text = batch("u1@example.com,mail.example.com,user01,,,")
    (job,) = parse_batch(text, AccessMethod.COMBINED, admin=ADMIN).jobs
    assert job.source_credentials.password == ADMIN.password


@pytest.mark.parametrize("method", [AccessMethod.INDIVIDUAL, AccessMethod.MANUAL])
def test_row_password_methods_report_an_empty_password_cell(method: AccessMethod) -> None:
    text = batch("u1@example.com,mail.example.com,user01,,,", "u2@example.com,h,user02,pw,,")
    result = parse_batch(text, method)
    assert problems_of(result) == [(2, "SourcePassword")]
    assert [job.source_identity for job in result.jobs] == ["u2@example.com"]


def test_rootfolder_requires_the_root_folder_and_carries_it_into_the_job() -> None:
    text = batch("u1@example.com,h,admin,,,", "u2@example.com,h,admin,,,Shared/u2")
    result = parse_batch(text, AccessMethod.ROOTFOLDER, admin=ADMIN)
    assert problems_of(result) == [(2, "SourceRootFolder")]
    (job,) = result.jobs
    assert job.source_root_folder == "Shared/u2"


def test_individual_keeps_an_optional_root_folder() -> None:
    (job,) = individual(ONE_ROW).jobs
    assert job.source_root_folder == "Shared/user01"


@pytest.mark.parametrize(
    ("method", "column"),
    [(AccessMethod.INDIVIDUAL, "SourcePassword"), (AccessMethod.ROOTFOLDER, "SourceRootFolder")],
)
def test_a_column_the_method_needs_missing_from_the_header_is_a_batch_error(
    method: AccessMethod, column: str
) -> None:
    header = HEADER.replace(f",{column}", "")
    with pytest.raises(BatchError, match=column):
        parse_batch(batch(header=header), method, admin=ADMIN)


def test_resolve_credentials_raises_bad_batch_row_for_a_row_without_password() -> None:
    from migrator.batch import BatchRow

    row = BatchRow(
        line=7,
        source_identity="u@example.com",
        source_server=parse_server("h"),
        source_login_id="u",
        source_password=None,
        target_identity="u@example.com",
        source_root_folder=None,
    )
    with pytest.raises(BadBatchRow) as caught:
        resolve_credentials(row, AccessMethod.INDIVIDUAL, None, "{admin}/{user}")
    assert (caught.value.line, caught.value.column) == (7, "SourcePassword")


# --- file format ---------------------------------------------------------------------


# --- per-row target logins (--target-method individual) ------------------------------

TARGET_HEADER = HEADER + ",TargetLoginID,TargetPassword"


def test_each_row_may_name_its_own_target_login() -> None:
    text = batch(
        f"u1@example.com,mail.example.com,user01,{ROW_PASSWORD},u1@new.example,,u1,t-pw-1",
        header=TARGET_HEADER,
    )

    (job,) = parse_batch(text, AccessMethod.INDIVIDUAL, target_logins=True).jobs

    assert job.target_credentials == Credentials("u1", Secret("t-pw-1"))


def test_without_target_logins_the_columns_are_ignored() -> None:
    text = batch(
        f"u1@example.com,mail.example.com,user01,{ROW_PASSWORD},,,u1,t-pw-1",
        header=TARGET_HEADER,
    )

    (job,) = individual(text).jobs

    assert job.target_credentials is None


def test_target_logins_need_both_columns_in_the_header() -> None:
    with pytest.raises(BatchError, match=r"TargetLoginID.*--target-method individual"):
        parse_batch(batch(f"u1@example.com,h,user01,{ROW_PASSWORD}"), AccessMethod.INDIVIDUAL,
                    target_logins=True)  # fmt: skip


def test_an_empty_target_login_cell_is_a_problem_of_its_line() -> None:
    text = batch(
        f"u1@example.com,mail.example.com,user01,{ROW_PASSWORD},,,u1,",
        f"u2@example.com,mail.example.com,user02,{ROW_PASSWORD},,,u2,t-pw-2",
        header=TARGET_HEADER,
    )

    result = parse_batch(text, AccessMethod.INDIVIDUAL, target_logins=True)

    assert problems_of(result) == [(2, "TargetPassword")]
    assert "individual" in str(only_problem(result))
    assert [j.source_identity for j in result.jobs] == ["u2@example.com"]


def test_bom_from_excel_is_ignored() -> None:
    data = b"\xef\xbb\xbf" + ONE_ROW.encode()
    text = decode_csv_bytes(data, what="batch.csv")
    assert len(individual(text).jobs) == 1
    assert len(individual("\ufeff" + ONE_ROW).jobs) == 1


def test_header_names_are_case_insensitive_and_trimmed() -> None:
    header = " sourceidentity , SOURCESERVER,SourceLoginId,sourcepassword"
    result = individual(batch("u1@example.com,h,user01,pw", header=header))
    assert len(result.jobs) == 1


def test_unknown_columns_are_ignored() -> None:
    header = "Notes,SourceIdentity,SourceServer,SourceLoginID,SourcePassword"
    (job,) = individual(batch("=not checked,u1@example.com,h,user01,pw", header=header)).jobs
    assert job.source_identity == "u1@example.com"


def test_cells_are_trimmed() -> None:
    (job,) = individual(batch(" u1@example.com , mail.example.com ,  user01 , pw ,, ")).jobs
    assert (job.source_identity, job.source_server.host) == ("u1@example.com", "mail.example.com")
    assert job.source_credentials == Credentials("user01", Secret("pw"))
    assert job.source_root_folder is None


def test_target_identity_defaults_to_source_identity() -> None:
    result = individual(batch("u1@example.com,h,user01,pw,,", "u2@example.com,h,u2,pw,n@x.org,"))
    assert [job.target_identity for job in result.jobs] == ["u1@example.com", "n@x.org"]


def test_missing_required_column_names_it() -> None:
    with pytest.raises(BatchError, match="SourceServer"):
        individual(batch(header="SourceIdentity,SourceLoginID,SourcePassword"))


def test_semicolon_separated_file_gets_a_hint() -> None:
    with pytest.raises(BatchError, match="';'"):
        individual("SourceIdentity;SourceServer;SourceLoginID;SourcePassword\n")


def test_a_header_column_given_twice_is_a_batch_error() -> None:
    with pytest.raises(BatchError, match="twice"):
        individual(batch(header=HEADER + ",sourceidentity"))


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff"])
def test_an_empty_file_is_a_batch_error(text: str) -> None:
    with pytest.raises(BatchError, match="empty"):
        individual(text)


def test_header_only_gives_no_jobs_and_no_problems() -> None:
    assert individual(batch()) == BatchResult(jobs=(), problems=())


def test_empty_lines_are_skipped_but_counted() -> None:
    text = (
        f"\n{HEADER}\n\n,,,,,\nu1@example.com,h,user01,pw,,\n\n  \n"
        "u2@example.com,bad host,u2,pw,,\n"
    )
    result = individual(text)
    assert [job.line for job in result.jobs] == [5]
    assert problems_of(result) == [(8, "SourceServer")]


def test_crlf_line_endings_count_like_lf() -> None:
    text = batch("u1@example.com,h,user01,pw,,", "u2@example.com,h,user02,,,").replace("\n", "\r\n")
    result = individual(text)
    assert [job.line for job in result.jobs] == [2]
    assert problems_of(result) == [(3, "SourcePassword")]


def test_embedded_newline_in_a_quoted_cell_keeps_later_line_numbers_right() -> None:
    text = batch(
        'u1@example.com,h,user01,"pass\nword\nwith lines",,',
        "u2@example.com,h,user02,,,",
        'u3@example.com,h,user03,pw,,"Folder\nname"',
        "u4@example.com,h,user04,,,",
    )
    result = individual(text)
    assert [job.line for job in result.jobs] == []
    assert problems_of(result) == [
        (2, "SourcePassword"),  # a control character: the newline
        (5, "SourcePassword"),
        (6, "SourceRootFolder"),
        (8, "SourcePassword"),
    ]


def test_a_quote_left_open_is_a_batch_error_naming_where_the_row_starts() -> None:
    text = batch("u1@example.com,h,user01,pw,,", 'u2@x.org,h,"user02,pw,,', "u3@x.org,h,u,p,,")
    with pytest.raises(BatchError, match="line 3"):
        individual(text)


def test_non_utf8_file_error_names_the_line_of_the_first_bad_byte() -> None:
    data = batch("u1@example.com,h,user01,pw,,", "m\xfcller@example.com,h,u,pw,,").encode("cp1252")
    with pytest.raises(BatchError, match=r"batch\.csv is not UTF-8: line 3 has the byte 0xFC"):
        decode_csv_bytes(data, what="batch.csv")


def test_non_utf8_error_does_not_carry_the_file_contents() -> None:
    data = f"{HEADER}\nu@x.org,h,u,{ROW_PASSWORD}\xff,,\n".encode("latin-1")
    with pytest.raises(BatchError) as caught:
        decode_csv_bytes(data, what="batch.csv")
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


def test_utf16_file_gets_a_hint() -> None:
    with pytest.raises(BatchError, match="UTF-16"):
        decode_csv_bytes(ONE_ROW.encode("utf-16"), what="batch.csv")


def test_read_batch_file_decodes_and_names_the_path_in_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(b"\xef\xbb\xbf" + ONE_ROW.encode())
    assert len(read_batch_file(good, AccessMethod.INDIVIDUAL).jobs) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("Identity\n", encoding="utf-8")
    with pytest.raises(BatchError, match=r"bad\.csv: .*SourceIdentity"):
        read_batch_file(bad, AccessMethod.INDIVIDUAL)
    with pytest.raises(BatchError, match=r"missing\.csv"):
        read_batch_file(tmp_path / "missing.csv", AccessMethod.INDIVIDUAL)


# --- row problems --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        (",h,user02,pw,,", "SourceIdentity", "empty"),
        ("u2@example.com,,user02,pw,,", "SourceServer", "empty"),
        ("u2@example.com,h,,pw,,", "SourceLoginID", "empty"),
        ("u2@example,h,user02,pw,,", "SourceIdentity", "no dot"),
        ("u2@example.com,h,user02,pw,not-an-address,", "TargetIdentity", "local@domain"),
        ("u2@example.com,imaps://h:99999,user02,pw,,", "SourceServer", "65535"),
        ("=cmd|' /C calc'!A0,h,user02,pw,,", "SourceIdentity", "spreadsheets"),
        ("u2@example.com,+h,user02,pw,,", "SourceServer", "spreadsheets"),
        ("u2@example.com,h,-user02,pw,,", "SourceLoginID", "spreadsheets"),
        ("u2@example.com,h,user02,pw,@SUM(1),", "TargetIdentity", "spreadsheets"),
        ("u2@example.com,h,user\x0002,pw,,", "SourceLoginID", "U+0000"),
        ("u2@example.com,h,user02,p\x1bw,,", "SourcePassword", "U+001B"),
        ("u2@example.com,h,user02,pw,,Shared\tu2", "SourceRootFolder", "U+0009"),
        ("u2@example.com,h,user02,pw,,,surplus", "7", "7 cells"),
    ],
)
def test_a_bad_row_is_a_problem_on_its_line_and_column_and_good_rows_survive(
    row: str, column: str, words: str
) -> None:
    result = individual(batch("u1@example.com,h,user01,pw,,", row, "u3@example.com,h,u3,pw,,"))
    problem = only_problem(result)
    assert (problem.line, problem.column) == (3, column)
    assert words in problem.problem
    assert [job.line for job in result.jobs] == [2, 4]


def test_trailing_empty_cells_beyond_the_header_are_not_a_problem() -> None:
    assert len(individual(batch("u1@example.com,h,user01,pw,,,,,")).jobs) == 1


def test_a_short_row_reads_missing_cells_as_empty() -> None:
    (job,) = individual(batch("u1@example.com,h,user01,pw")).jobs
    assert job.target_identity == "u1@example.com"


def test_one_row_can_have_several_problems_one_per_column() -> None:
    result = individual(batch("bad,,=x,,,"))
    assert problems_of(result) == [
        (2, "SourceLoginID"),
        (2, "SourceIdentity"),
        (2, "SourceServer"),
        (2, "SourcePassword"),
    ]


def test_duplicate_source_identity_names_the_first_line_case_insensitively() -> None:
    text = batch(
        "u1@example.com,h,user01,pw,t1@example.com,",
        "u2@example.com,h,user02,pw,t2@example.com,",
        "U1@Example.COM,h,user03,pw,t3@example.com,",
    )
    result = individual(text)
    problem = only_problem(result)
    assert (problem.line, problem.column) == (4, "SourceIdentity")
    assert "line 2" in problem.problem
    assert [job.line for job in result.jobs] == [2, 3]


def test_duplicate_target_identity_names_the_first_line() -> None:
    text = batch(
        "u1@example.com,h,user01,pw,,",
        "u2@example.com,h,user02,pw,U1@example.com,",
    )
    problem = only_problem(individual(text))
    assert (problem.line, problem.column) == (3, "TargetIdentity")
    assert "line 2" in problem.problem


def test_a_repeated_row_is_reported_once_not_also_as_a_duplicate_target() -> None:
    row = "u1@example.com,h,user01,pw,,"
    assert problems_of(individual(batch(row, row))) == [(3, "SourceIdentity")]


def test_bad_server_problem_is_the_parse_server_message() -> None:
    problem = only_problem(individual(batch("u1@example.com,http://h,user01,pw,,")))
    with pytest.raises(ValueError) as caught:
        parse_server("http://h")
    assert problem.problem == str(caught.value)


def test_pop3_batches_read_pop3_addresses() -> None:
    text = batch("u1@example.com,pop3s://pop.example.com,user01,pw,,")
    (job,) = parse_batch(text, AccessMethod.INDIVIDUAL, protocol="pop3").jobs
    assert job.source_server == ServerAddress("pop.example.com", 995, TlsMode.IMPLICIT, "pop3")
    assert str(job.source_server) == "pop3s://pop.example.com:995"


# --- server addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "protocol", "expected"),
    [
        ("mail.example.com", "imap", ServerAddress("mail.example.com", 143, TlsMode.STARTTLS)),
        ("mail.example.com:1143", "imap", ServerAddress("mail.example.com", 1143, STARTTLS)),
        ("localhost", "imap", ServerAddress("localhost", 143, TlsMode.STARTTLS)),
        ("192.0.2.7:993", "imap", ServerAddress("192.0.2.7", 993, TlsMode.STARTTLS)),
        ("[2001:db8::1]:993", "imap", ServerAddress("2001:db8::1", 993, TlsMode.STARTTLS)),
        ("[::1]", "imap", ServerAddress("::1", 143, TlsMode.STARTTLS)),
        ("imap://h", "imap", ServerAddress("h", 143, TlsMode.STARTTLS)),
        ("imap://h:10143", "imap", ServerAddress("h", 10143, TlsMode.STARTTLS)),
        ("imaps://h", "imap", ServerAddress("h", 993, TlsMode.IMPLICIT)),
        ("IMAPS://h:1993/", "imap", ServerAddress("h", 1993, TlsMode.IMPLICIT)),
        ("imaps://[2001:db8::2]", "imap", ServerAddress("2001:db8::2", 993, TlsMode.IMPLICIT)),
        ("bücher.example", "imap", ServerAddress("bücher.example", 143, TlsMode.STARTTLS)),
        ("pop.example.com", "pop3", ServerAddress("pop.example.com", 110, STARTTLS, "pop3")),
        ("pop3://h", "pop3", ServerAddress("h", 110, TlsMode.STARTTLS, "pop3")),
        ("pop3s://h", "pop3", ServerAddress("h", 995, TlsMode.IMPLICIT, "pop3")),
        ("pop3s://h:1995", "pop3", ServerAddress("h", 1995, TlsMode.IMPLICIT, "pop3")),
    ],
)
def test_parse_server_accepts(text: str, protocol: str, expected: ServerAddress) -> None:
    assert parse_server(text, protocol=protocol) == expected


@pytest.mark.parametrize(
    ("text", "protocol", "words"),
    [
        ("", "imap", "empty"),
        ("mail example.com", "imap", "space"),
        ("h:", "imap", "not a number"),
        ("h:imap", "imap", "not a number"),
        ("h:0", "imap", "between 1 and 65535"),
        ("h:65536", "imap", "between 1 and 65535"),
        ("h:-1", "imap", "not a number"),
        ("http://h", "imap", "unknown scheme"),
        ("pop3s://h", "imap", "POP3 address"),
        ("imaps://h", "pop3", "IMAP address"),
        ("imaps://user:secret@h", "imap", "user name or password"),
        ("imap://h/INBOX", "imap", "path"),
        ("2001:db8::1", "imap", "brackets"),
        ("[2001:db8::1", "imap", "closing"),
        ("[not-v6]:993", "imap", "not an IPv6 address"),
        ("[::1]993", "imap", ":port"),
        ("300.1.1.1", "imap", "not an IPv4 address"),
        ("-h.example.com", "imap", "not a domain name"),
        ("h_1.example.com", "imap", "not a domain name"),
        ("a..b", "imap", "not a domain name"),
        ("imap://", "imap", "no host"),
        (":993", "imap", "no host"),
        ("h", "smtp", "unknown protocol"),
    ],
)
def test_parse_server_refuses_with_a_human_message(text: str, protocol: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_server(text, protocol=protocol)


def test_parse_server_never_echoes_a_password_in_the_url() -> None:
    with pytest.raises(ValueError) as caught:
        parse_server("imaps://user:hunter2@h")
    assert "hunter2" not in str(caught.value)


def test_server_address_prints_as_a_url() -> None:
    assert str(parse_server("[2001:db8::1]")) == "imap://[2001:db8::1]:143"
    assert str(parse_server("imaps://h")) == "imaps://h:993"


# --- email addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "user@xn--bcher-kva.example",
        "user@bücher.example",
        "δοκιμή@παράδειγμα.δοκιμή",
        "用户@例子.广告",
        "user@my-host.example.com",
    ],
)
def test_usable_addresses_have_no_problem(address: str) -> None:
    assert email_address_problem(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "user",
        "user@@example.com",
        "a@b@example.com",
        "@example.com",
        "user@",
        "user@localhost",
        "us er@example.com",
        "user\x07@example.com",
        "<user>@example.com",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "user@exa mple.com",
        "user@example..com",
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "x" * 65 + "@example.com",
    ],
)
def test_unusable_addresses_have_a_problem(address: str) -> None:
    assert email_address_problem(address) is not None


# --- quota (activation) CSV ----------------------------------------------------------


QUOTA_HEADER = "Identity,SubscriptionIds,UserLocation,MailboxQuotaSize"


def test_quota_csv_maps_lower_cased_identity_to_bytes() -> None:
    text = "\ufeff" + "\n".join(
        [
            "identity, mailboxquotasize",
            "User1@Example.com, 53687091200",
            "u2@example.com,0",
            f"u3@example.com,{2**63 - 1}",
        ]
    )
    result = parse_quotas(text)
    assert result.problems == ()
    assert dict(result.quotas) == {
        "user1@example.com": 53687091200,
        "u2@example.com": 0,
        "u3@example.com": 2**63 - 1,
    }


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("u2@example.com,s,eu,", "MailboxQuotaSize", "empty"),
        (",s,eu,100", "Identity", "empty"),
        ("u2@example.com,s,eu,50 GB", "MailboxQuotaSize", "whole number"),
        ("u2@example.com,s,eu,1_000", "MailboxQuotaSize", "whole number"),
        ("u2@example.com,s,eu,1.5", "MailboxQuotaSize", "whole number"),
        ("u2@example.com,s,eu,-1", "MailboxQuotaSize", "negative"),
        (f"u2@example.com,s,eu,{2**63}", "MailboxQuotaSize", "Int64"),
        ("U1@EXAMPLE.COM,s,eu,100", "Identity", "line 2"),
    ],
)
def test_quota_problems_name_line_and_column_and_good_rows_survive(
    row: str, column: str, words: str
) -> None:
    result = parse_quotas("\n".join([QUOTA_HEADER, "u1@example.com,s,eu,100", row, "u3@x.org,,,7"]))
    (problem,) = result.problems
    assert (problem.line, problem.column) == (3, column)
    assert words in problem.problem
    assert dict(result.quotas) == {"u1@example.com": 100, "u3@x.org": 7}


def test_quota_csv_without_quota_column_is_a_batch_error() -> None:
    with pytest.raises(BatchError, match="MailboxQuotaSize"):
        parse_quotas("Identity,UserLocation\nu@x.org,eu\n")


def test_quota_mapping_is_read_only() -> None:
    quotas = parse_quotas(f"{QUOTA_HEADER}\nu@x.org,,,1\n").quotas
    with pytest.raises(TypeError):
        quotas["v@x.org"] = 2  # type: ignore[index]


def test_read_quota_file_accepts_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "activation.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{QUOTA_HEADER}\nu@x.org,,,1\n".encode())
    assert dict(read_quota_file(path).quotas) == {"u@x.org": 1}


# --- scale ---------------------------------------------------------------------------


def test_a_hundred_thousand_rows_parse_with_duplicates_found() -> None:
    rows = [f"user{i}@example.com,mail{i % 50}.example.com,user{i},pw{i},," for i in range(100_000)]
    rows.append("USER99999@example.com,mail.example.com,again,pw,,")
    result = individual(batch(*rows))
    assert len(result.jobs) == 100_000
    problem = only_problem(result)
    assert (problem.line, problem.column) == (100_002, "SourceIdentity")
    assert "line 100001" in problem.problem
