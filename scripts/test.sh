#!/usr/bin/env bash
# test.sh runs every check a change must pass, against the real components:
# it installs them first (scripts/setup.sh), then gofmt, go vet, and
# go test -race over the whole module, integration and end-to-end tests
# included. With CI=true a missing dependency fails the run instead of
# skipping a test.
#
#   scripts/test.sh                 everything
#   scripts/test.sh ./registrar/... a subset (arguments go to go test)
set -euo pipefail
cd "$(dirname "$0")/.."

envfile=$(scripts/setup.sh)
# shellcheck disable=SC1090
source "$envfile"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files --cached --others --exclude-standard -- '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed:" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)
go test -race -count=1 -timeout 25m "${pkgs[@]}"
