#!/usr/bin/env bash
# orchestrator.sh: the two-node K3s cluster of the Vagrantfile, and the system deployed on it.
#
#   ./orchestrator.sh create              VMs up, K3s, images, manifests; waits until ready
#   ./orchestrator.sh start | stop        boot or halt the VMs (data is kept)
#   ./orchestrator.sh destroy             delete the VMs and everything generated
#   ./orchestrator.sh status              VMs, nodes, pods, services, autoscalers, volumes
#   ./orchestrator.sh deploy              (re)apply the manifests; waits until ready
#   ./orchestrator.sh build [TAG] [--push]
#   ./orchestrator.sh logs SERVICE [kubectl logs flags, e.g. -f]
#   ./orchestrator.sh test                the acceptance scenario against NODE_IP:30000
#   ./orchestrator.sh backup              dump both databases now (their backup CronJobs)
#   ./orchestrator.sh restore FILE        restore one dump (movies-*.dump or orders-*.dump): a
#                                         file here, or the name of one in the backup volume
#
# Environment:
#   DOCKER_HUB_USERNAME     images come from this Docker Hub account (build --push puts them
#                           there); unset: images are imported straight into the K3s nodes
#   IMAGE_TAG               tag of the service images to deploy (default: the workspace version)
#   IMAGE_PLATFORM          the nodes' platform, for images saved from Docker's containerd image
#                           store (default: linux/amd64)
#   NODE_IP                 where `test` finds the gateway (default: the master VM)
#   ORCHESTRATOR_KUBECONFIG deploy/status/logs/test against another cluster (kind, ...)
#   ORCHESTRATOR_DRY_RUN=1  print every command instead of running it
#   ORCHESTRATOR_INGRESS=1  also HTTPS through an Ingress on https://microservices.local/
#                           (Manifests/components/ingress, with a generated self-signed cert)
#   ORCHESTRATOR_OVERLAY    the layout: empty for Manifests/ (default), or an overlay of
#                           Manifests/overlays/, e.g. ha (three RabbitMQ nodes)
#   ORCHESTRATOR_STATE_DIR  generated files (default: .orchestrator/, git-ignored)
#   ORDER_TIMEOUT           seconds `test` waits for an order to be stored (default: 60)
#   WAIT_TIMEOUT            seconds to wait for nodes and pods (default: 600)
#
# Bash 3.2 compatible (macOS): no associative arrays, no mapfile.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

# --- settings --------------------------------------------------------------------------------

readonly NAMESPACE=microservices
# The services built from Dockerfiles/, and every workload of the system (for `logs`).
readonly SERVICES="api-gateway inventory-app billing-app"
readonly COMPONENTS="api-gateway inventory-app billing-app inventory-db billing-db rabbitmq"
# Default image tag: the workspace version (Cargo.toml); the manifests use the same.
readonly DEFAULT_TAG=0.1.0
# Must match the Vagrantfile's defaults (the dry-run tests hold them together).
readonly MASTER_IP=${MASTER_IP:-192.168.56.110}
readonly NODES="master agent"
readonly NODE_PORT=30000
# Where the VMs see .orchestrator/shared/ (the Vagrantfile's synced folder).
readonly GUEST_SHARED_DIR=/vagrant-shared

IMAGE_TAG=${IMAGE_TAG:-$DEFAULT_TAG}
# The nodes' platform: the Vagrantfile's box is amd64.
IMAGE_PLATFORM=${IMAGE_PLATFORM:-linux/amd64}
NODE_IP=${NODE_IP:-$MASTER_IP}
STATE_DIR=${ORCHESTRATOR_STATE_DIR:-$ROOT/.orchestrator}
DRY_RUN=${ORCHESTRATOR_DRY_RUN:-0}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-600}
OVERLAY=${ORCHESTRATOR_OVERLAY:-}
INGRESS=${ORCHESTRATOR_INGRESS:-0}
readonly INGRESS_HOST=microservices.local
ORDER_TIMEOUT=${ORDER_TIMEOUT:-60}
# Seconds between two looks while waiting (the tests shorten it).
POLL_INTERVAL=${ORCHESTRATOR_POLL_INTERVAL:-5}

# Every kubectl call of this script targets the Vagrant cluster unless told otherwise.
export KUBECONFIG=${ORCHESTRATOR_KUBECONFIG:-$STATE_DIR/shared/kubeconfig}

