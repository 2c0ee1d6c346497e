from pathlib import Path

import pytest

from keel import config
from keel.errors import ConfigError


def test_precedence_env_over_file_over_default(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text("experiment: from-file\nflush_interval: 2.5\n")
    s = config.load_settings(tmp_path, env={"KEEL_EXPERIMENT": "from-env"})
    assert s.experiment == "from-env" and s.items()[0][1].source == "default"
    assert s.flush_interval == 2.5
    sources = {st.name: v.source for st, v in s.items()}
    assert sources["experiment"] == "env" and sources["flush_interval"] == "keel.yaml" and sources["engine"] == "default"


def test_project_is_found_from_a_subfolder(tmp_path: Path) -> None:
    config.init_project(tmp_path)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    s = config.load_settings(deep, env={})
    assert s.root == tmp_path.resolve()
    assert s.metadata_uri == f"sqlite:///{tmp_path.resolve() / '.keel' / 'keel.db'}"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEEL_FLUSH_INTERVAL has value 'soon'"):
        config.load_settings(tmp_path, env={"KEEL_FLUSH_INTERVAL": "soon"})
    (tmp_path / "keel.yaml").write_text("experimnt: x\n")
    with pytest.raises(ConfigError, match="Did you mean 'experiment'"):
        config.load_settings(tmp_path, env={})
    (tmp_path / "keel.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load_settings(tmp_path, env={})
    (tmp_path / "keel.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_settings(tmp_path, env={})
    # one line, at the line to fix (where the bracket opened, not where the parser gave up)
    (tmp_path / "keel.yaml").write_text("experiment: a\nregistry:\n  admins: [bob\nfeatures_module: x.py\n")
    with pytest.raises(ConfigError) as exc:
        config.load_settings(tmp_path, env={})
    assert str(exc.value).startswith(f"{tmp_path / 'keel.yaml'}:3: not valid YAML") and "\n" not in str(exc.value)


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    config.init_project(tmp_path)
    with pytest.raises(ConfigError, match="--force"):
        config.init_project(tmp_path)
    config.init_project(tmp_path, force=True)
    assert (tmp_path / ".keel" / ".gitignore").read_text() == "*\n"


def test_sections_hold_nested_blocks(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text("registry:\n  environments: [staging, production]\n")
    assert config.load_settings(tmp_path, env={}).section("registry") == {"environments": ["staging", "production"]}
