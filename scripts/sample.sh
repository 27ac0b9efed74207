#!/usr/bin/env bash
# The main job on the bundled sample: project English NER labels onto Spanish sentences, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
.venv/bin/crop project --src-lang es --input samples/es.sample.txt --output out/es.sample.jsonl \
  --conll out/es.sample.conll --stats out/es.sample.stats.json
echo "wrote out/es.sample.jsonl (one line per input sentence) and out/es.sample.conll (kept sentences)"
