"""Checks of the configuration that its JSON schema cannot express, run while the workflow is parsed.

``workflow/schemas/config.schema.yaml`` checks each key on its own (Snakemake's ``validate``);
:func:`config_problems` adds what needs the values of several keys or a stricter reading of a
type, so that a bad value is refused before any job, naming its key, never found by a job
minutes (or hours) into a run:

- ``dataset.source: local`` with an empty ``dataset.local.path``;
- ``dataset.source: synthetic`` with a ``dataset.synthetic.real_examples`` that is no folder (a
  typo was skipped: the figure drawn without real examples); empty means none, and the embedded
  default's path (the project's shared data) may be absent;
- a whole number written as a float (``epochs: 30.0``) where the schema asks for an integer:
  JSON Schema counts 30.0 as an integer, Python's ``range`` and numpy's generators do not;
- NaN or an infinity under any key (:func:`not_finite_problems`: NaN passes every bound);
- a number written with a leading zero or colons in a config file (:func:`yaml11_number_problems`:
  YAML 1.1 reads ``030`` as the octal 24 and ``1:04`` as 64);
- two ``experiments`` entries of the same ``{model, init, method}`` (one results folder; the
  second's own settings would be silently ignored);
- an experiment whose split method is not among ``split.methods``;
- an experiment whose input size (its own ``input_size``, else ``training.input_size``, null =
  256) is below what its model needs (:data:`temvirus.experiments.MIN_INPUT_SIZE`);
- a ``micrographs.diameters_nm`` class that is not classified (the detector refuses it);
- ``micrographs.heat_nm`` so coarse that the smallest classified particle (its
  ``micrographs.diameters_nm``, else Table 1's mean size) is under :data:`MIN_HEAT_PX` px across;
- ``micrographs.crop_px`` not a multiple of ``2**(len(micrographs.widths) - 1)`` (the heat-map
  network halves the resolution at each level but the first), leaving the bottleneck under
  :data:`MIN_BOTTLENECK_PX` px, or narrower than the biggest classified particle at the pass that
  answers for it (``heat_nm``; ``large_heat_nm`` from ``large_min_nm`` on);
- ``micrographs.large_heat_nm`` not coarser than ``micrographs.heat_nm`` (the second pass is for
  the large particles), or ``micrographs.large_min_nm`` under :data:`MIN_HEAT_PX` px at it;
- ``overlap`` pairs out of order: ``max_coarse_nm`` finer than ``coarse_nm`` (the cap would be
  silently ignored), ``min_fine_nm`` coarser than ``coarse_nm`` (a fine check coarser than the
  coarse registration), ``lowpass_px`` not below ``highpass_px`` (equal: no band left),
  ``min_screen_ncc`` above ``screen_ncc`` (never used);
- ``overlap.tile_px`` and ``overlap.min_tiles`` that a whole field at the fine check (``max_side_px`` x
  ``2**fine_levels`` px) cannot satisfy: every pair would be rejected, re-imaged fields left in two subsets;
- a factor of ``overlap.fallback_scales`` or ``overlap.scale_search`` without its inverse (within
  :data:`INVERSE_TOLERANCE`): only image_b of a pair is rescaled, so a pixel size recorded s times
  off in image_b would be tried and the same error in image_a (1/s) not.

No torch import here: the workflow calls this while it builds the job graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

from temvirus.experiments import MIN_INPUT_SIZE, experiment_folder, resolve_training
from temvirus.io import shell_path

#: the patches' side (px) as cut; ``input_size: null`` means this
PATCH_PX = 256

#: the fewest pixels across the smallest classified particle at ``micrographs.heat_nm``: a
#: coarser heat map cannot place a centre peak in it (at 5000 nm/px a whole image is a pixel,
#: and the detector, fitted for minutes, finds nothing: validation F1 0)
MIN_HEAT_PX = 2

#: the fewest pixels across the heat-map network's bottleneck (``micrographs.crop_px`` over
#: ``2**(len(widths) - 1)``) in training: at 1 px its 3x3 convolutions see only their zero
#: padding, and batch norm has one value per crop (none to normalise with a batch of one)
MIN_BOTTLENECK_PX = 2

#: how far a factor of ``overlap.fallback_scales`` (``scale_search``) times its inverse in the list
#: may be from 1 (the defaults: 0.91 x 1.1 = 1.001, 0.94 x 1.06 = 0.9964)
INVERSE_TOLERANCE = 0.01


def key_path(parts: Iterable) -> str:
    """``training.epochs.scratch``, ``experiments[1].epochs``: a config key as the docs write it."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def integer_problems(config: dict, schema: dict) -> list[str]:
    """Keys the schema types as integers that hold a float (``30.0``), one line each.

    JSON Schema accepts a float with a zero fraction as an integer; the jobs do not (``range(30.0)``
    fails, and ``30.0`` and ``30`` are different params to Snakemake). The config is validated
    again with ``integer`` meaning a Python int (not a bool); the schema's other errors are
    Snakemake's ``validate``'s to report.
    """
    from jsonschema import validators

    base = validators.validator_for(schema)
    strict = validators.extend(
        base,
        type_checker=base.TYPE_CHECKER.redefine(
            "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
        ),
    )
    problems = []
    for error in strict(schema).iter_errors(config):
        for leaf in _leaves(error):
            value = leaf.instance
            if leaf.validator == "type" and isinstance(value, float) and value.is_integer():
                problems.append(
                    f"{key_path(leaf.absolute_path)}: {value!r} is a float where a whole number is "
                    f"needed; write {int(value)}"
                )
    return sorted(set(problems))


