"""Details of the pages found by the browser walkthrough: numbers as they read, a deployment's latest requests."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest


@pytest.mark.parametrize(("value", "text"), [
    (3259.7, "3,260"), (29200.4, "29,200"), (-1469.9, "-1,470"), (9060.0, "9,060"), (100.0, "100"),  # no zero of the integer part dropped
    (2.5, "2.5"), (12.34567, "12.35"), (0.94141, "0.9414"), (0.0, "0"), (7, "7"), (1234567, "1,234,567"), (2.5e-5, "2.500e-05"),
])
def test_numbers_keep_their_integer_digits(value: float, text: str) -> None:
    from keel.server.ui.render import fmt_num

    assert fmt_num(value) == text


@pytest.mark.anyio
@pytest.mark.slow  # the store is built through the library: about 15 s
async def test_deployment_lists_its_latest_requests_with_their_lineage(ops_store: Any, ui_client: Any) -> None:
    r = await ui_client.get("/deployments/churn-live?window=24h")
    assert r.status_code == 200
    body = r.text.split('<h2 id="latest">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<a href="/lineage/predictions/([^"]+)"><code>([^<]+)</code></a></td>\s*<td>(\w+)</td><td><a href="/models/churn/(\d)">', body)
    assert len(rows) == 10, body
    newest = set(ops_store.request_ids[-10:])
    assert all(link == rid and rid in newest for link, rid, _route, _v in rows)  # the last window's last requests
    assert {(route, v) for _l, _r, route, v in rows} <= {("champion", "1"), ("shadow", "2")}
    times = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)</td>", body)
    assert len(times) == 10 and times == sorted(times, reverse=True)
    r = await ui_client.get(f"/lineage/predictions/{rows[0][0]}")
    assert r.status_code == 200 and "deployment churn-live" in r.text
    # an alert's message is cut at a word, marked with …, on the monitor, alerts and diagnose pages
    import html

    from keel.monitoring.alerts import list_alerts

    messages = [a["message"] for a in list_alerts()]
    assert any(len(m) > 200 for m in messages)
    for url in ("/monitoring/churn-hourly", "/alerts", "/diagnose/churn/1"):
        text = html.unescape((await ui_client.get(url)).text)
        cut = [m for m in messages if m[:120] in text]
        assert cut, url
        for m in cut:
            shown = text[text.index(m[:120]):].split("<", 1)[0]
            assert shown == m or (shown.endswith("…") and m.startswith(shown[:-1]) and m[len(shown) - 1] == " "), (url, shown)


def test_a_legend_never_overlaps_and_a_single_point_is_drawn() -> None:
    from keel.server.ui.svg import LEGEND_CHAR_PX, line_chart

    names = [f"train-trial-{i} (ec0bf0{i})" for i in range(6)]
    svg = str(line_chart({n: ([0.0], [0.94 + i / 1000]) for i, n in enumerate(names)}, title="valid_roc_auc"))
    labels = [(float(x), float(y), t) for x, y, t in re.findall(r'<text x="([\d.]+)" y="([\d.]+)">(train-trial-[^<]+)</text>', svg)]
    assert [t for *_, t in labels] == names
    for (x1, y1, t1), (x2, y2, _t2) in itertools.pairwise(labels):
        assert y2 > y1 or x2 >= x1 + len(t1) * LEGEND_CHAR_PX, (t1, x1, x2)  # the next entry starts after the text, or on a new row
    assert max(y for _x, y, _t in labels) > min(y for _x, y, _t in labels)  # six long names wrap
    dots = re.findall(r'<circle cx="([\d.]+)" cy="[\d.]+" r="4" fill="#[0-9A-Fa-f]+" fill-opacity="0.9"', svg)
    assert len(dots) == 6 and all(float(x) > 100 for x in dots)  # visible, and off the y axis
    flat = str(line_chart({"labelled": ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])}, title="share labelled"))
    assert ">-0.0" not in flat  # a share that is 0 throughout gets no negative axis


def test_a_prediction_lineage_reads_its_logged_row() -> None:
    from keel.server.ui.pages.lineage import _detail_text

    row = {"model": "churn", "version": 1, "route": "champion", "ts": "2026-12-04T18:42:04.774447+00:00", "prediction": "1", "request_id": "r-1"}
    assert _detail_text({"rows": [row]}) == "churn v1 via champion at 2026-12-04 18:42:04 UTC → 1"


def test_axis_ticks_are_told_apart() -> None:
    from keel.server.ui.svg import line_chart

    svg = str(line_chart({"roc_auc": ([1.0, 2.0, 3.0], [0.95108, 0.95116, 0.95102])}, title="roc_auc"))
    ticks = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks  # 0.951 three times before


@pytest.mark.anyio
async def test_default_columns_are_the_ones_the_shown_runs_have(project: Any, ui_client: Any) -> None:
    import keel

    for i in range(2):
        with keel.start_run(experiment="churn", name=f"step-{i}"):
            keel.log_metrics({"a_duration_s": 0.1 * i, "b_rows": 10.0})
            keel.set_tag("kind", "step")
    for i in range(2):
        with keel.start_run(experiment="churn", name=f"trial-{i}"):
            keel.log_params({"num_leaves": str(8 + i), "lr": "0.1"})
            keel.log_metric("valid_auc", 0.8 + i / 100)
            keel.set_tag("kind", "trial")
    r = await ui_client.get("/runs", params={"experiment": "churn", "filter": "tags.kind = 'trial'"})
    head = r.text.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert r.status_code == 200 and "metrics.valid_auc" in head and "params.num_leaves" in head and "params.lr" in head
    assert "metrics.a_duration_s" not in head and "metrics.b_rows" not in head  # no value on the filtered runs
    everything = (await ui_client.get("/runs", params={"experiment": "churn"})).text.split("</thead>", 1)[0]
    assert "metrics.a_duration_s" in everything and "params.num_leaves" in everything
    assert 'class="nowrap"><a href="/runs/' in r.text  # names do not wrap letter by letter at 1280 px


def test_heat_map_column_labels_fit_above_the_grid() -> None:
    from keel.server.ui.svg import heatmap

    cols = [f"12-0{d} 19:07" for d in range(1, 4)]
    svg = str(heatmap(["minutes_30d", "plan"], cols, [[0.5, 1.5, 2.5], [0.1, 0.2, None]], title="drift"))
    base = [int(b) for b in re.findall(r'text-anchor="start" transform="rotate\(-60 [\d.]+ (\d+)\)"', svg)]
    assert len(base) == 3 and base[0] >= len(cols[0]) * 6 * 0.85  # the label's rise fits between the top and the grid
    first_cell = min(float(y) for y in re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="\d+"', svg))
    assert first_cell > base[0]
