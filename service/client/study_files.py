"""Study files: YAML (or JSON) to a dict, the same way for the CLI and the Python client.

YAML 1.2 floats (`1e-5` is a number, where PyYAML's YAML 1.1 rules make it the string "1e-5") and duplicate
keys refused instead of silently overwritten.
"""

from __future__ import annotations

import json
import re
from typing import Any


class StudyFileError(ValueError):
    """A study file that cannot be read as one mapping; the message is one line naming where."""


def study_yaml_loader() -> type:
    """PyYAML's SafeLoader, with YAML 1.2 floats (`1e-5` is a number, not the string "1e-5", which would make
    `learning_rate: 1e-5` fail as "not a number") and duplicate keys refused instead of silently overwritten."""
    import yaml

    class StudyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=deep)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                            key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    StudyLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return StudyLoader


def parse_study_text(text: str, name: str, *, is_json: bool) -> dict[str, Any]:
    """A study file's text as a dict, or StudyFileError with a one-line message naming line and column."""
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StudyFileError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=study_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise StudyFileError(f"{name}: invalid YAML{where}: {exc.problem or exc.context or exc}") from exc
        except yaml.YAMLError as exc:
            raise StudyFileError(f"{name}: invalid YAML: {exc}") from exc
    if data is None:
        raise StudyFileError(f"{name} is empty; a study file holds one mapping (name, task, data, search_space, ...)")
    if not isinstance(data, dict):
        raise StudyFileError(f"{name}: a study file holds one mapping (name, task, data, search_space, ...), "
                             f"not a {type(data).__name__}")
    return data
