import sys

from consumer.tools.cli import main

sys.exit(main())