#: a number as text: sign, digits, optional fraction, optional exponent (the groups rebuild it)
_NUMBER = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([-+]?)([0-9]+))?")


def number_text_problems(config: dict, schema: dict) -> list[str]:
    """Keys the schema types as numbers that hold text reading as one (``lr: 3e-3``), one line each.

    YAML 1.1 (PyYAML, which reads Snakemake's config files) reads a number with an exponent as a
    float only with a dot and a signed exponent (``3.0e-3``): ``3e-3`` and ``1.0e5`` are strings,
    which the schema refuses only as "not of type 'number'". Run before the schema's validation;
    each line names the key, the text, and how to write it (``3.0e-3``; a whole number where the
    schema asks for an integer).
    """
    from jsonschema import validators

    problems = []
    for error in validators.validator_for(schema)(schema).iter_errors(config):
        for leaf in _leaves(error):
            text, types = leaf.instance, leaf.validator_value
            types = [types] if isinstance(types, str) else types
            if leaf.validator != "type" or not isinstance(text, str) or not {"number", "integer"} & set(types):
                continue
            parts = _NUMBER.fullmatch(text.strip())
            if parts is None or not (parts[2] or parts[3]) or not math.isfinite(float(text)):
                continue
            sign, whole, fraction, exp_sign, exponent = parts.groups()
            if "number" not in types and float(text).is_integer():
                fixed = f"{int(float(text))}"
            elif exponent:
                fixed = f"{sign}{whole or 0}.{fraction or 0}e{exp_sign or '+'}{exponent}"
            else:
                fixed = text.strip()
            why = "YAML 1.1 reads an exponent as a number only after a dot and with its sign"
            if not exponent:
                why = "quoted in a config file, or nested in a --config value, whose leaves Snakemake reads as text"
            problems.append(
                f"{key_path(leaf.absolute_path)}: {text!r} is text, not a number ({why}); write {fixed}, unquoted, "
                "in a config file (--configfile)"
            )
    return sorted(set(problems))


#: plain YAML scalars that YAML 1.1 (PyYAML) reads as other numbers than they look: a leading zero is
#: octal (``030``: 24), colons are base 60 (``1:04``: 64)
_YAML11_OCTAL = re.compile(r"[-+]?0[0-9_]+")
_YAML11_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")


