"""The conflict analysis report (service_layer/reports.py) as Markdown, or as one self-contained
HTML file with its charts drawn by matplotlib into inline SVG (no internet needed to open it)."""

from __future__ import annotations

import html
import io
from datetime import datetime
from typing import Any

RESOLUTIONS = ("blocked", "priority_override", "allowed")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def _sections(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    return [
        (
            "Conflicts by resolution per strategy",
            ["strategy", "blocked", "priority override", "allowed", "total"],
            [
                [r["strategy"], r["blocked"], r["priority_override"], r["allowed"], r["total"]]
                for r in report["conflicts_by_strategy"]
            ],
        ),
        (
            "Most contested tickers",
            ["ticker", "conflicts", "blocked", "overrides", "strategies"],
            [
                [r["ticker"], r["conflicts"], r["blocked"], r["overrides"], r["strategies"]]
                for r in report["contested_tickers"]
            ],
        ),
        (
            "Priority overrides and the positions they moved",
            ["when (UTC)", "ticker", "from", "to", "priorities", "position moved", "reasoning"],
            [
                [
                    r["created_at"][:19].replace("T", " "),
                    r["ticker"],
                    r["from_strategy"],
                    r["to_strategy"],
                    f"{r['requesting_priority']} > {r['owning_priority']}",
                    r["position_moved"],
                    r["reasoning"],
                ]
                for r in report["overrides"]
            ],
        ),
        (
            "Blocked signals",
            ["when (UTC)", "strategy", "order", "owner", "priorities", "reasoning"],
            [
                [
                    r["created_at"][:19].replace("T", " "),
                    r["strategy"],
                    f"{r['side']} {r['quantity']} {r['ticker']}",
                    r["owner"],
                    f"{r['requesting_priority']} vs {r['owning_priority']}",
                    r["reasoning"],
                ]
                for r in report["blocked"]
            ],
        ),
        (
            "Orders per strategy",
            ["strategy", "total", "by state"],
            [
                [
                    r["strategy"],
                    r["total"],
                    ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items())),
                ]
                for r in report["orders_by_strategy"]
            ],
        ),
        (
            "Fills per strategy",
            ["strategy", "fills", "quantity", "notional"],
            [
                [r["strategy"], r["fills"], r["quantity"], r["notional"]]
                for r in report["fills_by_strategy"]
            ],
        ),
        (
            "P&L per strategy",
            [
                "strategy",
                "realised",
                "unrealised",
                "total",
                "position value",
                "received by transfer (qty)",
                "received by transfer (cost)",
            ],
            [
                [
                    r["strategy"],
                    r["realised"],
                    r["unrealised"],
                    r["total"],
                    r["position_value"],
                    r["transferred_in_quantity"],
                    r["transferred_in_cost"],
                ]
                for r in report["pnl"]
            ],
        ),
    ]


def _heading(report: dict[str, Any]) -> str:
    since = report["since"][:16].replace("T", " ")
    generated = report["generated_at"][:16].replace("T", " ")
    return f"Conflict analysis, {since} to {generated} UTC"


def to_markdown(report: dict[str, Any]) -> str:
    parts = [f"# {_heading(report)}", ""]
    parts.append(
        "Unrealised P&L is valued at each ticker's last fill price; money in the account's "
        "currency."
    )
    for title, headers, rows in _sections(report):
        parts += ["", f"## {title}", ""]
        parts.append(_table(headers, rows) if rows else "_none in this period_")
    return "\n".join(parts) + "\n"


# --- HTML --------------------------------------------------------------------------------


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog: the SVG sits inside HTML


def _charts(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    charts: list[tuple[str, str]] = []
    conflicts = report["conflicts_by_strategy"]
    if conflicts:
        figure, axes = plt.subplots(figsize=(7, 3.2))
        names = [r["strategy"] for r in conflicts]
        bottom = [0] * len(names)
        colours = {"blocked": "#c0392b", "priority_override": "#e67e22", "allowed": "#27ae60"}
        for resolution in RESOLUTIONS:
            values = [r[resolution] for r in conflicts]
            axes.bar(names, values, bottom=bottom, label=resolution.replace("_", " "),
                     color=colours[resolution])
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axes.set_ylabel("conflicts")
        axes.legend(frameon=False)
        axes.spines[["top", "right"]].set_visible(False)
        charts.append(("Conflicts by resolution per requesting strategy", _svg(figure)))
        plt.close(figure)
    contested = report["contested_tickers"]
    if contested:
        figure, axes = plt.subplots(figsize=(7, 3.2))
        axes.barh([r["ticker"] for r in contested][::-1],
                  [r["conflicts"] for r in contested][::-1], color="#2c3e50")
        axes.set_xlabel("conflicts")
        axes.spines[["top", "right"]].set_visible(False)
        charts.append(("Most contested tickers", _svg(figure)))
        plt.close(figure)
    if report["equity"]:
        figure, axes = plt.subplots(figsize=(7, 3.2))
        for name, points in report["equity"].items():
            axes.step(
                [datetime.fromisoformat(p["at"]) for p in points],  # type: ignore[arg-type]
                [float(p["realised"]) for p in points],
                where="post",
                marker="o",
                markersize=3,
                label=name,
            )
        axes.set_ylabel("realised P&L")
        axes.legend(frameon=False)
        axes.spines[["top", "right"]].set_visible(False)
        figure.autofmt_xdate()
        charts.append(("Realised P&L over time per strategy", _svg(figure)))
        plt.close(figure)
    return charts


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2733; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #dde3ea; }
th { background: #f3f6f9; } .none { color: #6b7785; } figure { margin: 1rem 0; }
figcaption { font-weight: 600; margin-bottom: .3rem; } svg { max-width: 100%; height: auto; }
"""


def to_html(report: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(_heading(report))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(_heading(report))}</h1>",
        "<p>Unrealised P&amp;L is valued at each ticker's last fill price.</p>",
    ]
    for caption, svg in _charts(report):
        parts.append(f"<figure><figcaption>{e(caption)}</figcaption>{svg}</figure>")
    for title, headers, rows in _sections(report):
        parts.append(f"<h2>{e(title)}</h2>")
        if not rows:
            parts.append("<p class='none'>None in this period.</p>")
            continue
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
