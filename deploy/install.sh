#!/usr/bin/env bash
# Installs lrid from a build folder into PREFIX: the binary in PREFIX/bin, the built-in plugins
# (learning rules and classifiers) in PREFIX/lib/lrid/plugins, where `lrid serve` and
# `lrid train` find them without a plugins folder; the default configuration, the sweep files
# and the SQL views in PREFIX/share/lrid.
#   deploy/install.sh PREFIX [BUILD_DIR]          (BUILD_DIR: target/release)
#   deploy/install.sh --plugins DIR [BUILD_DIR]   only the built-in plugins, into DIR (`make
#                                                 plugins`: the default plugins folder)
# `make install PREFIX=…` builds, then runs this. The binary finds libtorch by the run path it
# was built with (the build's PyTorch), so install on machines that have that PyTorch at the
# same path (deploy/Containerfile builds one such image).
set -euo pipefail
usage="usage: deploy/install.sh PREFIX [BUILD_DIR] | --plugins DIR [BUILD_DIR]"
plugins_only=
if [ "${1:-}" = --plugins ]; then plugins_only=1; shift; fi
dest=${1:?$usage}
build=${2:-target/release}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "$dest" in /*) ;; *) dest=$root/$dest ;; esac
# The built-in plugins: library name in the build folder (liblrid_rule_X.so,
# liblrid_classifier_X.so) → installed file name (X with dashes).
RULES="sgdm adam feedback_alignment information_alignment"
CLASSIFIERS="random_forest linear_svm conv1d"

install_plugins() {
    local dir=$1 lib name
    install -d "$dir"
    for r in $RULES; do
        lib=$build/liblrid_rule_$r.so name=$(echo "$r" | tr _ -)
        [ -f "$lib" ] || { echo "$lib is missing: build first (make build)" >&2; exit 1; }
        install -m 644 "$lib" "$dir/$name.so"
        # Folders filled by earlier versions named the files with underscores.
        [ "$name" = "$r" ] || rm -f "$dir/$r.so"
    done
    for c in $CLASSIFIERS; do
        lib=$build/liblrid_classifier_$c.so
        [ -f "$lib" ] || { echo "$lib is missing: build first (make build)" >&2; exit 1; }
        install -m 644 "$lib" "$dir/$(echo "$c" | tr _ -).so"
    done
}

if [ -n "$plugins_only" ]; then
    install_plugins "$dest"
    exit 0
fi
[ -x "$build/lrid" ] || { echo "no lrid binary in $build: build first (make build)" >&2; exit 1; }
install -d "$dest/bin" "$dest/share/lrid"
install -m 755 "$build/lrid" "$dest/bin/lrid"
install_plugins "$dest/lib/lrid/plugins"
cp -r config queries "$dest/share/lrid/"
echo "installed lrid into $dest (built-in plugins in $dest/lib/lrid/plugins)"
