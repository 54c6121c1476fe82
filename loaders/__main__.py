"""`python -m loaders` runs the `warehouse` command line."""

from loaders.cli import main

raise SystemExit(main())
