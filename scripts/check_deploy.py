#!/usr/bin/env python3
"""Static checks of the deployment files, run by scripts/check-deploy inside its venv.

- docker-compose.yml against the Compose schema (Draft 7), process-compose.yaml against
  process-compose's (Draft 2020-12, and no field outside it, no `$`, `namespace` a string);
- flake.lock: valid JSON whose nodes and inputs match flake.nix's inputs, pinned exactly as
  ../shared/nix/README.md says;
- consistency: docker-compose.yml, process-compose.yaml, the Nix images (nix/images.nix,
  evaluated with stand-ins for nixpkgs), the Dockerfile and the Nginx configurations agree
  with each other and with the code (crates/common/src/config.rs, healthcheck.rs) on service
  names, ports, environment variable names and health endpoints.

The schemas and pins live outside the repository, in ../shared/ beside it (SHARED_DIR
overrides). Prints one line per check; exits 1 when any fails, naming file and reason.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft7Validator, Draft202012Validator

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR") or REPO.parent / "shared")

# The services of the app and their ports, as the code has them (checked against
# crates/common/src/config.rs below); nginx is the one origin in front.
SERVICES = {"vote": 8082, "result": 8083, "worker": 8084}
NGINX_PORT = 8081
# What each service needs, by compose service name (process-compose calls the db `postgres`).
NEEDS = {"vote": {"redis"}, "result": {"db"}, "worker": {"redis", "db"}}
PC_NAME = {"db": "postgres"}
# The variables of the original app and the whole option list: passed through to every service.
OPTION_VARS = {"OPTION_A", "OPTION_B", "VOTING_OPTIONS"}
SECRET_PATH = "/run/secrets/postgres_password"

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def run_check(name: str, function) -> None:
    before = len(failures)
    try:
        function()
    except Exception as e:  # a check that cannot run is a failed check
        fail(name, f"{type(e).__name__}: {e}")
    status = "ok" if len(failures) == before else "FAILED"
    print(f"{status:>6}  {name}")


def load_yaml(path: Path):
    with path.open() as f:
        return yaml.safe_load(f)


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the official schemas and pins are in ../shared/ beside the "
            "repository (CI has a copy there); set SHARED_DIR to where shared/ is"
        )
    return path


def nix_eval(expression: str):
    """Evaluates a Nix expression (strictly) with nix-instantiate and returns it as JSON."""
    env = dict(os.environ, NIX_CONFIG="build-users-group =")
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expression],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"nix-instantiate failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------------------
# What the code says


def config_env_names() -> set[str]:
    """Every environment variable the services read: VOTING_<KEY> for each key of the Config
    struct (`__` between levels), plus OPTION_A / OPTION_B."""
    text = (REPO / "crates/common/src/config.rs").read_text()
    structs = {}
    for m in re.finditer(r"^pub struct (\w+) \{\n(.*?)^\}", text, re.S | re.M):
        structs[m.group(1)] = re.findall(r"^\s*pub (\w+): ([\w<>:, ]+),$", m.group(2), re.M)
    names: set[str] = set()

    def walk(struct: str, path: list[str]) -> None:
        for field, ty in structs[struct]:
            if ty in structs:
                walk(ty, path + [field])
            else:
                names.add("VOTING_" + "__".join(path + [field]).upper())

    walk("Config", [])
    expected = {"VOTING_LISTEN", "VOTING_REDIS__URL", "VOTING_POSTGRES__URL",
                "VOTING_POSTGRES__PASSWORD_FILE", "VOTING_OPTIONS", "VOTING_LOG__FORMAT"}
    if not expected <= names:
        raise RuntimeError(f"could not read the keys of Config in config.rs (found {sorted(names)})")
    return names | {"OPTION_A", "OPTION_B"}


def health_default_path() -> str:
    text = (REPO / "crates/common/src/healthcheck.rs").read_text()
    m = re.search(r'pub const DEFAULT_PATH: &str = "([^"]+)";', text)
    if not m:
        raise RuntimeError("DEFAULT_PATH not found in crates/common/src/healthcheck.rs")
    return m.group(1)


def check_code_ports() -> None:
    text = (REPO / "crates/common/src/config.rs").read_text()
    for name, port in SERVICES.items():
        if not re.search(rf"Service::{name.capitalize()} => {port},", text):
            fail("crates/common/src/config.rs", f"default port of {name} is not {port}")


# ---------------------------------------------------------------------------------------------
# Schemas


def check_compose_schema() -> None:
    schema = json.loads(shared_file("schemas", "compose-spec.schema.json").read_text())
    for e in Draft7Validator(schema).iter_errors(load_yaml(REPO / "docker-compose.yml")):
        fail("docker-compose.yml", f"{'/'.join(map(str, e.absolute_path))}: {e.message}")


def strict(schema):
    """The schema with `additionalProperties: false` wherever it lists properties and says
    nothing about others: process-compose ignores unknown fields, so a typo would pass."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def check_process_compose_schema() -> None:
    path = REPO / "process-compose.yaml"
    schema = json.loads(shared_file("schemas", "process-compose.schema.json").read_text())
    doc = load_yaml(path)
    for e in Draft202012Validator(schema).iter_errors(doc):
        fail(path.name, f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
    for e in Draft202012Validator(strict(schema)).iter_errors(doc):
        fail(path.name, f"{'/'.join(map(str, e.absolute_path))}: not a field of the schema: {e.message}")
    if "$" in path.read_text():
        fail(path.name, "holds a `$`: process-compose expands variables in the file before parsing it")
    for name, process in (doc.get("processes") or {}).items():
        if "namespace" in process and not isinstance(process["namespace"], str):
            fail(path.name, f"{name}: namespace must be a single string (nixpkgs' process-compose)")


# ---------------------------------------------------------------------------------------------
# flake.lock


def readme_pins() -> dict[str, dict]:
    """The pins of ../shared/nix/README.md: input name -> owner, repo, ref, rev, narHash,
    lastModified."""
    pins = {}
    for line in shared_file("nix", "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[2].startswith("`"):
            continue
        name = cells[0].split()[0]
        url, rev, nar = (c.strip("`") for c in cells[1:4])
        m = re.fullmatch(r"github:([^/]+)/([^/]+)(?:/(.+))?", url)
        if not m or not cells[4].isdigit():
            continue
        pins[name] = {"owner": m.group(1), "repo": m.group(2), "ref": m.group(3),
                      "rev": rev, "narHash": nar, "lastModified": int(cells[4])}
    if not {"nixpkgs", "crane", "rust-overlay", "flake-utils", "systems"} <= pins.keys():
        raise RuntimeError(f"could not read the pins of shared/nix/README.md (found {sorted(pins)})")
    return pins


def check_flake_lock() -> None:
    where = "flake.lock"
    try:
        lock = json.loads((REPO / "flake.lock").read_text())
    except json.JSONDecodeError as e:
        fail(where, f"not valid JSON: {e}")
        return
    if lock.get("version") != 7:
        fail(where, f"version is {lock.get('version')!r}, not 7")
    nodes = lock.get("nodes", {})
    root_name = lock.get("root")
    if root_name not in nodes:
        fail(where, f"the root node {root_name!r} is missing")
        return
    inputs = nix_eval("(import ./flake.nix).inputs")
    root_inputs = nodes[root_name].get("inputs", {})
    if set(root_inputs) != set(inputs):
        fail(where, f"root inputs {sorted(root_inputs)} differ from flake.nix's {sorted(inputs)}")
    pins = readme_pins()

    def check_node(name: str, node: dict, url: str | None) -> None:
        locked, original = node.get("locked", {}), node.get("original", {})
        if url is not None:
            m = re.fullmatch(r"github:([^/]+)/([^/]+)(?:/(.+))?", url)
            if not m:
                fail(where, f"{name}: flake.nix's url {url!r} is not github:OWNER/REPO[/REF]")
                return
            want = {"owner": m.group(1), "repo": m.group(2), "type": "github"}
            if m.group(3):
                want["ref"] = m.group(3)
            if original != want:
                fail(where, f"{name}: original {original} does not match flake.nix's url {url}")
        pin = pins.get(name)
        if pin is None:
            fail(where, f"{name}: no pin for it in shared/nix/README.md")
            return
        want_locked = {"lastModified": pin["lastModified"], "narHash": pin["narHash"],
                       "owner": pin["owner"], "repo": pin["repo"], "rev": pin["rev"],
                       "type": "github"}
        if locked != want_locked:
            fail(where, f"{name}: locked {locked} is not the pin of shared/nix/README.md {want_locked}")
        want_original = {"owner": pin["owner"], "repo": pin["repo"], "type": "github"}
        if pin["ref"]:
            want_original["ref"] = pin["ref"]
        if original != want_original:
            fail(where, f"{name}: original {original} is not {want_original}")

    reached = {root_name}
    for name, spec in inputs.items():
        target = root_inputs.get(name)
        if target not in nodes:
            fail(where, f"input {name} points at no node ({target!r})")
            continue
        reached.add(target)
        node = nodes[target]
        check_node(name, node, spec.get("url"))
        follows = {k: v["follows"] for k, v in spec.get("inputs", {}).items() if "follows" in v}
        node_inputs = node.get("inputs", {})
        for sub, followed in follows.items():
            if node_inputs.get(sub) != followed.split("/"):
                fail(where, f"{name}.inputs.{sub} follows {followed} in flake.nix, but the lock has {node_inputs.get(sub)!r}")
        for sub, ref in node_inputs.items():
            if isinstance(ref, str):  # an input of its own, locked as a node
                if ref not in nodes:
                    fail(where, f"{name}.inputs.{sub} points at no node ({ref!r})")
                    continue
                reached.add(ref)
                check_node(ref, nodes[ref], None)
            elif sub not in follows:
                fail(where, f"{name}.inputs.{sub} follows {ref} in the lock, not in flake.nix")
    for orphan in sorted(set(nodes) - reached):
        fail(where, f"node {orphan} is not reachable from the root")


# ---------------------------------------------------------------------------------------------
# Consistency


def with_defaults(text: str) -> str:
    """`${VAR:-default}` as compose reads it when VAR is unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", str(text))


def ports(service: dict) -> list[str]:
    return [with_defaults(p) for p in service.get("ports") or []]


def compose_env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def pc_env(process: dict) -> dict:
    return dict(item.split("=", 1) for item in process.get("environment") or [])


def endpoint_of_healthcheck(command: list[str], port: int, default_path: str) -> tuple[str, int, str]:
    """(binary, port, path) probed by `[binary, "healthcheck", URL?]`."""
    binary = Path(command[0]).name
    if len(command) < 2 or command[1] != "healthcheck":
        return binary, -1, f"not a healthcheck: {command}"
    if len(command) == 2:
        return binary, port, default_path
    url = urlsplit(command[2])
    return binary, url.port or 80, url.path


def workspace_version() -> str:
    with (REPO / "Cargo.toml").open("rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


@functools.cache
def nix_images() -> dict:
    stub = 'name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-" + name; }'
    expression = f"""
      let
        stub = {stub};
        images = import ./nix/images.nix {{
          pkgs = {{
            dockerTools = {{ buildLayeredImage = args: args; caCertificates = stub "ca-certificates"; }};
            nginx = stub "nginx";
          }};
          packages = builtins.listToAttrs (map (n: {{ name = n; value = stub n; }})
            [ "vote" "worker" "result" "voting" "loadgen" ]);
          nginxConf = stub "nginx-conf";
          version = "{workspace_version()}";
        }};
      in builtins.mapAttrs (_: image: {{ inherit (image) name tag config; }}) images
    """
    return nix_eval(expression)


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or m.group(1)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def check_consistency() -> None:
    allowed = config_env_names()
    default_path = health_default_path()
    compose = load_yaml(REPO / "docker-compose.yml")
    pc = load_yaml(REPO / "process-compose.yaml")
    images = nix_images()
    stages = dockerfile_stages()
    services = compose.get("services", {})
    processes = pc.get("processes", {})
    C, P, N, D = "docker-compose.yml", "process-compose.yaml", "nix/images.nix", "Dockerfile"

    # Names.
    want = set(SERVICES) | {"nginx", "redis", "db", "seed"}
    if set(services) != want:
        fail(C, f"services are {sorted(services)}, expected {sorted(want)}")
    want_pc = set(SERVICES) | {"nginx", "redis", "postgres", "build"}
    if set(processes) != want_pc:
        fail(P, f"processes are {sorted(processes)}, expected {sorted(want_pc)}")
    want_images = {f"{s}-image" for s in SERVICES} | {"nginx-image"}
    if set(images) != want_images:
        fail(N, f"images are {sorted(images)}, expected {sorted(want_images)}")
    version = workspace_version()
    for name, image in images.items():
        if image.get("tag") != version:
            fail(N, f"{name}: tagged {image.get('tag')!r}, not the workspace's version {version} (Cargo.toml)")

    # Every environment variable named anywhere is one the services read.
    for name, service in services.items():
        if name in SERVICES or name == "nginx":
            for var in compose_env(service):
                if var not in allowed:
                    fail(C, f"{name}: {var} is not a configuration variable of the services")
    for name, process in processes.items():
        for var in pc_env(process):
            if var.startswith(("VOTING_", "OPTION_")) and var not in allowed:
                fail(P, f"{name}: {var} is not a configuration variable of the services")
    for var in pc_env(pc):
        if var.startswith(("VOTING_", "OPTION_")) and var not in allowed:
            fail(P, f"environment: {var} is not a configuration variable of the services")
    for name, image in images.items():
        for item in image["config"].get("Env", []):
            if item.split("=", 1)[0] not in allowed:
                fail(N, f"{name}: {item.split('=', 1)[0]} is not a configuration variable")
    for name, lines in stages.items():
        for line in lines:
            m = re.match(r"ENV\s+(VOTING_\w+|OPTION_\w+)=", line)
            if m and m.group(1) not in allowed:
                fail(D, f"stage {name}: {m.group(1)} is not a configuration variable")

    # Each Rust service: port, health endpoint, options, dependencies, in every definition.
    for name, port in SERVICES.items():
        service = services.get(name, {})
        env = compose_env(service)
        if env.get("VOTING_LISTEN") != f"0.0.0.0:{port}":
            fail(C, f"{name}: VOTING_LISTEN is {env.get('VOTING_LISTEN')!r}, not 0.0.0.0:{port}")
        missing = OPTION_VARS - env.keys()
        if missing:
            fail(C, f"{name}: does not pass {sorted(missing)} through")
        for var in OPTION_VARS & env.keys():
            if env[var] is not None:
                fail(C, f"{name}: {var} is set ({env[var]!r}); pass it through from the environment instead")
        if (service.get("build") or {}).get("target") != name:
            fail(C, f"{name}: build.target is not {name}")
        if name not in stages:
            fail(D, f"no stage {name} (the build target of compose's {name})")
        test = (service.get("healthcheck") or {}).get("test") or []
        c_health = endpoint_of_healthcheck(test[1:], port, default_path) if test[:1] == ["CMD"] else None
        if c_health != (name, port, default_path):
            fail(C, f"{name}: health check {test} does not probe {default_path} of {name} on {port}")
        depends = service.get("depends_on") or {}
        if set(depends) != NEEDS[name]:
            fail(C, f"{name}: depends on {sorted(depends)}, expected {sorted(NEEDS[name])}")
        for url_var, host, needed in (("VOTING_REDIS__URL", "redis", "redis"),
                                      ("VOTING_POSTGRES__URL", "db", "db")):
            if needed in NEEDS[name]:
                url = urlsplit(env.get(url_var) or "")
                if url.hostname != host:
                    fail(C, f"{name}: {url_var} does not name the service {host}")
        if "db" in NEEDS[name]:
            if env.get("VOTING_POSTGRES__PASSWORD_FILE") != SECRET_PATH:
                fail(C, f"{name}: VOTING_POSTGRES__PASSWORD_FILE is not {SECRET_PATH}")
            check_secret(C, name, service)

        process = processes.get(name, {})
        if pc_env(process).get("VOTING_LISTEN", f"127.0.0.1:{port}") != f"127.0.0.1:{port}":
            fail(P, f"{name}: VOTING_LISTEN is not 127.0.0.1:{port}")
        probe = (process.get("readiness_probe") or {}).get("http_get") or {}
        if (probe.get("port"), probe.get("path")) != (str(port), default_path):
            fail(P, f"{name}: readiness probe is {probe.get('port')}{probe.get('path')}, not {port}{default_path}")
        live = (process.get("liveness_probe") or {}).get("http_get") or {}
        if live and (live.get("port"), live.get("path")) != (str(port), "/healthz"):
            fail(P, f"{name}: liveness probe is not /healthz on {port}")
        pc_needs = {PC_NAME.get(n, n) for n in NEEDS[name]}
        pc_depends = process.get("depends_on") or {}
        for dep in pc_needs:
            if (pc_depends.get(dep) or {}).get("condition") != "process_healthy":
                fail(P, f"{name}: does not wait for {dep} to be healthy")
        if set(pc_depends) - pc_needs - {"build"}:
            fail(P, f"{name}: depends on {sorted(set(pc_depends) - pc_needs - {'build'})}, which compose's {name} does not")

        image = images.get(f"{name}-image", {}).get("config", {})
        n_env = dict(item.split("=", 1) for item in image.get("Env", []))
        if n_env.get("VOTING_LISTEN") != env.get("VOTING_LISTEN"):
            fail(N, f"{name}-image: VOTING_LISTEN {n_env.get('VOTING_LISTEN')!r} differs from compose's")
        if set(image.get("ExposedPorts", {})) != {f"{port}/tcp"}:
            fail(N, f"{name}-image: exposes {sorted(image.get('ExposedPorts', {}))}, not {port}/tcp")
        n_test = (image.get("Healthcheck") or {}).get("Test") or []
        n_health = endpoint_of_healthcheck(n_test[1:], port, default_path) if n_test[:1] == ["CMD"] else None
        if n_health != c_health:
            fail(N, f"{name}-image: health check {n_test} differs from compose's {test}")
        check_user(N, f"{name}-image", image.get("User", ""))

        lines = stages.get(name, [])
        if f"ENV VOTING_LISTEN=0.0.0.0:{port}" not in lines:
            fail(D, f"stage {name}: no ENV VOTING_LISTEN=0.0.0.0:{port}")
        if f"EXPOSE {port}" not in lines:
            fail(D, f"stage {name}: no EXPOSE {port}")
        health = [line for line in lines if line.startswith("HEALTHCHECK")]
        cmd = health[0].split(" CMD ", 1)[1] if health and " CMD " in health[0] else "[]"
        if endpoint_of_healthcheck(json.loads(cmd), port, default_path) != c_health:
            fail(D, f"stage {name}: HEALTHCHECK {cmd} differs from compose's {test}")

    # Nginx: one origin on 8081, its health endpoint, what it waits for.
    nginx = services.get("nginx", {})
    if ports(nginx) != [f"{NGINX_PORT}:{NGINX_PORT}"]:
        fail(C, f"nginx: ports are {ports(nginx)}, not ['{NGINX_PORT}:{NGINX_PORT}']")
    test = (nginx.get("healthcheck") or {}).get("test") or []
    urls = [urlsplit(a) for a in test if a.startswith("http://")]
    c_nginx = (urls[0].port, urls[0].path) if urls else None
    if not c_nginx or c_nginx[0] != NGINX_PORT:
        fail(C, f"nginx: health check {test} does not probe port {NGINX_PORT}")
    if set(nginx.get("depends_on") or {}) != {"vote", "result"}:
        fail(C, "nginx: does not depend on vote and result")
    probe = (processes.get("nginx", {}).get("readiness_probe") or {}).get("http_get") or {}
    if (probe.get("port"), probe.get("path")) != (str(NGINX_PORT), c_nginx and c_nginx[1]):
        fail(P, f"nginx: readiness probe {probe.get('port')}{probe.get('path')} differs from compose's {c_nginx}")
    if set(processes.get("nginx", {}).get("depends_on") or {}) != {"vote", "result"}:
        fail(P, "nginx: does not depend on vote and result")
    image = images.get("nginx-image", {}).get("config", {})
    if set(image.get("ExposedPorts", {})) != {f"{NGINX_PORT}/tcp"}:
        fail(N, f"nginx-image: does not expose {NGINX_PORT}/tcp")
    n_test = (image.get("Healthcheck") or {}).get("Test") or []
    urls = [urlsplit(a) for a in n_test if a.startswith("http://")]
    if not urls or (urls[0].port, urls[0].path) != c_nginx:
        fail(N, f"nginx-image: health check {n_test} differs from compose's {test}")
    check_user(N, "nginx-image", image.get("User", ""))
    if not any("nginx.conf" in a for a in image.get("Cmd", [])):
        fail(N, "nginx-image: does not run nginx/nginx.conf")
    lines = stages.get("nginx", [])
    if f"EXPOSE {NGINX_PORT}" not in lines:
        fail(D, f"stage nginx: no EXPOSE {NGINX_PORT}")
    if not any(c_nginx and f"http://127.0.0.1:{NGINX_PORT}{c_nginx[1]}" in line
               for line in lines if line.startswith("HEALTHCHECK")):
        fail(D, "stage nginx: HEALTHCHECK differs from compose's")
    check_nginx_confs()

    # Redis and PostgreSQL: loopback only, data on volumes, the password as a secret.
    for name, port in (("redis", 6379), ("db", 5432)):
        if ports(services.get(name, {})) != [f"127.0.0.1:{port}:{port}"]:
            fail(C, f"{name}: must be published on 127.0.0.1:{port} only")
        if services.get(name, {}).get("networks") != ["back-tier"]:
            fail(C, f"{name}: must be on back-tier only")
    for name, service in services.items():
        for port in ports(service):
            if name != "nginx" and not str(port).startswith("127.0.0.1:"):
                fail(C, f"{name}: port {port} is published on every interface")
    redis = services.get("redis", {})
    if "--appendonly" not in (redis.get("command") or []) or not any(
        str(v).endswith(":/data") for v in redis.get("volumes") or []
    ):
        fail(C, "redis: the append-only file must be on a volume (/data)")
    db = services.get("db", {})
    if compose_env(db).get("POSTGRES_PASSWORD_FILE") != SECRET_PATH:
        fail(C, f"db: POSTGRES_PASSWORD_FILE is not {SECRET_PATH}")
    check_secret(C, "db", db)
    volume = next((str(v).split(":")[0] for v in db.get("volumes") or []), None)
    if volume not in (compose.get("volumes") or {}):
        fail(C, "db: its data is not on a named volume")
    for name, service in services.items():
        if "POSTGRES_PASSWORD" in compose_env(service):
            fail(C, f"{name}: a password in the file (use the postgres_password secret)")

    # Networks, health checks, start order.
    tiers = {"nginx": ["front-tier"], "vote": ["front-tier", "back-tier"],
             "result": ["front-tier", "back-tier"], "worker": ["back-tier"], "seed": ["front-tier"]}
    for name, networks in tiers.items():
        if services.get(name, {}).get("networks") != networks:
            fail(C, f"{name}: networks are {services.get(name, {}).get('networks')}, not {networks}")
    for name, service in services.items():
        if name != "seed" and (not service.get("healthcheck") or service["healthcheck"].get("disable")):
            fail(C, f"{name}: no health check")
        for dep, spec in (service.get("depends_on") or {}).items():
            if (spec or {}).get("condition") != "service_healthy":
                fail(C, f"{name}: depends_on {dep} without condition service_healthy")
        if name in SERVICES or name == "nginx":
            if not (service.get("develop") or {}).get("watch"):
                fail(C, f"{name}: no develop.watch")
    seed = services.get("seed", {})
    if seed.get("profiles") != ["seed"] or (seed.get("build") or {}).get("target") != "loadgen":
        fail(C, "seed: must be the loadgen target in the seed profile")
    if f"http://nginx:{NGINX_PORT}/vote/" not in (seed.get("command") or []):
        fail(C, f"seed: does not vote through http://nginx:{NGINX_PORT}/vote/")
    for name, service in services.items():
        target = (service.get("build") or {}).get("target")
        if target and target not in stages:
            fail(D, f"no stage {target} (the build target of compose's {name})")

    # process-compose: the commands exist, the logs go to .data/, the stop is ordered.
    script = (REPO / "scripts/native-run").read_text()
    for name, process in processes.items():
        command = process.get("command", "")
        if command != f"scripts/native-run {name}":
            fail(P, f"{name}: command is {command!r}, not 'scripts/native-run {name}'")
        elif not re.search(rf"^\s*(\S+ \| )*{name}( \| \S+)*\)$", script, re.M):
            fail("scripts/native-run", f"does not handle {name}")
        if not str(process.get("log_location", "")).startswith(".data/"):
            fail(P, f"{name}: log_location is not under .data/")
    if pc.get("ordered_shutdown") is not True:
        fail(P, "ordered_shutdown is not true")

    # The toolchain of the Docker build is rust-toolchain.toml's.
    toolchain = (REPO / "rust-toolchain.toml").read_text()
    channel = re.search(r'^channel\s*=\s*"([^"]+)"', toolchain, re.M).group(1)
    chef = " ".join(stages.get("chef", []))
    if f"rust:{channel}-" not in chef or f"RUSTUP_TOOLCHAIN={channel}" not in chef:
        fail(D, f"stage chef: not the rust:{channel} image and toolchain of rust-toolchain.toml")
    for name, lines in stages.items():
        image = lines[0].split()[-3] if " AS " in lines[0] else lines[0].split()[-1]
        if image not in stages and (":" not in image or image.endswith(":latest")):
            fail(D, f"stage {name}: base image {image} has no pinned tag")


def check_secret(where: str, name: str, service: dict) -> None:
    for entry in service.get("secrets") or []:
        source = entry if isinstance(entry, str) else entry.get("source")
        target = source if isinstance(entry, str) else entry.get("target", source)
        if source == "postgres_password":
            path = target if target.startswith("/") else f"/run/secrets/{target}"
            if path != SECRET_PATH:
                fail(where, f"{name}: the secret is mounted at {path}, not {SECRET_PATH}")
            return
    fail(where, f"{name}: does not get the postgres_password secret")


def check_user(where: str, name: str, user: str) -> None:
    uid = user.split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        fail(where, f"{name}: runs as {user!r}, not a numeric unprivileged user")


def check_nginx_confs() -> None:
    compose_conf = (REPO / "nginx/nginx.conf").read_text()
    native_conf = (REPO / "nginx/native.conf").read_text()
    for name in ("vote", "result"):
        port = SERVICES[name]
        if not re.search(rf"^\s*server\s+{name}:{port}\b", compose_conf, re.M):
            fail("nginx/nginx.conf", f"upstream {name} is not {name}:{port}")
        if not re.search(rf"^\s*server\s+127\.0\.0\.1:{port}\b", native_conf, re.M):
            fail("nginx/native.conf", f"upstream {name} is not 127.0.0.1:{port}")
    if not re.search(rf"^\s*listen\s+{NGINX_PORT};", compose_conf, re.M):
        fail("nginx/nginx.conf", f"does not listen on {NGINX_PORT}")
    if not re.search(rf"^\s*listen\s+127\.0\.0\.1:{NGINX_PORT};", native_conf, re.M):
        fail("nginx/native.conf", f"does not listen on 127.0.0.1:{NGINX_PORT}")


def main() -> int:
    run_check("the services' default ports (config.rs)", check_code_ports)
    run_check("docker-compose.yml against the Compose schema (Draft 7)", check_compose_schema)
    run_check("process-compose.yaml against its schema (Draft 2020-12, no other field)",
              check_process_compose_schema)
    run_check("flake.lock: nodes and inputs of flake.nix, pins of shared/nix/README.md",
              check_flake_lock)
    run_check("compose, process-compose, Nix images, Dockerfile and Nginx agree",
              check_consistency)
    for failure in failures:
        print(f"check-deploy: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
