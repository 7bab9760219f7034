#!/usr/bin/env bash
# Runs the README's five-minute walk-through and fails if any step does not do what the README says.
#
# The commands are not copied here: each step is read from README.md, from the fenced block that
# follows a `<!-- walkthrough:NAME -->` marker, so the test breaks when the README drifts. Only the
# ports change (the README uses 1883 and 8080; this script picks free ones) and the Mosquitto
# listeners get `-C <count> -W <timeout>` so that they end by themselves.
#
# Steps: `npm start` on the embedded default -> two users with `npm run admin` -> bob and alice
# listen with mosquitto_sub -> alice opens a direct conversation and sends "Hi Bob!" (twice: the
# resend must be a duplicate) -> bob reads it -> the README's mqtt.js script (chat.mjs) -> Ctrl-C
# (SIGINT) stops the server gracefully.
#
# Prints what bob's mosquitto_sub received and chat.mjs's output on stdout, progress on stderr.
# Exit status 0 when every step worked. Needs node, npm (dependencies installed) and the Mosquitto
# clients (scripts/services.sh install installs them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
README="$ROOT/README.md"
TIMEOUT=60

log () { echo "walkthrough: $*" >&2; }
die () { log "FAILED: $*"; exit 1; }

for tool in node npm mosquitto_pub mosquitto_sub setsid timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (scripts/services.sh install installs the Mosquitto clients)"
done
[ -d "$ROOT/node_modules/mqtt" ] || die "npm dependencies are missing: run npm install"

# Run as a newcomer would: no configuration from the caller's environment (npm test exports the
# test databases' MQIM_* URLs, which would take the server off the embedded default).
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^MQIM_' || true)
unset NODE_OPTIONS

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mqim-walkthrough.XXXXXX")"
# chat.mjs must live inside the repo so that `import 'mqtt'` resolves to its node_modules.
mkdir -p "$ROOT/test-artifacts"
CHAT_DIR="$(mktemp -d "$ROOT/test-artifacts/walkthrough.XXXXXX")"
SERVER_PID=''
LISTENERS=()

# True while a live (not zombie) process of process group $1 exists. (`kill -0` would also count
# zombies, which an init that is slow to reap orphans can leave behind.)
group_alive () {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v pg="$1" '{ sub(/^.*\) /, ""); if ($3 == pg && $1 != "Z") found = 1 } END { exit !found }'
}

stop_server () {
  [ -n "$SERVER_PID" ] || return 0
  local i
  # Ctrl-C in terminal 1 sends SIGINT to npm start's whole process group: do the same.
  kill -INT -- "-$SERVER_PID" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do group_alive "$SERVER_PID" || break; sleep 0.1; done
  wait "$SERVER_PID" 2>/dev/null || true
  if group_alive "$SERVER_PID"; then
    log "the server ignored SIGINT for 15 s; killing it"
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    SERVER_PID=''
    return 1
  fi
  SERVER_PID=''
}

