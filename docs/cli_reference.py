"""Write docs/cli.md, the command-line reference, from the commands of this checkout.

    python docs/cli_reference.py

Run it after changing any option or help text; tests/test_docs.py fails while docs/cli.md is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "cli.md"


def render() -> str:
    """docs/cli.md as the commands of this checkout describe themselves."""
    sys.path.insert(0, str(ROOT))  # this checkout's commands, whichever yarn-cli is installed
    from yarn_cli.cli.app import app
    from yarn_cli.cli.helptext import reference

    return reference(app)


if __name__ == "__main__":
    REFERENCE.write_text(render())
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
