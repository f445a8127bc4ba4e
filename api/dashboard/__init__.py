"""The dashboard: GPUs, the queue and runs in the browser, served by the API itself.

No new process and nothing from a CDN: server-rendered pages (every value escaped
by :mod:`.pages`) and one small script and stylesheet from ``static/`` that draw
the live parts with DOM text nodes, so a run name or a log line with HTML in it
shows as text. A login with the user's token opens a session kept in Redis; the
browser holds only the session id, in a cookie that is HttpOnly, SameSite=Strict
and Secure behind TLS. Live updates come over server-sent events.
"""
