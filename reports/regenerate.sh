#!/usr/bin/env bash
# Regenerate the committed example report from the default run (`boundcheck run`):
#   reports/default-results.json   the results it was made from
#   reports/default.tex            standalone LaTeX; default-fragment.tex for \input
#   reports/default.md             Markdown summary
#   reports/default-figures/       figures (PDF for LaTeX, PNG for Markdown)
#   reports/default.pdf            when latexmk is installed
# Usage: reports/regenerate.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
boundcheck run -o "$run" --no-pdf -q
cp "$run/results.json" reports/default-results.json
boundcheck report "$run" -o reports/default.tex --pdf
