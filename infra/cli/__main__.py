"""`python -m infra.cli`: the `mlops` command."""

from infra.cli import main

raise SystemExit(main())
