import sys

from leoflow_staging.cli import main

sys.exit(main())
