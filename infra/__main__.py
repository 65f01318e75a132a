"""The Pulumi program's entry point: load the stack's config, build the stack, export outputs.

`main: infra/` in Pulumi.yaml makes the CLI run this file with infra/ as the program directory;
the project root goes on sys.path so `import infra...` resolves the same way under the real CLI,
under `backbone plan` and in the tests.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from infra import program  # noqa: E402

program.main()
