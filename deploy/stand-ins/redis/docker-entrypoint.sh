#!/bin/sh
# Entrypoint of the Redis stand-in, FOR OFFLINE TESTING ONLY (see the Dockerfile beside). As the
# official image's: `redis-server` when the arguments are options or a .conf file; started as
# root, it gives /data to the user redis and runs itself again as redis; protected mode is off
# (the official image builds Redis so), since clients come from other containers.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis:redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
  shift
  # A configuration file comes first; options given later win over this one.
  if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    conf="$1"
    shift
    set -- redis-server "$conf" --protected-mode no "$@"
  else
    set -- redis-server --protected-mode no "$@"
  fi
fi

exec "$@"
