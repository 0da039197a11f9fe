"""`python -m hico.embedded`: retrain the embedded toy model (see `hico.embedded.recipe`)."""

import sys

from hico.embedded.recipe import main

sys.exit(main())
