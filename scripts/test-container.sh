#!/usr/bin/env bash
# The deploy path, for real: build the bento, `bentoml containerize` it with podman, start the
# service and Prometheus from the project's docker-compose.yml (docker-compose 1.29 talks to podman's
# Docker-compatible socket), check what a user relies on, tear everything down.
#
# Checks: /readyz answers 200; the service runs as a non-root user; its log has the start-up summary;
# a prediction answers with its sparsity; a 413 reaches a urllib client; Prometheus scrapes the
# container (up == 1 and sparsity samples); every alert rule of monitoring/prometheus/alerts.yml is
# loaded. Grafana is not started: it cannot run on these machines (its files are validated by the
# test suite instead).
#
# Where Docker Hub cannot be reached (as here), the two upstream images are replaced by local
# stand-ins under the same names: python:3.11-slim (Debian bookworm's Python 3.11, made with
# debootstrap from the Debian mirror) and prom/prometheus:<tag> (Debian's Prometheus on that base).
# Set CONTAINER_STANDINS=never to require the real images.
#
# IMAGE=onnx does the same for the image without TensorFlow (bentofile-onnx.yaml), and checks that TensorFlow is
# not in it and that mnist_cnn is served on the engine its card chose (the sparse engine, whose kernels the
# service builds at start with the C compiler the image keeps, or ONNX Runtime).
#
# Writes reports/container.json (IMAGE=onnx: reports/container-onnx.json): image size, timings, each worker's
# resident memory, results. Needs root (apt-get, podman).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
flavour=${IMAGE:-full}  # full: bentofile.yaml (with TensorFlow); onnx: bentofile-onnx.yaml (without)
case $flavour in
  full) bentofile=bentofile.yaml; image_tag=${SERVICE_IMAGE_TAG:-0.1.0}; report=reports/container.json ;;
  onnx) bentofile=bentofile-onnx.yaml; image_tag=${SERVICE_IMAGE_TAG:-0.1.0}-onnx; report=reports/container-onnx.json ;;
  *) printf 'IMAGE=%s: must be full or onnx\n' "$flavour" >&2; exit 2 ;;
