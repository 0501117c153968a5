"""The `migrator` command: mailboxes copied from old mail servers to new ones, on this
machine (`run`) or by Celery workers (`enqueue`), kept in step until cutover (`sync`,
`complete`), and what operators look at."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.markup import escape

from migrator import dispatch
from migrator.argtypes import WORKERS
from migrator.batchprep import (
    load_manifest,
    manifest_path,
    prepare,
    print_problems,
    read_batch,
    save_manifest,
    secret_box,
)
from migrator.cliargs import (
    batch_arguments,
    run_arguments,
)
from migrator.clihelp import (
    EXAMPLES,
    VersionAction,
    command_parser,
    config_argument,
    read_config,
)
from migrator.display import result_table, status_json, status_table, watch
from migrator.errors import ConfigError, MigrationError
from migrator.jobs import Job
from migrator.localredis import REDIS_URL_ENV as REDIS_URL_ENV  # re-exported
from migrator.localredis import PrivateRedis, shared_url, state_dir
from migrator.localrun import Interrupted, run_in_process
from migrator.opscli import add_ops_commands, known_batch, reading_store
from migrator.report import MailboxState
from migrator.secrets import (
    SECRET_KEY_ENV,
    install_redaction,
    new_key,
    redact,
)
from migrator.state import NewJob, StateStore
from migrator.terminal import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    console,
    err_console,
    wide_console,
)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    private = _private_redis_early(words)
    try:
        return _main(words, private)
    finally:
        if private is not None:
            private.stop()  # nothing once `run` has left it; a server started for nothing


def _main(words: list[str], private: PrivateRedis | None) -> int:
    parser = _parser(_command_word(words))
    try:
        read_config(parser, words)
    except MigrationError as exc:
        err_console.print("[red]error:[/]", escape(str(exc)), highlight=False)
        return EXIT_BAD_INPUT
    args = parser.parse_args(words)
    args.private_redis = private
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # imapclient logs every line and literal at DEBUG (message bodies): never let -v show
    # them; and its INFO lines ("Connection closed") only with -v.
    logging.getLogger("imapclient").setLevel(logging.INFO if args.verbose else logging.WARNING)
    install_redaction(logging.getLogger())
    try:
        return int(args.func(args))
    except MigrationError as exc:
        err_console.print("[red]error:[/]", escape(redact(str(exc))), highlight=False)
        return EXIT_BAD_INPUT
    except Interrupted as exc:  # `velocity run` (`run` and `resume` catch their own)
        err_console.print(str(exc), highlight=False, markup=False)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED


def _private_redis_early(words: Sequence[str]) -> PrivateRedis | None:
    """`migrator run` without MIGRATOR_REDIS_URL: its private redis-server, starting (in a
    thread: it takes some 0.02 s, mostly waiting for the server) while the command line
    and the batch file are read.  None for any other command, for --help, and where the
    state directory cannot be made (the command says so where it always did)."""
    if _command_word(words) != "run" or os.environ.get(REDIS_URL_ENV):
        return None
    if any(w in ("-h", "--help") for w in words):
        return None
    try:
        return PrivateRedis(state_dir()).begin()
    except OSError:
        return None


# -- argument parsing -----------------------------------------------------------------


# The commands written in this module: a command line naming one of them gets a parser of
# that command alone (the others' options, and the modules behind them, cost 0.05 s).
CORE_COMMANDS = frozenset({"validate", "run", "enqueue", "status", "resume", "keygen"})


def _command_word(words: Sequence[str]) -> str | None:
    """The command the words name, when it is one of CORE_COMMANDS (the top-level options
    take no value, so it is the first word that is not an option)."""
    first = next((w for w in words if not w.startswith("-")), None)
    return first if first in CORE_COMMANDS else None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or, with `only` (one of CORE_COMMANDS), that command's."""

    def wanted(name: str) -> bool:
        return only is None or only == name

    parser = argparse.ArgumentParser(
        prog="migrator",
        description=__doc__,
        epilog=EXAMPLES[""],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what is done, for a bug report"
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    if wanted("validate"):
        validate = command_parser(sub, "validate", "check a batch CSV and name each bad line")
        batch_arguments(validate)
        validate.set_defaults(func=cmd_validate)

    for name, func, text in (
        ("run", cmd_run, "run a batch on this machine and wait"),
        ("enqueue", cmd_enqueue, "enqueue a batch for Celery workers; print its id"),
    ):
        if not wanted(name):
            continue
        command = command_parser(sub, name, text)
        batch_arguments(command)
        run_arguments(command)
        config_argument(command)
        command.set_defaults(func=func)

    if wanted("status"):
        _status_parser(sub)
    if wanted("resume"):
        _resume_parser(sub)
    if only is None:
        _other_commands(sub)
    if wanted("keygen"):
        keygen = sub.add_parser("keygen", help=f"print a new key for {SECRET_KEY_ENV}")
        keygen.set_defaults(func=lambda _a: print(new_key()) or 0)
    return parser


def _other_commands(sub: Any) -> None:
    """The commands written in other modules (velocity, forwarding, the operators', check,
    sync), imported here: they build on this module's run machinery."""
    from migrator.velocity.cli import add_velocity_commands

    add_velocity_commands(sub)
    from migrator.forwardcli import add_forwarding_commands

    add_forwarding_commands(sub)
    add_ops_commands(sub)
    from migrator.checkcli import add_check_command

    add_check_command(sub)
    from migrator.synccli import add_sync_commands

    add_sync_commands(sub)


def _status_parser(sub: Any) -> None:
    status = command_parser(sub, "status", "the table of a batch: a row per mailbox and the totals")
    status.add_argument("batch", help="the batch id (`migrator batches` lists them)")
    status.add_argument("--json", action="store_true", help="as JSON, every figure")
    status.set_defaults(func=cmd_status)


def _resume_parser(sub: Any) -> None:
    resume = command_parser(sub, "resume", "re-enqueue every mailbox of a batch not done")
    resume.add_argument("batch", help="the batch id (`migrator batches` lists them)")
    resume.add_argument(
        "--workers", type=WORKERS, default=4, help="in-process pool size (no Redis URL)"
    )
    resume.add_argument("--no-wait", action="store_true", help="with Celery: do not wait")
    resume.set_defaults(func=cmd_resume)


# -- commands -------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    result = read_batch(args)
    print_problems(result, args.batch_csv)
    bad_lines = sorted({p.line for p in result.problems})
    console.print(
        f"{len(result.jobs)} good rows, {len(bad_lines)} bad rows"
        + (f" (lines {', '.join(map(str, bad_lines))})" if bad_lines else ""),
        highlight=False,
    )
    return EXIT_BAD_INPUT if result.problems else 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    url = _require_url()
    box = secret_box(create=False)
    batch_id, meta, jobs = prepare(args, box)
    store = StateStore.from_url(url)
    _create_batch(store, args, batch_id, meta, jobs)
    _send_tasks(url, batch_id, [j.job_id for j in jobs])
    print(batch_id)
    return 0


def _create_batch(
    store: StateStore,
    args: argparse.Namespace,
    batch_id: str,
    meta: dict[str, str],
    jobs: list[NewJob],
) -> None:
    """The batch in Redis and its copy on this machine; a named batch that exists already
    is refused (writing it again would reset the rows of a run that may still go on),
    unless --replace says to, and then only while none of its mailboxes runs."""
    if args.batch_id and store.batch_exists(batch_id):
        if not getattr(args, "replace", False):
            raise ConfigError(
                f"batch {batch_id} exists already: `migrator resume {batch_id}` goes on with "
                "it, --replace replaces it, or give another --batch-id"
            )
        running = store.running_mailboxes(batch_id)
        if running:
            raise ConfigError(
                f"batch {batch_id} has {running} mailboxes running: not replaced (wait for "
                f"them, `migrator status {batch_id}`)"
            )
        store.delete_batch(batch_id)
    store.create_batch(batch_id, meta, jobs)
    save_manifest(batch_id, meta, jobs)


def cmd_run(args: argparse.Namespace) -> int:
    url = shared_url()  # known to work before anything is written
    box = secret_box(create=True)
    batch_id, meta, jobs = prepare(args, box)
    job_ids = [j.job_id for j in jobs]
    interrupted = False
    forwarded = None
    with contextlib.ExitStack() as stack:
        if url:
            store = StateStore.from_url(url)
        else:  # one per state directory: joined if another command runs it already
            private = getattr(args, "private_redis", None) or PrivateRedis(state_dir())
            store = StateStore.from_url(stack.enter_context(private).url)
        _create_batch(store, args, batch_id, meta, jobs)
        err_console.print(f"batch {batch_id}: {len(jobs)} mailboxes", highlight=False)
        if args.insecure:
            err_console.print("[yellow]TLS certificates are NOT verified (--insecure)[/]")
        if url:
            _send_tasks(url, batch_id, job_ids)
            try:
                rows = watch(store, batch_id, err_console)
            except KeyboardInterrupt:
                err_console.print(
                    f"stopped watching; the workers go on (`migrator status {batch_id}`)",
                    highlight=False,
                )
                return EXIT_INTERRUPTED
        else:
            try:
                rows = run_in_process(store, batch_id, job_ids, box, args.workers)
            except Interrupted as exc:
                rows, interrupted = exc.rows, True
        if not interrupted:
            forwarded = _forwarding_after_copy(store, args, jobs)
    console.print(result_table(rows, f"batch {batch_id}"))
    if forwarded is not None:
        from migrator.forwardcli import print_outcomes

        print_outcomes(forwarded, f"forwarding after copy: batch {batch_id}", as_json=False)
    if interrupted:
        err_console.print(Interrupted(batch_id, rows), highlight=False, markup=False)
        return EXIT_INTERRUPTED
    return 0 if all(r.state.copied for r in rows) else 1


def _forwarding_after_copy(
    store: StateStore, args: argparse.Namespace, jobs: Sequence[NewJob]
) -> list[dict[str, str]] | None:
    if not args.forward_after_copy:
        return None
    from migrator.forwardcli import forwarding_rows

    return forwarding_rows(store, [Job.from_json(j.payload) for j in jobs])


def cmd_status(args: argparse.Namespace) -> int:
    with reading_store() as (store, where):
        return _print_status(store, args, where)


def _print_status(store: StateStore, args: argparse.Namespace, where: str) -> int:
    known_batch(store, args.batch, where)
    if args.json:
        print(status_json(store, args.batch))
        return 0
    meta = store.batch_meta(args.batch)
    title = f"batch {args.batch}"
    if meta.get("insecure") == "yes":
        title += " (TLS NOT verified: --insecure)"
    wide_console().print(status_table(store, args.batch, title))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    url = shared_url()
    if url:
        store = StateStore.from_url(url)
        pending = _pending(store, args.batch)
        _send_tasks(url, args.batch, pending)
        err_console.print(f"batch {args.batch}: {len(pending)} mailboxes re-enqueued")
        if args.no_wait:
            return 0
        try:
            rows = watch(store, args.batch, err_console)
        except KeyboardInterrupt:
            err_console.print(
                f"stopped watching; the workers go on (`migrator status {args.batch}`)",
                highlight=False,
            )
            return EXIT_INTERRUPTED
    else:
        box = secret_box(create=False)
        try:
            with PrivateRedis(state_dir()) as private:
                store = StateStore.from_url(private.url)
                pending = _pending(store, args.batch)
                rows = run_in_process(store, args.batch, pending, box, args.workers)
        except Interrupted as exc:
            console.print(result_table(exc.rows, f"batch {args.batch}"))
            err_console.print(exc, highlight=False, markup=False)
            return EXIT_INTERRUPTED
    console.print(result_table(rows, f"batch {args.batch}"))
    return 0 if all(r.state.copied for r in rows) else 1


def _pending(store: StateStore, batch_id: str) -> list[str]:
    """Mailboxes not done; the batch is restored from this machine's copy if Redis lost it.

    A mailbox that ended (failed, interrupted, ...) is queued again; one that is queued or
    running stays as it is: another command (a `run` still going) may be copying it, and
    the mailbox lock makes this one wait for it."""
    if not store.batch_exists(batch_id):
        saved = load_manifest(batch_id)
        if saved is None:
            raise ConfigError(f"batch {batch_id} is neither in Redis nor saved on this machine")
        err_console.print(f"batch {batch_id} restored from {manifest_path(batch_id)}")
        store.create_batch(batch_id, *saved)
    store.reopen_batch(batch_id)
    pending = []
    for row in store.mailboxes(batch_id):
        if row.state.copied:  # done, synced or completed
            continue
        if row.state.final:
            store.set_state(batch_id, row.job_id, MailboxState.QUEUED)
        pending.append(row.job_id)
    return pending


def _require_url() -> str:
    """MIGRATOR_REDIS_URL, known to work (checked and answering) before anything is written."""
    url = shared_url()
    if not url:
        raise ConfigError(f"{REDIS_URL_ENV} is not set: enqueue needs the workers' Redis")
    return url


def _send_tasks(url: str, batch_id: str, job_ids: Sequence[str]) -> None:
    dispatch.dispatcher().send_mailboxes(url, batch_id, job_ids)


if __name__ == "__main__":
    sys.exit(main())
