"""A loader for the block-style YAML subset our Kubernetes manifests use.

The project does not depend on PyYAML, so the manifest tests read the files with
this instead: block mappings and sequences (indentation-based, `- ` items that may
open a mapping), `#` comments, plain and double-quoted scalars (ints become ints,
true/false become bools), and one-line flow sequences of double-quoted strings.
Anything else (anchors, multi-line scalars, single-line flow mappings) raises
ValueError, so a manifest that leaves the subset fails its test rather than being
misread. (docs/cluster.md: the manifests were also checked with PyYAML.)
"""

import json
import re
from typing import Any, List, Tuple

_UNSUPPORTED = re.compile(r"^[&*!|>{]")


def _scalar(text: str, where: str) -> Any:
  if text.startswith('"'):
    return json.loads(text)
  if text.startswith("["):
    value = json.loads(text)
    if not all(isinstance(v, str) for v in value):
      raise ValueError(f"{where}: flow sequences may only hold quoted strings: {text}")
    return value
  if _UNSUPPORTED.match(text) or text.startswith("'"):
    raise ValueError(f"{where}: outside the supported YAML subset: {text}")
  if re.fullmatch(r"-?\d+", text):
    return int(text)
  return {"true": True, "false": False}.get(text, text)


def _strip_comment(line: str) -> str:
  """Drops a `#` comment that starts the line or follows a space, outside quotes."""
  in_quotes = False
  for i, char in enumerate(line):
    if char == '"' and line[i - 1:i] != "\\":
      in_quotes = not in_quotes
    elif char == "#" and not in_quotes and (i == 0 or line[i - 1].isspace()):
      return line[:i]
  return line


def _lines(text: str) -> List[Tuple[int, str, int]]:
  """(indent, content, line number) of the non-blank lines, comments removed."""
  out = []
  for number, raw in enumerate(text.splitlines(), start=1):
    content = _strip_comment(raw).rstrip()
    if content.strip():
      if "\t" in content[:len(content) - len(content.lstrip())]:
        raise ValueError(f"line {number}: tabs are not allowed in YAML indentation")
      out.append((len(content) - len(content.lstrip()), content.strip(), number))
  return out


def _parse(lines, start: int, indent: int) -> Tuple[Any, int]:
  """Parses the block at `indent` from lines[start]; returns (value, next index)."""
  if lines[start][1].startswith("- ") or lines[start][1] == "-":
    items = []
    i = start
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
      rest = lines[i][1][1:].strip()
      if not rest:
        value, i = _parse(lines, i + 1, lines[i + 1][0])
      elif re.match(r"^[\w./-]+:(\s|$)", rest) or rest.startswith("- "):
        # "- key: value" ("- - x") opens a mapping (sequence) two columns further in.
        sub = [(indent + 2, rest, lines[i][2])] + [line for line in lines[i + 1:]]
        value, used = _parse(sub, 0, indent + 2)
        i = i + used
      else:
        value, i = _scalar(rest, f"line {lines[i][2]}"), i + 1
      items.append(value)
    return items, i
  mapping = {}
  i = start
  while i < len(lines) and lines[i][0] == indent:
    _, content, number = lines[i]
    match = re.match(r"^([\w./-]+):(?:\s+(.*))?$", content)
    if not match:
      raise ValueError(f"line {number}: expected 'key: value', got {content!r}")
    key, rest = match.group(1), match.group(2)
    if key in mapping:
      raise ValueError(f"line {number}: duplicate key {key!r}")
    if rest:
      mapping[key], i = _scalar(rest, f"line {number}"), i + 1
    elif i + 1 < len(lines) and (lines[i + 1][0] > indent or lines[i + 1][1].startswith("- ")):
      mapping[key], i = _parse(lines, i + 1, lines[i + 1][0])
    else:
      mapping[key], i = None, i + 1
  if i < len(lines) and lines[i][0] > indent:
    raise ValueError(f"line {lines[i][2]}: unexpected indentation")
  return mapping, i


def load(text: str) -> Any:
  lines = _lines(text)
  if not lines:
    return None
  value, end = _parse(lines, 0, lines[0][0])
  if end != len(lines):
    raise ValueError(f"line {lines[end][2]}: unexpected dedent or trailing content")
  return value
