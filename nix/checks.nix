# `nix flake check`: formatting, clippy with warnings denied, and every test of the workspace.
# The tests start their own redis-server, PostgreSQL, Nginx and headless Chromium from PATH
# (crates/testkit), so those are inputs of the test check.
{
  pkgs,
  craneLib,
  rust,
}:
let
  inherit (pkgs) lib stdenv;
  inherit (rust) commonArgs cargoArtifacts;
  # The browser tests need Chromium and its WebDriver: Linux only, where nixpkgs has them.
  browser = lib.optionals stdenv.hostPlatform.isLinux (
    builtins.filter (lib.meta.availableOn stdenv.hostPlatform) [
      pkgs.chromium
      pkgs.chromedriver
    ]
  );
in
{
  fmt = craneLib.cargoFmt {
    inherit (commonArgs) src pname version;
  };

  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--all-targets -- --deny warnings";
    }
  );

  tests = craneLib.cargoTest (
    commonArgs
    // {
      inherit cargoArtifacts;
      src = rust.testSrc;
      cargoTestExtraArgs = "--workspace";
      nativeCheckInputs = [
        pkgs.redis
        pkgs.postgresql
        pkgs.nginx
      ]
      ++ browser;
      # Chromium wants a home, a cache and fonts; the WebSocket tests hold a thousand sockets.
      FONTCONFIG_FILE = pkgs.makeFontsConf { fontDirectories = [ pkgs.dejavu_fonts ]; };
      preCheck = ''
        export HOME="$TMPDIR/home" XDG_CACHE_HOME="$TMPDIR/cache" XDG_CONFIG_HOME="$TMPDIR/config"
        mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME"
        ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
      '';
    }
  );
}
