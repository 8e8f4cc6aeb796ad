#!/usr/bin/env bash
# Builds every filter plugin under plugins/ to plugins/dist/<name>.wasm, then
# checks each against plugins/ABI.md (valid wasm, exact export and import
# signatures). Safe to rerun: an up-to-date tree takes a few seconds.
#
# Route, chosen here:
#   * the rustup target wasm32-unknown-unknown is installed: plain cargo;
#   * otherwise Debian's rustc-web + rust-web-src with -Zbuild-std=core,alloc
#     (installed with apt-get when missing and running as root), linked with
#     rustup's rust-lld or a wasm-ld from lld. See docs/plugins.md.
# The C examples (examples/c/*.c) are built too when clang and wasm-ld exist.
#
# Environment: CARGO_TARGET_DIR (default plugins/target); SLUICE_NO_C=1 skips
# the C examples.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
target=wasm32-unknown-unknown
dist="$here/dist"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"

say() { printf '%s\n' "$*" >&2; }
die() { say "build.sh: $*"; exit 1; }

# Every workspace crate that builds a cdylib is a plugin; dist/ names it
# after its directory (relay-refusal/ -> dist/relay-refusal.wasm).
plugins=()
for manifest in */Cargo.toml examples/*/Cargo.toml; do
    [[ -f "$manifest" ]] && grep -q '"cdylib"' "$manifest" || continue
    package="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)"
    plugins+=("$(basename "$(dirname "$manifest")"):$package")
done
((${#plugins[@]})) || die "no plugin crates found"
package_args=()
for p in "${plugins[@]}"; do package_args+=(-p "${p#*:}"); done

# A wasm linker for the Debian route: rustup's rust-lld if there is one, else
# the newest wasm-ld on PATH that is LLD 15 or later (dlmalloc needs the
# `__heap_end` symbol, which older wasm-ld, like Debian 12's plain `lld` 14,
# does not define).
lld_major() { "$1" --version 2>/dev/null | sed -n 's/.*LLD \([0-9]*\).*/\1/p' | head -n 1; }
find_linker() {
    local sysroot host lld major
    if command -v rustc >/dev/null && sysroot="$(rustc --print sysroot 2>/dev/null)"; then
        host="$(rustc -vV | sed -n 's/^host: //p')"
        lld="$sysroot/lib/rustlib/$host/bin/rust-lld"
        [[ -x "$lld" ]] && { echo "$lld"; return; }
    fi
    for lld in $(compgen -c wasm-ld | sort -Vr | uniq); do
        major="$(lld_major "$lld")"
        [[ -n "$major" && "$major" -ge 15 ]] && { command -v "$lld"; return; }
    done
}

debian_packages_missing() {
    local p missing=()
    for p in rustc-web cargo-web rust-web-src; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    echo "${missing[*]}"
}

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    route="rustup target $target"
    cargo build --release --target "$target" "${package_args[@]}"
else
    route="Debian rustc-web with -Zbuild-std=core,alloc"
    missing="$(debian_packages_missing)"
    if [[ -n "$missing" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            say "installing $missing (no rustup $target here)"
            apt-get update -q
            # shellcheck disable=SC2086 # a list of package names
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
        else
            die "the $target standard library is missing. Either run
    rustup target add $target
or (Debian/Ubuntu, offline-capable)
    sudo apt-get install $missing"
        fi
    fi
    linker="$(find_linker)"
    if [[ -z "$linker" ]]; then
        newest_lld="$(apt-cache search --names-only '^lld-[0-9]+$' 2>/dev/null | cut -d' ' -f1 | sort -V | tail -n 1)"
        if [[ -n "$newest_lld" && "$(id -u)" == 0 ]]; then
            say "installing $newest_lld (no wasm linker of LLD 15 or later here)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$newest_lld"
            linker="$(find_linker)"
        fi
        [[ -n "$linker" ]] || die "no wasm linker of LLD 15 or later: install one, e.g. sudo apt-get install ${newest_lld:-lld-15}"
    fi
    # RUSTC_BOOTSTRAP lets Debian's stable compiler take -Zbuild-std; it is
    # set for this build only.
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" \
        /usr/bin/cargo build --release --target "$target" -Zbuild-std=core,alloc "${package_args[@]}"
fi

mkdir -p "$dist"
outputs=()
for p in "${plugins[@]}"; do
    name="${p%%:*}"
    package="${p#*:}"
    built="$CARGO_TARGET_DIR/$target/release/${package//-/_}.wasm"
    [[ -f "$built" ]] || die "cargo did not produce $built"
    cmp -s "$built" "$dist/$name.wasm" || cp "$built" "$dist/$name.wasm"
    outputs+=("$dist/$name.wasm")
done

# C examples: optional, and said so.
c_note="C examples: skipped (SLUICE_NO_C=1)"
if [[ -z "${SLUICE_NO_C:-}" ]]; then
    clang="$(compgen -c clang | grep -E '^clang(-[0-9]+)?$' | sort -V | tail -n 1 || true)"
    wasm_ld="$(compgen -c wasm-ld | sort -V | tail -n 1 || true)"
    if [[ -n "$clang" && -n "$wasm_ld" ]]; then
        c_note="C examples: built with $clang"
        for src in examples/c/*.c; do
            out="$dist/c-$(basename "$src" .c).wasm"
            if [[ ! -f "$out" || "$src" -nt "$out" || include/sluice_plugin.h -nt "$out" ]]; then
                "$clang" --target="$target" -O2 -nostdlib -ffreestanding -Wall -Wextra -Werror \
                    -I include -Wl,--no-entry -Wl,-z,stack-size=65536 \
                    -fuse-ld="$(command -v "$wasm_ld")" -o "$out" "$src"
            fi
            outputs+=("$out")
        done
    else
        c_note="C examples: skipped (needs clang and wasm-ld: apt-get install clang lld)"
    fi
fi

# The check runs on the host with whatever cargo is on PATH; wabt's validator,
# when installed, gives a second opinion.
cargo run --quiet --release -p sluice-abi-check -- "${outputs[@]}"
if command -v wasm-validate >/dev/null; then
    for f in "${outputs[@]}"; do wasm-validate "$f" || die "wasm-validate refused $f"; done
fi

say ""
say "route: $route"
say "$c_note"
say "plugins in $dist:"
for f in "${outputs[@]}"; do
    say "  $(basename "$f")  $(wc -c <"$f") bytes"
done
