#!/usr/bin/env bash
# A 3-node Shoal cluster on this host's Docker engine, as the tests run it: three `shoal agent`
# processes on 127.0.0.1, .2 and .3 (all managers, all running tasks through --runtime docker),
# and a 6-replica `whoami` service spread over them.
#
#   compose/demo.sh up      build (if needed) and start; prints what to try
#   compose/demo.sh down    stop the nodes (by the PIDs this script started) and remove their containers
#
# State lives in ${SHOAL_DEMO_DIR:-/tmp/shoal-demo}. Needs the shoal:local image (compose/build-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SHOAL_DEMO_DIR:-/tmp/shoal-demo}
bin=${SHOAL_BIN:-$PWD/target/release/shoal}

up() {
  [ -x "$bin" ] || cargo build --release --locked -p shoal
  docker image inspect shoal:local >/dev/null 2>&1 || compose/build-image.sh
  mkdir -p "$dir"
  if [ -e "$dir/pids" ]; then echo "demo.sh: already up ($dir/pids); run 'compose/demo.sh down' first" >&2; exit 1; fi
  "$bin" agent --init --data-dir "$dir/n1" --bind 127.0.0.1 --name demo1 >"$dir/n1.log" 2>&1 &
  echo $! >>"$dir/pids"
  local token=""
  for _ in $(seq 100); do
    token=$("$bin" --http-addr 127.0.0.1:8500 join-token manager -q 2>/dev/null) && break
    sleep 0.2
  done
  [ -n "$token" ] || { echo "demo.sh: the first node did not come up; see $dir/n1.log" >&2; exit 1; }
  for i in 2 3; do
    "$bin" agent --join 127.0.0.1 --token "$token" --data-dir "$dir/n$i" --bind "127.0.0.$i" --name "demo$i" >"$dir/n$i.log" 2>&1 &
    echo $! >>"$dir/pids"
  done
  for _ in $(seq 150); do
    [ "$("$bin" --http-addr 127.0.0.1:8500 node ls 2>/dev/null | grep -c Ready)" = 3 ] && break
    sleep 0.2
  done
  "$bin" --http-addr 127.0.0.1:8500 node ls
  # The node IDs label every container and network the nodes make: `down` removes by them.
  "$bin" --http-addr 127.0.0.1:8500 node ls --format json | sed -n 's/.*"ID": *"\([0-9a-f]*\)".*/\1/p' >"$dir/node-ids"
  DOCKER_HOST=tcp://127.0.0.1:2375 docker service create --detach --replicas 6 --name whoami shoal:local whoami --port 8080
  cat <<HELP

Up. Try:
  export DOCKER_HOST=tcp://127.0.0.1:2375
  docker service ps whoami                    # 2 tasks on each node
  DOCKER_HOST= docker ps --filter label=shoal.service.name=whoami
  docker service scale whoami=9
  $bin service logs whoami --follow
  kill \$(sed -n 3p $dir/pids)                 # a node dies: its tasks move within ~6 s
  compose/demo.sh down
HELP
}

down() {
  if [ -e "$dir/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
  fi
  while read -r id; do
    label="label=shoal.node.id=$id"
    ids=$(docker ps -aq --filter "$label")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    nets=$(docker network ls -q --filter "$label")
    [ -z "$nets" ] || docker network rm $nets >/dev/null
  done < <(cat "$dir/node-ids" 2>/dev/null)
  rm -rf "$dir"
  echo "demo.sh: down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: compose/demo.sh up|down" >&2; exit 2 ;;
esac
