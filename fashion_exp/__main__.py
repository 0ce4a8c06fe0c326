import sys

from fashion_exp.cli import main

sys.exit(main())
