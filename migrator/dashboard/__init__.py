"""`migrator dashboard`: a read-only web page over the batches in Redis, and /metrics.

views.py    what the page shows, as JSON-ready values read from StateStore
metrics.py  the same figures in the Prometheus format (prometheus_client)
app.py      the Starlette app: the page, its JSON, /metrics; auth off loopback
static/     the page itself (HTML, CSS, JS): shipped in the package, no CDN
"""