# Commands printed in a dry run go to the terminal even from inside $(...).
exec 3>&1

# --- output and command helpers --------------------------------------------------------------

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

dry_run() { [[ $DRY_RUN == 1 ]]; }

# One argument as the shell would need it typed: bare when safe, single-quoted otherwise.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

print_cmd() {
  local line="+" arg
  for arg in "$@"; do
    line+=" $(quote "$arg")"
  done
  printf '%s\n' "$line" >&3
}

# Runs a command; a dry run only prints it (to the terminal, also from inside $(...), where
# it then outputs nothing).
run() {
  if dry_run; then
    print_cmd "$@"
    return 0
  fi
  "$@"
}

# poll SECONDS WHAT COMMAND...: run COMMAND every few seconds until it succeeds. A dry run
# shows the command once.
poll() {
  local timeout=$1 what=$2
  shift 2
  if dry_run; then
    if [[ $(type -t "$1") == function ]]; then "$@" || true; else print_cmd "$@"; fi
    return 0
  fi
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep "$POLL_INTERVAL"
  done
}

kube() { run kubectl --namespace "$NAMESPACE" "$@"; }

# --- prerequisites ---------------------------------------------------------------------------

install_hint() {
  case $1 in
    vagrant) echo "Vagrant (https://developer.hashicorp.com/vagrant/install) with VirtualBox" ;;
    kubectl) echo "kubectl (https://kubernetes.io/docs/tasks/tools/)" ;;
    docker) echo "Docker (https://docs.docker.com/engine/install/)" ;;
    curl) echo "curl (your system's package manager)" ;;
    openssl) echo "OpenSSL (your system's package manager)" ;;
    *) echo "$1" ;;
  esac
}

# Every missing tool on a line of its own, then stop.
require() {
  local tool missing=0
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      printf 'error: %s is not installed: install %s\n' "$tool" "$(install_hint "$tool")" >&2
      missing=1
    fi
  done
  ((missing == 0)) || exit 1
}

using_vagrant_cluster() { [[ -z ${ORCHESTRATOR_KUBECONFIG:-} ]]; }

require_kubeconfig() {
  if ! dry_run && [[ ! -f $KUBECONFIG ]]; then
    die "no kubeconfig at $KUBECONFIG: create the cluster first (./orchestrator.sh create), or set ORCHESTRATOR_KUBECONFIG"
  fi
}

valid_tag() {
  [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ && $1 != latest ]] ||
    die "invalid image tag '$1': use a version such as $DEFAULT_TAG (never 'latest')"
}

# --- images ----------------------------------------------------------------------------------

build_images() {
  local tag=$1 svc
  for svc in $SERVICES; do
    say "building $svc:$tag"
    run docker build -f "Dockerfiles/$svc/Dockerfile" -t "$svc:$tag" .
  done
}

push_images() {
  local tag=$1 svc
  [[ -n ${DOCKER_HUB_USERNAME:-} ]] || die "pushing needs DOCKER_HUB_USERNAME (the Docker Hub account to push to)"
  for svc in $SERVICES; do
    say "pushing $DOCKER_HUB_USERNAME/$svc:$tag"
    run docker tag "$svc:$tag" "$DOCKER_HUB_USERNAME/$svc:$tag"
    run docker push "$DOCKER_HUB_USERNAME/$svc:$tag"
  done
}

# Does Docker keep its images in containerd's image store (Docker Desktop's default, and Docker
# Engine's from 29)? Its `docker save` archives then hold each image's whole multi-platform index
# (and attestation manifests) with only the blobs of the platforms it has, and `ctr images
# import` on the nodes fails on the missing ones ("content digest ...: not found").
containerd_image_store() {
  dry_run && return 1
  [[ $(docker info --format '{{json .DriverStatus}}' 2>/dev/null) == *io.containerd.snapshotter* ]]
}

