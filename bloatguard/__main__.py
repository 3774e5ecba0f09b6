import sys

from bloatguard.cli import main

sys.exit(main())
