"""``python -m partdisco`` runs the command-line interface."""

from partdisco.cli import main

raise SystemExit(main())