def yaml11_number_problems(paths: Iterable[str | Path]) -> list[str]:
    """Values of the config files ``paths`` written as a number with a leading zero (``epochs: 030``, read as
    the octal 24; ``seed: 08``, read as the text '08') or with colons (``batch_size: 1:04``, read as 64 in base
    60), unquoted, one line each naming the file, line and key. Files that are missing or not YAML are left
    to Snakemake."""
    import yaml

    problems = []

    def walk(node, keys: tuple, path: Path) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, (*keys, key.value), path)
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                walk(value, (*keys, index), path)
        elif isinstance(node, yaml.ScalarNode) and node.style is None:
            text = node.value
            if _YAML11_OCTAL.fullmatch(text) or _YAML11_BASE60.fullmatch(text):
                read = yaml.safe_load(text)
                how = "a leading zero makes it octal" if _YAML11_OCTAL.fullmatch(text) else "colons make it base 60"
                problems.append(
                    f"{path}:{node.start_mark.line + 1}: {key_path(keys)}: {text} is read by YAML 1.1 as {read!r} "
                    f"({how}); write the number without a leading zero or colons"
                )

    for path in map(Path, paths):
        try:
            node = yaml.compose(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        walk(node, (), path)
    return problems


def _leaves(error):
    """The innermost errors of a validation error (those of oneOf/anyOf branches included)."""
    if not error.context:
        yield error
    for sub in error.context:
        yield from _leaves(sub)


def not_finite_problems(value, path: tuple = ()) -> list[str]:
    """Keys holding NaN or an infinity (YAML ``.nan``, ``.inf``), one line each.

    The schema cannot refuse NaN: every comparison with it is false, so ``minimum``/``maximum``
    pass it, and a NaN setting silently disables the test that reads it (``min(margins)`` skips a
    NaN margin, so ``overlap.min_ncc: .nan`` claims any registration). No key takes one.
    """
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in not_finite_problems(item, (*path, key))]
    if isinstance(value, list):
        return [line for k, item in enumerate(value) for line in not_finite_problems(item, (*path, k))]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{key_path(path)}: {value} is not a finite number; give a number"]
    return []


def _not_a_raw_layout(folder: str) -> str | None:
    """What keeps ``folder`` from being a raw-layout folder (one with train/validation/test
    folders), or None."""
    from temvirus.raw import subset_folders

    if folder != folder.strip():
        return "a path with spaces around it"
    if not Path(folder).is_dir():
        return "not a folder" if Path(folder).exists() else "no such folder"
    if not subset_folders(folder):
        return "no raw-layout folder: it holds no train, validation or test folder (the folder above one?)"
    return None


