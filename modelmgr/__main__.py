"""``python -m modelmgr`` runs the CLI."""

from .cli.app import main

main()
