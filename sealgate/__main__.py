"""`python -m sealgate`."""

from sealgate.cli import main

raise SystemExit(main())
