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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://bob:s3cret@db:5432/keel", "postgresql+psycopg://bob:***@db:5432/keel"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://default:pa:ss@h:6379", "redis://default:***@h:6379"),
        ("s3://bucket/x?access_key=AKIA&secret_key=zzz&region=eu", "s3://bucket/x?access_key=***&secret_key=***&region=eu"),
        ("https://h/p?sslmode=require&password=x&token=abc#frag", "https://h/p?sslmode=require&password=***&token=***#frag"),
        ("KEEL_TOKEN=abc AWS_SECRET_ACCESS_KEY=xyz PATH=/usr/bin", "KEEL_TOKEN=*** AWS_SECRET_ACCESS_KEY=*** PATH=/usr/bin"),
        ("train.py --db-password=hunter2 --epochs=3", "train.py --db-password=*** --epochs=3"),
        ('{"api_key": "abc", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("password='a b' x=1", "password='***' x=1"),
        ("Authorization: Bearer abcdefghijk", "Authorization: Bearer ***"),
        ("postgresql://h/db?sslpassword=x&GITHUB_TOKEN=y", "postgresql://h/db?sslpassword=***&GITHUB_TOKEN=***"),
    ],
)
def test_redact_masks_passwords_and_tokens(text: str, expected: str) -> None:
    assert config.redact(text) == expected
    assert config.redact(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    ["sqlite:////tmp/a.db", "postgresql+psycopg://postgres@127.0.0.1/test", "learning_rate=0.1 keyword=x monkey=2 key_count=3",
     "at 12:30:00 on host:5432", "PASSWORD=", "", "tokenizer=bert max_tokens=100"],
)
def test_redact_keeps_what_is_not_secret(text: str) -> None:
    assert config.redact(text) == text


def test_every_keel_error_masks_uri_passwords() -> None:
    from keel.errors import StoreError

    err = StoreError("The store redis://:pw1@h:6379/0?token=abc&db=1 failed.", hint="Check postgresql://u:pw2@h/db.", uri="s3://b/x?secret_key=pw3")
    text = str(err) + repr(err.to_dict())
    assert "pw1" not in text and "abc" not in text and "pw2" not in text and "pw3" not in text
    assert "redis://:***@h:6379/0?token=***&db=1" in text
