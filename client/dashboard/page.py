"""The dashboard page: plain HTML drawn on the server from a snapshot.

Every button is a real ``<form method="post">`` carrying the CSRF token, so the
page works with the keyboard alone and without script; no external asset is
loaded. Every value from disk is escaped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, Final

from client.dashboard.auth import CSRF_FIELD
from client.dashboard.chart import budget_chart, events_chart

STATE_WORDS: Final[Mapping[str, str]] = {
    "recording": "Recording",
    "consented": "Consented: recording whenever hearth runs",
    "consented (recorder not running)": "Consented, but the recorder is not running",
    "paused": "Paused",
    "paused (recorder not running)": "Paused",
    "not consented": "Not consented: nothing is recorded",
}

NOTICES: Final[Mapping[str, str]] = {
    "paused": "Recording is paused.",
    "resumed": "Recording is resumed.",
    "app-added": "The app is added to your sensitive list; it takes effect now.",
    "app-removed": "The app is removed from your sensitive list.",
    "site-added": "The site is added to your sensitive list; it takes effect now.",
    "site-removed": "The site is removed from your sensitive list.",
    "deleted": "All your recorded data is deleted: the key is destroyed and the vault removed.",
    "revoked": "Consent revoked: nothing more is recorded.",
}

_CSS: Final = """
body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 1.5rem;
color:#1a1a1a;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.25rem;margin:0 0 .5rem}
section{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:0 0 1rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .5rem;
border-bottom:1px solid #ddd;vertical-align:top}td.num,th.num{text-align:right}
button{font:inherit;padding:.35rem .8rem;margin:.15rem .3rem .15rem 0;border:1px solid #555;
border-radius:4px;background:#f4f4f4;cursor:pointer}
button:focus-visible,input:focus-visible,summary:focus-visible{outline:3px solid #0072B2;
outline-offset:2px}button.danger{border-color:#a00;color:#a00}
.state{font-size:1.2rem;font-weight:600}.muted{color:#555}.error{color:#a00}
.notice{background:#eef6ee;border:1px solid #7a7;padding:.5rem 1rem;border-radius:6px}
meter{width:100%;height:1.5rem}code{font-size:.9em}ul.inline{padding-left:1.2rem}
form.inline{display:inline}label{margin-right:.5rem}
"""


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _csrf(csrf: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf)}">'


def _error(message: object) -> str:
    return f'<p class="error" role="alert">{escape(str(message))}</p>'


def _recording(status: Mapping[str, Any], csrf: str) -> str:
    report = status.get("report")
    if report is None:
        body = _error(f"The state cannot be read: {status.get('error')}")
    else:
        state = str(report["state"])
        # The same words `hearth status` prints: "recording" only while a recorder runs.
        summary = str(report.get("summary", state))
        words = STATE_WORDS.get(summary, summary.capitalize())
        if report["paused_until_resumed"]:
            words += " until you resume"
        elif report["paused_until"]:
            words += f" until {_when(report['paused_until'])}"
        modalities = ", ".join(report["modalities"]) or "none"
        body = (
            f'<p class="state" id="state" data-state="{escape(state)}">{escape(words)}</p>'
            f"<p>Modalities you consented to: <strong>{escape(modalities)}</strong></p>"
            f"<p>Events today: {report['events_today']:,}</p>"
        )
    return (
        '<section aria-labelledby="h-recording"><h2 id="h-recording">Recording</h2>'
        f"{body}"
        f'<form method="post" action="/api/pause" class="inline">{_csrf(csrf)}'
        '<button type="submit" name="duration" value="30m">Pause 30 minutes</button>'
        '<button type="submit" name="duration" value="2h">Pause 2 hours</button>'
        '<button type="submit" name="duration" value="until-resumed">Pause until I resume'
        "</button></form>"
        f'<form method="post" action="/api/resume" class="inline">{_csrf(csrf)}'
        '<button type="submit">Resume</button></form></section>'
    )


def _day_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(str(r['day']))}</td><td>{escape(str(r['modality']))}</td>"
        f'<td class="num">{int(r["events"]):,}</td><td class="num">{int(r["bytes"]):,}</td></tr>'
        for r in rows
    )
    return (
        "<details><summary>The numbers behind the chart</summary><table>"
        '<caption class="muted">Events and encrypted bytes per day and modality</caption>'
        '<thead><tr><th scope="col">day</th><th scope="col">modality</th>'
        '<th scope="col" class="num">events</th><th scope="col" class="num">bytes</th></tr>'
        f"</thead><tbody>{body}</tbody></table></details>"
    )


def _data(vault: Mapping[str, Any]) -> str:
    parts = ['<section aria-labelledby="h-data"><h2 id="h-data">What is recorded</h2>']
    if vault.get("error"):
        parts.append(_error(f"The vault cannot be opened: {vault['error']}"))
    elif not vault["exists"]:
        parts.append('<p id="vault-size">The vault is empty: nothing is stored.</p>')
    else:
        parts.append(
            f'<p id="vault-size">The vault holds {int(vault["bytes"]):,} bytes, encrypted '
            "on this laptop.</p>"
        )
        parts.append(events_chart(vault["days"]))
        parts.append(_day_table(vault["days"]))
    if vault.get("retention_days") is not None:
        parts.append(
            f"<p>Retention: raw events are deleted after {vault['retention_days']:g} days, "
            f"or sooner when the vault grows beyond {vault['quota_mb']} MB.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _epsilon(value: float) -> str:
    return f"{value:,.2f}" if math.isfinite(value) else "infinite"


def _budget_figures(budget: Mapping[str, Any]) -> str:
    """Each figure with its unit: per example (the ledger's), per action, per user."""
    user = (
        f"at most epsilon {budget['epsilon_user']:g} (the campaign stops before it), facing "
        "readers of the model and checkpoints, not the server"
        if budget.get("epsilon_user") is not None
        else "none: the policy adds no central noise"
    )
    return (
        "<dl>"
        f"<dt>Per example, over the {float(budget['retention_days']):g} days it is kept</dt>"
        f"<dd>at most epsilon {budget['epsilon_cap']:g}; the most-spent day has spent "
        f"{_epsilon(budget['epsilon_spent'])}. Unit: "
        f"<strong>{escape(str(budget['unit']))}</strong>; "
        f"{escape(str(budget['adjacency']))}.</dd>"
        f"<dt>Per action</dt><dd>epsilon {_epsilon(budget['epsilon_per_action'])}. Unit: "
        f"<strong>{escape(str(budget['unit_per_action']))}</strong>. One recorded action of "
        "yours sits in several training examples, so this bounds how much it changes what "
        "this laptop sends, in the differential-privacy sense (group privacy over the "
        "most-spent day's rounds, a loose bound).</dd>"
        f"<dt>Per user</dt><dd>{escape(user)}. Unit: "
        f"<strong>{escape(str(budget['unit_user']))}</strong>; "
        f"{escape(str(budget['adjacency_user']))}.</dd>"
        "</dl>"
    )


def _resets(resets: Sequence[Mapping[str, Any]]) -> str:
    """Every deliberate reset of the ledger, shown where the budget is."""
    if not resets:
        return ""
    items = "".join(
        f"<li>{escape(_when(float(r['time'])))}: {escape(str(r['reason']))} "
        f"({int(r['entries_cleared'])} entries cleared)</li>"
        for r in resets
    )
    return f'<p id="budget-resets">The ledger was reset:</p><ul>{items}</ul>'


def _budget(budget: Mapping[str, Any]) -> str:
    head = '<section aria-labelledby="h-budget"><h2 id="h-budget">Privacy budget</h2>'
    if budget.get("error"):
        return head + _error(budget["error"]) + "</section>"
    spent, cap, left = budget["epsilon_spent"], budget["epsilon_cap"], budget["epsilon_left"]
    own = (
        f" (your own cap; the policy's is {budget['policy_cap']:g})"
        if budget.get("employee_cap") is not None
        else " (the policy's cap)"
    )
    kept = f"{float(budget['retention_days']):g}"
    return (
        head + f'<label for="budget-meter">Per example, over the {kept} days it is kept: at '
        f"most epsilon {cap:g}{escape(own)}. The most-spent day of data has spent "
        f"{_epsilon(spent)}, {_epsilon(left)} left, over {int(budget['entries'])} ledger "
        "entries (training rounds and evaluations)</label>"
        f'<meter id="budget-meter" min="0" max="{cap:g}" low="{cap * 0.5:g}" '
        f'high="{cap * 0.8:g}" optimum="0" value="{min(spent, cap):.4f}">'
        f"{spent:.2f} of {cap:g}</meter>"
        f"<p>Each day of data is charged for every round that could read it, and its budget "
        f"goes with it after {kept} days; noise is planned so a day can join "
        f"{int(budget['lifetime_rounds'])} rounds, whatever the campaign.</p>"
        + budget_chart(budget["days"], cap)
        + _resets(budget.get("resets", []))
        + _budget_figures(budget)
        + f"<p>Every figure is for delta {budget['delta']:g}: "
        f"{escape(str(budget['delta_in_words']))}.</p></section>"
    )


def _shape(shape: object) -> str:
    if isinstance(shape, list | tuple):
        return "\u00d7".join(str(int(d)) for d in shape) or "scalar"
    return escape(str(shape))


def _arrays(arrays: object) -> str:
    if not isinstance(arrays, list) or not arrays:
        return "-"
    items = []
    for entry in arrays:
        if isinstance(entry, list | tuple) and len(entry) == 2:
            items.append(f"<li><code>{escape(str(entry[0]))}</code> {_shape(entry[1])}</li>")
        else:
            items.append(f"<li>{escape(str(entry))}</li>")
    return f'<ul class="inline">{"".join(items)}</ul>'


def _uploads(uploads: Sequence[Mapping[str, Any]]) -> str:
    head = (
        '<section aria-labelledby="h-uploads"><h2 id="h-uploads">Uploads</h2>'
        "<p>Everything that left this laptop: model updates only, never what was recorded."
        "</p>"
    )
    if not uploads:
        return head + '<p id="uploads-empty">Nothing has been uploaded yet.</p></section>'
    rows = []
    for upload in uploads:
        epsilon = upload.get("epsilon")
        eps = f"{float(epsilon):.3f}" if isinstance(epsilon, int | float) else "-"
        size = upload.get("bytes")
        rows.append(
            f"<tr><td>{_when(upload.get('time'))}</td>"
            f'<td class="num">{escape(str(upload.get("round", "-")))}</td>'
            f'<td class="num">{int(size) if isinstance(size, int) else 0:,}</td>'
            f"<td>{_arrays(upload.get('arrays'))}</td>"
            f'<td class="num">{eps}</td></tr>'
        )
    return (
        head + '<table id="uploads"><thead><tr><th scope="col">time</th>'
        '<th scope="col" class="num">round</th><th scope="col" class="num">bytes</th>'
        '<th scope="col">arrays (name, shape)</th>'
        '<th scope="col" class="num">epsilon after the round</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _policy(policy: Mapping[str, Any]) -> str:
    head = '<section aria-labelledby="h-policy"><h2 id="h-policy">The privacy policy</h2>'
    if policy.get("error"):
        return head + _error(policy["error"]) + "</section>"
    items = "".join(f"<li>{escape(line)}</li>" for line in policy["lines"])
    return head + f"<ul>{items}</ul></section>"


def _sensitive(apps: Mapping[str, Any], csrf: str) -> str:
    policy_apps = ", ".join(apps["policy_apps"]) or "none"
    categories = ", ".join(apps["policy_categories"]) or "none"
    yours = "".join(
        f'<li><code>{escape(app)}</code> <form method="post" action="/api/sensitive-apps/remove"'
        f' class="inline">{_csrf(csrf)}<input type="hidden" name="app" value="{escape(app)}">'
        f'<button type="submit" aria-label="Remove {escape(app)}">Remove</button></form></li>'
        for app in apps["yours"]
    )
    return (
        '<section aria-labelledby="h-sensitive"><h2 id="h-sensitive">Sensitive apps</h2>'
        "<p>While one of these is in front, nothing but a gap is kept.</p>"
        f"<p>From the policy: {escape(policy_apps)}; and any app of these kinds: "
        f"{escape(categories)}.</p>"
        + (
            f'<p>Your own additions:</p><ul id="your-apps">{yours}</ul>'
            if yours
            else '<p id="your-apps">You have added none.</p>'
        )
        + f'<form method="post" action="/api/sensitive-apps">{_csrf(csrf)}'
        '<label for="app-id">App id to add (e.g. gimp)</label>'
        '<input id="app-id" name="app" required pattern="[A-Za-z0-9][A-Za-z0-9._+\\-]{0,63}" '
        'autocomplete="off"> <button type="submit">Add</button></form>'
        "<p class=muted>Adding takes effect at once; you can remove only your own additions."
        "</p></section>"
    )


def _sites(sites: Mapping[str, Any], csrf: str) -> str:
    """The policy's sites (read-only) and the employee's own (removable), and the add form."""
    policy_sites = ", ".join(sites["policy_sites"]) or "none"
    yours = "".join(
        f'<li><code>{escape(site)}</code> <form method="post" '
        f'action="/api/sensitive-sites/remove" class="inline">{_csrf(csrf)}'
        f'<input type="hidden" name="site" value="{escape(site)}">'
        f'<button type="submit" aria-label="Remove site {escape(site)}">Remove</button>'
        "</form></li>"
        for site in sites["your_sites"]
    )
    return (
        '<section aria-labelledby="h-sites"><h2 id="h-sites">Sensitive sites</h2>'
        "<p>While a window's title names one of these (a browser tab as any app), nothing "
        "but a gap is kept. The title is read in memory only, never stored.</p>"
        f'<p>Set by your organisation: <span id="policy-sites">{escape(policy_sites)}</span>'
        "</p>"
        + (
            f'<p>Your own additions:</p><ul id="your-sites">{yours}</ul>'
            if yours
            else '<p id="your-sites">You have added none.</p>'
        )
        + f'<form method="post" action="/api/sensitive-sites">{_csrf(csrf)}'
        '<label for="site-name">Site to add: a domain or a name '
        "(e.g. intranet.example.com)</label>"
        '<input id="site-name" name="site" required minlength="2" maxlength="64" '
        'autocomplete="off" spellcheck="false"> <button type="submit">Add site</button></form>'
        "<p class=muted>Adding takes effect at once; you can remove only your own additions."
        "</p></section>"
    )


def _leave(csrf: str) -> str:
    return (
        '<section aria-labelledby="h-leave"><h2 id="h-leave">Your data and consent</h2>'
        f'<form method="post" action="/api/data/delete">{_csrf(csrf)}'
        '<p><input type="checkbox" id="confirm-delete" name="confirm" value="yes" required>'
        '<label for="confirm-delete">Yes, delete everything hearth recorded on this laptop. '
        "This cannot be undone.</label></p>"
        '<button type="submit" class="danger">Delete all my data</button></form>'
        f'<form method="post" action="/api/consent/revoke">{_csrf(csrf)}'
        '<p><input type="checkbox" id="confirm-revoke" name="confirm" value="yes" required>'
        '<label for="confirm-revoke">Yes, stop recording for good (you can consent again '
        "later with <code>hearth consent grant</code>).</label></p>"
        '<p><input type="checkbox" id="revoke-delete" name="delete_data" value="yes">'
        '<label for="revoke-delete">Also delete all my data</label></p>'
        '<button type="submit" class="danger">Revoke consent</button></form></section>'
    )


def render_page(snapshot: Mapping[str, Any], csrf: str, nonce: str, notice: str | None) -> str:
    """The whole page for ``snapshot``; ``nonce`` authorises its one inline style."""
    message = NOTICES.get(notice or "")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{escape(csrf)}">'
        f'<title>hearth on this laptop</title><style nonce="{escape(nonce)}">{_CSS}</style>'
        "</head><body><header><h1>hearth on this laptop</h1>"
        '<p class="muted">What hearth records here, what it sent, and your controls. '
        "This page is served only to this laptop.</p></header><main>"
        + (f'<p class="notice" role="status">{escape(message)}</p>' if message else "")
        + _recording(snapshot["status"], csrf)
        + _data(snapshot["vault"])
        + _budget(snapshot["budget"])
        + _uploads(snapshot["uploads"])
        + _sensitive(snapshot["sensitive_apps"], csrf)
        + _sites(snapshot["sensitive_apps"], csrf)
        + _policy(snapshot["policy"])
        + _leave(csrf)
        + "</main></body></html>"
    )
