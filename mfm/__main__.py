import sys

from mfm.cli import main

sys.exit(main())
