"""Details of the pages found by the browser walkthrough: numbers as they read, a deployment's latest requests."""

from __future__ import annotations

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
