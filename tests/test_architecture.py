"""One source for each list and rule: the names every command offers derive from the registries, the env's info
keys are all documented, no command calls another command's ``main``, the packages form layers
(``foundations -> scenarios -> envs -> policies -> sim``) and no module imports, even lazily, one that imports it
back (grimp, import-linter's graph library, reads every import statement, those inside functions included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

import envs
from policies.catalog import BACKBONE_NAMES, EXECUTION_MODES, HEAD_NAMES
from policies.registry import names, vla_names

ROOT = Path(__file__).resolve().parents[1]
#: The project's packages, top layer first: each may import those after it only.
LAYERS = ["sim", "policies", "envs", "scenarios", "foundations"]


@pytest.fixture(scope="module")
def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph(*LAYERS, exclude_type_checking_imports=True, cache_dir=None)


def _choices(parser, flag: str) -> list[str]:
    action = next(a for a in parser._actions if flag in a.option_strings)
    return list(action.choices)


def test_commands_offer_exactly_the_registered_heads_backbones_and_execution_modes():
    from sim import checkpoint, export
    from sim import eval as sim_eval
    from sim.cli import BACKBONE_CHOICES

    assert BACKBONE_CHOICES == ("auto", *BACKBONE_NAMES)
    export_parser = export.build_parser()
    assert _choices(export_parser, "--policy") == list(HEAD_NAMES)
    assert _choices(export_parser, "--execution") == list(EXECUTION_MODES)
    assert _choices(export_parser, "--backbone") == list(BACKBONE_CHOICES)
    assert _choices(sim_eval.build_parser(), "--backbone") == list(BACKBONE_CHOICES)
    assert _choices(checkpoint.build_parser(), "--policy") == list(HEAD_NAMES)


def test_registry_and_heads_derive_from_the_catalog():
    from policies.heads import HEADS

    assert list(HEADS) == list(HEAD_NAMES)
    assert all(cls.head_name == name for name, cls in HEADS.items())
    assert vla_names() == [*HEAD_NAMES, "ensemble"]
    assert set(HEAD_NAMES) <= set(names())


def test_every_info_key_is_documented_in_the_env_docstring(make_env):
    env = make_env(image_size=(32, 24))
    _, reset_info = env.reset(seed=0)
    _, _, _, _, step_info = env.step(env.action_space.sample() * 0)
    doc = envs.BoxAvoidEnv.__doc__
    documented = set(re.findall(r"``(\w+)``", doc.split("Info (")[1]))
    assert set(reset_info) | set(step_info) <= documented


def test_no_command_calls_another_commands_main():
    commands = {p.stem for p in (ROOT / "sim").glob("*.py") if "def main(" in p.read_text()}
    assert {"eval", "generate", "export", "train", "serve"} <= commands
    offenders = []
    for path in (ROOT / "sim").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "main" and isinstance(node.value, ast.Name):
                offenders.append(f"{path.relative_to(ROOT)}: {node.value.id}.main")
    assert offenders == []


def test_packages_import_only_the_layers_below_them(import_graph):
    illegal = import_graph.find_illegal_dependencies_for_layers(layers=LAYERS)
    assert sorted(f"{d.importer} -> {d.imported}" for d in illegal) == []


def test_no_module_takes_part_in_an_import_circle(import_graph):
    in_circle = sorted({
        f"{module} <-> {imported}"
        for module in import_graph.modules
        for imported in import_graph.find_modules_directly_imported_by(module)
        if import_graph.chain_exists(importer=imported, imported=module)
    })
    assert in_circle == []


def test_the_circle_check_sees_lazy_imports(import_graph):
    """The check above would miss the circles it exists for if imports inside functions were not read: the runner
    imports the Ray backend only inside ``evaluate``."""
    assert import_graph.direct_import_exists(importer="sim.evaluation.runner", imported="sim.evaluation.ray_backend")
