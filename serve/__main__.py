"""`python -m serve`: see serve/server.py."""

from serve.server import main

raise SystemExit(main())
