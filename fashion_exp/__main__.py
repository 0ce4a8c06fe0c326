import sys

from fashion_exp.children import die_if_parent_gone

die_if_parent_gone()  # a local search worker: end with its chief (before the long imports)

from fashion_exp.cli import main  # noqa: E402

sys.exit(main())