cleanup () {
  local status=$?
  for pid in "${LISTENERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop_server || true
  if [ "$status" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    log "--- server log ---"; tail -n 40 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK" "$CHAT_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The fenced block after `<!-- walkthrough:NAME -->` in README.md, with the ports substituted.
block () {
  local text
  text="$(awk -v marker="<!-- walkthrough:$1 -->" '
    $0 == marker { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
  ' "$README")"
  [ -n "$text" ] || die "README.md has no block marked <!-- walkthrough:$1 -->"
  printf '%s\n' "$text" | sed -e "s/-p 1883 /-p $MQTT_PORT /g" \
    -e "s#localhost:1883#localhost:$MQTT_PORT#g" -e "s#localhost:8080#localhost:$HTTP_PORT#g"
}

# Runs a README block in this shell (so that CONV is visible to it).
run_block () {
  local cmd
  cmd="$(block "$1")"
  log "\$ $cmd"
  eval "$cmd" || die "step '$1' failed"
}

# Starts a README mosquitto_sub block in the background, ending after COUNT messages or TIMEOUT s.
listen () {
  local name="$1" count="$2" out="$3" cmd
  cmd="$(block "$name")"
  [[ "$cmd" == mosquitto_sub* ]] || die "block $name is not a mosquitto_sub command"
  log "\$ $cmd -C $count -W $TIMEOUT &"
  eval "exec $cmd -C $count -W $TIMEOUT" >"$out" 2>&1 &
  LISTENERS+=("$!")
}

# GET /healthz of the server, body only ('' if it does not answer).
healthz () {
  local response
  response="$( { exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT" && printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && timeout 5 cat <&3; } 2>/dev/null)" || true
  printf '%s' "${response##*$'\r\n\r\n'}"
}

clients () { healthz | sed -n 's/.*"clients":\([0-9]*\).*/\1/p'; }

# Waits until FILE has a line matching the extended regex PATTERN.
await_line () {
  local file="$1" pattern="$2" what="$3" i
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    grep -Eq -- "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  log "--- $file ---"; cat "$file" >&2 || true
  die "timed out waiting for $what"
}

# Waits for a background listener to end on its own; fails unless it got its count.
await_listener () {
  local pid="$1" out="$2" what="$3" status=0
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    log "--- $out ---"; cat "$out" >&2
    die "$what's mosquitto_sub exited with status $status (27 = timed out before all messages came)"
  fi
}

read -r MQTT_PORT HTTP_PORT < <(node -e '
  const net = require("node:net"); const servers = []
  for (let i = 0; i < 2; i++) {
    const s = net.createServer()
    s.listen(0, "127.0.0.1", () => {
      servers.push(s)
      if (servers.length === 2) { console.log(servers.map(x => x.address().port).join(" ")); servers.forEach(x => x.close()) }
    })
  }')
export MQIM_MQTT_PORT="$MQTT_PORT" MQIM_HTTP_PORT="$HTTP_PORT" MQIM_DATA_DIR="$WORK/data"
cd "$ROOT"

# 1. Start the server (terminal 1). setsid: its own process group, like a terminal's foreground job.
log "1. npm start (MQTT $MQTT_PORT, HTTP $HTTP_PORT, data dir $MQIM_DATA_DIR)"
setsid npm start >"$WORK/server.log" 2>&1 </dev/null &
SERVER_PID=$!
for ((i = 0; ; i++)); do
  [[ "$(healthz)" == *'"status":"ok"'* ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "npm start exited during start-up"
  [ "$i" -lt $((TIMEOUT * 5)) ] || die "the server did not answer /healthz within $TIMEOUT s"
  sleep 0.2
done
grep -q 'npm run admin -- user add alice' "$WORK/server.log" || die "npm start did not print how to create a user"

# 2. Two users (terminal 2).
log "2. create alice and bob"
run_block users

# 3 + 4. Bob and alice listen (terminals 3 and 4).
# bob: the member event, the message, his read event, the reply to his read.
# alice: the member event, the direct reply, her own message, two send replies, bob's receipt.
log "3. bob listens; 4. alice listens"
listen bob-listens 4 "$WORK/bob.out"
BOB=${LISTENERS[-1]}
listen alice-listens 6 "$WORK/alice.out"
ALICE=${LISTENERS[-1]}
for ((i = 0; ; i++)); do
  [ "$(clients)" = 2 ] && break
  [ "$i" -lt $((TIMEOUT * 10)) ] || die "the two mosquitto_sub listeners did not connect (clients: $(clients))"
  kill -0 "$BOB" 2>/dev/null && kill -0 "$ALICE" 2>/dev/null || { cat "$WORK/bob.out" "$WORK/alice.out" >&2; die "a listener exited"; }
  sleep 0.1
done
sleep 1 # CONNACK came; give the SUBSCRIBE that follows it time to be processed

# 5. The direct conversation; CONV is what the README tells the reader to copy from terminal 4.
log "5. alice opens a direct conversation with bob"
run_block open-direct
await_line "$WORK/alice.out" '^im/u/alice/r/cli \{"id":"1","op":"direct","ok":true' "the reply to direct on alice's terminal"
CONV="$(sed -n 's|^im/u/alice/r/cli {"id":"1".*"conv":"\([A-Za-z0-9_-]*\)".*|\1|p' "$WORK/alice.out" | head -n 1)"
[ -n "$CONV" ] || die "no conv in the reply to direct"
log "CONV=$CONV"

# 6. Send, then the same command again: same seq, duplicate, nothing new for bob.
log "6. alice sends 'Hi Bob!', then resends it"
run_block send
await_line "$WORK/alice.out" '^im/u/alice/r/cli \{"id":"2","op":"send","ok":true,.*"seq":1,.*"duplicate":false' "the send reply"
await_line "$WORK/bob.out" '^im/u/bob/m \{.*"seq":1,.*"from":"alice".*"body":"Hi Bob!"' "bob to receive the message"
run_block send
await_line "$WORK/alice.out" '^im/u/alice/r/cli \{"id":"2","op":"send","ok":true,.*"seq":1,.*"duplicate":true' "the reply to the resend (duplicate)"

# 7. Bob reads it; alice gets the receipt.
log "7. bob marks it read"
run_block read
await_listener "$BOB" "$WORK/bob.out" bob
await_listener "$ALICE" "$WORK/alice.out" alice
grep -Eq '^im/u/alice/e \{"type":"receipt","conv":"'"$CONV"'","kind":"direct","user":"bob","readSeq":1\}' "$WORK/alice.out" \
  || { cat "$WORK/alice.out" >&2; die "alice got no read receipt"; }
grep -Eq '^im/u/bob/e \{"type":"read","conv":"'"$CONV"'","readSeq":1,' "$WORK/bob.out" \
  || { cat "$WORK/bob.out" >&2; die "bob got no read event"; }
[ "$(grep -c '"body":"Hi Bob!"' "$WORK/bob.out")" = 1 ] || { cat "$WORK/bob.out" >&2; die "bob did not get 'Hi Bob!' exactly once"; }
echo "--- bob's mosquitto_sub received:"
cat "$WORK/bob.out"

# 8. The mqtt.js script, saved as chat.mjs inside the mqim directory.
log "8. node chat.mjs"
block chat.mjs >"$CHAT_DIR/chat.mjs"
cmd="$(block run-chat)"
[ "$cmd" = 'node chat.mjs' ] || die "the run-chat block changed: $cmd"
(cd "$CHAT_DIR" && timeout "$TIMEOUT" node chat.mjs) >"$WORK/chat.out" 2>&1 || { cat "$WORK/chat.out" >&2; die "node chat.mjs failed"; }
echo "--- node chat.mjs printed:"
cat "$WORK/chat.out"
for line in "alice: stored as seq 2 in $CONV" 'bob:   got seq 2 from alice: Hello from mqtt.js!' \
    'bob:   read up to seq 2, 0 unread' 'alice: bob has read up to seq 2' 'bob:   history has 2 message(s), lastSeq 2'; do
  grep -qxF -- "$line" "$WORK/chat.out" || die "chat.mjs did not print: $line"
done

# Ctrl-C in terminal 1.
log "stopping the server (SIGINT)"
stop_server || die "the server did not stop on SIGINT"
grep -q '"msg":"mqim stopped"' "$WORK/server.log" || die "the server did not log a graceful stop"
log "all steps passed"
