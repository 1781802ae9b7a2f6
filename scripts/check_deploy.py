#!/usr/bin/env python3
"""Static checks of the deployment files, run by scripts/check-deploy inside its venv.

- docker-compose.yml against the Compose schema (Draft 7), process-compose.yaml against
  process-compose's (Draft 2020-12, and no field outside it, no `$`, `namespace` a string);
- flake.lock against flake.nix's own inputs: every input has its node, with the owner, repo and
  ref of its URL and the follows of flake.nix; every node is reachable from the root and locked
  to a rev and a narHash. The lock checker is tried on broken copies of the lock first (an
  input added without locking, a node without narHash, ...) and must refuse each;
- consistency: docker-compose.yml, process-compose.yaml, the Nix images (nix/images.nix,
  evaluated with stand-ins for nixpkgs), the Dockerfile and the Nginx configurations agree
  with each other and with the code (through docs/configuration.md, which a Rust test holds
  to the code, and healthcheck.rs) on service names, ports, environment variable names and
  health endpoints;
- Kubernetes: every overlay of deploy/kubernetes/, rendered with the kubectl in KUBECTL, agrees
  with all of the above (names, ports, variables, probes, images) and its HTTPRoutes with
  nginx/routes.conf (redirects, services, paths, what is hidden, the WebSocket kept open),
  attached to one Gateway; every pod has probes, requests and limits, a numeric non-root
  user, a read-only root, no capabilities and seccomp RuntimeDefault; the network policies
  admit exactly the connections the services need (the gateway's proxies, and no look-alike,
  to vote and result); nothing names ingress-nginx; dev and prod are what they say. The
  routing check is tried on broken copies of the rendered overlays first and must refuse each.

The official schemas are vendored in scripts/schemas/ (see its README); nothing outside the
repository is read. Prints one line per check; exits 1 when any fails, naming file and reason.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
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
SCHEMA_DIR = REPO / "scripts" / "schemas"
# The vendored schemas and the SHA-256 of the upstream copy (scripts/schemas/README.md).
SCHEMAS = {
    "compose-spec.schema.json": "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e",
    "process-compose.schema.json": "c277cb590428ff79d9f46497b2547631701b3e141469a7a414efe6a40566a5d6",
}

# The services of the app and their ports, as the code has them (checked against
# docs/configuration.md below); nginx is the one origin in front.
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


def vendored_schema(name: str) -> dict:
    """A vendored schema of scripts/schemas/, refused if it is not the upstream copy."""
    path = SCHEMA_DIR / name
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SCHEMAS[name]:
        raise RuntimeError(f"{path.relative_to(REPO)} has SHA-256 {digest}, not the upstream copy's "
                           f"{SCHEMAS[name]} (scripts/schemas/README.md)")
    return json.loads(data)


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


def config_table() -> list[tuple[list[str], str]]:
    """The rows of docs/configuration.md's table: the environment variables of each key, and
    its default. The Rust test common::it::config_docs holds that table to the code (every
    key, its variable, the default listen addresses), so nothing here reads Rust."""
    rows = []
    for line in (REPO / "docs/configuration.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split(" | ")
        envs = [n for n in cells[1].split("`")[1::2] if re.fullmatch(r"[A-Z_]+", n)]
        rows.append((envs, cells[2]))
    return rows


def config_env_names() -> set[str]:
    """Every environment variable the services read (docs/configuration.md): VOTING_<KEY>
    for each key (`__` between levels), plus OPTION_A / OPTION_B."""
    names = {env for envs, _ in config_table() for env in envs}
    expected = {"VOTING_LISTEN", "VOTING_REDIS__URL", "VOTING_POSTGRES__URL",
                "VOTING_POSTGRES__PASSWORD_FILE", "VOTING_OPTIONS", "VOTING_LOG__FORMAT",
                "OPTION_A", "OPTION_B"}
    if not expected <= names:
        raise RuntimeError(f"could not read the variables of docs/configuration.md (found {sorted(names)})")
    return names


def health_default_path() -> str:
    """The path `healthcheck` probes without a URL, as docs/configuration.md says it (the
    Rust test common::it::config_docs holds that sentence to the code)."""
    text = (REPO / "docs/configuration.md").read_text()
    m = re.search(r"`healthcheck` subcommand .*?\n?.*?asks `GET (/[^`]*)` on `listen`", text)
    if not m:
        raise RuntimeError("docs/configuration.md does not say which path `healthcheck` asks")
    return m.group(1)


def check_code_ports() -> None:
    listen = next((default for envs, default in config_table() if envs == ["VOTING_LISTEN"]), "")
    for name, port in SERVICES.items():
        if f"{name} `127.0.0.1:{port}`" not in listen:
            fail("docs/configuration.md", f"the default listen address of {name} is not 127.0.0.1:{port}")


# ---------------------------------------------------------------------------------------------
# Schemas


def check_compose_schema() -> None:
    schema = vendored_schema("compose-spec.schema.json")
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
    schema = vendored_schema("process-compose.schema.json")
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

GITHUB_URL = re.compile(r"github:([^/?#]+)/([^/?#]+)(?:/([^?#]+))?")
REV = re.compile(r"[0-9a-f]{40}")
NAR_HASH = re.compile(r"sha256-[A-Za-z0-9+/]{43}=")


def github_original(url: str) -> dict | None:
    """The `original` that flake.lock records for a flake.nix url github:OWNER/REPO[/REF]
    (a 40-digit REF is a rev), or None for another kind of url."""
    m = GITHUB_URL.fullmatch(url)
    if not m:
        return None
    original = {"owner": m.group(1), "repo": m.group(2), "type": "github"}
    if m.group(3):
        original["rev" if REV.fullmatch(m.group(3)) else "ref"] = m.group(3)
    return original


def flake_lock_problems(lock, inputs: dict) -> list[str]:
    """What is wrong with `lock` (flake.lock, parsed) for `inputs` (flake.nix's, evaluated):
    an input of flake.nix without its node, or whose node's `original` is not its url, or
    whose `follows` the lock does not have; a node not locked to a rev and a narHash, or
    whose locked owner and repo are not its original's; a node the root does not reach."""
    problems: list[str] = []
    if not isinstance(lock, dict) or not isinstance(lock.get("nodes"), dict):
        return ["no `nodes` object"]
    if lock.get("version") != 7:
        problems.append(f"version is {lock.get('version')!r}, not 7")
    nodes = lock["nodes"]
    root = lock.get("root")
    if root not in nodes:
        return problems + [f"the root node {root!r} is missing"]

    def resolve(path: list, depth: int = 0) -> str | None:
        """The node a `follows` path (input names, from the root) leads to."""
        name = root
        for step in path:
            ref = (nodes.get(name) or {}).get("inputs", {}).get(step)
            if isinstance(ref, list) and depth < len(nodes):
                ref = resolve(ref, depth + 1)
            if not isinstance(ref, str) or ref not in nodes:
                return None
            name = ref
        return name

    def check_locked(label: str, name: str) -> None:
        node = nodes[name]
        locked, original = node.get("locked"), node.get("original")
        if not isinstance(locked, dict) or not isinstance(original, dict):
            problems.append(f"{label} (node {name}): no `locked` or no `original`")
            return
        if not REV.fullmatch(str(locked.get("rev", ""))):
            problems.append(f"{label} (node {name}): not locked to a rev (locked.rev is {locked.get('rev')!r})")
        if not NAR_HASH.fullmatch(str(locked.get("narHash", ""))):
            problems.append(f"{label} (node {name}): no sha256 narHash (locked.narHash is {locked.get('narHash')!r})")
        if not isinstance(locked.get("lastModified"), int):
            problems.append(f"{label} (node {name}): locked.lastModified is {locked.get('lastModified')!r}, not a time")
        for key in ("type", "owner", "repo", "url"):
            if key in original and locked.get(key) != original[key]:
                problems.append(f"{label} (node {name}): locked.{key} {locked.get(key)!r} is not original.{key} {original[key]!r}")
        if "rev" in original and locked.get("rev") != original["rev"]:
            problems.append(f"{label} (node {name}): locked.rev is not the rev of its original {original['rev']}")

    reached = {root}

    def walk(name: str, label: str, declared: dict, depth: int) -> None:
        """Checks node `name` and, once, every node below it. `declared` is what flake.nix
        says about the node's inputs ({} below the root's own inputs, whose flake.nix files
        are not here)."""
        node_inputs = nodes[name].get("inputs", {})
        for sub, spec in declared.items():
            where = sub if depth == 0 else f"{label}.inputs.{sub}"
            ref = node_inputs.get(sub)
            if "follows" in spec:
                want = spec["follows"].split("/") if spec["follows"] else []
                if ref != want:
                    problems.append(f"{where}: follows {spec['follows']!r} in flake.nix, but the lock has {ref!r}")
                continue
            if ref is None:
                problems.append(f"{where}: an input of flake.nix with no node in the lock (run `nix flake lock`)")
                continue
            if "url" in spec and isinstance(ref, str) and ref in nodes:
                want = github_original(spec["url"])
                if want is None:
                    problems.append(f"{where}: url {spec['url']!r} is not github:OWNER/REPO[/REF], the only kind this check knows")
                elif nodes[ref].get("original") != want:
                    problems.append(f"{where} (node {ref}): original {nodes[ref].get('original')} is not flake.nix's url {spec['url']} ({want})")
        for sub, ref in node_inputs.items():
            where = sub if depth == 0 else f"{label}.inputs.{sub}"
            if depth == 0 and sub not in declared:
                problems.append(f"{where}: an input of the lock's root, not of flake.nix")
            if isinstance(ref, list):
                if depth == 1 and "follows" not in declared.get(sub, {}):
                    problems.append(f"{where}: follows {ref} in the lock, not in flake.nix")
                if resolve(ref) is None:
                    problems.append(f"{where}: follows {ref}, which leads to no node")
            elif ref not in nodes:
                problems.append(f"{where}: points at no node ({ref!r})")
            elif ref not in reached:
                reached.add(ref)
                check_locked(where, ref)
                walk(ref, where, declared.get(sub, {}).get("inputs", {}), depth + 1)

    walk(root, "flake.nix", inputs, 0)
    for orphan in sorted(set(nodes) - reached):
        problems.append(f"node {orphan}: not reachable from the root (left over: remove it or re-lock)")
    return problems


def flake_inputs() -> dict:
    return nix_eval("(import ./flake.nix).inputs")


def check_flake_lock() -> None:
    try:
        lock = json.loads((REPO / "flake.lock").read_text())
    except json.JSONDecodeError as e:
        fail("flake.lock", f"not valid JSON: {e}")
        return
    for problem in flake_lock_problems(lock, flake_inputs()):
        fail("flake.lock", problem)


def lock_breakages(lock: dict, inputs: dict):
    """(what, broken lock, broken inputs): realistic ways for flake.lock and flake.nix to
    disagree, made from the real ones. The flake.lock check must refuse every one."""
    def copy():
        return json.loads(json.dumps(lock)), json.loads(json.dumps(inputs))

    nodes = lock["nodes"]
    direct = {n: ref for n, ref in nodes[lock["root"]]["inputs"].items() if isinstance(ref, str)}
    name, ref = next((n, r) for n, r in sorted(direct.items()) if "url" in inputs.get(n, {}))
    below = sorted(set(nodes) - set(direct.values()) - {lock["root"]})

    lk, inp = copy()
    inp["treefmt-nix"] = {"url": "github:numtide/treefmt-nix"}
    yield "an input added to flake.nix without locking it", lk, inp
    lk, inp = copy()
    del lk["nodes"][ref]["locked"]["narHash"]
    yield f"node {ref} without narHash", lk, inp
    lk, inp = copy()
    del lk["nodes"][ref]["locked"]["rev"]
    yield f"node {ref} not locked to a rev", lk, inp
    lk, inp = copy()
    inp[name]["url"] = GITHUB_URL.fullmatch(inp[name]["url"]).expand(r"github:elsewhere/\2")
    yield f"{name}'s url changed to another owner in flake.nix, not re-locked", lk, inp
    lk, inp = copy()
    inp[name]["url"] = GITHUB_URL.fullmatch(inp[name]["url"]).expand(r"github:\1/\2") + "/release-0.1"
    yield f"{name}'s url changed to another ref in flake.nix, not re-locked", lk, inp
    lk, inp = copy()
    lk["nodes"][ref]["locked"]["repo"] += "-fork"
    yield f"node {ref} locked from another repo than its original", lk, inp
    lk, inp = copy()
    del lk["nodes"][lk["root"]]["inputs"][name]
    yield f"input {name} dropped from the lock's root (its node left behind)", lk, inp
    lk, inp = copy()
    lk["nodes"]["stale"] = lk["nodes"][ref]
    yield "a node no input reaches", lk, inp
    lk, inp = copy()
    inp[name].setdefault("inputs", {})["systems"] = {"follows": sorted(direct)[0]}
    yield f"a follows added to {name} in flake.nix, not re-locked", lk, inp
    follows = [(n, sub) for n, spec in sorted(inputs.items())
               for sub, s in sorted(spec.get("inputs", {}).items()) if "follows" in s]
    if follows:
        (n, sub), (lk, inp) = follows[0], copy()
        own = f"{sub}_2"
        lk["nodes"][own] = lk["nodes"][ref]
        lk["nodes"][direct[n]]["inputs"][sub] = own
        yield f"{n}.inputs.{sub}: a node of its own in the lock, a follows in flake.nix", lk, inp
    if below:
        lk, inp = copy()
        del lk["nodes"][below[0]]["locked"]["narHash"]
        yield f"node {below[0]} (an input of an input) without narHash", lk, inp


def check_flake_lock_checker() -> None:
    lock = json.loads((REPO / "flake.lock").read_text())
    inputs = flake_inputs()
    known = set(flake_lock_problems(lock, inputs))
    count = 0
    for what, broken_lock, broken_inputs in lock_breakages(lock, inputs):
        count += 1
        if not set(flake_lock_problems(broken_lock, broken_inputs)) - known:
            fail("scripts/check_deploy.py", f"the flake.lock check accepts a broken lock: {what}")
    if count < 9:
        fail("scripts/check_deploy.py", f"only {count} broken locks were tried")


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


# The Dockerfile's build arguments for the images it does not build, and the stage of each.
IMAGE_ARGS = {"RUST_IMAGE": "chef", "RUNTIME_IMAGE": "runtime", "NGINX_IMAGE": "nginx"}


def dockerfile_image_args() -> dict[str, str]:
    """The `ARG NAME=default` lines before the Dockerfile's first FROM."""
    args = {}
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if re.match(r"FROM\s", line, re.I):
            break
        m = re.match(r"ARG\s+(\w+)=(\S+)\s*$", line, re.I)
        if m:
            args[m.group(1)] = m.group(2)
    return args


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context: the last pattern that
    matches the path or one of its parent directories decides (`!` keeps)."""
    def regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        if any(re.fullmatch(regex(pattern), p) for p in prefixes):
            ignored = not keep
    return ignored


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
    if c_nginx and f'"http://127.0.0.1:$http_port{c_nginx[1]}"' not in native_run_ready("nginx"):
        fail("scripts/native-run", f"ready nginx: does not probe {c_nginx[1]} on HTTP_PORT like compose's nginx")
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

    # The native run's ports: compose's variables, with compose's defaults.
    script = (REPO / "scripts/native-run").read_text()
    native_ports = {m.group(1): int(m.group(2))
                    for m in re.finditer(r'^\w+="\$\(port_of (\w+) (\d+)\)"$', script, re.M)}
    compose_ports = {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            m = re.search(r"\$\{(\w+):-(\d+)\}:\d+$", str(port))
            if m:
                compose_ports[m.group(1)] = int(m.group(2))
    if compose_ports != {"HTTP_PORT": NGINX_PORT, "REDIS_PORT": 6379, "POSTGRES_PORT": 5432}:
        fail(C, f"published ports are set by {compose_ports}, not HTTP_PORT, REDIS_PORT and POSTGRES_PORT")
    if native_ports != compose_ports:
        fail("scripts/native-run", f"ports come from {native_ports}, not compose's {compose_ports}")

    # process-compose: the commands exist, the logs go to .data/, the stop is ordered; Redis,
    # PostgreSQL and Nginx are ready when scripts/native-run says the server it started is.
    for name in ("redis", "postgres", "nginx"):
        probe = (processes.get(name, {}).get("readiness_probe") or {}).get("exec") or {}
        if probe.get("command") != f"scripts/native-run ready {name}":
            fail(P, f"{name}: readiness probe is not `scripts/native-run ready {name}`")
        elif not native_run_ready(name):
            fail("scripts/native-run", f"ready does not handle {name}")
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

    # Every image the Dockerfile does not build comes from a build argument (an ARG before the
    # first FROM) whose default is the official image, pinned; compose passes each through.
    args = dockerfile_image_args()
    if set(args) != set(IMAGE_ARGS):
        fail(D, f"image arguments are {sorted(args)}, not {sorted(IMAGE_ARGS)}")
    for name, lines in stages.items():
        image = lines[0].split()[-3] if " AS " in lines[0] else lines[0].split()[-1]
        if image in stages:
            continue
        m = re.fullmatch(r"\$\{?(\w+)\}?", image)
        if not m:
            fail(D, f"stage {name}: base image {image} is not taken from a build argument")
            continue
        default = args.get(m.group(1), "")
        if ":" not in default.split("/")[-1] or default.endswith(":latest"):
            fail(D, f"stage {name}: base image {image} has no pinned default ({default!r})")
    for arg, stage in IMAGE_ARGS.items():
        if not re.match(rf"FROM\s+(--platform=\S+\s+)?\$\{{?{arg}\}}?\s+AS\s+{stage}$",
                        (stages.get(stage) or [""])[0]):
            fail(D, f"stage {stage}: not FROM ${{{arg}}}")
    for name, service in services.items():
        build = service.get("build")
        if build and set(build.get("args") or {}) != set(IMAGE_ARGS):
            fail(C, f"{name}: build args are {sorted(build.get('args') or {})}, not {sorted(IMAGE_ARGS)}")
    for name, var in (("redis", "REDIS_IMAGE"), ("db", "POSTGRES_IMAGE")):
        image = str(services.get(name, {}).get("image", ""))
        default = with_defaults(image)
        if not image.startswith(f"${{{var}:-") or ":" not in default.split("/")[-1]:
            fail(C, f"{name}: image {image} is not ${{{var}:-<official image, pinned>}}")
    # The defaults are the official images docs/docker.md lists, and the runtime is the distroless
    # cc of the Debian release the Rust image builds on (glibc of the same version or newer).
    readme = (REPO / "docs" / "docker.md").read_text()
    defaults = dict(args)
    defaults.update({var: with_defaults(str(services.get(name, {}).get("image", "")))
                     for name, var in (("redis", "REDIS_IMAGE"), ("db", "POSTGRES_IMAGE"))})
    for var, default in defaults.items():
        if not re.search(rf"^\| `{var}` \|.*\| `{re.escape(default)}` \|$", readme, re.M):
            fail("docs/docker.md", f"the table of image variables does not give {var} the default `{default}`")
    debian = {"bookworm": "12", "trixie": "13", "forky": "14"}
    rust = re.fullmatch(r"rust:[\d.]+-(?:slim-)?(\w+)", args.get("RUST_IMAGE", ""))
    runtime = re.fullmatch(r"gcr\.io/distroless/cc-debian(\d+):nonroot", args.get("RUNTIME_IMAGE", ""))
    if not rust or not runtime or debian.get(rust.group(1)) != runtime.group(1):
        fail(D, f"RUNTIME_IMAGE {args.get('RUNTIME_IMAGE')} is not gcr.io/distroless/cc-debian<N>:nonroot "
                f"of the Debian release of RUST_IMAGE {args.get('RUST_IMAGE')}")
    if (REPO / "Dockerfile").read_text().startswith("# syntax="):
        fail(D, "a `# syntax=` line: its frontend image would have to be pulled")

    # The nginx image holds nginx.conf and every file it includes, and the build context
    # (.dockerignore) keeps them and the workspace.
    wanted = ["nginx/nginx.conf"]
    for conf in wanted:
        for inc in re.findall(r"^\s*include\s+(\S+);", (REPO / conf).read_text(), re.M):
            if (REPO / "nginx" / inc).exists() and f"nginx/{inc}" not in wanted:
                wanted.append(f"nginx/{inc}")
    copies = " ".join(line for line in stages.get("nginx", []) if line.upper().startswith("COPY "))
    for conf in wanted:
        if not re.search(rf"(^|\s){re.escape(conf)}(\s|$)", copies):
            fail(D, f"stage nginx: does not COPY {conf} (nginx.conf includes it)")
    for path in wanted + ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "crates/vote/Cargo.toml",
                          "crates/vote/src/main.rs"]:
        if dockerignored(path):
            fail(".dockerignore", f"leaves {path} out of the build context")

    # The toolchain of the Docker build is rust-toolchain.toml's.
    toolchain = (REPO / "rust-toolchain.toml").read_text()
    channel = re.search(r'^channel\s*=\s*"([^"]+)"', toolchain, re.M).group(1)
    chef = " ".join(stages.get("chef", []))
    if not args.get("RUST_IMAGE", "").startswith(f"rust:{channel}-") or f"RUSTUP_TOOLCHAIN={channel}" not in chef:
        fail(D, f"stage chef: not the rust:{channel} image and toolchain of rust-toolchain.toml")


def native_run_ready(name: str) -> str:
    """The lines of `scripts/native-run ready NAME`, or ""."""
    script = (REPO / "scripts/native-run").read_text()
    ready = script.split("\n  ready)\n", 1)[-1] if "\n  ready)\n" in script else ""
    m = re.search(rf"^      {name}\)\n(.*?)^        ;;$", ready, re.M | re.S)
    return m.group(1) if m else ""


def check_secret(where: str, name: str, service: dict) -> None:
    # Compose copies a secret of `environment` or `content` into the container after creating
    # it, and refuses to for a read-only one: such a service needs a `file` secret.
    if where == "docker-compose.yml" and service.get("read_only"):
        defined = (load_yaml(REPO / "docker-compose.yml").get("secrets") or {})
        for entry in service.get("secrets") or []:
            source = entry if isinstance(entry, str) else entry.get("source")
            if "file" not in (defined.get(source) or {}):
                fail(where, f"{name}: read-only, so its secret {source} must come from a `file`")
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
        # compose: the service name, resolved while Nginx runs (scaled replicas are seen).
        if not re.search(rf"^\s*set\s+\${name}_upstream\s+{name}:{port};", compose_conf, re.M):
            fail("nginx/nginx.conf", f"${name}_upstream is not {name}:{port}")
        if not re.search(rf"^\s*server\s+127\.0\.0\.1:{port}\b", native_conf, re.M):
            fail("nginx/native.conf", f"upstream {name} is not 127.0.0.1:{port}")
        if not re.search(rf"^\s*set\s+\${name}_upstream\s+{name};", native_conf, re.M):
            fail("nginx/native.conf", f"${name}_upstream is not the upstream {name}")
    if not re.search(r"^\s*resolver\s+127\.0\.0\.11\s+valid=\d+s\b", compose_conf, re.M):
        fail("nginx/nginx.conf", "no `resolver 127.0.0.11 valid=...` (Docker's DNS, answers kept briefly)")
    if re.search(r"^\s*upstream\s", compose_conf, re.M):
        fail("nginx/nginx.conf", "an upstream block: its servers are resolved once, at start")
    if not re.search(rf"^\s*listen\s+{NGINX_PORT};", compose_conf, re.M):
        fail("nginx/nginx.conf", f"does not listen on {NGINX_PORT}")
    if not re.search(rf"^\s*listen\s+127\.0\.0\.1:{NGINX_PORT};", native_conf, re.M):
        fail("nginx/native.conf", f"does not listen on 127.0.0.1:{NGINX_PORT}")


# ---------------------------------------------------------------------------------------------
# Kubernetes (deploy/kubernetes/): every overlay rendered with `kubectl kustomize` (the kubectl
# of scripts/check-deploy, in KUBECTL), then checked against the other definitions and against
# the rules every pod keeps. The schemas themselves are checked by kubernetes-validate, in
# scripts/check-deploy.

KUBERNETES = REPO / "deploy" / "kubernetes"
K = "deploy/kubernetes"
# What each overlay is for: dev runs one of everything with Redis and PostgreSQL inside,
# prod several replicas against servers given by URL and Secret.
OVERLAYS = {"dev", "prod"}
# The in-cluster servers (components/datastores), by compose service name: Service name and port.
DATASTORES = {"redis": ("redis", 6379), "db": ("postgres", 5432)}
# The services' images run as this user (Dockerfile's runtime stage, nix/images.nix).
SERVICE_UID = 65532
# The original app's NodePorts, kept by dev.
NODE_PORTS = {"vote": 31000, "result": 31001}
# The Gateway API implementation of the dev overlay (dev/gateway.yaml), whose proxies the
# network policies admit: Envoy Gateway, in its standard namespace.
ENVOY_GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Every kind the manifests may hold: kubernetes-validate only warns about a kind it has no
# schema for, so an unknown kind (or a misspelt apiVersion) is refused here.
KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("gateway.networking.k8s.io/v1", "GatewayClass"), ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
}


def kubectl() -> str:
    path = os.environ.get("KUBECTL")
    if not path or not Path(path).is_file():
        raise RuntimeError("KUBECTL does not name a kubectl binary: run scripts/check-deploy, "
                           "which extracts one into target/")
    return path


def overlays() -> list[str]:
    """Every directory under deploy/kubernetes/ with a kustomization of kind Kustomization,
    besides base/ (components/ hold Components, which do not render alone)."""
    found = []
    for path in sorted(KUBERNETES.glob("*/kustomization.yaml")):
        if path.parent.name != "base" and (load_yaml(path) or {}).get("kind") == "Kustomization":
            found.append(path.parent.name)
    return found


@functools.cache
def render(overlay: str) -> tuple:
    out = subprocess.run([kubectl(), "kustomize", str(KUBERNETES / overlay)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {K}/{overlay} failed: {out.stderr.strip()}")
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def objects(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def pod_template(doc: dict) -> dict | None:
    """(metadata, spec) of the pods a workload makes, as one dict, or None."""
    kind = doc.get("kind")
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec", {}).get("template")
    if kind in WORKLOAD_KINDS:
        return (doc.get("spec") or {}).get("template")
    return None


def workloads(docs) -> dict[str, tuple[dict, dict]]:
    """name -> (workload, pod template) of everything that makes pods."""
    return {d["metadata"]["name"]: (d, pod_template(d) or {})
            for d in docs if d.get("kind") in WORKLOAD_KINDS}


def labels_of(template: dict) -> dict:
    return (template.get("metadata") or {}).get("labels") or {}


def selects(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions) against labels; {} selects all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_env(container: dict, configmaps: dict) -> dict[str, object]:
    """The environment a container gets: name -> value (None when it comes from elsewhere)."""
    env: dict[str, object] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            prefix = source.get("prefix", "")
            cm = configmaps.get(ref["name"])
            if cm is None:
                raise RuntimeError(f"container {container['name']}: no ConfigMap {ref['name']}")
            env.update({prefix + k: v for k, v in (cm.get("data") or {}).items()})
        elif source.get("secretRef"):
            raise RuntimeError(f"container {container['name']}: envFrom a Secret puts the secret "
                               "in the environment")
    for item in container.get("env") or []:
        env[item["name"]] = item.get("value")
    return env


def mounted_files(template: dict, container: dict) -> dict[str, tuple[str, str]]:
    """Files of Secrets mounted into a container: path -> (secret, key)."""
    volumes = {v["name"]: v for v in (template.get("spec") or {}).get("volumes") or []}
    files = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        sources = []
        if "secret" in volume:
            sources = [{"secret": dict(volume["secret"], name=volume["secret"].get("secretName"))}]
        elif "projected" in volume:
            sources = volume["projected"].get("sources") or []
        for source in sources:
            secret = source.get("secret")
            if not secret:
                continue
            for item in secret.get("items") or []:
                path = mount["mountPath"].rstrip("/") + "/" + item["path"]
                if "subPath" not in mount:
                    files[path] = (secret["name"], item["key"])
    return files


def is_secret(name: str, wanted: str) -> bool:
    """`name` is the Secret `wanted`, or the one kustomize generated for it (hash suffix)."""
    return name == wanted or re.fullmatch(re.escape(wanted) + r"-[a-z0-9]{10}", name) is not None


def quantity(value) -> float:
    """A resource quantity (100m, 1, 64Mi, 1Gi, 5e3) as a number."""
    text = str(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", text)
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    return float(m.group(1)) * suffixes.get(m.group(2) or "", 1)


def probe_target(probe: dict, container: dict) -> tuple[int | None, str | None]:
    """(port, path) of an HTTP probe; the port resolved from its name."""
    get = probe.get("httpGet") or {}
    port = get.get("port")
    if isinstance(port, str):
        port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), None)
    return port, get.get("path")


def image_parts(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return name, tag


def nginx_seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    m = re.fullmatch(r"(\d+)([smhd]?)", value)
    if not m:
        raise ValueError(f"not an Nginx time: {value!r}")
    return int(m.group(1)) * units[m.group(2) or "s"]


def nginx_locations() -> list[dict]:
    """The `location` blocks of nginx/routes.conf: modifier, path and directives."""
    text = re.sub(r"#[^\n]*", "", (REPO / "nginx/routes.conf").read_text())
    found = []
    for m in re.finditer(r"location\s+(?:(=|~)\s+)?(\S+)\s*\{(.*?)\}", text, re.S):
        directives = {}
        for line in m.group(3).split(";"):
            words = line.split()
            if words:
                directives.setdefault(words[0], []).append(words[1:])
        found.append({"exact": m.group(1) == "=", "regex": m.group(1) == "~", "path": m.group(2),
                      "directives": directives})
    return found


def nginx_route(uri: str, locations: list[dict]):
    """What nginx/routes.conf does with `uri`: ("proxy", upstream, path, timeouts) or
    ("return", code, target) -- exact locations first, then the first regular expression that
    matches, then the longest prefix."""
    exact = [loc for loc in locations if loc["exact"] and loc["path"] == uri]
    regexes = [loc for loc in locations if loc["regex"] and re.search(loc["path"], uri)]
    prefixes = sorted((loc for loc in locations
                       if not loc["exact"] and not loc["regex"] and uri.startswith(loc["path"])),
                      key=lambda loc: len(loc["path"]), reverse=True)
    location = (exact or regexes or prefixes or [None])[0]
    if location is None:
        return None
    d = location["directives"]
    if "return" in d:
        args = d["return"][0]
        return ("return", int(args[0]), args[1] if len(args) > 1 else None)
    # `proxy_pass http://$vote_upstream;` after `rewrite <regex> <replacement> break;`.
    m = re.fullmatch(r"http://\$(\w+)_upstream", d["proxy_pass"][0][0])
    upstream, path = m.group(1), uri
    for pattern, replacement, *flags in d.get("rewrite", []):
        if flags != ["break"]:
            raise ValueError(f"rewrite {pattern} {replacement} {flags}: only `break` is modelled")
        # The URI becomes the replacement (with the captures), not a substitution within it.
        found = re.search(pattern, path)
        if found:
            path = found.expand(re.sub(r"\$(\d)", r"\\g<\1>", replacement))
            break
    timeouts = {k: nginx_seconds(d[k][0][0]) for k in ("proxy_read_timeout", "proxy_send_timeout") if k in d}
    return ("proxy", upstream, path, timeouts)


def service_paths(name: str) -> set[str]:
    """The paths a service answers, from the table at the top of its routes.rs."""
    text = (REPO / "crates" / name / "src" / "routes.rs").read_text()
    return set(re.findall(r"^//! \|[^|]*\| `(/[^`]*)`", text, re.M))


def gateway_parents(route: dict) -> list[tuple[str, str]]:
    """(namespace, name) of the Gateways an HTTPRoute attaches to."""
    home = route["metadata"].get("namespace", "default")
    return [(ref.get("namespace", home), ref["name"]) for ref in route["spec"].get("parentRefs") or []
            if ref.get("kind", "Gateway") == "Gateway"
            and ref.get("group", "gateway.networking.k8s.io") == "gateway.networking.k8s.io"]


def prefix_matches(prefix: str, uri: str) -> bool:
    """Gateway API PathPrefix: element by element, a trailing slash ignored."""
    p = prefix.rstrip("/")
    return p == "" or uri == p or uri.startswith(p + "/")


def gateway_route(uri: str, routes: dict, services: dict):
    """What a Gateway API implementation does with `GET uri` for these HTTPRoutes: Exact
    matches first, then the longest PathPrefix. ("redirect", code, path),
    ("proxy", service, port, path, timeouts), or None (no route: 404)."""
    candidates = []
    for route in routes.values():
        for rule in route["spec"].get("rules") or []:
            for match in rule.get("matches") or [{}]:
                path = match.get("path") or {"type": "PathPrefix", "value": "/"}
                kind, value = path.get("type", "PathPrefix"), path.get("value", "/")
                if kind == "Exact" and uri == value:
                    candidates.append(((1, len(value)), value, kind, rule))
                elif kind == "PathPrefix" and prefix_matches(value, uri):
                    candidates.append(((0, len(value.rstrip("/"))), value, kind, rule))
                elif kind not in ("Exact", "PathPrefix"):
                    raise ValueError(f"path match {kind} is not modelled")
    if not candidates:
        return None
    _, value, kind, rule = max(candidates, key=lambda c: c[0])
    path = uri
    for f in rule.get("filters") or []:
        if f["type"] == "RequestRedirect":
            modifier = f["requestRedirect"].get("path") or {}
            target = modifier.get("replaceFullPath", uri)
            return ("redirect", f["requestRedirect"].get("statusCode", 302), target)
        if f["type"] == "URLRewrite":
            modifier = (f["urlRewrite"].get("path") or {})
            if modifier.get("type") == "ReplaceFullPath":
                path = modifier["replaceFullPath"]
            elif modifier.get("type") == "ReplacePrefixMatch":
                rest = uri[len(value.rstrip("/")):] if kind == "PathPrefix" else ""
                path = (modifier["replacePrefixMatch"].rstrip("/") + rest) or "/"
    backends = rule.get("backendRefs") or []
    if len(backends) != 1:
        return ("proxy", None, None, path, rule.get("timeouts") or {})
    ref = backends[0]
    return ("proxy", ref["name"], ref.get("port"), path, rule.get("timeouts") or {})


def gateway_seconds(value: str) -> int:
    """A Gateway API duration (1h, 30s, 500ms, 1h30m) in whole seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a Gateway API duration: {value!r}")
    return int(sum(int(n) * units[u] for n, u in parts))


# Nginx's proxy_read_timeout and proxy_send_timeout when a location sets none.
NGINX_DEFAULT_TIMEOUT = 60


def check_kubernetes_routes(where: str, docs) -> None:
    """The HTTPRoutes route as nginx/routes.conf does: the same redirects, services, paths and
    the WebSocket kept open; what routes.conf hides stays hidden; every route attaches to the
    one Gateway, rendered (dev) or named with its namespace (prod)."""
    routes = objects(docs, "HTTPRoute")
    services = objects(docs, "Service")
    if not routes:
        fail(where, "no HTTPRoute")
        return
    locations = nginx_locations()
    samples = {"/", "/other", "/voter/", "/votes", "/results/x"}
    for loc in locations:
        if loc["path"] != "/" and not loc["regex"]:
            samples |= {loc["path"], loc["path"] + "x", loc["path"] + "api/vote", loc["path"] + "ws"}
    for name in ("vote", "result"):
        samples |= {f"/{name}/{p}" for p in ("healthz", "readyz", "metrics")}
    for uri in sorted(samples):
        want = nginx_route(uri, locations)
        got = gateway_route(uri, routes, services)
        if want is None:
            continue
        if want[0] == "return":
            code, target = want[1], (want[2] or "").replace("$is_args$args", "")
            if code == 404:
                # No route (the gateway's 404), or one to a path the service does not answer.
                if got and got[0] == "redirect":
                    fail(where, f"{uri}: redirected to {got[2]}, routes.conf answers 404")
                elif got and got[0] == "proxy" and got[3] in service_paths(got[1] or ""):
                    fail(where, f"{uri}: reaches {got[1]}'s {got[3]}, which routes.conf hides (404)")
            elif got is None or got[:3] != ("redirect", code, target):
                fail(where, f"{uri}: {got or 'no route'}; routes.conf answers {code} to {target}")
            continue
        _, upstream, path, timeouts = want
        if got is None or got[0] != "proxy":
            fail(where, f"{uri}: {got or 'no route'}; routes.conf passes it to {upstream} as {path}")
            continue
        _, service, port, got_path, got_timeouts = got
        if (service, port, got_path) != (upstream, SERVICES.get(upstream), path):
            fail(where, f"{uri}: goes to {service}:{port} as {got_path}, "
                        f"routes.conf to {upstream}:{SERVICES.get(upstream)} as {path}")
        spec_port = [p["port"] for p in (services.get(service) or {}).get("spec", {}).get("ports", [])]
        if port not in spec_port:
            fail(where, f"{uri}: backend {service}:{port} is not a port of the Service {service}")
        # Nginx's timeouts are between two reads; a route's are for the whole exchange, the
        # upgraded stream included. Longer than Nginx's default: no limit at all ("0s").
        idle = max(timeouts.values(), default=NGINX_DEFAULT_TIMEOUT)
        for key in ("request", "backendRequest"):
            value = got_timeouts.get(key)
            if idle > NGINX_DEFAULT_TIMEOUT and value is not None and gateway_seconds(value) != 0:
                fail(where, f"{uri}: timeouts.{key} {value} would cut a stream that routes.conf "
                            f"keeps open while frames flow ({idle} s between them): use 0s")
            if idle > NGINX_DEFAULT_TIMEOUT and key == "request" and value is None:
                fail(where, f"{uri}: no timeouts.request: the implementation's default (Envoy: "
                            f"15 s) would cut a stream that routes.conf keeps open: use 0s")
            if idle <= NGINX_DEFAULT_TIMEOUT and value is not None:
                fail(where, f"{uri}: timeouts.{key} {value}, routes.conf has the default")

    # Every route attaches to the one Gateway, which admits it.
    parents = {parent for route in routes.values() for parent in gateway_parents(route)}
    for name, route in routes.items():
        if len(gateway_parents(route)) != 1:
            fail(where, f"HTTPRoute {name}: attaches to {gateway_parents(route)}, not one Gateway")
    if len(parents) != 1:
        fail(where, f"the HTTPRoutes attach to {sorted(parents)}, not one Gateway")
        return
    (namespace, gateway), = parents
    gateways = {(g["metadata"].get("namespace", "default"), g["metadata"]["name"]): g
                for g in docs if g.get("kind") == "Gateway"}
    if gateways and (namespace, gateway) not in gateways:
        fail(where, f"the HTTPRoutes attach to the Gateway {namespace}/{gateway}, which is not "
                    f"the one rendered ({sorted(gateways)})")
    for g in gateways.values():
        classes = objects(docs, "GatewayClass")
        cls = classes.get(g["spec"].get("gatewayClassName"))
        if not cls:
            fail(where, f"Gateway {g['metadata']['name']}: no GatewayClass "
                        f"{g['spec'].get('gatewayClassName')} rendered")
        elif cls["spec"].get("controllerName") != ENVOY_GATEWAY_CONTROLLER:
            fail(where, f"GatewayClass {cls['metadata']['name']}: controller "
                        f"{cls['spec'].get('controllerName')}, not Envoy Gateway's (the dev "
                        f"overlay's implementation, whose proxies the network policies admit)")
        admitted = [ls for ls in g["spec"].get("listeners") or []
                    if ls.get("protocol") == "HTTP" and
                    ((ls.get("allowedRoutes") or {}).get("namespaces") or {}).get("from", "Same")
                    in ("Same", "All")]
        if not admitted:
            fail(where, f"Gateway {g['metadata']['name']}: no HTTP listener admits the routes")
    if not gateways and namespace == next(iter(routes.values()))["metadata"].get("namespace"):
        fail(where, f"the HTTPRoutes attach to {namespace}/{gateway}, but no Gateway is rendered "
                    "and none is named in another namespace (the cluster's)")


def gateway_data_plane(docs) -> tuple[dict, dict]:
    """(namespace labels, pod labels) of the proxies Envoy Gateway runs for the Gateway the
    HTTPRoutes attach to: in its own namespace, labelled with the Gateway's name and
    namespace. Another implementation needs its own rule here."""
    parents = {p for r in objects(docs, "HTTPRoute").values() for p in gateway_parents(r)}
    namespace, name = sorted(parents)[0] if parents else ("", "")
    return ({"kubernetes.io/metadata.name": ENVOY_GATEWAY_NAMESPACE},
            {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
             "gateway.envoyproxy.io/owning-gateway-name": name,
             "gateway.envoyproxy.io/owning-gateway-namespace": namespace})


def check_network_policies(where: str, docs, open_frontends: bool) -> None:
    """Who can reach whom under the NetworkPolicies: only the gateway's data plane reaches vote
    and result (in dev, anything: its NodePorts), nothing reaches the worker, only vote and
    worker reach Redis, only worker and result reach PostgreSQL. Neither a proxy of another
    Gateway of the same implementation nor a pod that copies the proxies' labels in another
    namespace gets in."""
    namespace = next((d["metadata"]["name"] for d in docs if d.get("kind") == "Namespace"), "default")
    pods = {name: labels_of(t) for name, (_, t) in workloads(docs).items()}
    home = {"kubernetes.io/metadata.name": namespace}
    sources = {name: (home, labels, "198.51.100.10") for name, labels in pods.items()}
    plane_ns, plane_pod = gateway_data_plane(docs)
    sources["gateway"] = (plane_ns, plane_pod, "198.51.100.20")
    sources["proxy of another Gateway"] = (
        plane_ns, dict(plane_pod, **{"gateway.envoyproxy.io/owning-gateway-name": "other"}), "198.51.100.21")
    sources["look-alike in another namespace"] = (
        {"kubernetes.io/metadata.name": "elsewhere"}, plane_pod, "198.51.100.22")
    sources["pod of another namespace"] = ({"kubernetes.io/metadata.name": "elsewhere"}, {}, "198.51.100.30")
    sources["outside"] = (None, None, "192.0.2.1")
    policies = list(objects(docs, "NetworkPolicy").values())

    def peer_admits(peer: dict, source) -> bool:
        ns_labels, pod_labels, ip = source
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            address = ipaddress.ip_address(ip)
            return address in ipaddress.ip_network(block["cidr"]) and not any(
                address in ipaddress.ip_network(e) for e in block.get("except") or [])
        if ns_labels is None:
            return False
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], ns_labels):
                return False
        elif ns_labels != home:
            return False
        return selects(peer.get("podSelector"), pod_labels) if "podSelector" in peer else True

    def reaches(source, target: str, port: int, port_names: dict) -> bool:
        applicable = [p for p in policies
                      if selects(p["spec"].get("podSelector"), pods[target])
                      and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        if not applicable:
            return True
        for policy in applicable:
            for rule in policy["spec"].get("ingress") or []:
                ports = rule.get("ports") or []
                port_ok = not ports or any(
                    (p.get("protocol") or "TCP") == "TCP"
                    and (port_names.get(p.get("port"), p.get("port")) == port
                         or (isinstance(p.get("port"), int) and p["port"] <= port <= p.get("endPort", p["port"])))
                    for p in ports)
                peers = rule.get("from") or []
                if port_ok and (not peers or any(peer_admits(peer, source) for peer in peers)):
                    return True
        return False

    everyone = set(sources)
    want = {"vote": everyone if open_frontends else {"gateway"},
            "result": everyone if open_frontends else {"gateway"},
            "worker": set(), "redis": {"vote", "worker"}, "postgres": {"worker", "result"}}
    for target, (_, template) in workloads(docs).items():
        for container in (template.get("spec") or {}).get("containers") or []:
            names = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            for port in names.values():
                allowed = {s for s, source in sources.items()
                           if s != target and reaches(source, target, port, names)}
                expected = want.get(target, set()) - {target}
                if allowed != expected:
                    fail(where, f"{target}:{port} is reachable from {sorted(allowed) or 'nothing'}, "
                                f"expected {sorted(expected) or 'nothing'}")


def check_pod_rules(where: str, docs, shutdown_grace_s: float) -> None:
    """What every pod and container keeps: probes, requests and limits, a non-root numeric
    user, a read-only root, no capabilities, seccomp RuntimeDefault, no service account
    token, and a termination grace period that covers the drain."""
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) not in KNOWN_KINDS:
            fail(where, f"{doc.get('kind')} {doc['metadata'].get('name')}: {doc.get('apiVersion')} "
                        f"{doc.get('kind')} is not a kind these checks know")
        if doc.get("kind") == "Namespace":
            labels = doc["metadata"].get("labels") or {}
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                fail(where, f"Namespace {doc['metadata']['name']}: does not enforce the "
                            "restricted Pod Security Standard")
    for name, (doc, template) in workloads(docs).items():
        what = f"{doc['kind']} {name}"
        spec = template.get("spec") or {}
        pod_sc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            fail(where, f"{what}: automountServiceAccountToken is not false")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            fail(where, f"{what}: shares a namespace of the host")
        grace = spec.get("terminationGracePeriodSeconds")
        containers = spec.get("containers") or []
        if not containers:
            fail(where, f"{what}: no containers")
        for container in (spec.get("initContainers") or []) + containers:
            c = f"{what}, container {container.get('name')}"
            init = container in (spec.get("initContainers") or [])
            if not init:
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if not container.get(probe):
                        fail(where, f"{c}: no {probe}")
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(kind) or {}):
                        fail(where, f"{c}: no {kind}.{resource}")
            for resource in ("cpu", "memory"):
                request = (resources.get("requests") or {}).get(resource)
                limit = (resources.get("limits") or {}).get(resource)
                if request is not None and limit is not None and quantity(request) > quantity(limit):
                    fail(where, f"{c}: {resource} request {request} is over its limit {limit}")
            sc = container.get("securityContext") or {}
            effective = {k: sc.get(k, pod_sc.get(k))
                         for k in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")}
            if effective["runAsNonRoot"] is not True:
                fail(where, f"{c}: runAsNonRoot is not true")
            for key in ("runAsUser", "runAsGroup"):
                value = effective[key]
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    fail(where, f"{c}: {key} is {effective[key]!r}, not a numeric unprivileged id")
            if (effective["seccompProfile"] or {}).get("type") != "RuntimeDefault":
                fail(where, f"{c}: seccompProfile is not RuntimeDefault")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(where, f"{c}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(where, f"{c}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                fail(where, f"{c}: privileged")
            capabilities = sc.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []) or capabilities.get("add"):
                fail(where, f"{c}: capabilities are not all dropped ({capabilities})")
            if image_parts(container.get("image", ""))[0].startswith("voting-"):
                if effective["runAsUser"] != SERVICE_UID:
                    fail(where, f"{c}: runs as {effective['runAsUser']}, not the images' user {SERVICE_UID}")
                pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
                need = pre_stop.get("seconds", 0) + 2 * shutdown_grace_s + 5
                if not isinstance(grace, int) or grace < need:
                    fail(where, f"{c}: terminationGracePeriodSeconds {grace} does not cover the preStop "
                                f"sleep and twice http.shutdown_grace_ms ({need:g} s)")
        if not isinstance(grace, int) or grace < 30:
            fail(where, f"{what}: terminationGracePeriodSeconds {grace} is not set to 30 s or more")


def check_kubernetes_overlay(overlay: str, allowed: set[str], default_path: str) -> None:
    where = f"{K}/{overlay}"
    docs = render(overlay)
    compose = load_yaml(REPO / "docker-compose.yml").get("services", {})
    configmaps = objects(docs, "ConfigMap")
    services = objects(docs, "Service")
    loads = workloads(docs)
    deployments = objects(docs, "Deployment")
    statefulsets = objects(docs, "StatefulSet")
    images = nix_images()
    stages = dockerfile_stages()
    version = workspace_version()

    # Nothing secret in a ConfigMap or an environment; passwords only as files of Secrets.
    for name, cm in configmaps.items():
        for key, value in (cm.get("data") or {}).items():
            if "PASSWORD" in key.upper() and not key.upper().endswith("_FILE"):
                fail(where, f"ConfigMap {name}: {key} holds a password")
            if "://" in str(value) and urlsplit(str(value)).password:
                fail(where, f"ConfigMap {name}: {key} is a URL with a password")
    grace_ms = int(next((cm["data"]["VOTING_HTTP__SHUTDOWN_GRACE_MS"] for cm in configmaps.values()
                         if "VOTING_HTTP__SHUTDOWN_GRACE_MS" in (cm.get("data") or {})), 10_000))
    check_pod_rules(where, docs, grace_ms / 1000)

    # The services: one Deployment each, named, ported, probed and configured as elsewhere.
    if set(deployments) != set(SERVICES):
        fail(where, f"Deployments are {sorted(deployments)}, expected {sorted(SERVICES)}")
    shared_config = set()
    for name, port in SERVICES.items():
        if name not in deployments:
            continue
        template = loads[name][1]
        containers = template["spec"]["containers"]
        if [c["name"] for c in containers] != [name]:
            fail(where, f"{name}: containers are {[c['name'] for c in containers]}, not [{name!r}]")
            continue
        container = containers[0]
        image, tag = image_parts(container["image"])
        nix = images.get(f"{name}-image", {})
        # A registry in front of the name is the operator's choice; name and tag are not.
        if (image.rsplit("/", 1)[-1], tag) != (nix.get("name"), nix.get("tag")) or tag != version:
            fail(where, f"{name}: image {container['image']} is not {nix.get('name')}:{nix.get('tag')} "
                        f"(nix/images.nix; the workspace's version is {version})")
        if image.rsplit("/", 1)[-1] != f"voting-{name}" or name not in stages:
            fail(where, f"{name}: image {image} is not voting-{name}, the Dockerfile's target {name}")
        if container.get("imagePullPolicy") != "IfNotPresent":
            fail(where, f"{name}: imagePullPolicy is not IfNotPresent (images loaded into kind or k3d)")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        if list(ports.values()) != [port]:
            fail(where, f"{name}: container ports {sorted(ports.values())}, not [{port}]")
        env = container_env(container, configmaps)
        shared_config |= {ref["configMapRef"]["name"]
                          for ref in container.get("envFrom") or [] if "configMapRef" in ref}
        c_env = compose_env(compose.get(name, {}))
        if env.get("VOTING_LISTEN") != c_env.get("VOTING_LISTEN"):
            fail(where, f"{name}: VOTING_LISTEN {env.get('VOTING_LISTEN')!r} differs from "
                        f"compose's {c_env.get('VOTING_LISTEN')!r}")
        for var in env:
            if var not in allowed and var != "RUST_LOG":
                fail(where, f"{name}: {var} is not a configuration variable of the services")
        if "VOTING_OPTIONS" not in env:
            fail(where, f"{name}: no VOTING_OPTIONS (the one list of options all services share)")
        ready = probe_target(container.get("readinessProbe") or {}, container)
        live = probe_target(container.get("livenessProbe") or {}, container)
        start = probe_target(container.get("startupProbe") or {}, container)
        if ready != (port, default_path):
            fail(where, f"{name}: readinessProbe is {ready}, not {default_path} on {port} "
                        "(compose's health check)")
        if live != (port, "/healthz"):
            fail(where, f"{name}: livenessProbe is {live}, not /healthz on {port}")
        if start[0] != port:
            fail(where, f"{name}: startupProbe is not an HTTP probe of port {port}")
        files = mounted_files(template, container)
        for needed, var in (("redis", "VOTING_REDIS__URL"), ("db", "VOTING_POSTGRES__URL")):
            if needed in NEEDS[name] and not env.get(var):
                fail(where, f"{name}: no {var}")
        for needed, secret, var in (("db", "voting-postgres", "VOTING_POSTGRES__PASSWORD_FILE"),
                                    ("redis", "voting-redis", "VOTING_REDIS__PASSWORD_FILE")):
            mounted = any(is_secret(s, secret) for s, _ in files.values())
            if needed not in NEEDS[name]:
                if mounted or var in env:
                    fail(where, f"{name}: gets the password of {secret} but never talks to that server")
            elif var in env or needed == "db":
                source = files.get(env.get(var))
                if not source or not is_secret(source[0], secret) or source[1] != "password":
                    fail(where, f"{name}: {var} {env.get(var)!r} is not the key password of "
                                f"the Secret {secret} mounted as a file")
        service = services.get(name)
        if name in ("vote", "result"):
            s_ports = (service or {}).get("spec", {}).get("ports") or []
            exposed = [(p["port"], ports.get(p.get("targetPort"), p.get("targetPort"))) for p in s_ports]
            if not service or exposed != [(port, port)]:
                fail(where, f"Service {name}: does not expose port {port} of the pods")
            elif not selects({"matchLabels": service["spec"].get("selector")}, labels_of(template)):
                fail(where, f"Service {name}: does not select the pods of {name}")
    if len(shared_config) != 1:
        fail(where, f"the services read {sorted(shared_config)}, not one shared ConfigMap")

    # Redis and PostgreSQL in the cluster, when they are: as compose runs them.
    url_of = {}
    for cm in configmaps.values():
        url_of.update({k: v for k, v in (cm.get("data") or {}).items() if k.endswith("__URL")})
    for compose_name, (name, port) in DATASTORES.items():
        if name not in statefulsets:
            continue
        template = loads[name][1]
        container = template["spec"]["containers"][0]
        c_service = compose.get(compose_name, {})
        want_image, want_tag = image_parts(with_defaults(c_service.get("image", "")))
        image, tag = image_parts(container["image"])
        if image != want_image or tag.split("-")[0] != want_tag.split("-")[0]:
            fail(where, f"{name}: image {container['image']} is not compose's "
                        f"{c_service.get('image')} (Debian-based)")
        ports = [p["containerPort"] for p in container.get("ports") or []]
        s_ports = [p["port"] for p in (services.get(name) or {}).get("spec", {}).get("ports") or []]
        if ports != [port] or s_ports != [port]:
            fail(where, f"{name}: container ports {ports} and Service ports {s_ports}, not [{port}]")
        var = "VOTING_REDIS__URL" if compose_name == "redis" else "VOTING_POSTGRES__URL"
        url = urlsplit(url_of.get(var, ""))
        if (url.hostname, url.port) != (name, port):
            fail(where, f"{name}: {var} names {url.hostname}:{url.port}, not the Service {name}:{port}")
        claims = {c["metadata"]["name"] for c in statefulsets[name]["spec"].get("volumeClaimTemplates") or []}
        c_mounts = [str(v).split(":", 1)[1] for v in c_service.get("volumes") or []]
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
        for path in c_mounts:
            if mounts.get(path) not in claims:
                fail(where, f"{name}: {path} (a volume in compose) is not on a PersistentVolumeClaim")
        if compose_name == "redis":
            command = (container.get("command") or []) + (container.get("args") or [])
            c_command = c_service.get("command") or []
            appendonly = command[command.index("--appendonly") + 1:][:1] if "--appendonly" in command else []
            if command[:len(c_command)] != c_command or appendonly != ["yes"]:
                fail(where, f"redis: runs {command}, not compose's {c_command} (its append-only file)")
        else:
            env = container_env(container, configmaps)
            files = mounted_files(template, container)
            source = files.get(env.get("POSTGRES_PASSWORD_FILE"))
            if not source or not is_secret(source[0], "voting-postgres") or source[1] != "password":
                fail(where, f"{name}: POSTGRES_PASSWORD_FILE is not the Secret voting-postgres "
                            "mounted as a file")
            for var in ("POSTGRES_USER", "POSTGRES_DB"):
                if env.get(var) != compose_env(c_service).get(var):
                    fail(where, f"{name}: {var} differs from compose's db")
            if any(v.upper().endswith("PASSWORD") for v in env):
                fail(where, f"{name}: a password in the environment")

    check_routing(where, docs, open_frontends=overlay == "dev")

    # What each overlay is for.
    secrets = objects(docs, "Secret")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in objects(docs, "HorizontalPodAutoscaler").values()}
    pdbs = objects(docs, "PodDisruptionBudget")
    if overlay == "dev":
        for name, (doc, _) in loads.items():
            if doc["spec"].get("replicas", 1) != 1:
                fail(where, f"{name}: {doc['spec']['replicas']} replicas, dev runs one")
        if set(statefulsets) != {n for n, _ in DATASTORES.values()}:
            fail(where, f"StatefulSets are {sorted(statefulsets)}, expected redis and postgres in the cluster")
        for name, node_port in NODE_PORTS.items():
            spec = (services.get(name) or {}).get("spec", {})
            node_ports = [p.get("nodePort") for p in spec.get("ports", [])]
            if spec.get("type") != "NodePort" or node_ports != [node_port]:
                fail(where, f"Service {name}: not on NodePort {node_port}")
        if not any(is_secret(n, "voting-postgres") and n != "voting-postgres" for n in secrets):
            fail(where, "no generated Secret voting-postgres")
    if overlay == "prod":
        if statefulsets:
            fail(where, f"StatefulSets {sorted(statefulsets)}: prod uses Redis and PostgreSQL given by URL")
        if secrets:
            fail(where, f"Secrets {sorted(secrets)} in the manifests: prod only references them")
        for name in ("vote", "result"):
            hpa = hpas.get(name)
            if not hpa or hpa["spec"]["scaleTargetRef"].get("kind") != "Deployment":
                fail(where, f"{name}: no HorizontalPodAutoscaler")
            elif hpa["spec"].get("minReplicas", 1) < 2:
                fail(where, f"{name}: the HorizontalPodAutoscaler keeps fewer than 2 replicas")
            if name in deployments and "replicas" in deployments[name]["spec"]:
                fail(where, f"{name}: sets replicas, which its HorizontalPodAutoscaler owns")
        if deployments.get("worker", {}).get("spec", {}).get("replicas", 1) < 2:
            fail(where, "worker: fewer than 2 replicas")
        for name in SERVICES:
            template = loads.get(name, (None, {}))[1]
            if not any(selects(p["spec"].get("selector"), labels_of(template)) for p in pdbs.values()):
                fail(where, f"{name}: no PodDisruptionBudget")
        for name in ("vote", "worker"):
            containers = (loads.get(name, (None, {}))[1].get("spec") or {}).get("containers") or [{}]
            if "VOTING_REDIS__PASSWORD_FILE" not in container_env(containers[0], configmaps):
                fail(where, f"{name}: no VOTING_REDIS__PASSWORD_FILE (a managed Redis takes a password)")


