"""The two images hold to their contracts, read from the Dockerfiles and the code (no Docker engine).

Each image's entry point is the command the contract tests run (`python -m train` / `python -m serve`,
started by SageMaker with the argument `train` / `serve`); every first-party module that command can
import is copied to where it imports from; every third-party distribution it imports is installed, by
name in `[tool.mlops.images]` with its pin from `[project].dependencies`; bases are pinned by digest;
the serving image runs unprivileged on 8080; the build context leaves out the repository's state.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("train", "serve", "artifact", "infra")
PROGRAM_DIR = PurePosixPath("/opt/program")
# image -> (Dockerfile, the contract test that runs its program, SageMaker's argument to the container)
IMAGES = {
    "train": ("Dockerfile.train", "tests/functional/test_train_program.py", "train"),
    "serve": ("Dockerfile.serve", "tests/functional/test_serve_http.py", "serve"),
}
DIGEST = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


# --- reading a Dockerfile -------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    value = ast.literal_eval(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


def copied_paths(stage: Stage) -> dict[str, PurePosixPath]:
    """Build-context path -> where the stage's COPY instructions put it (COPY --from= left out)."""
    workdir, placed = PurePosixPath("/"), {}
    for keyword, args in stage.instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args
        if keyword != "COPY" or "--from=" in args:
            continue
        *sources, dest = [w for w in shlex.split(args) if not w.startswith("--")]
        target = workdir / dest
        for source in sources:
            clean = str(PurePosixPath(source))
            placed[clean] = target / PurePosixPath(clean).name if dest.endswith("/") else target
    return placed


def in_image(path: str, stage: Stage) -> PurePosixPath | None:
    """Where the build-context file `path` lands in the image, or None when no COPY takes it."""
    for source, target in copied_paths(stage).items():
        if path == source:
            return target
        if source == "." or path.startswith(source + "/"):
            return target / PurePosixPath(path).relative_to(source if source != "." else "")
    return None


def ignored(path: str, patterns: list[str]) -> bool:
    """The .dockerignore patterns this repository uses: names, `**/` prefixes, globs."""
    parts = PurePosixPath(path).parts
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def final_stage(image: str, text: str | None = None) -> Stage:
    dockerfile = IMAGES[image][0]
    return parse_dockerfile(text if text is not None else (REPO / dockerfile).read_text())[-1]


# --- what a program imports -----------------------------------------------------------------------------


def module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module named by an import in the file, at any depth except under `if TYPE_CHECKING:`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for orelse in node.orelse:
                visit(orelse)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)  # may be submodules
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


@dataclass
class Closure:
    files: dict[str, str]  # first-party module -> its file, relative to the repository
    third_party: set[str]  # top-level import names outside the project and the standard library


def import_closure(entry: str) -> Closure:
    files: dict[str, str] = {}
    third: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        path = module_file(module)
        if module in files or path is None:
            continue
        files[module] = path.relative_to(REPO).as_posix()
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        for name in imported_names(path, module):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                todo.append(name)
            elif top and top not in sys.stdlib_module_names:
                third.add(top)
    return Closure(files, third)


def uncovered(closure: Closure, stage: Stage, ignore: list[str]) -> list[str]:
    """Files of the closure that would not be importable in the image under the same module name."""
    missing = []
    for path in sorted(closure.files.values()):
        target = in_image(path, stage)
        if target != PROGRAM_DIR / path or ignored(path, ignore):
            missing.append(path)
    return missing


# --- what an image installs -----------------------------------------------------------------------------


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def project_pins() -> dict[str, Requirement]:
    requirements = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in requirements}


def image_list(image: str) -> set[str]:
    return {canonicalize_name(name) for name in pyproject()["tool"]["mlops"]["images"][image]}


