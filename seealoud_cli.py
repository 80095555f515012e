"""The ``seealoud`` command's entry point: one command, two packages.

``watch`` and ``replay`` are the client's (``seealoud_client.cli``); everything
else is the server's (``server.cli``). Dispatching here keeps ``server/`` from
importing the client, and each side imports only what its subcommands need.
"""

from __future__ import annotations

import sys

CLIENT_COMMANDS = ("watch", "replay")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in CLIENT_COMMANDS:
        from seealoud_client.cli import main as client_main

        return client_main(args)
    from server.cli import main as server_main

    return server_main(args)


if __name__ == "__main__":
    sys.exit(main())
