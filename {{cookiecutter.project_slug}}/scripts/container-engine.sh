#!/usr/bin/env bash
# Provide what the container tests and the container demo need: a Docker engine, a
# registry on 127.0.0.1:5050 and the scoring image's base image.
#
#   scripts/container-engine.sh [BASE_IMAGE]   (default: the Dockerfile's ARG BASE_IMAGE)
#
# Idempotent: an engine or registry that already answers is left alone, and so is a base
# image that is already here. Something missing is installed (Debian packages) and
# started only where this machine allows it (root and apt-get); otherwise the script
# says what is missing and the container tests skip with that reason. It never fails:
# a machine without containers still runs every other test.
set -uo pipefail

REGISTRY=127.0.0.1:5050
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
# Logs and registry storage of what this script starts.
STATE=/var/lib/mlops-container-engine
BASE_IMAGE=${1:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$PROJECT/scoring/Dockerfile")}

say() { echo "container-engine: $*"; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; }
}

engine_answers() { docker info >/dev/null 2>&1; }

registry_answers() {
    python3 -c "import urllib.request; urllib.request.urlopen('http://$REGISTRY/v2/', timeout=2)" \
        >/dev/null 2>&1
}

wait_for() {  # wait_for SECONDS COMMAND: poll COMMAND until it succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# Started in a session of their own so they outlive this script (and the CI step).
start_background() {  # start_background LOG COMMAND...
    local log=$1
    shift
    setsid nohup "$@" >"$log" 2>&1 </dev/null &
}

engine() {
    if engine_answers; then
        say "engine: a Docker engine already answers; left alone"
        return 0
    fi
    if ! command -v dockerd >/dev/null; then
        if ! can_install; then
            say "engine: none answers and none can be installed here (needs root and apt-get);" \
                "install Docker, or the container tests skip"
            return 1
        fi
        say "engine: installing Debian's docker.io"
        apt_install docker.io || { say "engine: installing docker.io failed"; return 1; }
    fi
    if [ "$(id -u)" != 0 ]; then
        say "engine: dockerd is installed but not running, and only root can start it" \
            "(e.g. sudo systemctl start docker)"
        return 1
    fi
    mkdir -p "$STATE"
    # On $DOCKER_HOST when set, so a second engine can run beside a machine's default one.
    start_background "$STATE/dockerd.log" dockerd ${DOCKER_HOST:+--host "$DOCKER_HOST"}
    if wait_for 60 engine_answers; then
        say "engine: started dockerd (log: $STATE/dockerd.log)"
    else
        say "engine: dockerd did not answer within 60 s; see $STATE/dockerd.log"
        return 1
    fi
}

registry() {
    if registry_answers; then
        say "registry: one already answers on $REGISTRY; left alone"
        return 0
    fi
    if ! command -v docker-registry >/dev/null && can_install; then
        say "registry: installing Debian's docker-registry"
        apt_install docker-registry || say "registry: installing docker-registry failed"
    fi
    if command -v docker-registry >/dev/null; then
        mkdir -p "$STATE/registry"
        cat >"$STATE/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry
http:
  addr: $REGISTRY
YAML
        start_background "$STATE/registry.log" docker-registry serve "$STATE/registry.yml"
    elif engine_answers; then
        # Where Docker Hub is reachable (a developer's machine, a hosted CI runner).
        docker run --detach --name mlops-local-registry --restart unless-stopped \
            --publish "$REGISTRY:5000" registry:2 >/dev/null
    fi
    if wait_for 20 registry_answers; then
        say "registry: serving on $REGISTRY"
    else
        say "registry: none answers on $REGISTRY and none could be started here" \
            "(needs root and apt-get, or an engine that can pull registry:2)"
        return 1
    fi
}

base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image: $BASE_IMAGE is here; left alone"
    elif docker pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image: pulled $BASE_IMAGE"
    else
        say "base image: $BASE_IMAGE cannot be pulled; building the test-only stand-in"
        "$PROJECT/tests/standin-base-image.sh" "$BASE_IMAGE" 2>&1 \
            || say "base image: none here, so the container tests skip"
    fi
}

engine && base_image
registry
exit 0