def transitive(names: set[str]) -> set[str]:
    """The distributions installing `names` pulls in (as resolved in this virtual environment)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def missing_distributions(imports: set[str], listed: set[str], pinned: set[str]) -> list[str]:
    """Distributions imported but not installed: a pinned one must be listed by name (so the image gets
    its pin); one the project does not pin (botocore, via boto3) must come with a listed one."""
    by_import = importlib.metadata.packages_distributions()
    pulled_in = transitive(listed)
    missing = []
    for name in sorted(imports):
        dists = {canonicalize_name(d) for d in by_import.get(name, [name])}
        for dist in sorted(dists):
            if (dist in pinned and dist not in listed) or (dist not in pinned and dist not in pulled_in):
                missing.append(f"{name} (distribution {dist})")
    return missing


# --- the tests ------------------------------------------------------------------------------------------


def contract_invocations(test_file: str) -> tuple[set[str], set[str]]:
    """From a contract test: the modules it runs (`[sys.executable, "-m", MODULE, ...]`) and the string
    constants it passes as arguments to calls or as the first item of an argument list."""
    tree = ast.parse((REPO / test_file).read_text())
    modules: set[object] = set()
    arguments: set[object] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and [ast.unparse(e) for e in node.elts[:2]] == [
            "sys.executable",
            "'-m'",
        ]:
            modules.update(e.value for e in node.elts[2:3] if isinstance(e, ast.Constant))
        if isinstance(node, ast.Call):
            arguments.update(a.value for a in node.args if isinstance(a, ast.Constant))
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant):
            arguments.add(node.elts[0].value)
    return {str(m) for m in modules}, {a for a in arguments if isinstance(a, str)}


@pytest.mark.parametrize("image", IMAGES)
def test_entry_point_is_the_command_the_contract_tests_run(image):
    _dockerfile, contract_test, argument = IMAGES[image]
    modules, arguments = contract_invocations(contract_test)
    assert modules == {image}, f"{contract_test} runs {modules}"
    assert argument in arguments, f"{contract_test} never starts the program as SageMaker does: {argument!r}"
    stage = final_stage(image)
    entrypoints = stage.all("ENTRYPOINT")
    assert entrypoints, "no ENTRYPOINT"
    # SageMaker appends `train`/`serve` to the entry point: a CMD would be replaced, so there is none.
    assert exec_form(entrypoints[-1]) == ["python", "-m", image]
    assert stage.all("CMD") == []
    # `python` must be the virtual environment's, where the dependencies are.
    assert any(re.search(r'PATH="/opt/venv/bin:', env) for env in stage.all("ENV"))


@pytest.mark.parametrize("image", IMAGES)
def test_every_module_the_program_imports_is_copied_where_it_imports_from(image):
    stage = final_stage(image)
    assert any("PYTHONPATH=/opt/program" in env for env in stage.all("ENV"))
    closure = import_closure(f"{image}.__main__")
    assert f"{image}/main.py" in closure.files.values() or f"{image}/server.py" in closure.files.values()
    assert uncovered(closure, stage, dockerignore()) == []


def test_the_copy_check_sees_a_new_import_or_a_dropped_copy():
    closure = import_closure("train.__main__")
    stage = final_stage("train")
    with_settings = Closure({**closure.files, "infra.settings": "infra/settings.py"}, closure.third_party)
    assert uncovered(with_settings, stage, []) == ["infra/settings.py"]
    text = (REPO / "Dockerfile.train").read_text().replace("COPY artifact ./artifact\n", "")
    assert "artifact/manifest.py" in uncovered(closure, final_stage("train", text), [])
    assert "train/main.py" in uncovered(closure, stage, ["train"])


@pytest.mark.parametrize("image", IMAGES)
def test_every_third_party_distribution_the_program_imports_is_in_the_image_list(image):
    pins = project_pins()
    listed = image_list(image)
    assert listed <= set(pins), f"not in [project].dependencies: {sorted(listed - set(pins))}"
    for name in listed:
        assert str(pins[name].specifier).startswith("=="), f"{name} is not pinned exactly"
    imports = import_closure(f"{image}.__main__").third_party
    assert missing_distributions(imports, listed, set(pins)) == []


def test_the_distribution_check_sees_a_missing_name():
    pins = set(project_pins())
    assert missing_distributions({"wandb"}, image_list("serve"), pins) == ["wandb (distribution wandb)"]
    assert missing_distributions({"botocore"}, {"torch"}, pins) == ["botocore (distribution botocore)"]
    assert missing_distributions({"botocore"}, {"boto3"}, pins) == []


def test_serving_leaves_the_cli_and_training_dependencies_out():
    assert image_list("serve").isdisjoint({"wandb", "boto3", "docker", "rich", "pydantic-settings"})
    assert image_list("train").isdisjoint({"docker", "rich", "pydantic-settings", "starlette", "uvicorn"})


@pytest.mark.parametrize("image", IMAGES)
def test_the_deps_stage_installs_exactly_the_listed_pins(image, tmp_path):
    """Run the deps stage's own selection script over the real pyproject.toml."""
    deps = parse_dockerfile((REPO / IMAGES[image][0]).read_text())[0]
    (run,) = [args for args in deps.all("RUN") if "image_requirements.py" in args]
    words = shlex.split(run.split("&&")[0])
    assert words == ["python", "image_requirements.py", image]
    assert "pyproject.toml scripts/image_requirements.py ./" in deps.all("COPY")
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    script = REPO / "scripts" / "image_requirements.py"
    subprocess.run([sys.executable, str(script), image], cwd=tmp_path, check=True)
    selected = [
        *(tmp_path / "torch.txt").read_text().split(),
        *(tmp_path / "requirements.txt").read_text().split(),
    ]
    pins = project_pins()
    assert sorted(selected) == sorted(str(pins[name]) for name in image_list(image))
    assert (tmp_path / "torch.txt").read_text().split() == [str(pins["torch"]), str(pins["torchvision"])]


def test_the_serving_image_takes_torch_from_the_cpu_index():
    deps = parse_dockerfile((REPO / "Dockerfile.serve").read_text())[0]
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in deps.all("ARG")
    assert any('--index-url "${TORCH_INDEX_URL}" -r torch.txt' in run for run in deps.all("RUN"))


@pytest.mark.parametrize("image", IMAGES)
def test_every_base_image_is_pinned_by_digest(image):
    text = (REPO / IMAGES[image][0]).read_text()
    stages = parse_dockerfile(text)
    names = {s.name for s in stages if s.name}
    bases = [s.base for s in stages if s.base not in names]
    assert bases, "no base image"
    for base in bases:
        assert DIGEST.match(base), f"{base} is not pinned as name:tag@sha256:<digest>"
    assert not any(DIGEST.match(b) for b in ("python:3.11-slim", "python@sha256:abc"))


def test_the_serving_image_runs_unprivileged_on_8080():
    stage = final_stage("serve")
    users = stage.all("USER")
    assert users, "no USER: the server would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert "8080" in " ".join(stage.all("EXPOSE")).split()


def test_the_build_context_leaves_out_repository_state():
    patterns = dockerignore()
    for path in (".git", ".venv", ".mlops", "tests"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
        assert ignored(f"{path}/some/file", patterns)
    assert not ignored("train/main.py", patterns)