def check_routing(where: str, docs, open_frontends: bool) -> None:
    """The routes and who reaches the services, and nothing of ingress-nginx (retired in March
    2026): neither an Ingress nor its annotations or labels."""
    check_kubernetes_routes(where, docs)
    check_network_policies(where, docs, open_frontends)
    if objects(docs, "Ingress"):
        fail(where, f"Ingresses {sorted(objects(docs, 'Ingress'))}: routing is the Gateway API's")
    text = yaml.safe_dump_all(list(docs))
    for word in ("ingress-nginx", "nginx.ingress.kubernetes.io"):
        if word in text:
            fail(where, f"names {word}")


def routing_breakages(dev, prod):
    """Broken copies of the rendered overlays, each of which check_routing must refuse:
    (what, docs, open_frontends)."""
    def copy(docs):
        return [json.loads(json.dumps(d)) for d in docs]

    def rule(docs, route, path):
        spec = next(d for d in docs if d.get("kind") == "HTTPRoute" and d["metadata"]["name"] == route)["spec"]
        return next(r for r in spec["rules"]
                    if any((m.get("path") or {}).get("value") == path for m in r.get("matches") or []))

    def peer(docs):
        policy = next(d for d in docs if d.get("kind") == "NetworkPolicy"
                      and d["metadata"]["name"] == "frontends-from-gateway")
        return policy["spec"]["ingress"][0]["from"][0]

    def broken(what, base, change, open_frontends=False):
        docs = copy(base)
        change(docs)
        return (what, docs, open_frontends)

    yield broken("the WebSocket's request timeout left to the implementation", dev,
                 lambda d: rule(d, "result", "/result/ws").pop("timeouts"), True)
    yield broken("the WebSocket cut after an hour", dev,
                 lambda d: rule(d, "result", "/result/ws")["timeouts"].update(request="1h"), True)
    yield broken("a timeout on the pages that routes.conf does not have", dev,
                 lambda d: rule(d, "vote", "/vote/").update(timeouts={"request": "10s"}), True)
    yield broken("/result/ sent to vote", dev,
                 lambda d: rule(d, "result", "/result/")["backendRefs"][0].update(name="vote", port=8082), True)
    yield broken("/vote/ without its prefix stripped", dev,
                 lambda d: rule(d, "vote", "/vote/").pop("filters"), True)
    yield broken("a backend port the Service does not have", dev,
                 lambda d: rule(d, "vote", "/vote/")["backendRefs"][0].update(port=8080), True)
    yield broken("no redirect of /", dev,
                 lambda d: rule(d, "vote", "/")["matches"][0]["path"].update(value="/index"), True)
    yield broken("/vote redirected with 302", dev,
                 lambda d: rule(d, "vote", "/vote")["filters"][0]["requestRedirect"].update(statusCode=302), True)
    yield broken("vote's /metrics published", dev,
                 lambda d: rule(d, "vote", "/vote/metrics").update(matches=[{"path": {"type": "Exact", "value": "/vote/x"}}]), True)
    yield broken("a route attached to another Gateway", dev,
                 lambda d: next(x for x in d if x.get("kind") == "HTTPRoute")["spec"]["parentRefs"][0].update(name="other"), True)
    yield broken("a Gateway of another implementation than the proxies admitted", dev,
                 lambda d: next(x for x in d if x.get("kind") == "GatewayClass")["spec"].update(controllerName="example.com/other"), True)
    yield broken("prod's routes attached to a Gateway of their own namespace that is not rendered", prod,
                 lambda d: [r["spec"]["parentRefs"][0].pop("namespace") for r in d if r.get("kind") == "HTTPRoute"])
    yield broken("the proxies of every Gateway admitted", prod,
                 lambda d: peer(d)["podSelector"]["matchLabels"].pop("gateway.envoyproxy.io/owning-gateway-name"))
    yield broken("the proxies' labels admitted from any namespace", prod,
                 lambda d: peer(d).update(namespaceSelector={}))
    yield broken("the gateway's proxies left out", prod,
                 lambda d: peer(d)["podSelector"]["matchLabels"].update({"gateway.envoyproxy.io/owning-gateway-name": "x"}))
    yield broken("an ingress-nginx annotation", prod,
                 lambda d: next(x for x in d if x.get("kind") == "HTTPRoute")["metadata"].update(
                     annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "8k"}))


