#!/usr/bin/env bash
# The GPU check on the device machine (no network, Python 3.12 image, the wheels carried in .whl/):
#   bash bench/gpu/run_on_device.sh            (repo root; device tool: carry [".whl"], timeout_s 600)
# Runs python -m bench.gpu.check outside $OUT (its run directories hold models and checkpoints), then
# copies back only what fits the device tool's return (at most 8 files): results.json, results.md,
# quickstart_report.md and logs.tar.gz (every part's log and every stage's log.txt). Extra arguments go to
# the check (e.g. --budget-s 400).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${OUT:?set OUT to the folder whose files come back}"
work="${GRADUS_CHECK_DIR:-/tmp/gradus-gpu-check}"
python="${PYTHON:-python3}"
"$python" -m bench.gpu.check --out "$work" --wheels .whl "$@"
status=$?
for name in results.json results.md quickstart_report.md; do
    [ -f "$work/$name" ] && cp "$work/$name" "$out/"
done
(cd "$work" && find . -name '*.log' -o -name 'log.txt' -o -name '*.yaml' -o -name 'ledger.json' -o -name 'environment.json' \
    | grep -v -e '/checkpoints/' -e '/model/' | tar -czf "$out/logs.tar.gz" -T -)
exit "$status"
