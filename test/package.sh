#!/usr/bin/env bash
#
# The Debian package postgresql-15-microbatch (debian/, pg_buildext): checks
# that META.json, microbatch.control and debian/changelog name the same
# version, builds the package with dpkg-buildpackage in a scratch copy of
# this tree (it writes its .deb files next to the source directory, and the
# work tree must stay clean), installs it with dpkg -i, checks that its files
# are where pg_config says and are the ones make install installs, and runs
# CREATE EXTENSION and a batch on a throwaway cluster with the library
# preloaded.  Fails on any error.
#
# The package stays installed: its files are those of make install from this
# tree (same paths, same build), so the machine is left as make install
# leaves it.  make test runs this last, after the other suites.
#
# Usage: test/package.sh                 build, install and test (as root)
#        test/package.sh --build DIR     build only, copy the .deb files to DIR (make deb)
#        test/package.sh --versions      the version check only
#
set -euo pipefail

cd "$(dirname "$0")/.."
TREE=$PWD
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
TEST_USER=${MICROBATCH_TEST_USER:-postgres}
PACKAGE=postgresql-$PG_MAJOR-microbatch
# dpkg-dev and debhelper build it; python3 reads META.json.
PACKAGES="postgresql-$PG_MAJOR postgresql-client-$PG_MAJOR postgresql-server-dev-all dpkg-dev debhelper make gcc python3"

. test/lib.sh

mode=test
case "${1:-}" in
    --build) mode=build; outdir=$(mkdir -p "${2:?--build needs a directory}" && cd "$2" && pwd) ;;
    --versions) mode=versions ;;
    '') ;;
    *) echo "usage: $0 [--build DIR | --versions]" >&2; exit 2 ;;
esac

fail() { echo "package: $*" >&2; exit 1; }

