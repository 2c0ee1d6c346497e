"""Regenerate the README's screenshots of the web UI (docs/images/ui-*.png).

    python docs/screenshots.py            # from the repository root, in the dev environment

Runs ``keel quickstart`` in a temporary folder, starts ``keel server --auth`` on it, and
replays the browser walkthrough of ``tests/ui/test_browser_walkthrough.py`` (the steps are
in ``tests/ui/_walk.py``) in Debian's Chromium (``/usr/bin/chromium``, headless, or
``KEEL_TEST_CHROMIUM``) at 1280x800, saving the first screen of the runs table, the compare
page, the model version, the monitor and the lineage of a prediction. The PNGs are reduced
to 256 colours (Pillow) to stay small. A JavaScript error on any page stops the script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
SHOTS = ("runs", "compare", "model", "monitoring", "lineage")
CHROMIUM = os.environ.get("KEEL_TEST_CHROMIUM", "/usr/bin/chromium")


def _small(path: Path) -> None:
    try:
        from PIL import Image
    except ImportError:  # the PNG stays as Chromium wrote it
        return
    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright
    from tests.server._api import Server
    from tests.ui import _walk
    from tests.ui.conftest import CHROMIUM_ARGS

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keel-screenshots-") as tmp:
        folder = Path(tmp) / "keel-quickstart"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env["PYTHONPATH"] = str(ROOT / "src")
        print("keel quickstart ...", flush=True)
        subprocess.run([sys.executable, "-c", "from keel.cli.main import main; main()", "quickstart", "--dir", str(folder),
                        "--customers", "600"], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL, timeout=900)
        _walk.prepare(folder)
        server = Server(folder, "--auth", env={k: "" for k in os.environ if k.startswith("KEEL_")})
        errors: list[str] = []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

                def shoot(name: str, page: Any = page) -> None:
                    if errors:
                        raise SystemExit(f"JavaScript errors on {page.url}: {errors}")
                    if name in SHOTS:
                        path = OUT / f"ui-{name}.png"
                        page.evaluate("window.scrollTo(0, 0)")  # the top of the page (the monitor opens at its distribution)
                        page.screenshot(path=str(path))
                        _small(path)
                        print(f"{path.relative_to(ROOT)}  {path.stat().st_size // 1024} KiB  ({page.url.removeprefix(server.url)})")

                _walk.walk(page, server.url, shoot, data=_walk.holdout(folder))
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