def check_routing_checker() -> None:
    """check_routing accepts both overlays as rendered and refuses each broken copy."""
    global failures
    dev, prod = render("dev"), render("prod")
    count = 0
    for what, docs, open_frontends in routing_breakages(dev, prod):
        count += 1
        kept, failures = failures, []
        try:
            check_routing("broken copy", docs, open_frontends)
        finally:
            found, failures = failures, kept
        if not found:
            fail("scripts/check_deploy.py", f"the routing check accepts a broken copy: {what}")
    if count < 16:
        fail("scripts/check_deploy.py", f"only {count} broken copies were tried")


def check_kubernetes() -> None:
    allowed = config_env_names()
    default_path = health_default_path()
    found = overlays()
    if set(found) != OVERLAYS:
        fail(K, f"overlays are {found}, expected {sorted(OVERLAYS)}")
    for overlay in found:
        check_kubernetes_overlay(overlay, allowed, default_path)


def main() -> int:
    run_check("the services' default ports (docs/configuration.md)", check_code_ports)
    run_check("docker-compose.yml against the Compose schema (Draft 7)", check_compose_schema)
    run_check("process-compose.yaml against its schema (Draft 2020-12, no other field)",
              check_process_compose_schema)
    run_check("flake.lock check refuses broken locks (inputs not locked, no narHash, ...)",
              check_flake_lock_checker)
    run_check("flake.lock: a node for every input of flake.nix, each locked to a rev and a narHash",
              check_flake_lock)
    run_check("compose, process-compose, Nix images, Dockerfile and Nginx agree",
              check_consistency)
    run_check("the Kubernetes routing check refuses broken copies (timeouts, backends, redirects, "
              "hidden paths, Gateway, network policy peers, ingress-nginx)", check_routing_checker)
    run_check("Kubernetes overlays: the same names, ports, variables, probes, images and routes; "
              "probes, limits and securityContext in every pod; network policies", check_kubernetes)
    for failure in failures:
        print(f"check-deploy: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
