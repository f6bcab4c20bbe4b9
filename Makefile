# SPDX-License-Identifier: GPL-3.0-or-later
# One entry point for developers and CI. `make test` on a fresh Debian machine
# (as root) installs what it needs, builds the test images and runs every stage.
PYTHON ?= python3

.PHONY: test lint unit sanity floor images venv demo demo-down clean help

help:
	@echo "make test          all stages (what CI runs)"
	@echo "make test ONLY='unit sshd_keepalive'   some stages/scenarios only"
	@echo "make lint          ruff, ansible-lint, role docs, mypy, changelog, workflow files"
	@echo "make demo          a local stand-in GPU node running the reference training job"

test:
	$(PYTHON) tests/harness/run_stages.py $(ONLY)

lint:
	$(PYTHON) tests/harness/run_stages.py lint-python lint-ansible role-docs mypy changelog workflows

unit:
	$(PYTHON) tests/harness/run_stages.py unit

sanity:
	$(PYTHON) tests/harness/run_stages.py sanity

floor:
	$(PYTHON) tests/harness/run_stages.py floor

images venv:
	$(PYTHON) tests/harness/run_stages.py $@

clean:
	rm -rf .cache tests/output

demo:
	bash demo/run.sh up

demo-down:
	bash demo/run.sh down
