#!/usr/bin/env bash
# Installs what the project needs to build, test and run on Debian 12, then
# resolves the pinned Apache Kafka broker jars from Maven Central into the
# cache. Safe to run twice: it installs only what is missing.
source "$(dirname "$0")/lib.sh"

PACKAGES=(
  build-essential cmake pkg-config xxd python3
  libgrpc-dev grpc-proto protobuf-compiler libprotobuf-dev
  protobuf-c-compiler libprotobuf-c-dev
  librdkafka-dev libpq-dev libhiredis-dev libcmocka-dev
  libjwt-dev libjansson-dev libssl-dev libcurl4-openssl-dev
  postgresql redis-server kcat
  openjdk-17-jre-headless maven
  valgrind tzdata openssl
  clang libclang-rt-14-dev
  libmicrohttpd-dev prometheus
  nghttp2-proxy
  python3-aiosmtpd  # the mail sink of the EMAIL channel's tests (tests/integration/test_notify.c)
  python3-grpcio python3-protobuf  # the Python gRPC client of the WatchUpdates test (tests/integration/test_watch.py)
  systemd  # systemd-analyze verify: the deploy/systemd units (tests/deploy/test_units.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run this script as root"
  log "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql package creates and may start a cluster of its own on
# 5432; we never use it, our stacks run their own servers.

if [ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central"
  mkdir -p "$KAFKA_LIBS.tmp"
  mvn -B -q -f "$TODO_REPO/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp"
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
fi
# grpcurl (a Go program, not in Debian) for the reflection test and the tour.
GRPCURL_VERSION=v1.9.3
export GOBIN="$TODO_CACHE/go/bin"
if [ ! -x "$GOBIN/grpcurl" ] || ! "$GOBIN/grpcurl" -version 2>&1 | grep -q "${GRPCURL_VERSION#v}"; then
  [ -d /usr/local/go/bin ] && PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null || die "Go is needed to install grpcurl (apt-get install golang-go, or the Go toolchain)"
  log "installing grpcurl $GRPCURL_VERSION from the Go module proxy"
  mkdir -p "$GOBIN"
  GOFLAGS=-mod=mod go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
log "dependencies ready (Kafka jars in $KAFKA_LIBS, grpcurl in $GOBIN)"
