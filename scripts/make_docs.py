"""Write docs/parameters.md from ``catsdogs_helpers.config.PARAMETERS``.

    python scripts/make_docs.py

The table has a row per parameter and a column per field of ``config.Parameter``: name,
default, what it accepts (from the choices, the minimum and the default's type) and meaning;
a field added to ``Parameter`` later gets a column of its own where any parameter sets it.
``tests/test_docs.py`` checks that docs/parameters.md is what this script writes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "parameters.md"

#: The fields of ``config.Parameter`` that have a column (or two) of their own.
KNOWN_FIELDS = ("name", "default", "meaning", "choices", "minimum")

INTRO = """\
# Parameters

[Back to the README](../README.md)

<!-- Made by `python scripts/make_docs.py` from catsdogs_helpers/config.py: edit those, not
this page. -->

Every value a run takes is a parameter. Each notebook has one cell tagged `parameters` that
shows the defaults below, the values of `recipes/fast.yaml`. A run takes each value from:

1. what you set: by editing the parameters cell, or with papermill's `-p NAME VALUE` or
   `-f FILE` (a YAML file of `NAME: value` lines, such as the [recipes](recipes.md) in
   `recipes/`; `-p` wins over `-f`). The series runner (`bash scripts/run_notebooks.sh`) and
   the trainer (`python -m catsdogs_helpers.tools.trainer`) take the same `-p` and `-f`;
2. for a value left at its default, the environment variable `CATSDOGS_<NAME>` when that is
   set (`CATSDOGS_EPOCHS=6`);
3. the default.

```bash
bash scripts/run_notebooks.sh -f recipes/quick.yaml -p RUN_NAME quick -p DEVICE cpu
```

One call, `workflow.start(globals())` in the cell after the parameters, checks
every value, and the series runner checks them all before it runs the first notebook: a
wrong name, type or value stops with one line that names the parameter, where the value
came from and what it accepts.{example}

True/false values accept `True`/`False`, `1`/`0`, `yes`/`no` and `on`/`off`, everywhere.

Paths never depend on the folder you start Jupyter or papermill from: they come from the
project root and the parameters. Three more environment variables: `CATSDOGS_HOME` (the
project root), `CATSDOGS_RUNS_DIR` (the runs folder, `runs/` by default) and
`CATSDOGS_PROGRESS` (`text` or `off`: progress bars as text, or none).
"""

#: More about some parameters than their one-line meaning; parameters that no longer exist
#: are skipped, so this may lag behind the table without breaking it.
NOTES = {
    "DATA_DIR": "where the archive, the photos, the manifest and the decoded cache go; "
    "empty: `data/` in the project (or `CATSDOGS_DATA_DIR`). Put it on a bigger disk, or on "
    "a mounted Drive folder on Colab to keep the download ([what a run writes](run-folder.md)).",
    "DATASET_URL": "empty: Microsoft's archive (about 787 MB, CDLA-Permissive-2.0); else an "
    "`http(s)://` address or the path of a local `.zip`, such as your own photos zipped "
    "([your own photos and classes](own-data.md)).",
    "RUN_NAME": "everything the run writes goes to `runs/<RUN_NAME>/`: 1 to 64 letters, "
    "digits, `-`, `_` or `.`, not starting with `.`. A run folder holds one set of "
    "settings: give each recipe or experiment its own name ([what a run writes](run-folder.md)).",
    "SEED": "seeds the split, the model's initial weights, the loader order and the "
    "augmentations (`config.seed_for`); each epoch's order and augmentations depend only on "
    "the seed and the epoch's number, so a resumed run repeats an uninterrupted one.",
    "MODEL_NAME": "`resnet9` is this project's small network, fast on a CPU; the others are "
    "torchvision's, and can start from ImageNet weights (`PRETRAINED`).",
    "PRETRAINED": "start from torchvision's ImageNet weights (a torchvision `MODEL_NAME`; "
    "downloaded once) and fine-tune them: the new output layer alone in the first epoch "
    "(fitted to convergence on the frozen layers' features), "
    "then all layers, the pretrained ones at a tenth of its learning rate. "
    "`-f recipes/pretrained.yaml` sets the values that go with it "
    "([a pretrained start](pretrained.md)).",
    "BATCH_SIZE": "halved, down to 16, on small data sets, so that an epoch has at least 40 "
    "optimiser steps; SGD's learning rate scales with it. Under `torchrun`, the global batch "
    "of all processes ([several GPUs](several-gpus.md)).",
    "IMAGE_SIZE": "the side of the square crops the model sees at the end of training "
    "(`PROGRESSIVE` shows it smaller ones first); evaluation takes a centre crop of this "
    "size.",
    "AUGMENT": "a named pipeline (notebook 03 shows each as its `A.Compose`) or the path of "
    "one saved with `A.save` ([recipes and augmentations](recipes.md)).",
    "TTA": "`flip` averages the photo and its mirror, `flip_crops` five crops and their "
    "mirrors; notebook 05 compares their accuracy and time ([trusting the model](trust.md)).",
    "NUM_WORKERS": "`-1` (automatic): on the CPU, 0 on one or two cores, else up to 4; on a "
    "GPU, all cores but one, up to 8; under `torchrun`, of each process's share of the "
    "cores. `0` loads in the notebook's process.",
    "LIMIT_PER_CLASS": "a seeded random subset of each class, for quick runs "
    "(`recipes/quick.yaml` takes 5000).",
    "RESUME": "continue an interrupted training run from its `last.pt`.",
    "OVERWRITE": "replace this run's split, training and results when they were made with "
    "other settings; with the same settings a run is reused either way.",
    "PREDICT_PATH": "notebook 05: a photo, a folder or a pattern (`~/Pictures/*.jpg`) of your "
    "own to classify; empty: a demo ([trusting the model](trust.md)).",
    "LABELS": "how the photos' labels are read: a folder per class, the file names or a CSV "
    "([your own photos and classes](own-data.md)).",
    "LABEL_PATTERN": "with `LABELS` `filenames`: a regular expression whose first group is "
    "the label (`cat` in `cat.123.jpg`) ([your own photos and classes](own-data.md)).",
    "LABELS_CSV": "with `LABELS` `csv`: the CSV of `path,label`; a relative path is inside "
    "`DATA_DIR` ([your own photos and classes](own-data.md)).",
    "WEIGHTS_PATH": "with `PRETRAINED`: a local `.pth` of torchvision's ImageNet weights for "
    "`MODEL_NAME`, for machines without a network "
    "([a pretrained start](pretrained.md#the-weights-file)).",
}


def _config():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from catsdogs_helpers import config

    return config


def _fields(param: Any) -> dict[str, Any]:
    """A parameter's fields by name, whatever it is: a dataclass, a named tuple, a mapping."""
    if dataclasses.is_dataclass(param) and not isinstance(param, type):
        return {f.name: getattr(param, f.name) for f in dataclasses.fields(param)}
    if hasattr(param, "_asdict"):
        return dict(param._asdict())
    if isinstance(param, Mapping):
        return dict(param)
    if hasattr(param, "__dict__"):
        return dict(vars(param))
    return {"default": param}


