"""Local sources: mailboxes restored from files below `--source-root` (`--source-type
maildir` or `mbox`), read through the same `MailboxSource` protocol as a server.

    paths.py          the SourceServer cell as a path, kept below the root
    settings.py       what a job carries for a local source: the root, the mbox format
    enqueue.py        what the enqueuing side does: each row's path resolved and checked
    refs.py           what both formats share: stable ids, dates, header blocks
    maildir.py        Maildir names, flags, keywords and folders (pure, and the tree walk)
    mbox.py           mbox From_ lines, escaping, status headers, the streaming index (pure)
    mboxtree.py       the folders of a directory of mbox files (Thunderbird, Apple Mail)
    maildirsource.py  MaildirSource
    mboxsource.py     MboxSource
    source.py         open_local_source: the one entry point the runner calls

This module imports nothing of the others: migrator.batch reads paths.py while it loads.
"""
