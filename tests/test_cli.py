"""`tessera --help` and every subcommand's help read well and exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tessera.app.cli.main import build_parser, main

SUBCOMMANDS = ["infra", "topics", "worker", "sql", "schemas", "produce", "resources", "pack", "forecast", "bill", "billing",
               "scheduler", "gateway", "config", "demo", "simulate", "migrate", "dashboard"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Tessera blends compute" in out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tessera {name}")
    assert len(out.splitlines()) >= 4


def test_console_script_is_installed(tmp_path):
    # The entry point pip wrote next to this interpreter, run from outside the checkout.
    script = Path(sys.executable).parent / "tessera"
    assert script.is_file(), f"no console script at {script}; install the package (make bootstrap)"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("usage: tessera")


def test_bad_config_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("TESSERA_KAFKA_PORT", "ninety")
    assert main(["config"]) == 2
    assert "TESSERA_KAFKA_PORT" in capsys.readouterr().err


def test_schemas_check_passes(capsys):
    assert main(["schemas", "check"]) == 0


def test_topics_list_shows_keys_and_partitions(capsys, monkeypatch):
    monkeypatch.setenv("TESSERA_TOPIC_PREFIX", "acme")
    assert main(["topics"]) == 0
    out = capsys.readouterr().out
    assert "acme.requests.v1" in out and "request_id" in out


def test_sql_on_embedded_clickhouse(capsys, base_settings, monkeypatch):
    monkeypatch.setenv("TESSERA_DATA_DIR", base_settings.data_dir)
    monkeypatch.setenv("TESSERA_CLICKHOUSE_DATABASE", base_settings.clickhouse_database)
    assert main(["sql", "SELECT 41 + 1 AS answer", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"answer"', "42"]
    assert main(["sql", "SELECT * FROM nowhere.nothing"]) == 1
    assert "error:" in capsys.readouterr().err


def test_parser_has_no_undocumented_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)
