# `nix run`: the whole app natively with process-compose (process-compose.yaml), using the
# binaries of this flake instead of `cargo build`. From a checkout it uses the checkout's
# process-compose.yaml, scripts/native-run and nginx/, with the data in ./.data; anywhere else,
# their copies in the store, with the data in $XDG_STATE_HOME/voting (~/.local/state/voting).
# process-compose's own API listens on PC_PORT_NUM (8090 here, instead of its 8080).
{
  pkgs,
  packages,
  root,
}:
let
  inherit (pkgs) lib;
  binaries = pkgs.symlinkJoin {
    name = "voting-binaries";
    paths = [
      packages.vote
      packages.worker
      packages.result
    ];
  };
  files = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/process-compose.yaml")
      (root + "/scripts/native-run")
      (root + "/nginx")
    ];
  };
in
pkgs.writeShellApplication {
  name = "voting-native";
  runtimeInputs = [
    pkgs.process-compose
    pkgs.redis
    pkgs.postgresql
    pkgs.nginx
    pkgs.coreutils
    pkgs.gnugrep
    pkgs.gnused
    pkgs.util-linux
  ];
  text = ''
    if [ ! -f process-compose.yaml ] || [ ! -x scripts/native-run ]; then
      state="''${XDG_STATE_HOME:-$HOME/.local/state}/voting"
      mkdir -p "$state"
      for name in process-compose.yaml scripts nginx; do
        ln -sfn "${files}/$name" "$state/$name"
      done
      cd "$state"
      echo "voting-native: not in a checkout: running in $state"
    fi
    mkdir -p .data
    export NATIVE_BIN_DIR="${binaries}/bin"
    exec process-compose --port "''${PC_PORT_NUM:-8090}" -f process-compose.yaml up "$@"
  '';
}
