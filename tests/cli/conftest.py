"""Fixtures the CLI tests share with other folders."""

from tests.pipelines.conftest import write_module  # noqa: F401  (pipeline modules written into the project)