# --- one version everywhere, so a release bump cannot forget a file
check_versions() {
    local control meta provides provides_file changelog upstream
    control=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" microbatch.control)
    [ -n "$control" ] || fail "no default_version in microbatch.control"
    python3 -m json.tool META.json >/dev/null || fail "META.json is not valid JSON"
    read -r meta provides provides_file < <(python3 -c '
import json, sys
m = json.load(open("META.json"))
p = m["provides"]["microbatch"]
print(m["version"], p["version"], p["file"])')
    # dpkg-parsechangelog would need dpkg-dev; the first line is enough
    changelog=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' debian/changelog)
    upstream=${changelog#*:}        # no epoch
    upstream=${upstream%-*}         # no Debian revision (none when native)
    echo "== versions: microbatch.control $control, META.json $meta (provides $provides), debian/changelog $changelog"
    [ "$meta" = "$control" ] || fail "META.json version $meta is not microbatch.control's $control"
    [ "$provides" = "$control" ] || fail "META.json provides version $provides is not $control"
    [ "$upstream" = "$control" ] || fail "debian/changelog version $changelog is not $control"
    [ "$provides_file" = "sql/microbatch--$control.sql" ] \
        || fail "META.json provides file $provides_file is not sql/microbatch--$control.sql"
    [ -f "$provides_file" ] || fail "$provides_file does not exist"
    VERSION=$control
}

if [ "$mode" = versions ]; then
    check_versions
    exit 0
fi

if [ "$mode" = test ] && [ "$(id -u)" != 0 ]; then
    echo "package: the package test installs with dpkg and must run as root" >&2
    exit 1
fi
mb_install_packages $PACKAGES
check_versions

work=$(mktemp -d /tmp/microbatch-package.XXXXXX)
cleanup() {
    local status=$?
    trap - EXIT
    # only the cluster started below, by its data directory
    [ -z "${server:-}" ] || mb_stop_server run "$server" || status=1
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build, in a copy without the work tree's build products
src=$work/microbatch-$VERSION
mkdir "$src"
tar -C "$TREE" --exclude=./.git --exclude=./tmp_check --exclude=./tmp_check_regress \
    --exclude=./tmp_check_iso --exclude=./results --exclude=./output_iso --exclude=./demo \
    --exclude=./log --exclude=./regression.diffs --exclude=./regression.out \
    --exclude='*.o' --exclude='*.bc' --exclude='*.so' -cf - . | tar -xf - -C "$src"
echo "== dpkg-buildpackage -us -uc -b (log: build.log)"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
    tail -n 80 "$work/build.log"
    fail "dpkg-buildpackage failed"
fi
arch=$(dpkg --print-architecture)
deb=$work/${PACKAGE}_${VERSION}_$arch.deb
[ -f "$deb" ] || { ls -l "$work"; fail "no $deb"; }
ls "$work"/*.deb

if [ "$mode" = build ]; then
    cp "$work"/*.deb "$outdir"/
    echo "== built into $outdir: $(cd "$work" && echo *.deb)"
    exit 0
fi

# --- the files make install installs from this tree, for comparison
echo "== make install DESTDIR (the source build's file list)"
destdir=$work/destdir
make -s -C "$src" PG_CONFIG="$PG_CONFIG" -j"$(nproc)" >/dev/null
make -s -C "$src" PG_CONFIG="$PG_CONFIG" DESTDIR="$destdir" install >/dev/null
(cd "$destdir" && find . -type f | sed 's/^\.//' | sort) >"$work/make-install.files"

# --- install and check the files
echo "== dpkg -i $(basename "$deb")"
dpkg -i "$deb" >/dev/null
dpkg-query -W -f='${Status} ${Version}\n' "$PACKAGE" | grep -q "install ok installed $VERSION" \
    || fail "$PACKAGE $VERSION is not installed"
dpkg --verify "$PACKAGE" || fail "dpkg --verify $PACKAGE: installed files differ from the package's"
dpkg -L "$PACKAGE" | sort >"$work/package.paths"
pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
expected=("$pkglibdir/microbatch.so" "$extdir/microbatch.control")
for f in sql/microbatch--*.sql; do
    expected+=("$extdir/$(basename "$f")")
done
for f in "${expected[@]}"; do
    grep -qxF "$f" "$work/package.paths" || fail "$PACKAGE has no $f"
    [ -f "$f" ] || fail "$f is not on disk"
done
for v in "$VERSION" 0.1.0; do
    grep -qxF "$extdir/microbatch--$v.sql" "$work/package.paths" || fail "$PACKAGE has no microbatch--$v.sql"
done
# and an update path to this version (ALTER EXTENSION follows the chain)
grep -qE "^$extdir/microbatch--[0-9.]+--$VERSION\.sql\$" "$work/package.paths" \
    || fail "$PACKAGE has no update script to $VERSION"
# Same paths as make install: the package's files, docs aside, are exactly
# the ones make install puts there.
while read -r f; do [ -f "$f" ] && echo "$f"; done <"$work/package.paths" \
    | grep -v '^/usr/share/doc/' >"$work/package.files" || true
if ! diff -u "$work/make-install.files" "$work/package.files"; then
    fail "the package and make install install different files (- make install, + package)"
fi
echo "== $PACKAGE installs the ${#expected[@]} files make install does, under $pkglibdir and $extdir ($(wc -l <"$work/package.files") files with bitcode)"

# --- CREATE EXTENSION and a batch on a throwaway cluster
server=$work/server
mkdir "$server"
chown "$TEST_USER" "$server"
run() { runuser -u "$TEST_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
port=$(mb_free_port)
printf "shared_preload_libraries = 'microbatch'\n" >"$work/package.conf"
chmod 644 "$work/package.conf"
chmod 755 "$work"
echo "== throwaway cluster on port $port (as $TEST_USER)"
mb_start_server run "$server" "$port" "$work/package.conf"
psql_() { run psql -X -q -v ON_ERROR_STOP=1 -h "$server" -p "$port" -U postgres -d postgres -At "$@"; }
out=$(psql_ <<'EOF'
CREATE EXTENSION microbatch;
SELECT 'version=' || extversion FROM pg_extension WHERE extname = 'microbatch';
CREATE TABLE events (id bigserial PRIMARY KEY, payload text);
CREATE TABLE events_seen (batch_id bigint, id bigint);
SELECT microbatch.create_pipeline('events', 'events', '1 hour');
SELECT microbatch.add_transform('events', 'seen', 'bronze',
    $$INSERT INTO events_seen SELECT microbatch.current_batch_id(), id FROM microbatch.events_batch$$);
INSERT INTO events (payload) VALUES ('a'), ('b'), ('c');
-- a background worker may run the batch first: run_batch then waits for it
-- and processes what is left, so every row is seen once either way
SELECT 'batch=' || coalesce(microbatch.run_batch('events')::text, 'none');
SELECT 'seen=' || count(*) || ',' || count(DISTINCT id) FROM events_seen;
SELECT 'ledger=' || sum(rows_in) FILTER (WHERE status = 'committed') FROM microbatch.batches WHERE pipeline = 'events';
-- the library is preloaded: its launcher runs
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'microbatch launcher');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT 'launcher=' || count(*) FROM pg_stat_activity WHERE backend_type = 'microbatch launcher';
EOF
) || { echo "$out"; tail -n 40 "$server/server.log"; fail "the SQL check failed"; }
echo "$out" | grep -v '^$' | sed 's/^/   /'
for want in "version=$VERSION" "seen=3,3" "ledger=3" "launcher=1"; do
    grep -qxF "$want" <<<"$out" || { tail -n 40 "$server/server.log"; fail "expected $want"; }
done
mb_stop_server run "$server"
server=
echo "package test passed: $PACKAGE $VERSION built, installed, CREATE EXTENSION and a batch on a throwaway cluster"
