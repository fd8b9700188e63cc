# claudemesh tasks. Recipes run with node_modules/.bin first on PATH, so `node` is the
# project's Node 24 even where the system Node is older.

export PATH := justfile_directory() + "/node_modules/.bin:" + env_var('PATH')

# the Claude Code version `just test-claude` runs against
claude_code_version := "2.1.328"

# list the recipes
default:
    @just --list

# type-check, then every test against one real Postgres (embedded unless DATABASE_URL is set)
test *files:
    tsc --noEmit -p .
    node test/run.ts {{files}}

# type-check only
typecheck:
    tsc --noEmit -p .

# run the broker (embedded Postgres under ./data unless DATABASE_URL is set)
broker:
    node broker.ts

# start a local Postgres 17 in Docker for DATABASE_URL (only where Docker exists)
db:
    docker run --rm -d --name claudemesh-pg -e POSTGRES_PASSWORD=claudemesh -e POSTGRES_DB=claudemesh -p 5432:5432 postgres:17
    @echo "export DATABASE_URL=postgres://postgres:claudemesh@localhost:5432/claudemesh"

# build the container image
docker:
    docker build --build-arg GIT_SHA=$(git rev-parse HEAD) -t claudemesh-broker .

# find repeated code before committing
dupes:
    duplicates .

# load benchmark (docs/benchmarks.md): prints figures and writes bench/results/latest.json
bench *args:
    node bench/run.ts {{args}}

# the long reliability runs (docs/reliability.md): 20,000 fuzzed frames and 5,000 HTTP bodies,
# five whole-machine reboots under 1,000-message bursts, then the fault scenarios (Postgres
# stopped and killed, brokers killed, a locked database, slow consumers, a failing disk)
chaos:
    FUZZ_FRAMES=20000 REBOOT_ROUNDS=5 REBOOT_MESSAGES=500 node test/run.ts test/fuzz.test.ts test/reboot.test.ts test/broker-faults.test.ts test/lib/broker/db-restart.test.ts test/lib/broker/db.test.ts test/lib/broker/connection-backpressure.test.ts test/daemon/storage-disk.chaos.ts

# what an auditor reads for the broker: files reached from broker.ts, plus sql/, with lines
size:
    node bench/size.ts

# claudemesh against the real Claude Code client (pinned; installed into .cache/claude-code,
# outside node_modules), offline with a fake Messages API: docs/claude-code.md
test-claude:
    @test "$(.cache/claude-code/node_modules/.bin/claude --version 2>/dev/null)" = "{{claude_code_version}} (Claude Code)" || npm install --prefix .cache/claude-code --no-audit --no-fund --no-save --loglevel=error @anthropic-ai/claude-code@{{claude_code_version}}
    tsc --noEmit -p .
    node test/run.ts test/real-claude/real-client.ts