esac
image="relu-sparsity-service:$image_tag"
work=${CONTAINER_WORK_DIR:-/tmp/sparsity-container-test}
sock=$work/podman.sock  # a socket of our own: a stale or foreign /run/podman/podman.sock is never used
project=sparsitycontainertest
standins=${CONTAINER_STANDINS:-auto}
mkdir -p "$work" reports
say() { printf '[test-container] %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }
t_start=$(date +%s)

# 1. podman, runc, docker-compose; this VM refuses raising RLIMIT_NPROC/NOFILE above the host's, so
#    containers get capped limits (written only when no containers.conf exists yet)
need=()
for tool in podman runc docker-compose curl; do command -v "$tool" >/dev/null || need+=("$tool"); done
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (Debian packages)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap uidmap slirp4netns docker-compose curl >/dev/null
fi
if [ ! -f /etc/containers/containers.conf ]; then
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=65536
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<EOF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=20000:20000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
fi

for port in 3000 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is in use on 127.0.0.1; docker-compose.yml publishes the service on 3000 and Prometheus on 9090"
  fi
done

# 2. base images: the real ones when they can be pulled, else the stand-ins
have_or_pull() {
  podman image exists "$1" && return 0
  [ "$standins" = always ] && return 1
  timeout 60 podman pull -q "$1" >/dev/null 2>&1
}
if ! have_or_pull docker.io/library/python:3.11-slim; then
  [ "$standins" = never ] && fail "cannot pull python:3.11-slim"
  say "python:3.11-slim cannot be pulled: building a stand-in (Debian bookworm, Python 3.11) with debootstrap"
  rootfs="$work/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || fail "debootstrap (see $work/debootstrap.log)"
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"  # this machine's CA bundle
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  printf '#!/bin/sh\nexec /usr/bin/python3 -m pip "$@"\n' >"$rootfs/usr/local/bin/pip"
  chmod +x "$rootfs/usr/local/bin/pip"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' --change 'ENV UV_NATIVE_TLS=1' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - docker.io/library/python:3.11-slim >/dev/null
  rm -rf "$rootfs"
fi
prom_image=$(grep -oE 'prom/prometheus:[^"[:space:]]+' docker-compose.yml | head -1)
[ -n "$prom_image" ] || fail "docker-compose.yml names no prom/prometheus image"
if ! have_or_pull "docker.io/$prom_image"; then
  [ "$standins" = never ] && fail "cannot pull $prom_image"
  say "$prom_image cannot be pulled: building a stand-in from Debian's Prometheus"
  command -v prometheus >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  ctx="$work/prometheus-image"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$(command -v prometheus)" "$ctx/prometheus"
  cp -r /usr/share/prometheus/web "$ctx/web"
  cat >"$ctx/Containerfile" <<'EOF'
FROM docker.io/library/python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends wget && rm -rf /var/lib/apt/lists/*
COPY prometheus /bin/prometheus
COPY web /usr/share/prometheus/web
RUN mkdir -p /prometheus /etc/prometheus
ENTRYPOINT ["/bin/prometheus"]
EOF
  podman build -q -t "docker.io/$prom_image" "$ctx" >/dev/null
fi

# 3. the bento and its image, as the README says (make build; bentoml containerize)
say "make build BENTOFILE=$bentofile"
make --no-print-directory build BENTOFILE="$bentofile" >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; fail "make build"; }
say "bentoml containerize sparsity_service:latest -> $image (podman, layers squashed)"
t_build=$(date +%s)
"$venv/bin/bentoml" containerize sparsity_service:latest --backend podman --opt squash -t "$image" >"$work/containerize.log" 2>&1 \
  || { tail -30 "$work/containerize.log"; fail "bentoml containerize (see $work/containerize.log)"; }
build_seconds=$(($(date +%s) - t_build))
size_bytes=$(podman image inspect "$image" --format '{{.Size}}')
say "image built in ${build_seconds} s: $(awk -v b="$size_bytes" 'BEGIN {printf "%.2f GB", b / 1e9}')"

# 4. docker-compose (the project's file, unchanged) against podman's socket: service + Prometheus
# podman's Docker-compatible API, started here and stopped on exit. Readiness is an answered /_ping,
# not the socket file: a file left by a killed service refuses connections (it once failed CI so).
export DOCKER_HOST="unix://$sock"
podman_service=""
export GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-not-started-here}
export SERVICE_IMAGE_TAG=$image_tag
compose() { docker-compose -p "$project" "$@"; }
cleanup() {
  compose logs --no-color >"$work/compose-logs.txt" 2>&1 || true
  compose down -v >/dev/null 2>&1 || true
  [ -z "$podman_service" ] || kill "$podman_service" 2>/dev/null || true
  rm -f "$sock"
}
trap cleanup EXIT
rm -f "$sock"
podman system service --time=0 "unix://$sock" >"$work/podman-service.log" 2>&1 &
podman_service=$!
for _ in $(seq 80); do
  [ "$(curl -s --max-time 2 --unix-socket "$sock" http://d/_ping 2>/dev/null)" = OK ] && break
  kill -0 "$podman_service" 2>/dev/null || { cat "$work/podman-service.log"; fail "podman system service exited"; }
  sleep 0.25
done
[ "$(curl -s --max-time 2 --unix-socket "$sock" http://d/_ping 2>/dev/null)" = OK ] \
  || { cat "$work/podman-service.log"; fail "podman system service did not answer on $sock within 20 s"; }
t_up=$(date +%s)
compose up -d service prometheus >"$work/compose.log" 2>&1 || { cat "$work/compose.log"; fail "docker-compose up"; }

ready=""
for _ in $(seq 120); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/readyz)" = 200 ]; then ready=yes; break; fi
  sleep 1.5
done
[ -n "$ready" ] || { compose logs --tail 40 service; fail "the service never answered /readyz with 200"; }
ready_seconds=$(($(date +%s) - t_up))
say "service ready ${ready_seconds} s after docker-compose up"

container=$(podman ps --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=service" --format '{{.Names}}' | head -1)
uid=$(podman exec "$container" id -u)
[ "$uid" != 0 ] || fail "the service container runs as root"
say "the service runs as uid $uid"
# /readyz answers once any worker is up; worker 1 may log its summary a few seconds later, so
# the log is read until the summary is there (at most 60 s).
summary=""
for _ in $(seq 40); do
  compose logs --no-color service >"$work/service-log.txt" 2>&1 || true
  summary=$(grep -o '\] model mnist_cnn:[^ ]* ([^)]*)' "$work/service-log.txt" | head -1 || true)
  [ -n "$summary" ] && grep -q '\] ready: worker 1 of ' "$work/service-log.txt" && break
  summary=""
  sleep 1.5
done
[ -n "$summary" ] || { tail -20 "$work/service-log.txt"; fail "the service's log has no start-up summary within 60 s of /readyz"; }
say "start-up summary in the service's log:${summary#]}"
# each worker's resident memory, read inside the container (after the start-up, before any request)
worker_rss=$(podman exec "$container" /app/.venv/bin/python -c '
import glob, os
sizes = []
for d in glob.glob("/proc/[0-9]*"):
    if d == f"/proc/{os.getpid()}":  # this script: its own command line holds the text it looks for
        continue
    try:
        cmdline = open(d + "/cmdline", "rb").read().replace(b"\0", b" ")
        status = open(d + "/status").read()
    except OSError:
        continue
    if b"_bentoml_impl.worker" in cmdline:
        sizes.append(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS:"))) // 1024)
print(",".join(map(str, sorted(sizes))))
')
say "worker resident memory: ${worker_rss} MB"
has_tensorflow=$(podman exec "$container" /app/.venv/bin/python -c 'import importlib.util as u; print(u.find_spec("tensorflow") is not None)')

# 5. what a client sees, and what Prometheus sees: one Python script, JSON out
"$venv/bin/python" - "$uid" "$size_bytes" "$build_seconds" "$ready_seconds" "$flavour" "$worker_rss" "$has_tensorflow" >"$work/result.json" <<'EOF' || { cat "$work/result.json"; fail "container checks"; }
import json, sys, time, urllib.error, urllib.parse, urllib.request
import yaml

uid, size, build_s, ready_s, flavour, worker_rss, has_tensorflow = sys.argv[1:8]
svc, prom = "http://127.0.0.1:3000", "http://127.0.0.1:9090"
result = {"image": flavour, "image_bytes": int(size), "build_seconds": int(build_s), "ready_seconds": int(ready_s),
          "uid": int(uid), "worker_rss_mb": [int(v) for v in worker_rss.split(",") if v]}

def post(path, body, content_type="application/json"):
    request = urllib.request.Request(svc + path, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

def query(expr):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
    return float(data[0]["value"][1]) if data else None

def check(name, ok, detail):
    result[name] = {"ok": bool(ok), "detail": detail}
    print(f"[test-container] {'ok  ' if ok else 'FAIL'} {name}: {detail}", file=sys.stderr)

blank = [[[0.0] * 28 for _ in range(28)]]
for _ in range(5):
    status, answer = post("/mnist/predict", json.dumps({"images": blank}).encode())
prediction = answer["predictions"][0] if status == 200 else {}
check("prediction", status == 200 and 0 <= prediction.get("label", -1) <= 9 and "layers" in prediction.get("sparsity", {}),
      f"HTTP {status}, label {prediction.get('label')}, overall sparsity {prediction.get('sparsity', {}).get('overall')}")
status, answer = post("/iris/predict", json.dumps({"features": [[5.1, 3.5, 1.4, 0.2]]}).encode())
check("iris", status == 200 and answer["predictions"][0]["name"] == "setosa", f"HTTP {status}, {answer['predictions'][0]['name'] if status == 200 else answer}")
status, answer = post("/models/mnist_cnn/predict", json.dumps({"inputs": blank}).encode())
check("generic_route", status == 200 and answer["model"].startswith("mnist_cnn:"), f"HTTP {status}, model {answer.get('model')}")
models = json.load(urllib.request.urlopen(svc + "/models", timeout=10))
entry = next((m for m in models["models"] if m["name"] == "mnist_cnn"), {})
engine, timed = entry.get("engine"), {e["engine"]: e for e in entry.get("engines", [])}
sparse, base = timed.get("sparse"), timed.get("onnxruntime")
faster = bool(sparse and base and sparse["passed"] and sparse["ms_1"] < base["ms_1"] and sparse["ms_256"] < base["ms_256"])
expected = "sparse" if faster else "onnxruntime"  # ENGINE=auto: the sparse engine where it passed and is faster
check("engine", engine == expected, f"mnist_cnn served on {engine} (its card's choice: {expected})")
check("tensorflow", (has_tensorflow == "True") == (flavour == "full"), f"TensorFlow in the {flavour} image: {has_tensorflow}")
status, answer = post("/mnist/predict", b"x" * (40 * 1024 * 1024))
check("urllib_413", status == 413 and answer["error"].startswith("body: request body exceeds"), f"HTTP {status}: {answer.get('error')}")

deadline, up, samples = time.time() + 120, None, None
while time.time() < deadline:
    up = query('up{job="sparsity-service"}')
    samples = query('sum(activation_sparsity_ratio_count{layer="all"})')
    if up == 1 and samples and samples >= 5:
        break
    time.sleep(3)
check("scrape", up == 1 and samples is not None and samples >= 5, f"up={up}, sparsity samples={samples}")

expected = {r["alert"] for g in yaml.safe_load(open("monitoring/prometheus/alerts.yml"))["groups"] for r in g["rules"] if "alert" in r}
groups = json.load(urllib.request.urlopen(prom + "/api/v1/rules", timeout=10))["data"]["groups"]
loaded = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
check("alert_rules", loaded == expected, f"{len(loaded)} loaded of {len(expected)}: {sorted(loaded)}")
print(json.dumps(result, indent=2))
sys.exit(0 if all(v["ok"] for v in result.values() if isinstance(v, dict)) else 1)
EOF
"$venv/bin/python" - "$work/result.json" "$(($(date +%s) - t_start))" "$report" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
result["total_seconds"] = int(sys.argv[2])
json.dump(result, open(sys.argv[3], "w"), indent=2)
EOF
say "OK ($flavour): image $(awk -v b="$size_bytes" 'BEGIN {printf "%.2f GB", b / 1e9}'), ready in ${ready_seconds} s, workers ${worker_rss} MB, all checks passed ($report)"