def config_problems(config: dict, embedded: dict | None = None) -> list[str]:
    """What is wrong with a schema-valid config beyond the schema, one line per problem (see the
    module docstring). ``embedded`` is the embedded default config (``config/config.yaml``), whose
    ``dataset.synthetic.real_examples`` may be absent; relative paths are taken from the current
    (working) directory."""
    problems = []
    if config["dataset"]["source"] == "local" and not config["dataset"]["local"]["path"].strip():
        problems.append("dataset.source is 'local' but dataset.local.path is empty")
    real = config["dataset"]["synthetic"]["real_examples"]
    shipped = (embedded or {}).get("dataset", {}).get("synthetic", {}).get("real_examples")
    if config["dataset"]["source"] == "synthetic" and real and real != shipped:
        what = _not_a_raw_layout(real)
        if what:
            problems.append(
                f"dataset.synthetic.real_examples: {real!r} is {what} (from {Path.cwd()}); give the raw-layout "
                "folder of real images shown in results/figures/synthetic_vs_real.png, or '' for none"
            )
    weights = shell_path(config["weights"]["dir"])
    if re.search(r"\$(\w+|\{\w+\})", str(weights)):  # left as written by expandvars: not set
        problems.append(f"weights.dir: {config['weights']['dir']!r} names an environment variable that is not set")
    elif weights.exists() and not weights.is_dir():
        problems.append(f"weights.dir: {str(weights)!r} is a file, not a folder (from {Path.cwd()})")
    built = config["split"]["methods"]
    seen = {}
    for k, entry in enumerate(config["experiments"]):
        folder = experiment_folder(entry)
        if folder in seen:
            problems.append(
                f"experiments[{k}] ({folder}) repeats experiments[{seen[folder]}]: one results folder "
                f"results/models/{folder}/ each; give each {{model, init, method}} once"
            )
        seen.setdefault(folder, k)
        if entry["method"] not in built:
            problems.append(
                f"experiments[{k}] ({folder}): method {entry['method']!r} "
                f"is not among split.methods {built}; add it there or change the experiment"
            )
        size = resolve_training(config["training"], entry)["input_size"]
        side = PATCH_PX if size is None else size
        need = MIN_INPUT_SIZE.get(entry["model"], 0)
        if side < need:
            where = f"experiments[{k}].input_size" if "input_size" in entry else "training.input_size"
            problems.append(
                f"experiments[{k}] ({folder}): model {entry['model']} needs an input size of at least "
                f"{need} px, {where} is {size}; give this experiment its own input_size (e.g. "
                f"{min(s for s in (32, 64, 128, 256) if s >= need)})"
            )
    problems += _overlap_problems(config["overlap"])
    accepted = config["audit"]["accepted_leaks"]
    if accepted:  # read by the last job: refused here, before any job runs
        from temvirus.audit.leakage import read_accepted_leaks

        try:
            read_accepted_leaks(accepted)
        except (OSError, ValueError) as exc:
            problems.append(f"audit.accepted_leaks: {exc} (from {Path.cwd()})")
    micro = config["micrographs"]
    large = micro["large_heat_nm"]
    if large is not None and large <= micro["heat_nm"]:
        problems.append(
            f"micrographs.large_heat_nm {large} is not coarser than micrographs.heat_nm {micro['heat_nm']}: "
            f"the second pass is for large particles (a larger pixel size, or null for one pass)"
        )
    if large is not None and micro["large_min_nm"] < MIN_HEAT_PX * large:
        problems.append(
            f"micrographs.large_min_nm {micro['large_min_nm']} keeps second-pass peaks of "
            f"{micro['large_min_nm'] / large:.2g} px at micrographs.large_heat_nm {large}: at least {MIN_HEAT_PX} px "
            f"are needed (large_min_nm at least {MIN_HEAT_PX * large:g})"
        )
    unit = 2 ** (len(micro["widths"]) - 1)
    crop = micro["crop_px"]
    if crop % unit:
        problems.append(
            f"micrographs.crop_px {crop} is not a multiple of {unit} "
            f"(2**(len(micrographs.widths) - 1), widths {micro['widths']})"
        )
    unknown = sorted(set(micro["diameters_nm"]) - set(config["classes"]["classification"]))
    if unknown:
        problems.append(
            f"micrographs.diameters_nm names {unknown}, not among classes.classification "
            f"{config['classes']['classification']}"
        )
        return problems
    from temvirus.classes import paper_file
    from temvirus.micrographs import class_diameters

    classes = config["classes"]["classification"]
    sizes = class_diameters(classes, paper_file("table1_dataset.csv"), micro["diameters_nm"])
    smallest = min(sizes, key=sizes.get)
    if sizes[smallest] / micro["heat_nm"] < MIN_HEAT_PX:
        problems.append(
            f"micrographs.heat_nm {micro['heat_nm']} shows {smallest} ({sizes[smallest]:g} nm across) in "
            f"{sizes[smallest] / micro['heat_nm']:.2g} px: at least {MIN_HEAT_PX} px are needed (heat_nm at "
            f"most {sizes[smallest] / MIN_HEAT_PX:g})"
        )
    # the crop: at least MIN_BOTTLENECK_PX px at the bottleneck, and each classified particle whole
    # at the pass that answers for it: the first (heat_nm) below large_min_nm, the second
    # (large_heat_nm, the same network) from it on
    short = []
    if crop < MIN_BOTTLENECK_PX * unit:
        short.append(
            f"it leaves the heat-map network's bottleneck {crop / unit:g} px wide (crop_px / "
            f"2**(len(micrographs.widths) - 1), widths {micro['widths']}; at least {MIN_BOTTLENECK_PX} px needed)"
        )
    passes = {"heat_nm": [c for c in classes if large is None or sizes[c] < micro["large_min_nm"]]}
    if large is not None:
        passes["large_heat_nm"] = [c for c in classes if sizes[c] >= micro["large_min_nm"]]
    widest = 0.0
    for key, answered in passes.items():
        biggest = max(answered, key=sizes.get, default=None)
        across = sizes[biggest] / micro[key] if biggest else 0.0
        widest = max(widest, across)
        if across > crop:
            short.append(
                f"{biggest} ({sizes[biggest]:g} nm across) is {across:.3g} px at micrographs.{key} {micro[key]}, "
                f"the pass that answers for it, and a training crop must hold it whole"
            )
    if short:
        problems.append(
            f"micrographs.crop_px {crop} is too small: " + "; ".join(short) + f"; crop_px at least "
            f"{unit * max(MIN_BOTTLENECK_PX, math.ceil(widest / unit))} (a multiple of {unit})"
        )
    return problems