def _is_set(value: Any) -> bool:
    return value is not None and value != "" and value != () and value != []


def _text(text: Any) -> str:
    """Plain text for a table cell: one line, ``|`` escaped, and ``<`` and ``*`` escaped
    outside code spans (``runs/<RUN_NAME>/`` is no HTML tag)."""
    parts = " ".join(str(text).split()).split("`")
    for i, part in enumerate(parts):
        part = part.replace("|", "\\|")
        if i % 2 == 0:
            part = part.replace("<", "\\<").replace("*", "\\*")
        parts[i] = part
    return "`".join(parts)


def _code(text: str) -> str:
    """``text`` as a code span in a table cell."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _literal(value: Any) -> str:
    """A value as Python source, the way a parameters cell shows it."""
    if isinstance(value, str):
        return f'"{value}"' if '"' not in value and "\\" not in value else repr(value)
    return repr(value)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _accepts(fields: Mapping[str, Any]) -> str:
    """What a parameter accepts: its choices, else its type and minimum."""
    choices, default, low = fields.get("choices") or (), fields.get("default"), None
    if fields.get("minimum") is not None:
        low = _number(fields["minimum"])
    if choices:
        return ", ".join(_code(_literal(c) if c == "" else str(c)) for c in choices)
    if isinstance(default, bool):
        return "`True` or `False`"
    if isinstance(default, int | float):
        kind = "a whole number" if isinstance(default, int) else "a number"
        return kind + (f" of at least {low}" if low is not None else "")
    if isinstance(default, str):
        return "text"
    return ""


def _cell(value: Any) -> str:
    """An extra field's value in a table cell."""
    if not _is_set(value):
        return ""
    if isinstance(value, bool):
        return _code(str(value))
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_code(str(v)) for v in value)
    if isinstance(value, int | float):
        return _number(value)
    return _text(value)


def _example(config: Any, names: list[str]) -> str:
    """A real error message, for the intro: text where a whole number is wanted."""
    name = "BATCH_SIZE" if "BATCH_SIZE" in names else None
    if name is None:
        params = config.PARAMETERS
        name = next((n for n in names if type(_fields(params[n]).get("default")) is int), None)
    if name is None:
        return ""
    wrong_value = getattr(config, "ParameterError", ValueError)
    try:
        config.read_parameters({name: "abc"}, explicit=True, environ={})
    except wrong_value as err:
        message = " ".join(str(err).split())
        return f" For example:\n\n```text\n{message}\n```" if message else ""
    except Exception:  # the parser changed shape: the intro goes without an example
        return ""
    return ""


def parameters_markdown() -> str:
    """The text of docs/parameters.md: the fixed introduction, the table, the notes."""
    config = _config()
    params = config.PARAMETERS
    names = list(params)
    rows = {name: _fields(params[name]) for name in names}
    extra = []
    for fields in rows.values():
        for key, value in fields.items():
            if key not in KNOWN_FIELDS and key not in extra and _is_set(value):
                extra.append(key)
    extra = [k for k in extra if any(_is_set(f.get(k)) for f in rows.values())]

    header = ["name", "default", "accepts", "meaning", *(k.replace("_", " ") for k in extra)]
    lines = [
        INTRO.replace("{example}", _example(config, names)),
        f"## The {len(names)} parameters",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, fields in rows.items():
        default = _code(_literal(fields["default"])) if "default" in fields else ""
        cells = [
            _code(str(fields.get("name") or name)),
            default,
            _accepts(fields),
            _text(fields.get("meaning", "")),
            *(_cell(fields.get(k)) for k in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")

    notes = [(name, NOTES[name]) for name in names if name in NOTES]
    if notes:
        lines += ["", "## More about some of them", ""]
        lines += [f"- **`{name}`**: {text}" for name, text in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(parameters_markdown(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