# No registry: one archive of the three images, imported into containerd on every node. The
# manifests' imagePullPolicy IfNotPresent then uses them without pulling.
import_images() {
  local tag=$1 svc node
  local archive="images/services-$tag.tar"
  local images=() save=(docker save)
  for svc in $SERVICES; do images+=("$svc:$tag"); done
  mkdir -p "$STATE_DIR/shared/images"
  # From the containerd store, only the nodes' platform (docker save --platform, Docker 27+);
  # the classic store's archives hold one platform already.
  if containerd_image_store; then
    save+=(--platform "$IMAGE_PLATFORM")
  elif dry_run; then
    say "(with Docker's containerd image store: docker save --platform $IMAGE_PLATFORM)"
  fi
  say "saving ${images[*]}"
  run "${save[@]}" -o "$STATE_DIR/shared/$archive" "${images[@]}"
  for node in $NODES; do
    say "importing the images into $node"
    run vagrant ssh "$node" -c "sudo k3s ctr images import $GUEST_SHARED_DIR/$archive"
  done
  # The nodes keep the images; the archive is only in the way now.
  run rm -f "$STATE_DIR/shared/$archive"
}

# Registry images for a cluster that pulls; for the Vagrant cluster, import otherwise.
deliver_images() {
  if [[ -n ${DOCKER_HUB_USERNAME:-} ]]; then
    push_images "$IMAGE_TAG"
  else
    import_images "$IMAGE_TAG"
  fi
}

# --- credentials and the generated overlay ---------------------------------------------------

