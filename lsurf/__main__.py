"""`python -m lsurf` (and `python -m mpi4py -m lsurf` under mpiexec) runs the CLI."""

import sys

from lsurf.cli import main

sys.exit(main())
