#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Copyright (c) 2026 the shmmap authors
#
# Install the Debian packages shmmap needs to build and test, if missing.
set -e
pkgs="build-essential pkg-config liburcu-dev check libinih-dev libxxhash-dev python3-dev"
missing=""
# groff (the man-page check), readelf (binutils) and man (man-db): the tests
# of the man pages and of make install.
pkgs="$pkgs groff-base binutils man-db"
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $missing
