#!/usr/bin/env bash
# Installs what building and testing need, when missing: the Debian libraries the Swift package links
# against, Open MPI's launcher and runtime (loaded at run time by data-parallel training; nothing links
# against it), and a python3 for the tests' local stand-in of the Hugging Face Hub (standard library only).
set -euo pipefail
# Extra Debian packages may be named as arguments (the demo adds dataset-fashion-mnist).
packages=(libjpeg-dev libpng-dev libwebp-dev libtiff-dev libgif-dev zlib1g-dev pkg-config openmpi-bin "$@")
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
