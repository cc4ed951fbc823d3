import sys

from precond.cli import main

sys.exit(main())
