import sys

from cifarlens.cli import main

sys.exit(main())
