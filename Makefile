# The two commands a newcomer needs. Each installs what it needs first.
.PHONY: demo test bootstrap clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/tessera demo

test: bootstrap
	.venv/bin/python -m pytest

clean:
	-.venv/bin/tessera infra down
	rm -rf .venv infra/kafka/target
