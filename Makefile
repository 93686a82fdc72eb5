# The two commands a newcomer needs (demo, test); the rest serve maintainers and CI.
# Each installs what it needs first.
.PHONY: demo test test-unit lint wheel-check docs bootstrap focus-validator clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/tessera demo

# Everything: the layer contracts, then the whole suite on a real Kafka broker. The slowest
# tests are listed at the end, so a CI log shows which come near their timeouts.
test: bootstrap lint focus-validator
	.venv/bin/python -m pytest --durations=15

# The fast tier: no broker, under a minute.
test-unit: bootstrap
	.venv/bin/python -m pytest -m "not kafka and not slow"

# The official FOCUS validator, in a venv of its own (it needs Python >= 3.12).
focus-validator:
	@scripts/focus-validator.sh

lint: bootstrap
	.venv/bin/lint-imports

wheel-check: bootstrap
	@scripts/check-wheel.sh

# Regenerate docs/benchmarks.md from load/results/*.json.
docs: bootstrap
	.venv/bin/python -m load.report_docs

clean:
	-.venv/bin/tessera infra down
	rm -rf .venv .venv-focus infra/kafka/target build
