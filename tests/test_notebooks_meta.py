"""The notebooks as files: Colab badges and install cells match the project's public home,
parameters are tagged, outputs are stripped, the kernel is python3."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from catsdogs_helpers import config

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PYPROJECT = (REPO / "pyproject.toml").read_text()
# (read with a regular expression: tomllib is not in Python 3.10)
HOME = re.search(r"^Repository = \"(.+)\"$", PYPROJECT, re.MULTILINE).group(1)


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


def test_the_series_is_complete():
    assert [p.name for p in NOTEBOOKS] == [
        "01_download.ipynb", "02_validate.ipynb", "03_augment.ipynb", "04_train.ipynb",
        "05_infer.ipynb",
    ]  # fmt: skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_points_at_this_notebook(path):
    slug = HOME.removeprefix("https://github.com/")
    first = _source(_cells(path)[0])
    badges = re.findall(r"https://colab\.research\.google\.com/github/([^)\s]+)", first)
    assert badges == [f"{slug}/blob/main/{path.relative_to(REPO).as_posix()}"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_installs_the_package_only_on_colab_without_torch(path):
    code = [_source(c) for c in _cells(path) if c["cell_type"] == "code"]
    install = code[0]
    assert 'IS_COLAB = "google.colab" in sys.modules' in install
    pips = re.findall(r"%pip install .*", install)
    assert pips == [f'%pip install -q "catsdogs-helpers @ git+{HOME}@main"']
    assert install.index("if IS_COLAB:") < install.index("%pip")


def test_package_bounds_leave_colabs_torch_alone():
    block = re.search(r"^dependencies = \[(.*?)^\]", PYPROJECT, re.MULTILINE | re.DOTALL)
    deps = re.findall(r'"([^"]+)"', block.group(1))
    for dep in deps:
        name = re.split(r"[<>=!~ ]", dep)[0]
        assert "==" not in dep and "<" not in dep, f"{name}: only lower bounds ({dep})"
    assert any(dep.startswith("torch>=") for dep in deps)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_plain_defaults_read_by_one_call(path):
    cells = _cells(path)
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    tree = ast.parse(_source(cells[tagged[0]]))
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body), "only values"
    for node in tree.body:
        name = node.targets[0].id
        assert name in config.PARAMETERS, name
        value = ast.literal_eval(node.value)  # a plain literal, as papermill expects
        assert value == config.PARAMETERS[name].default, f"{name}: the default, as in config"
        assert type(value) is type(config.PARAMETERS[name].default), f"{name}: its type"
    after = next(_source(c) for c in cells[tagged[0] + 1 :] if c["cell_type"] == "code")
    assert "cfg = workflow.start(globals())" in after
    assert all("os.environ" not in _source(c) for c in cells), "one way to read parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_sees_every_parameter_of_the_cell(path):
    """papermill reads a parameters cell line by line and skips a line it cannot parse (one
    with a second ``=``, say in its comment): such a parameter could not be set with -p."""
    import papermill

    cells = _cells(path)
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    names = {node.targets[0].id for node in ast.parse(_source(cell)).body}
    assert set(papermill.inspect_notebook(str(path))) == names


def test_train_notebook_shows_and_runs_the_step_that_fit_uses():
    cells = [_source(c) for c in _cells(REPO / "notebooks" / "04_train.ipynb")]
    code = "\n".join(cells)
    assert "plotting.show_code(training.train_one_epoch)" in code
    assert "plotting.show_code(training.evaluate)" in code
    shown, by_hand, full = (
        code.index("show_code(training.train_one_epoch)"),
        code.index("training.train_one_epoch(\n"),
        code.index("training.fit("),
    )
    assert shown < by_hand < full, "shown, then one epoch by hand, then the full fit"
    assert "train_epoch=training.train_one_epoch" in code
    assert "plotting.show_code(training.make_scheduler)" in code
    assert "optimizer=optimizer," in code and "scheduler=scheduler," in code, "fit gets its parts"
    whiten = 'models.whiten_first_layer(model, loaders["train"].dataset.images())'
    assert "plotting.show_code(models.whiten_first_layer)" in code
    fit_model = code.rindex("model = models.create_model(")
    assert fit_model < code.index(whiten, fit_model) < code.index("training.make_optimizer(model")
    assert code.index(whiten) < by_hand, "the model of the epoch by hand is whitened as well"


def _pipelines_of_notebook_03(cfg):
    """The ``A.Compose`` literals notebook 03 writes, built as its cells build them."""
    import albumentations as A

    cells = [_source(c) for c in _cells(REPO / "notebooks" / "03_augment.ipynb")]
    namespace = {"A": A, "cfg": cfg}
    for name in ("tutorial", "ours"):
        cell = next(c for c in cells if c.startswith(f"{name} = A.Compose("))
        exec(cell.split("\nplotting.")[0], namespace)
    return namespace["tutorial"], namespace["ours"]


def test_notebook_03_shows_the_pipelines_the_package_trains_with():
    from catsdogs_helpers import transforms

    for size in (96, 64):
        cfg = config.make_config(IMAGE_SIZE=size, SEED=3)
        tutorial, ours = _pipelines_of_notebook_03(cfg)
        wanted = transforms.tutorial_pipeline(128, 160, seed=3)
        assert transforms.describe_pipeline(tutorial) == transforms.describe_pipeline(wanted)
        trained = transforms.train_pipeline(cfg)  # AUGMENT's, what notebook 04 trains with
        assert transforms.describe_pipeline(ours) == transforms.describe_pipeline(trained)
    tutorial_cfg = config.make_config(AUGMENT="tutorial", IMAGE_SIZE=128, RESIZE_RATIO=1.25)
    trained = transforms.describe_pipeline(transforms.train_pipeline(tutorial_cfg))
    assert transforms.describe_pipeline(tutorial) == trained, "recipes/tutorial.yaml's pipeline"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_with_what_it_teaches_and_ends_with_exercises(path):
    cells = _cells(path)
    assert "**Time:**" in _source(cells[0]) and "**What you learn:**" in _source(cells[0])
    last = _source(cells[-1])
    assert "## What you made" in last and "## Exercises" in last


def test_readme_badges_point_at_real_notebooks():
    slug = HOME.removeprefix("https://github.com/")
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"https://colab\.research\.google\.com/github/([^)\s]+)", readme)
    expected = [f"{slug}/blob/main/{p.relative_to(REPO).as_posix()}" for p in NOTEBOOKS]
    assert links == expected


def test_a_copy_of_the_printed_step_runs_in_the_notebook():
    """Exercise 4: the printed train_one_epoch, copied into a cell after the cell that prints
    it, defines and trains (its names and annotations resolve there)."""
    import inspect

    import torch

    from catsdogs_helpers import models, training

    cells = [_source(c) for c in _cells(REPO / "notebooks" / "04_train.ipynb")]
    imports = next(c for c in cells if "show_code(training.train_one_epoch)" in c)
    namespace: dict = {}
    exec(imports.replace("plotting.show_code(training.train_one_epoch)", ""), namespace)
    exec(inspect.getsource(training.train_one_epoch), namespace)
    model = models.create_model("resnet9", 2)
    batches = [
        (torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    ]
    result = namespace["train_one_epoch"](
        model, batches, torch.optim.SGD(model.parameters(), lr=0.01), torch.nn.CrossEntropyLoss(),
        torch.device("cpu"), progress=False,
    )  # fmt: skip
    assert result.images == 4 and result.loss == pytest.approx(result.nll, rel=1e-4)


def test_every_package_the_code_imports_is_declared():
    """Each third-party module imported anywhere in the package (at the top or inside a
    function) comes from a distribution pyproject.toml declares, as a dependency or in an
    extra; nothing arrives only because another package happens to pull it in."""
    import sys
    from importlib.metadata import packages_distributions

    names = set()
    for path in (REPO / "catsdogs_helpers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module)
    only_on_colab = {"google.colab"}  # Colab's own module: no distribution provides it
    modules = {name.split(".")[0] for name in names - only_on_colab}
    third_party = {m for m in modules if m not in sys.stdlib_module_names} - {"catsdogs_helpers"}
    declared = {
        re.split(r"[<>=!~ \[;]", dep)[0].lower().replace("_", "-")
        for dep in re.findall(r'"([A-Za-z][^"]*)"', PYPROJECT.split("[project.urls]")[0])
    }
    owners = packages_distributions()
    missing = {
        m: owners.get(m) for m in third_party
        if not {d.lower().replace("_", "-") for d in owners.get(m, [m])} & declared
    }  # fmt: skip
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_notebook_03s_reproducibility_cell_shows_same_draws(capsys):
    """The cell that teaches seeding prints True: two pipelines with one seed draw alike."""
    import albumentations as A
    import numpy as np

    from catsdogs_helpers import transforms

    cells = [_source(c) for c in _cells(REPO / "notebooks" / "03_augment.ipynb")]
    cell = next(c for c in cells if "same seed, same draws" in c)
    photo = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    exec(cell, {"A": A, "np": np, "transforms": transforms, "photo": photo})
    assert capsys.readouterr().out.strip() == "same seed, same draws: True"
