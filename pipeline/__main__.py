"""`python -m pipeline ...` is the same as the `mvfer` console script."""

from pipeline.cli import main

raise SystemExit(main())
