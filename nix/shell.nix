# `nix develop`: the toolchain of rust-toolchain.toml (cargo, rustc, clippy, rustfmt),
# cargo-deny (scripts/check-deny), and what the tests and the native run start: redis,
# postgresql, nginx, process-compose, and on Linux chromium with chromedriver (the browser
# tests). Then `scripts/test` runs every test and `process-compose up` the whole app.
{
  pkgs,
  craneLib,
  checks,
}:
let
  inherit (pkgs) lib stdenv;
  browser = lib.optionals stdenv.hostPlatform.isLinux (
    builtins.filter (lib.meta.availableOn stdenv.hostPlatform) [
      pkgs.chromium
      pkgs.chromedriver
    ]
  );
in
craneLib.devShell {
  # The inputs of the checks, so that what builds in a check builds in the shell.
  inherit checks;
  packages = [
    pkgs.cargo-deny
    pkgs.redis
    pkgs.postgresql
    pkgs.nginx
    pkgs.process-compose
  ]
  ++ browser;
}
