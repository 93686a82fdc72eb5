"""The demo's tables are plain text even when it runs in a terminal (chdb colours Pretty
output for a tty, and the tables also go into the HTML report)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

SCRIPT = """
import sys
from tessera.app.demo import _pretty
from tessera.storage.store import ChdbStore, exit_skipping_chdb_teardown
sys.stdout.write(_pretty(ChdbStore(sys.argv[1], "default"), "SELECT 1 AS a, 'x' AS b"))
exit_skipping_chdb_teardown(0)
"""


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a pseudo-terminal")
def test_demo_tables_carry_no_terminal_colours_on_a_terminal(tmp_path):
    program = tmp_path / "pretty.py"
    program.write_text(SCRIPT)
    # `script` runs the command under a pseudo-terminal, as a person's shell would.
    out = subprocess.run(["script", "-qefc", f"{sys.executable} {program} {tmp_path / 'db'}", "/dev/null"],
                         capture_output=True, timeout=120)
    assert b"\x1b[" not in out.stdout and b" a " in out.stdout.replace(b"\xe2\x94\x80", b" ")
