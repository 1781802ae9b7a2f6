# OCI images (dockerTools.buildLayeredImage) of the services and of Nginx, for the compose
# network or any orchestrator: `nix build .#vote-image && docker load < result`.
#
# Each holds its binary (with the glibc it links), CA certificates, and nothing else: no
# shell, no package manager. It runs as the numeric user 65532 and checks its health with the
# binary itself (`vote healthcheck`: GET /readyz on the port of VOTING_LISTEN). Nginx's image
# holds Nginx, the configuration of nginx/ (vote:8082 and result:8083, as in docker-compose.yml,
# resolved while it runs through Docker's DNS, 127.0.0.11) and the vote binary, whose
# `healthcheck URL` probes Nginx.
#
# The tag is the workspace's version (Cargo.toml), the one deploy/kubernetes/ runs.
#
# Only builtins here, so that scripts/check-deploy can evaluate this file with stand-ins for
# pkgs and compare what it sets with docker-compose.yml, process-compose.yaml and the
# Kubernetes manifests.
{
  pkgs,
  packages,
  nginxConf,
  version,
}:
let
  inherit (pkgs.dockerTools) buildLayeredImage caCertificates;
  user = "65532:65532";
  seconds = n: n * 1000000000;
  healthcheck = command: {
    Test = [ "CMD" ] ++ command;
    Interval = seconds 10;
    Timeout = seconds 3;
    StartPeriod = seconds 20;
    Retries = 3;
  };

  service =
    name: port:
    let
      binary = "${packages.${name}}/bin/${name}";
    in
    buildLayeredImage {
      name = "voting-${name}";
      tag = version;
      contents = [ caCertificates ];
      config = {
        Entrypoint = [ binary ];
        User = user;
        Env = [ "VOTING_LISTEN=0.0.0.0:${toString port}" ];
        ExposedPorts = {
          "${toString port}/tcp" = { };
        };
        Healthcheck = healthcheck [
          binary
          "healthcheck"
        ];
      };
    };
in
{
  vote-image = service "vote" 8082;
  result-image = service "result" 8083;
  worker-image = service "worker" 8084;

  nginx-image = buildLayeredImage {
    name = "voting-nginx";
    tag = version;
    contents = [ caCertificates ];
    # Nginx creates its temporary directories under /tmp, and its pid file goes there.
    extraCommands = "mkdir -m 1777 tmp";
    config = {
      Entrypoint = [ "${pkgs.nginx}/bin/nginx" ];
      Cmd = [
        "-c"
        "${nginxConf}/nginx.conf"
        "-e"
        "stderr"
        "-g"
        "daemon off; pid /tmp/nginx.pid;"
      ];
      User = user;
      ExposedPorts = {
        "8081/tcp" = { };
      };
      Healthcheck = healthcheck [
        "${packages.vote}/bin/vote"
        "healthcheck"
        "http://127.0.0.1:8081/vote/"
      ];
    };
  };
}
