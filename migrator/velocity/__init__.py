"""Velocity: measure how fast mail moves on a pilot, then size the waves from it.

inventory.py  inventory CSV <-> InventoryRow values (pure)
survey.py     reads sizes and item counts from source IMAP servers into InventoryRows
plan.py       waves, workers and duration from an inventory and a throughput (pure)
store.py      the Redis reads and deletes velocity needs (a compromise: see there)
report.py     per-mailbox and total figures of a pilot run, as values, JSON and HTML
chart.py      the throughput-over-time and concurrency charts (inline SVG, PNG)
reset.py      empties the pilot's target mailboxes between measurement points
run.py        runs the pilot once per measurement point and writes the report
cli.py        `migrator velocity run|plan` and `migrator inventory`
"""
