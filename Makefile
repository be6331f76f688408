# The two commands of the README: `make run` and `make test`. Both create the
# virtual environment and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint check-deploy bench scale

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) .env

# Development settings for every command of this checkout (chatsite/settings.py reads
# .env; the environment wins): DEBUG on and a key of its own. Git- and docker-ignored.
.env:
	@printf '%s\n' '# Written by make for development on this checkout; never deploy it (see .env.example).' \
		'DEBUG=true' "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > $@
	@echo "Wrote .env (DEBUG=true, a generated SECRET_KEY) for manage.py commands in any terminal."

# Serve on $(HOST):$(PORT): SQLite and the in-process cache unless DATABASE_URL /
# REDIS_URL are set. DEBUG is on through .env (above) unless you set it. One port,
# one uvicorn process: the waiting endpoints (chat.live) and Django (chatsite.asgi).
run: install
	@$(BIN)/python manage.py migrate --noinput && \
	TOKEN=$$($(BIN)/python manage.py issue_token demo --create | tail -n 1) && \
	echo "" && \
	echo "Demo user 'demo', API token: $$TOKEN" && \
	echo "Try: curl -s -H 'Authorization: Bearer $$TOKEN' -H 'Content-Type: application/json' \\" && \
	echo "       -d '{\"sessionId\": \"demo-1\", \"message\": {\"role\": \"user\", \"content\": \"Hello\"}}' \\" && \
	echo "       http://$(HOST):$(PORT)/api/chat/messages" && \
	STAFF_PASSWORD=$$($(BIN)/python manage.py create_demo_staff | tail -n 1) && \
	echo "" && \
	echo "Live chat demo: http://$(HOST):$(PORT)/demo/ (the guest widget)" && \
	echo "Staff inbox:    http://$(HOST):$(PORT)/inbox/ (log in as demo_staff / $$STAFF_PASSWORD)" && \
	echo "" && \
	exec $(BIN)/python -m uvicorn chatsite.asgi:application --host $(HOST) --port $(PORT) --no-access-log

# Run the suite. Extra pytest arguments: make test ARGS="-k guest -x"
test: install
	$(BIN)/pytest $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Django's deployment checklist with the environment you give it (README,
# "Production environment"); fails on any warning. tests/test_deploy.py runs it
# with the README's production environment on every test run.
check-deploy: install
	ENV_FILE= $(BIN)/python manage.py check --deploy --fail-level WARNING

# The load benchmark against its baselines (README, "Benchmarks"): needs PostgreSQL
# on 127.0.0.1:5432 (it makes the chat_bench database), Redis on 127.0.0.1:6379
# (db 9, flushed) and wrk. Options: make bench BENCH_ARGS="--reps 1 --profile"
bench: install
	@command -v wrk >/dev/null 2>&1 || { echo "wrk is not installed: sudo apt-get install -y wrk"; exit 2; }
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The scale harness (README, "More than one machine"): a PostgreSQL primary and a
# streaming replica, a 6-node Redis Cluster, three app nodes and HAProxy, all on
# 127.0.0.1 in temp dirs, then the figures. Needs Debian's haproxy, wrk,
# redis-server and postgresql-15. CI runs: make scale SCALE_ARGS=--short
scale: install
	$(BIN)/python -m bench.scale.run $(SCALE_ARGS)