random_password() {
  # 24 random bytes as hex: 192 bits, and safe in URLs, env files and shells.
  od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# Random passwords, generated once and kept (PostgreSQL and RabbitMQ only read them when
# their volume is new). Usernames are not secret but live with the passwords. And the Erlang
# cookie of a RabbitMQ cluster (Manifests/overlays/ha), the same on every node.
ensure_credentials() {
  local dir=$STATE_DIR/credentials entry name user
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [[ ! -s $dir/rabbitmq-erlang-cookie.env ]]; then
    (
      umask 077
      printf 'cookie=%s\n' "$(random_password)" >"$dir/rabbitmq-erlang-cookie.env"
    )
    say "generated the RabbitMQ cluster's Erlang cookie ($dir/rabbitmq-erlang-cookie.env)"
  fi
  for entry in inventory-db:inventory billing-db:billing rabbitmq:billing; do
    name=${entry%%:*}
    user=${entry#*:}
    if [[ ! -s $dir/$name.env ]]; then
      (
        umask 077
        printf 'username=%s\npassword=%s\n' "$user" "$(random_password)" >"$dir/$name.env"
      )
      say "generated credentials for $name ($dir/$name.env)"
    fi
  done
}

# The layout ORCHESTRATOR_OVERLAY names: Manifests/ or one of Manifests/overlays/.
layout_dir() {
  if [[ -z $OVERLAY ]]; then
    echo "$ROOT/Manifests"
  elif [[ $OVERLAY =~ ^[a-z0-9-]+$ && -f $ROOT/Manifests/overlays/$OVERLAY/kustomization.yaml ]]; then
    echo "$ROOT/Manifests/overlays/$OVERLAY"
  else
    die "ORCHESTRATOR_OVERLAY=$OVERLAY: no such overlay; choose one of: $(cd "$ROOT/Manifests/overlays" && echo *)"
  fi
}

ingress_enabled() { [[ $INGRESS == 1 ]]; }

# A self-signed certificate for the Ingress's host, generated once and kept beside the
# credentials (never committed): tls/tls.crt is what clients trust (curl --cacert).
ensure_tls() {
  local dir=$STATE_DIR/tls
  [[ -s $dir/tls.crt && -s $dir/tls.key ]] && return 0
  require openssl
  mkdir -p "$dir"
  chmod 700 "$dir"
  say "generating a self-signed certificate for $INGRESS_HOST ($dir/tls.crt)"
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 -subj "/CN=$INGRESS_HOST" \
      -addext "subjectAltName=DNS:$INGRESS_HOST" -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  ) || die "openssl could not create the certificate"
}

# $STATE_DIR/kustomization.yaml: the chosen layout (Manifests/ or an overlay) with the generated
# credentials in place of the development ones, optionally the Ingress component and its TLS
# Secret, and, with a registry, the images retargeted to it.
write_overlay() {
  local svc name layout
  layout=$(layout_dir)
  # Links, so that the generated kustomization names its bases by relative paths.
  ln -sfn "$layout" "$STATE_DIR/base"
  ln -sfn "$ROOT/Manifests/components/ingress" "$STATE_DIR/ingress"
  {
    echo "# Generated by orchestrator.sh; do not edit, do not commit (holds no secrets itself)."
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "namespace: $NAMESPACE"
    echo "resources:"
    echo "  - base"
    if ingress_enabled; then
      echo "components:"
      echo "  - ingress"
    fi
    echo "secretGenerator:"
    for name in inventory-db billing-db rabbitmq; do
      echo "  - name: $name-credentials"
      echo "    behavior: replace"
      echo "    type: kubernetes.io/basic-auth"
      echo "    envs:"
      echo "      - credentials/$name.env"
      echo "    options:"
      echo "      disableNameSuffixHash: true"
    done
    echo "  - name: rabbitmq-erlang-cookie"
    echo "    behavior: replace"
    echo "    type: Opaque"
    echo "    envs:"
    echo "      - credentials/rabbitmq-erlang-cookie.env"
    echo "    options:"
    echo "      disableNameSuffixHash: true"
    if ingress_enabled; then
      echo "  - name: api-gateway-tls"
      echo "    type: kubernetes.io/tls"
      echo "    files:"
      echo "      - tls.crt=tls/tls.crt"
      echo "      - tls.key=tls/tls.key"
      echo "    options:"
      echo "      disableNameSuffixHash: true"
    fi
    echo "images:"
    for svc in $SERVICES; do
      echo "  - name: $svc"
      if [[ -n ${DOCKER_HUB_USERNAME:-} ]]; then
        echo "    newName: $DOCKER_HUB_USERNAME/$svc"
      fi
      echo "    newTag: \"$IMAGE_TAG\""
    done
  } >"$STATE_DIR/kustomization.yaml"
}

prepare_state_dir() {
  mkdir -p "$STATE_DIR"
  # The directory ignores itself: credentials, token and kubeconfig never reach git.
  [[ -f $STATE_DIR/.gitignore ]] || printf '*\n' >"$STATE_DIR/.gitignore"
}

# --- cluster steps ---------------------------------------------------------------------------

# The time as Kubernetes writes it (RFC 3339, UTC, whole seconds): such strings compare in
# time order as plain strings.
utc_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# nodes_ready_since TIME: every node Ready, by a heartbeat its kubelet sent at TIME or later.
# After a halt the API server starts with the statuses it last had, all Ready: only a heartbeat
# newer than the boot says that a kubelet is back.
nodes_ready_since() {
  local since=$1 out node name status beat
  out=$(run kubectl get nodes -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}{"\n"}{end}') || return 1
  for node in $NODES; do
    read -r name status beat < <(grep "^$node " <<<"$out") || return 1
    [[ $name == "$node" && $status == True && ! $beat < $since ]] || return 1
  done
}

# wait_for_nodes [SINCE]: both nodes registered and Ready (with a heartbeat from SINCE on).
wait_for_nodes() {
  local since=${1:-} names=() node
  say "waiting for the nodes ($NODES) to be Ready"
  for node in $NODES; do names+=("node/$node"); done
  # `kubectl wait` fails at once on a node that has not registered yet: wait for both first.
  poll "$WAIT_TIMEOUT" "the nodes to register" kubectl get "${names[@]}"
  if [[ -n $since ]]; then
    poll "$WAIT_TIMEOUT" "fresh heartbeats of the nodes (Ready, sent after $since)" nodes_ready_since "$since"
  else
    run kubectl wait --for=condition=Ready "${names[@]}" --timeout="${WAIT_TIMEOUT}s"
  fi
}

apply_manifests() {
  local layout
  prepare_state_dir
  ensure_credentials
  ! ingress_enabled || ensure_tls
  write_overlay
  layout=$(layout_dir)
  say "applying the manifests (${layout#"$ROOT"/} with generated credentials$(ingress_enabled && echo ", the Ingress"), images tagged $IMAGE_TAG)"
  run kubectl apply -k "$STATE_DIR"
}

# pods_ready_since [TIME]: every pod that should run is ready, and (with TIME) each of its
# containers was started at TIME or later. Pods that are finished (a backup Job's, or a pod a
# node shutdown stopped for good) or being deleted are no longer meant to run and are skipped,
# so a pod that disappears while this looks does not fail it. At least one pod must count.
pods_ready_since() {
  local since=${1:-} out name phase deleting containers entry ready started counted=0
  out=$(kube get pods -o 'jsonpath={range .items[*]}{.metadata.name}|{.status.phase}|{.metadata.deletionTimestamp}|{range .status.containerStatuses[*]}{.ready},{.state.running.startedAt};{end}{"\n"}{end}') || return 1
  while IFS='|' read -r name phase deleting containers; do
    [[ -n $name ]] || continue
    case $phase in Succeeded | Failed) continue ;; esac
    [[ -z $deleting ]] || continue
    [[ -n $containers ]] || return 1
    IFS=';' read -ra entries <<<"$containers"
    for entry in "${entries[@]}"; do
      ready=${entry%%,*} started=${entry#*,}
      [[ $ready == true && -n $started ]] || return 1
      [[ -z $since || ! $started < $since ]] || return 1
    done
    counted=$((counted + 1))
  done <<<"$out"
  ((counted > 0))
}

# wait_until_ready [SINCE]: each workload rolled out, dependencies first (so the services'
# readiness reflects a working system), then every pod that should run is ready (started from
# SINCE on). Waits on what should exist, never on a list of pods taken earlier.
wait_until_ready() {
  local since=${1:-} workload what="every pod to be ready"
  say "waiting for every pod in namespace $NAMESPACE to be ready"
  for workload in statefulset/inventory-db statefulset/billing-db statefulset/rabbitmq \
    deployment/inventory-app statefulset/billing-app deployment/api-gateway; do
    kube rollout status "$workload" --timeout="${WAIT_TIMEOUT}s"
  done
  [[ -z $since ]] || what+=", its containers started after $since"
  poll "$WAIT_TIMEOUT" "$what" pods_ready_since "$since"
}

print_access() {
  echo "  API:      curl http://$NODE_IP:$NODE_PORT/api/movies/"
  if ingress_enabled; then
    echo "  HTTPS:    curl --cacert $STATE_DIR/tls/tls.crt --resolve $INGRESS_HOST:443:$NODE_IP https://$INGRESS_HOST/api/movies/"
  fi
  echo "  kubectl:  export KUBECONFIG=$KUBECONFIG"
}

# --- commands --------------------------------------------------------------------------------

cmd_create() {
  valid_tag "$IMAGE_TAG"
  require vagrant kubectl docker
  if [[ -n ${DOCKER_HUB_USERNAME:-} ]]; then
    say "images: pushed to and pulled from Docker Hub account $DOCKER_HUB_USERNAME"
  else
    say "images: no registry, imported straight into the nodes"
  fi
  # Images first: a broken build fails in seconds, not after the VMs are up.
  build_images "$IMAGE_TAG"
  prepare_state_dir
  # --provision: Vagrant marks a machine provisioned before its provisioners have run, so after
  # a failed first create a plain `vagrant up` would boot a VM without K3s and never try again.
  # The provisioning scripts are safe to run again on a VM that has everything.
  say "starting the VMs (master, agent) and provisioning them (K3s)"
  run vagrant up --provision
  require_kubeconfig
  wait_for_nodes
  deliver_images
  apply_manifests
  wait_until_ready
  print_access
  echo "cluster created"
}

cmd_start() {
  require vagrant kubectl
  # Statuses older than this are the ones the API server had when the VMs were halted.
  local booted
  booted=$(utc_now)
  say "booting the VMs"
  run vagrant up
  require_kubeconfig
  wait_for_nodes "$booted"
  # Pods that the node shutdown stopped are Failed for good; their controllers start new ones.
  # Clear them away (a failed backup's pod stays, for its logs).
  kube delete pods --field-selector=status.phase=Failed \
    --selector=app.kubernetes.io/part-of=microservices,app.kubernetes.io/component!=backup
  wait_until_ready "$booted"
  print_access
  echo "cluster started"
}

cmd_stop() {
  require vagrant
  # Each VM shuts down cleanly: the kubelet's graceful node shutdown (graceful-shutdown.sh)
  # stops every pod with SIGTERM and its grace period before the power goes, and Vagrant waits
  # for that (graceful_halt_timeout). Volumes stay on the VMs' disks. The agent first, while
  # the control plane still records its pods stopping.
  say "halting the VMs (data is kept; ./orchestrator.sh start boots them again)"
  run vagrant halt agent
  run vagrant halt master
  echo "cluster stopped"
}

cmd_destroy() {
  require vagrant
  case $STATE_DIR in
    "" | / | "$ROOT" | "$HOME") die "refusing to delete ORCHESTRATOR_STATE_DIR=$STATE_DIR" ;;
  esac
  say "destroying the VMs and their data"
  run vagrant destroy --force
  # Token, kubeconfig, image archives and credentials belonged to that cluster.
  run rm -rf "$STATE_DIR"
  echo "cluster destroyed"
}

