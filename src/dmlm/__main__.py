import sys

from dmlm.cli import main

sys.exit(main())
