#!/usr/bin/env python3
"""Checks every relative link in the project's Markdown files: the file it names must exist,
and an anchor (`FILE.md#heading`, `#heading`) must be a heading of that file, by GitHub's
rule for heading anchors. Links with a scheme (https:, mailto:) are not followed: this runs
offline.

usage: scripts/check-links.py [FILE.md ...]    (default: every .md file git tracks)

Prints one line per broken link (FILE:LINE: the link and why) and exits 1 if any; 0 if none.
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# [text](target) and [text](target "title"), not images' sources alone; reference definitions.
INLINE = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DEFINITION = re.compile(r"^\s*\[[^\]]+\]:\s+(\S+)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def lines_outside_code(path):
    """(line number, line) of `path`, leaving out fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path, cache={}):
    """The anchors of the headings of `path`, duplicates numbered as GitHub numbers them."""
    if path not in cache:
        seen = {}
        found = set()
        for _, line in lines_outside_code(path):
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        cache[path] = found
    return cache[path]


def problems(path):
    """(line, link, why) for each broken relative link of `path`."""
    for number, line in lines_outside_code(path):
        # Inline code spans are not links.
        text = re.sub(r"`[^`]*`", "", line)
        targets = INLINE.findall(text)
        definition = DEFINITION.match(text)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                yield number, target, "no such file"
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                yield number, target, f"no heading #{anchor} in {linked.relative_to(ROOT)}"


def tracked_markdown():
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


def main(argv):
    files = [Path(a).resolve() for a in argv[1:]] or tracked_markdown()
    broken = 0
    for path in files:
        for number, target, why in problems(path):
            print(f"{path.relative_to(ROOT)}:{number}: ({target}): {why}")
            broken += 1
    if broken:
        print(f"check-links: {broken} broken link{'s' if broken != 1 else ''}", file=sys.stderr)
        return 1
    print(f"check-links: every relative link of {len(files)} Markdown files resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
