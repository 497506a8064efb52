# Shared by make test and make demo: install what is missing, run as root.

mb_as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# Install the Debian packages that are not installed yet.
mb_install_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing ${missing[*]}"
    mb_as_root apt-get update -qq
    # Without systemd (a container), the packages' maintainer scripts would
    # start their daemons by hand (PostgreSQL's main cluster, prometheus, the
    # exporter), or fail to: a policy-rc.d that denies every start, for the
    # duration of the install only, keeps them stopped.
    local policy=/usr/sbin/policy-rc.d status=0
    if [ ! -d /run/systemd/system ] && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# test/lib.sh: no service starts during the install\nexit 101\n' \
            | mb_as_root tee "$policy" >/dev/null
        mb_as_root chmod 755 "$policy"
    else
        policy=
    fi
    mb_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
    [ -z "$policy" ] || mb_as_root rm -f "$policy"
    return "$status"
}

# A TCP port nothing listens on (the throwaway servers listen on a unix
# socket only, but a free port keeps PGPORT unambiguous for clients).
mb_free_port() {
    local port
    for port in $(shuf -i 20000-60000 -n 50); do
        # /proc/net/tcp*: local address ":PORT" in hex, state 0A is LISTEN
        if ! awk -v p="$(printf ':%04X' "$port")" \
                '$2 ~ p"$" && $4 == "0A" { found = 1 } END { exit !found }' \
                /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "mb_free_port: no free port found" >&2
    return 1
}

# mb_start_server RUN DIR PORT [CONF]: initdb a throwaway cluster in DIR/data
# with CONF appended to its postgresql.conf, listening on DIR (unix socket
# only) at PORT, and start it.  RUN runs a command as the cluster's owner
# (PostgreSQL refuses root); DIR must be writable by that user.
mb_start_server() {
    local run=$1 dir=$2 port=$3 conf=${4:-}
    "$run" initdb -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; return 1; }
    {
        echo "# throwaway server (test/lib.sh)"
        echo "listen_addresses = ''"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        [ -z "$conf" ] || cat "$conf"
    } | "$run" tee -a "$dir/data/postgresql.conf" >/dev/null
    "$run" pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 120 start >/dev/null \
        || { tail -n 40 "$dir/server.log"; return 1; }
}

# mb_stop_server RUN DIR: stop the cluster mb_start_server started (only that
# one: by its data directory).
mb_stop_server() {
    local run=$1 dir=$2
    [ -f "$dir/data/postmaster.pid" ] || return 0
    "$run" pg_ctl -D "$dir/data" -m fast -w -t 120 stop >/dev/null
}
