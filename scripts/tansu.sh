# Sourced by the test and benchmark scripts: sets and exports TANSU_BIN, the Tansu
# (Kafka-protocol) broker the integration tests and benchmarks run against, building it
# once with cargo when it is neither given, on the PATH, nor in cargo's bin directory.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -z "${TANSU_BIN:-}" ]; then
  if command -v tansu >/dev/null 2>&1; then
    TANSU_BIN="$(command -v tansu)"
  elif [ -x "$cargo_bin/tansu" ]; then
    TANSU_BIN="$cargo_bin/tansu"
  elif [ -x ../shared/tools/install-tansu ] && ../shared/tools/install-tansu && [ -x "$cargo_bin/tansu" ]; then
    # A prebuilt copy of the same build, shipped beside the checkout on development machines.
    TANSU_BIN="$cargo_bin/tansu"
  else
    echo "Tansu broker not found: building it once (cargo install tansu, about 18 minutes)..."
    cargo install tansu --locked --features "dynostore,libsql,postgres"
    TANSU_BIN="$cargo_bin/tansu"
  fi
fi
if [ ! -x "$TANSU_BIN" ]; then
  echo "error: the Tansu broker is not executable at $TANSU_BIN" >&2
  exit 1
fi
export TANSU_BIN
