#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v java >/dev/null || missing+=(default-jre-headless)   # pycocoevalcap's PTB tokenizer, METEOR
command -v chromium >/dev/null || missing+=(chromium)            # the web page's browser test
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python -m pip install -q --disable-pip-version-check torch==2.13.0   # the CPU build
python -m pip install -q --disable-pip-version-check -e '.[eval,serve,dev,int8,lora,parquet,ray,supervision,onnx]'
