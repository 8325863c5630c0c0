import sys

from kprobegen.cli import main

sys.exit(main())
