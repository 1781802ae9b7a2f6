{
  description = "The voting app: vote, worker and result in Rust behind Nginx, with Redis and PostgreSQL";

  # Pinned in flake.lock (scripts/check-deploy checks it against these inputs). crane at that
  # revision needs Nix 2.31.2 or later.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
    flake-utils.url = "github:numtide/flake-utils";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  # What each part is, in nix/:
  #   packages.nix  crane: the dependencies built once, then packages.{vote,worker,result,voting,loadgen}
  #   images.nix    dockerTools images: vote-image, worker-image, result-image, nginx-image
  #   checks.nix    checks: fmt, clippy, tests (with redis, postgresql, nginx, chromium)
  #   shell.nix     devShells.default: the toolchain of rust-toolchain.toml and the servers
  #   app.nix       apps.default (`nix run`): process-compose with process-compose.yaml
  outputs =
    {
      self,
      nixpkgs,
      crane,
      flake-utils,
      rust-overlay,
      ...
    }:
    let
      # Packages, images, checks and the app are built for Linux; the dev shell works on macOS too.
      linuxSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      shellSystems = linuxSystems ++ [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
    in
    flake-utils.lib.eachSystem shellSystems (
      system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ rust-overlay.overlays.default ];
        };
        inherit (pkgs) lib;
        isLinux = builtins.elem system linuxSystems;

        # One compiler for the shell, the packages, the images and the checks: the channel of
        # rust-toolchain.toml, with its components.
        craneLib = (crane.mkLib pkgs).overrideToolchain (
          p: p.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml
        );

        rust = import ./nix/packages.nix {
          inherit pkgs craneLib;
          root = ./.;
        };

        # nginx/*.conf, for the Nginx image.
        nginxConf = lib.fileset.toSource {
          root = ./nginx;
          fileset = lib.fileset.fileFilter (file: file.hasExt "conf") ./nginx;
        };

        images = import ./nix/images.nix {
          inherit pkgs nginxConf;
          inherit (rust) packages;
          inherit (rust.commonArgs) version;
        };

        checks = import ./nix/checks.nix { inherit pkgs craneLib rust; };

        app = import ./nix/app.nix {
          inherit pkgs;
          inherit (rust) packages;
          root = ./.;
        };
      in
      {
        packages = lib.optionalAttrs isLinux (
          rust.packages // images // { default = rust.packages.voting; }
        );

        checks = lib.optionalAttrs isLinux checks;

        apps = lib.optionalAttrs isLinux {
          default = {
            type = "app";
            program = "${app}/bin/voting-native";
            meta.description = "The whole app natively with process-compose";
          };
        };

        devShells.default = import ./nix/shell.nix {
          inherit pkgs craneLib;
          checks = self.checks.${system};
        };
      }
    );
}
