#!/usr/bin/env bash
# Install what Tessera needs into .venv (Python deps pinned by constraints.txt) and
# resolve the Kafka broker jars from Maven Central. Idempotent; fast when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Tessera needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "error: '$tool' not found; Kafka needs Java 17+ and Maven 3.8+" >&2; exit 1; }
done

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "==> installing Python dependencies into .venv (pinned by constraints.txt; 2-3 minutes the first time)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[all,test]'
  touch "$stamp"
fi

echo "==> resolving the Kafka broker jars (Maven Central, cached in ~/.m2)"
.venv/bin/python -c 'from infra.kafka_broker import ensure_jars; print("    ", ensure_jars(print))'
