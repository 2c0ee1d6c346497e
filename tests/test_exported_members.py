"""The public surface: every name in keel.__all__ resolves, and importing is cheap."""

import subprocess
import sys

import keel


def test_every_exported_name_resolves() -> None:
    for name in keel.__all__:
        assert getattr(keel, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        keel.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_keel_loads_no_heavy_library() -> None:
    code = "import sys, keel; print(' '.join(sorted(m for m in ('pandas', 'pyarrow', 'duckdb', 'sqlalchemy', 'sklearn', 'numpy', 'typer', 'rich', 'redis', 'lightgbm') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_loads_no_data_library() -> None:
    code = "import sys\nsys.argv=['keel','--help']\nfrom keel.cli.main import app\nprint(' '.join(m for m in ('pandas','pyarrow','duckdb','sklearn','sqlalchemy','lightgbm','numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_set_tracking_uri_is_public() -> None:
    from keel.tracking.remote import set_tracking_uri

    assert "set_tracking_uri" in keel.__all__ and keel.set_tracking_uri is set_tracking_uri