cmd_status() {
  if using_vagrant_cluster; then
    require vagrant kubectl
    run vagrant status || true
  else
    require kubectl
  fi
  run kubectl get nodes -o wide || warn "the cluster does not answer"
  kube get statefulsets,deployments,pods,services,hpa,pvc -o wide || true
}

cmd_deploy() {
  valid_tag "$IMAGE_TAG"
  # Without a registry the images must reach the Vagrant nodes from this machine.
  if [[ -z ${DOCKER_HUB_USERNAME:-} ]] && using_vagrant_cluster; then
    require kubectl docker vagrant
  else
    require kubectl
  fi
  require_kubeconfig
  if [[ -n ${DOCKER_HUB_USERNAME:-} ]]; then
    say "images: $DOCKER_HUB_USERNAME/<service>:$IMAGE_TAG from Docker Hub"
  elif using_vagrant_cluster; then
    import_images "$IMAGE_TAG"
  else
    say "images: <service>:$IMAGE_TAG must already be on the nodes (e.g. kind load docker-image)"
  fi
  apply_manifests
  wait_until_ready
  print_access
  echo "deployed"
}

cmd_build() {
  local tag=$DEFAULT_TAG push=0 arg
  for arg in "$@"; do
    case $arg in
      --push) push=1 ;;
      -*) die "build: unknown option $arg (usage: build [TAG] [--push])" ;;
      *) tag=$arg ;;
    esac
  done
  valid_tag "$tag"
  require docker
  ((push == 0)) || [[ -n ${DOCKER_HUB_USERNAME:-} ]] ||
    die "build --push needs DOCKER_HUB_USERNAME (the Docker Hub account to push to)"
  build_images "$tag"
  ((push == 0)) || push_images "$tag"
  echo "images built: $(for svc in $SERVICES; do printf '%s:%s ' "$svc" "$tag"; done)"
}

