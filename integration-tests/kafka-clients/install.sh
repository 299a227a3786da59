#!/usr/bin/env bash
# Installs what tests/kafka_clients.rs needs; .ci/run calls it, and a developer can too.
# Idempotent: it installs only what is missing.
#
#   - kcat (Debian, on librdkafka 2.0.2), and librdkafka-dev with pkg-config: the `rdkafka`
#     crate of the tests links Debian's librdkafka dynamically (apt-get; needs root);
#   - a Python venv with requirements.txt's pinned clients, at $SLUICE_KAFKA_VENV or
#     target/kafka-venv in the workspace (where the tests look for it);
#   - node (Debian `nodejs`) and kafkajs 2.2.4, unpacked from the npm registry's tarball
#     (checked against its sha512; it has no dependencies) into node_modules/kafkajs
#     under $SLUICE_KAFKA_NODE or target/kafka-node.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${SLUICE_KAFKA_VENV:-$root/target/kafka-venv}
node_dir=${SLUICE_KAFKA_NODE:-$root/target/kafka-node}
KAFKAJS_VERSION=2.2.4
KAFKAJS_SHA512=j/YeapB1vfPT2iOIUn/vxdyKEuhuY2PxMBvf5JWux6iSaukAccrMtXEY/Lb7OvavDhOWME589bpLrEdnVHjfjA==

apt_install() {
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "missing: $*; install them (Debian: apt-get install $*) and rerun" >&2
    exit 1
  fi
  if [[ -z ${APT_UPDATED:-} ]]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v kcat >/dev/null || need+=(kcat)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v node >/dev/null || need+=(nodejs)
kafkajs=$node_dir/node_modules/kafkajs
kafkajs_installed() {
  [[ $(node -p "require('$kafkajs/package.json').version" 2>/dev/null) == "$KAFKAJS_VERSION" ]]
}
kafkajs_installed || command -v curl >/dev/null || need+=(curl)
pkg-config --exists rdkafka 2>/dev/null || need+=(librdkafka-dev)
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt_install "${need[@]}"
fi

# The venv: kept if it already imports the pinned versions.
check_venv() {
  "$venv/bin/python" - "$here/requirements.txt" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, pinned = line.split("==")
        assert version(name) == pinned, (name, version(name), pinned)
import kafka, confluent_kafka, aiokafka
import snappy, lz4.frame, zstandard  # kafka-python's codecs
PY
}
if ! check_venv; then
  echo "creating the Kafka-client venv at $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 has no ensurepip without python3-venv.
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check --only-binary :all: -r "$here/requirements.txt"
  check_venv || { echo "the venv at $venv does not import the pinned clients" >&2; exit 1; }
fi
# kafkajs: kept if the pinned version is there. Unpacked beside its place and moved in
# whole, so an interrupted run leaves nothing that looks installed.
if ! kafkajs_installed; then
  echo "fetching kafkajs $KAFKAJS_VERSION into $kafkajs"
  mkdir -p "$(dirname "$kafkajs")"
  unpack=$(mktemp -d "$(dirname "$kafkajs")/.kafkajs.XXXXXX")
  tarball=$unpack/kafkajs.tgz
  trap 'rm -rf "$unpack"' EXIT
  curl -fsSL --retry 3 -o "$tarball" "https://registry.npmjs.org/kafkajs/-/kafkajs-$KAFKAJS_VERSION.tgz"
  got=$(python3 -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
  if [[ $got != "$KAFKAJS_SHA512" ]]; then
    echo "the kafkajs tarball's sha512 is $got, not the pinned $KAFKAJS_SHA512" >&2
    exit 1
  fi
  mkdir "$unpack/kafkajs"
  tar -xzf "$tarball" -C "$unpack/kafkajs" --strip-components=1
  rm -rf "$kafkajs"
  mv "$unpack/kafkajs" "$kafkajs"
  rm -rf "$unpack"
  trap - EXIT
fi
echo "kcat: $(kcat -V 2>&1 | grep -m1 -o 'Version [0-9.]*') on librdkafka $(kcat -V 2>&1 | grep -m1 -o 'librdkafka [0-9.]*' | cut -d' ' -f2)"
echo "librdkafka-dev: $(pkg-config --modversion rdkafka)"
echo "venv $venv: $("$venv/bin/python" -c 'import kafka, confluent_kafka, aiokafka; print("kafka-python", kafka.__version__, "confluent-kafka", confluent_kafka.version(), "on librdkafka", confluent_kafka.libversion()[0], "aiokafka", aiokafka.__version__)')"
echo "node $(node --version), kafkajs $(node -p "require('$kafkajs/package.json').version")"
