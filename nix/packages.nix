# The Cargo workspace built with crane: the dependencies of the whole workspace once
# (buildDepsOnly), then one package per binary on top of them (cargoExtraArgs = "-p vote", ...).
{
  pkgs,
  craneLib,
  root,
}:
let
  inherit (pkgs) lib;
  workspace = (lib.importTOML (root + "/Cargo.toml")).workspace.package;

  # crane's source filter keeps only .rs, .toml and Cargo.lock. The binaries also compile in
  # the askama templates (crates/*/templates), the static files (crates/*/static, through
  # include_str!) and the schema (crates/common/src/*.sql): without them the build fails.
  crateNames = builtins.attrNames (
    lib.filterAttrs (_: type: type == "directory") (builtins.readDir (root + "/crates"))
  );
  compiledIn = lib.fileset.unions (
    [ (lib.fileset.fileFilter (file: file.hasExt "sql") (root + "/crates/common/src")) ]
    ++ builtins.filter builtins.pathExists (
      lib.concatMap (crate: [
        (root + "/crates/${crate}/templates")
        (root + "/crates/${crate}/static")
      ]) crateNames
    )
  );
  cargoSources = craneLib.fileset.commonCargoSources root;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      cargoSources
      compiledIn
    ];
  };

  # The tests also read the project's Nginx configuration (crates/testkit serves routes.conf),
  # the configuration table (held to the code) and run scripts/native-run.
  testSrc = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      cargoSources
      compiledIn
      (root + "/nginx")
      (root + "/docs/configuration.md")
      (root + "/scripts/native-run")
    ];
  };

  commonArgs = {
    inherit src;
    pname = "voting";
    inherit (workspace) version;
    strictDeps = true;
  };

  # Every dependency of the workspace, built once and shared by the packages and the checks.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  binary =
    name:
    craneLib.buildPackage (
      commonArgs
      // {
        inherit cargoArtifacts;
        pname = name;
        cargoExtraArgs = "--locked -p ${name}";
        # The tests run once, for the whole workspace, in checks.tests.
        doCheck = false;
        meta.mainProgram = name;
      }
    );
in
{
  inherit
    src
    testSrc
    commonArgs
    cargoArtifacts
    ;
  packages = lib.genAttrs [
    "vote"
    "worker"
    "result"
    "voting"
    "loadgen"
  ] binary;
}