cmd_logs() {
  local service=${1:-}
  [[ -n $service ]] || die "usage: logs SERVICE [kubectl logs flags]; SERVICE is one of: $COMPONENTS"
  case " $COMPONENTS " in
    *" $service "*) ;;
    *) die "unknown service '$service'; choose one of: $COMPONENTS" ;;
  esac
  shift
  require kubectl
  require_kubeconfig
  kube logs --selector "app=$service" --all-containers --prefix --tail=200 --max-log-requests=6 "$@"
}

# --- backups ---------------------------------------------------------------------------------

readonly DUMP_NAME='^(movies|orders)-[0-9]{8}T[0-9]{6}Z\.dump$'

# run_job NAME: wait until the Job has completed and show its log; its log and a failure
# otherwise.
wait_for_job() {
  local job=$1
  if ! kube wait --for=condition=complete "job/$job" --timeout="${WAIT_TIMEOUT}s"; then
    kube logs "job/$job" --all-containers || true
    die "job $job did not complete (kubectl -n $NAMESPACE describe job/$job)"
  fi
  kube logs "job/$job" --all-containers
}

cmd_backup() {
  require kubectl
  require_kubeconfig
  local database job stamp
  stamp=$(date -u +%Y%m%d%H%M%S)
  for database in inventory-db billing-db; do
    job=$database-backup-$stamp
    say "backing up $database now (job $job, from cronjob/$database-backup)"
    kube create job --from="cronjob/$database-backup" "$job"
    wait_for_job "$job"
  done
  echo "backup done: the dumps are in the volumes inventory-db-backups and billing-db-backups"
}