def _overlap_problems(section: dict) -> list[str]:
    """Pairs of ``overlap`` keys out of order and scale factors without their inverse (see the module
    docstring), one line each."""
    problems = []
    for low, high, strict, why in (
        ("coarse_nm", "max_coarse_nm", False, "the cap on the coarse pixel (nm) would be silently ignored"),
        ("min_fine_nm", "coarse_nm", False, "the fine check (nm) would be coarser than the coarse registration"),
        ("lowpass_px", "highpass_px", True, "the band-pass keeps the sizes (px) between the two sigmas"),
        ("min_screen_ncc", "screen_ncc", False, "the lead screen is for shifts below screen_ncc"),
    ):
        a, b = section[low], section[high]
        if a > b or (strict and a == b):
            problems.append(
                f"overlap.{low} {a} and overlap.{high} {b}: {low} must be {'below' if strict else 'at most'} "
                f"{high} ({why})"
            )
    side = section["max_side_px"] * 2 ** section["fine_levels"]  # the fine check's field, nominally (px)
    if (side // section["tile_px"]) ** 2 < section["min_tiles"]:
        problems.append(
            f"overlap.tile_px {section['tile_px']} and overlap.min_tiles {section['min_tiles']}: a whole field at the "
            f"fine check ({side} px: max_side_px x 2**fine_levels) holds {(side // section['tile_px']) ** 2} tiles, "
            "so no overlap could ever be confirmed and overlap removal would claim none (re-imaged fields left in "
            "two subsets); lower tile_px or min_tiles"
        )
    for key in ("fallback_scales", "scale_search"):
        scales = section[key]
        for scale in scales:
            if not any(abs(scale * other - 1) <= INVERSE_TOLERANCE for other in scales):
                problems.append(
                    f"overlap.{key}: {scale:g} is given without its inverse {1 / scale:.3g} (1/{scale:g}, within "
                    f"{INVERSE_TOLERANCE:.0%}): only the second image of a pair is rescaled, so a pixel size recorded "
                    f"{scale:g}x off would be found in one image of a pair and not in the other; add {1 / scale:.3g}"
                )
    return problems


def _read_schema(schema_file: str | Path) -> dict:
    import yaml

    with open(schema_file, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def schema_problems(config: dict, schema: dict) -> list[str]:
    """Every error of the schema's validation, one line each, naming the key it is under
    (``overlap.fallback_scales: 0.8 is not of type 'array'``).

    Snakemake's ``validate`` raises only the first, its key eight lines down under a dump of the
    schema. Of an error of several branches (``oneOf``, ``anyOf``) the line gives the most relevant
    branch's (jsonschema's ``best_match``), of a ``not`` its ``description`` (jsonschema's message
    prints the subschema), of a key the schema does not know (``additionalProperties: false``) that
    key and those it knows there; an error of the whole config (a key missing) names no key.
    """
    from jsonschema import exceptions, validators

    problems = []
    for error in validators.validator_for(schema)(schema).iter_errors(config):
        leaf = exceptions.best_match([error])
        if leaf.validator == "additionalProperties" and leaf.validator_value is False:
            known = list(leaf.schema.get("properties", {}))
            patterns = list(leaf.schema.get("patternProperties", {}))
            for key in leaf.instance:
                if key not in known and not any(re.search(pattern, str(key)) for pattern in patterns):
                    problems.append(
                        f"{key_path((*leaf.absolute_path, key))}: no such key (a typo?); the keys "
                        f"{'here' if leaf.absolute_path else 'at the top'} are {', '.join(known)}"
                    )
            continue
        message = leaf.message
        if leaf.validator == "not" and "description" in leaf.validator_value:
            message = leaf.validator_value["description"]
        types = [leaf.validator_value] if isinstance(leaf.validator_value, str) else leaf.validator_value
        if leaf.validator == "type" and "object" in types and leaf.schema.get("properties"):
            # a nested --config value (training={epochs: 5}) or a file's 'epochs: 5' for a per-init mapping
            keys = ", ".join(f"{key}: ..." for key in leaf.schema["properties"])
            message = f"{leaf.instance!r} is one value where a mapping is needed: {{{keys}}}"
        if isinstance(leaf.instance, bool) and leaf.validator == "enum":  # 'amp: off', unquoted
            message += " (YAML 1.1 reads an unquoted off, on, yes or no as true or false: quote the word)"
        where = key_path(leaf.absolute_path)
        problems.append(f"{where}: {message}" if where else message)
    return sorted(set(problems))


class ConfigError(ValueError):
    """A configuration refused: the message is ``problems`` (what is wrong, one line each naming
    its key), each line after ``config ``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(f"config {problem}" for problem in problems))


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Raise :class:`ConfigError` listing every problem of :func:`yaml11_number_problems` in the config files."""
    _refuse(yaml11_number_problems(paths))


def check_schema(config: dict, schema_file: str | Path) -> None:
    """Raise :class:`ConfigError` listing every problem of :func:`schema_problems`, those of a key
    with a :func:`number_text_problems` line (why the schema refuses its number) in its stead; run
    before Snakemake's ``validate``, whose error names one problem only and its key eight lines down."""
    schema = _read_schema(schema_file)
    text = number_text_problems(config, schema)
    explained = {line.split(": ", 1)[0] for line in text}
    _refuse(text + [line for line in schema_problems(config, schema) if line.split(": ", 1)[0] not in explained])


def check_config(config: dict, schema_file: str | Path, embedded: dict | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem of :func:`integer_problems`,
    :func:`not_finite_problems` and :func:`config_problems` (``embedded``: the embedded default
    config) of a config the schema accepts."""
    schema = _read_schema(schema_file)
    problems = integer_problems(config, schema) + not_finite_problems(config)
    if not problems:  # the checks below read the values as the types the schema gives
        problems = config_problems(config, embedded)
    _refuse(problems)


def canonical_order(value, schema: dict, root: dict | None = None):
    """``value`` with every mapping's keys in the schema's order (``properties`` as written, then
    any other keys sorted), recursively; lists keep their order, their items reordered alike.

    Snakemake compares a job's params by their ``repr``, so the order in which config files (or
    the keys inside one) happen to name keys must not re-run jobs: ``--configfile
    config/paper.yaml`` alone and ``--configfile config/config.yaml config/paper.yaml`` give
    the same params, as do ``{model: vgg16, init: imagenet, ...}`` and ``{init: imagenet,
    model: vgg16, ...}``. The schema's order is config/config.yaml's (tests/test_config.py).
    """
    root = schema if root is None else root
    while "$ref" in schema:  # local references only: "#/$defs/name"
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if isinstance(value, dict):
        listed = [k for k in schema.get("properties", {}) if k in value]
        keys = listed + sorted((k for k in value if k not in listed), key=str)
        out = {}
        for k in keys:
            sub = schema.get("properties", {}).get(k) or schema.get("additionalProperties")
            out[k] = canonical_order(value[k], sub if isinstance(sub, dict) else {}, root)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [canonical_order(v, items if isinstance(items, dict) else {}, root) for v in value]
    return value


def reorder_config(config: dict, schema_file: str | Path) -> None:
    """Put ``config`` (Snakemake's, changed in place) in :func:`canonical_order`."""
    ordered = canonical_order(config, _read_schema(schema_file))
    config.clear()
    config.update(ordered)
