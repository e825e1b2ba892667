"""``yarn-cli`` and ``python -m yarn_cli``.

Ctrl-C at any moment, even while the program is still importing its libraries, ends it with exit
code 130 and one line, never a traceback; once a command runs, the application handles it itself.
"""

import sys


def main() -> None:
    try:
        from yarn_cli.cli.app import main as run

        run()
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