# restore FILE: a dump (movies-<UTC>.dump or orders-<UTC>.dump, pg_dump's custom format, as
# the backup CronJobs and the Compose backups write them) into its database. FILE on this
# machine is streamed to pg_restore in the database's pod; otherwise FILE names a dump in the
# backup volume, restored by a Job made from the backup CronJob. pg_restore --clean drops and
# recreates what the dump holds, in one transaction.
cmd_restore() {
  local file=${1:-} name database dbname job
  [[ -n $file ]] || die "usage: restore FILE (movies-YYYYMMDDTHHMMSSZ.dump or orders-...): a file here, or a dump in the backup volume"
  name=$(basename "$file")
  [[ $name =~ $DUMP_NAME ]] || die "restore: $name is not a dump name (movies-YYYYMMDDTHHMMSSZ.dump or orders-YYYYMMDDTHHMMSSZ.dump)"
  dbname=${name%%-*}
  case $dbname in
    movies) database=inventory-db ;;
    orders) database=billing-db ;;
  esac
  require kubectl
  require_kubeconfig
  if [[ -f $file ]]; then
    say "restoring $dbname in $database-0 from $file (this machine)"
    if dry_run; then
      print_cmd kubectl --namespace "$NAMESPACE" exec -i "$database-0" -c postgres -- pg_restore --clean \
        --if-exists --no-owner --single-transaction --exit-on-error --dbname "$dbname"
      echo "  (stdin: $file)"
    else
      kubectl --namespace "$NAMESPACE" exec -i "$database-0" -c postgres -- pg_restore --clean \
        --if-exists --no-owner --single-transaction --exit-on-error --dbname "$dbname" <"$file"
    fi
  else
    job=$database-restore-$(date -u +%Y%m%d%H%M%S)
    say "restoring $dbname from $name in the volume $database-backups (job $job)"
    local create=(kubectl --namespace "$NAMESPACE" create job --from="cronjob/$database-backup" "$job"
      --dry-run=client -o yaml)
    local set_env=(kubectl set env --local -f - "RESTORE_FILE=$name" -o yaml)
    local apply=(kubectl --namespace "$NAMESPACE" create -f -)
    if dry_run; then
      print_cmd "${create[@]}"
      print_cmd "${set_env[@]}"
      print_cmd "${apply[@]}"
    else
      "${create[@]}" | "${set_env[@]}" | "${apply[@]}"
    fi
    wait_for_job "$job"
  fi
  echo "restored $dbname from $name"
  if [[ $dbname == orders ]]; then
    echo "  orders still queued are stored by billing-app as usual; one the dump already holds is"
    echo "  skipped (the order id is the primary key), so nothing is stored twice"
  fi
}

# --- the acceptance scenario (SPEC) ------------------------------------------------------------

HTTP_STATUS=""
HTTP_BODY=""

