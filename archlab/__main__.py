import sys

from archlab.cli.main import main

sys.exit(main())
