#!/bin/sh
# BuildKit SBOM generator protocol: scan each root under BUILDKIT_SCAN_SOURCE
# (and BUILDKIT_SCAN_SOURCE_EXTRAS), write $BUILDKIT_SCAN_DESTINATION/<name>.spdx.json:
# an in-toto statement whose predicate is the SPDX document, as BuildKit reads it.
# Deterministic: no timestamps beyond SOURCE_DATE_EPOCH (default 0).
set -eu
dest="${BUILDKIT_SCAN_DESTINATION:?BUILDKIT_SCAN_DESTINATION is not set}"
created=$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo 1970-01-01T00:00:00Z)

scan() {
  root="$1" name="$2" out="$dest/$2.spdx.json" list="$dest/.$2.files"
  (cd "$root" && find . -xdev -type f 2>/dev/null | LC_ALL=C sort) >"$list"
  ns=$(sha256sum "$list" | cut -c1-64)
  {
    printf '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","predicate":'
    printf '{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT",'
    printf '"name":"%s","documentNamespace":"https://archlift.invalid/spdx/%s/%s",' "$name" "$name" "$ns"
    printf '"creationInfo":{"created":"%s","creators":["Tool: archlift-sbom-scan-1"]},"files":[' "$created"
    n=0
    while IFS= read -r f; do
      case "$f" in *'"'*|*'\'*) continue ;; esac
      sum=$(cd "$root" && sha256sum "$f" | cut -c1-64)
      [ $n -gt 0 ] && printf ','
      n=$((n + 1))
      printf '{"fileName":"%s","SPDXID":"SPDXRef-File-%d","checksums":[{"algorithm":"SHA256","checksumValue":"%s"}]}' "${f#./}" "$n" "$sum"
    done <"$list"
    printf ']}}\n'
  } >"$out"
  rm -f "$list"
}

scan "${BUILDKIT_SCAN_SOURCE:?BUILDKIT_SCAN_SOURCE is not set}" "$(basename "$BUILDKIT_SCAN_SOURCE")"
for extra in ${BUILDKIT_SCAN_SOURCE_EXTRAS:-}; do
  [ -d "$extra" ] || continue
  for d in "$extra"/*; do [ -d "$d" ] && scan "$d" "$(basename "$d")"; done
done