# http METHOD PATH [JSON]: sets HTTP_STATUS and HTTP_BODY. A dry run pretends 200.
http() {
  local method=$1 path=$2 body=${3:-} args
  args=(curl --silent --show-error --max-time 15 --write-out '\n%{http_code}' -X "$method")
  [[ -z $body ]] || args+=(-H 'Content-Type: application/json' --data "$body")
  args+=("http://$NODE_IP:$NODE_PORT$path")
  if dry_run; then
    print_cmd "${args[@]}"
    HTTP_STATUS=200 HTTP_BODY=""
    return 0
  fi
  local out
  out=$("${args[@]}") || die "$method $path: no answer from http://$NODE_IP:$NODE_PORT"
  HTTP_STATUS=${out##*$'\n'}
  HTTP_BODY=${out%$'\n'*}
}

expect_status() {
  local want=$1 what=$2
  [[ $HTTP_STATUS == "$want" ]] || die "$what: expected HTTP $want, got $HTTP_STATUS: $HTTP_BODY"
  echo "    $what -> $HTTP_STATUS"
}

order_id_of_response() {
  local id
  dry_run && {
    echo "ORDER_ID"
    return 0
  }
  id=$(printf '%s' "$HTTP_BODY" | sed -n 's/.*"order_id"[[:space:]]*:[[:space:]]*"\([0-9a-fA-F-]\{36\}\)".*/\1/p')
  [[ -n $id ]] || die "POST /api/billing/ answered without an order id: $HTTP_BODY"
  echo "$id"
}

# The database's own view, with psql's defaults from the pod's environment (orders database).
psql_billing() {
  run kubectl --namespace "$NAMESPACE" exec billing-db-0 -c postgres -- psql -tA -c "$1"
}

# orders_stored ID COUNT: the order is in the orders table COUNT times (0 or 1).
orders_stored() {
  local n
  n=$(psql_billing "SELECT count(*) FROM orders WHERE id = '$1'")
  dry_run || [[ $n == "$2" ]]
}

BILLING_STOPPED=0
BILLING_REPLICAS=1
restore_billing() {
  if ((BILLING_STOPPED == 1)); then
    warn "scaling billing-app back to $BILLING_REPLICAS replica(s)"
    kube scale statefulset billing-app --replicas="$BILLING_REPLICAS" || true
  fi
}

cmd_test() {
  require kubectl curl
  require_kubeconfig
  local first second
  say "acceptance scenario against http://$NODE_IP:$NODE_PORT"
  trap restore_billing EXIT

  say "1. add a movie"
  http POST /api/movies/ '{"title": "A new movie", "description": "Very short description"}'
  expect_status 200 "POST /api/movies/"

  say "2. list the movies"
  http GET /api/movies/
  expect_status 200 "GET /api/movies/"
  dry_run || [[ $HTTP_BODY == *'"A new movie"'* ]] || die "GET /api/movies/ does not list the new movie: $HTTP_BODY"

  say "3. order while billing-app runs"
  http POST /api/billing/ '{"user_id": "20", "number_of_items": "99", "total_amount": "250"}'
  expect_status 200 "POST /api/billing/ (user 20)"
  first=$(order_id_of_response)
  poll "$ORDER_TIMEOUT" "order $first (user 20) to be stored" orders_stored "$first" 1

  say "4. stop billing-app"
  # As many consumers as the layout runs (Manifests/overlays/ha: several), all stopped.
  local replicas pods=() n
  replicas=$(kube get statefulset billing-app -o 'jsonpath={.spec.replicas}') || true
  [[ $replicas =~ ^[1-9][0-9]*$ ]] && BILLING_REPLICAS=$replicas
  for ((n = 0; n < BILLING_REPLICAS; n++)); do pods+=("pod/billing-app-$n"); done
  BILLING_STOPPED=1
  kube scale statefulset billing-app --replicas=0
  kube wait --for=delete "${pods[@]}" --timeout=120s

  say "5. order while billing-app is stopped: queued"
  http POST /api/billing/ '{"user_id": "22", "number_of_items": "10", "total_amount": "50"}'
  expect_status 200 "POST /api/billing/ (user 22)"
  second=$(order_id_of_response)

  say "6. the orders database: user 20's order stored, user 22's not yet"
  orders_stored "$first" 1 || die "order $first (user 20) is not in the orders table"
  orders_stored "$second" 0 || die "order $second (user 22) was stored while billing-app was stopped"
  psql_billing "SELECT id, user_id, number_of_items, total_amount FROM orders WHERE id IN ('$first', '$second')"

  say "7. start billing-app again: the queued order is stored, once"
  kube scale statefulset billing-app --replicas="$BILLING_REPLICAS"
  BILLING_STOPPED=0
  kube rollout status statefulset/billing-app --timeout=120s
  poll "$ORDER_TIMEOUT" "order $second (user 22) to be stored" orders_stored "$second" 1
  orders_stored "$first" 1 || die "order $first (user 20) is not stored exactly once"
  psql_billing "SELECT id, user_id, number_of_items, total_amount FROM orders WHERE id IN ('$first', '$second')"
  echo "acceptance test passed"
}

usage() {
  # The header comment of this file, up to the last environment variable.
  sed -n '2,/^#   WAIT_TIMEOUT/p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
  local command=${1:-help}
  [[ $# -eq 0 ]] || shift
  if dry_run; then
    echo "dry run: commands are printed, not run"
  fi
  case $command in
    create) cmd_create "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    destroy) cmd_destroy "$@" ;;
    status) cmd_status "$@" ;;
    deploy) cmd_deploy "$@" ;;
    build) cmd_build "$@" ;;
    logs) cmd_logs "$@" ;;
    test) cmd_test "$@" ;;
    backup) cmd_backup "$@" ;;
    restore) cmd_restore "$@" ;;
    help | -h | --help) usage ;;
    *)
      usage >&2
      printf 'error: unknown command %s\n' "$(quote "$command")" >&2
      exit 2
      ;;
  esac
}

main "$@"
