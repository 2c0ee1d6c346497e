"""``python -m keel``: the keel CLI."""

from keel.cli.main import main

main()
