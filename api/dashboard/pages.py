"""The dashboard's HTML, server-rendered. Every value goes through :func:`html.escape`.

The pages load only ``/dashboard/static/`` files (the Content-Security-Policy
set by the routes forbids anything else, inline scripts included), so the
page works with no network beyond Berth and nothing a run prints can run.
"""

from __future__ import annotations

from html import escape

from shared.state.records import Run

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
</head>"""


def login_page(error: str | None = None) -> str:
    message = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    return (
        _HEAD.format(title="Berth: log in")
        + f"""<body class="login">
<main>
<h1>Berth</h1>
<p>Log in with your Berth token (<code>~/.berth/config.yml</code>, or ask an admin).</p>
{message}
<form method="post" action="/dashboard/login">
<label>Token <input type="password" name="token" id="token" autocomplete="off" required></label>
<button type="submit" id="login">Log in</button>
</form>
</main>
</body></html>"""
    )


def app_page(user: str) -> str:
    return (
        _HEAD.format(title="Berth")
        + f"""<body data-user="{escape(user)}">
<header><h1>Berth</h1><span class="who">{escape(user)}</span>
<form method="post" action="/dashboard/logout"><button type="submit">Log out</button></form>
<span id="live" class="live">connecting…</span></header>
<main id="projects"><p>Loading…</p></main>
<script src="/dashboard/static/dashboard.js"></script>
</body></html>"""
    )


def run_page(run: Run, *, ssh_command: str | None, service_url: str | None, jobs: list[str]) -> str:
    project, name = escape(run.project), escape(run.name)
    facts = [
        ("status", run.status),
        ("reason", run.reason or "-"),
        ("type", run.configuration_type),
        ("user", run.user),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    access = ""
    if ssh_command:
        access += f'<p>SSH: <code id="ssh">{escape(ssh_command)}</code></p>'
    if service_url:
        url = escape(service_url)
        access += f'<p>Service: <a id="service" href="{url}">{url}</a></p>'
    options = "".join(f'<option value="{escape(j)}">{escape(j)}</option>' for j in jobs)
    return (
        _HEAD.format(title=f"Berth: {name}")
        + f"""<body data-project="{project}" data-run="{name}">
<header><h1><a href="/dashboard">Berth</a> / {project} / {name}</h1>
<span id="live" class="live">connecting…</span></header>
<main class="run">
<table class="facts">{rows}</table>
{access}
<h2>Events</h2>
<ol id="events"></ol>
<h2>Output <select id="job">{options}</select></h2>
<pre id="logs"></pre>
</main>
<script src="/dashboard/static/run.js"></script>
</body></html>"""
    )


def not_found_page(what: str) -> str:
    return (
        _HEAD.format(title="Berth: not found")
        + f"""<body><main><h1>Not found</h1><p>{escape(what)}</p>
<p><a href="/dashboard">Back to the dashboard</a></p></main></body></html>"""
    )
