"""``python -m replaybuf_server``: run the gRPC server (the ``replaybuf serve`` command)."""

from __future__ import annotations

import sys

from replaybuf_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
