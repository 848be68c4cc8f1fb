"""``python -m imbalance.lab``: see :mod:`imbalance.lab.prepare`."""

from imbalance.lab.prepare import main

raise SystemExit(main())
