"""`python -m serving`: the container tier's server (serving.server)."""

import sys

from serving.server import main

if __name__ == "__main__":
    sys.exit(main())
