# Developer shortcuts (scripts/setup creates .venv first).
#   make bench         bench/run: every workload natively, under pylos, gVisor and proot
#   make bench-quick   bench/run --quick (under 2 minutes)

.PHONY: bench
bench:
	scripts/setup --tests
	.venv/bin/python bench/run

.PHONY: bench-quick
bench-quick:
	scripts/setup --tests
	.venv/bin/python bench/run --quick
