"""Write the knob parameters of resolve_config and the training pipeline from the config declaration.

KFP embeds a lightweight component's source in the compiled YAML, so resolve_config's parameters
must be written out in components/config.py; the training pipeline's are written out alike, so a
reader sees the pipeline's parameters. Both lists come from longtail.knobs (read from
longtail.config.setting(..., knob=...)); tests/unit/test_knobs.py fails when a file is out of date.

    python -m longtail.pipelines.knob_signatures --write
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from longtail.knobs import KNOB_TYPES

PACKAGE = Path(__file__).resolve().parents[1]  # the repo root, or site-packages/longtail when installed
COMMAND = "python -m longtail.pipelines.knob_signatures --write"
# File -> (the line before the knob parameters, the line after them, one parameter's line for `knob`, `type`).
BLOCKS: dict[Path, tuple[str, str, str]] = {
    PACKAGE / "components" / "config.py": (
        "def resolve_config(\n    base_config: dict,\n", ") -> dict:", "    {knob}: {type},\n"),
    PACKAGE / "pipelines" / "training.py": (
        "        base_config: dict = base,\n", '        parent_run_id: str = "",',
        '        {knob}: {type} = k["{knob}"],\n'),
}
_PARAMETER = re.compile(r"^\s*(\w+):", re.MULTILINE)


def _ordered_knobs(current: str) -> list[str]:
    """The knobs in the order the file has them (so that a compiled pipeline only changes where a knob
    did), the ones it lacks appended in declaration order, the ones no longer declared dropped."""
    present = [k for k in _PARAMETER.findall(current) if k in KNOB_TYPES]
    return present + [k for k in KNOB_TYPES if k not in present]


def generated(path: Path, text: str) -> str:
    """`text` (the content of `path`, one of BLOCKS) with its knob parameters as the declaration has them."""
    before, after, line = BLOCKS[path]
    start = text.index(before) + len(before)
    end = text.index(after, start)
    knobs = _ordered_knobs(text[start:end])
    params = "".join(line.format(knob=k, type=KNOB_TYPES[k].__name__) for k in knobs)
    return text[:start] + params + text[end:]


def stale_files() -> list[Path]:
    """The files whose knob parameters differ from what the generator writes."""
    return [path for path in BLOCKS if generated(path, path.read_text()) != path.read_text()]


def main(argv: list[str] | None = None) -> int:
    """`--write` rewrites the stale files; without it, exit 1 when one is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files (else only check them)")
    args = parser.parse_args(argv)
    stale = stale_files()
    for path in stale:
        if args.write:
            path.write_text(generated(path, path.read_text()))
        print(f"{'rewrote' if args.write else 'out of date'}: {path}")
    if stale and not args.write:
        print(f"run: {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
