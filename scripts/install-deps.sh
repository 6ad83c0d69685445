#!/usr/bin/env bash
# Installs the Debian packages qpipe builds against, only those that are missing.
# Called by `make` when pkg-config cannot find a library (and by `make fuzz`
# with clang as an argument); safe to run by hand.
set -eu
pkgs=(build-essential pkg-config libyaml-dev libgit2-dev libssl-dev libopenblas-dev
      libzstd-dev libjansson-dev libpcre2-dev libutf8proc-dev libcmocka-dev libcurl4-openssl-dev
      git zstd openssl nginx   # nginx: the WebDAV server tests/cli/test_remote_cache.sh starts
      slurmctld slurmd slurm-client munge)   # the one-node Slurm cluster tests/cli/test_slurm.sh starts
# extra packages a target needs (make fuzz: clang and libclang-rt-dev, its libFuzzer runtime)
pkgs+=("$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "qpipe: installing missing packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
