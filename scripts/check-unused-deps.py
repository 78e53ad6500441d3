#!/usr/bin/env python3
"""Fails when a workspace crate declares a dependency its code never names.

The same test cargo-machete makes, without installing it: a dependency `foo-bar` counts as used
when `foo_bar` appears as a word outside a comment line in one of the crate's Rust files (src/, tests/, benches/,
examples/, build.rs). A crate that needs a dependency its code does not name (a feature switch of
a transitive crate, say) lists it under `[package.metadata.unused-deps] ignored = [...]`.

    scripts/check-unused-deps.py            checks every crate under crates/ and fuzz/
"""

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("dependencies", "dev-dependencies", "build-dependencies")


def declared(manifest):
    """(section, name) for every dependency the manifest declares, target tables included."""
    tables = [manifest]
    tables += list(manifest.get("target", {}).values())
    for table in tables:
        for section in SECTIONS:
            for name in table.get(section, {}):
                yield section, name


def rust_text(crate_dir):
    parts = []
    for path in crate_dir.rglob("*.rs"):
        if "target" in path.relative_to(crate_dir).parts:
            continue
        # Whole-line comments (docs included) don't count as a use.
        text = path.read_text(errors="replace")
        parts.append(re.sub(r"(?m)^\s*//.*$", "", text))
    return "\n".join(parts)


def main():
    crates = sorted(p.parent for p in ROOT.glob("crates/*/Cargo.toml"))
    crates += [p.parent for p in ROOT.glob("fuzz/Cargo.toml")]
    unused = []
    for crate in crates:
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        ignored = set(
            manifest.get("package", {}).get("metadata", {}).get("unused-deps", {}).get("ignored", [])
        )
        text = rust_text(crate)
        for section, name in declared(manifest):
            ident = name.replace("-", "_")
            if name in ignored or re.search(rf"\b{re.escape(ident)}\b", text):
                continue
            unused.append(f"{crate.relative_to(ROOT)}/Cargo.toml [{section}] {name}")
    if unused:
        print("dependencies no code names (remove them, or list them under "
              "[package.metadata.unused-deps] ignored with a reason):")
        print("\n".join(f"  {u}" for u in unused))
        return 1
    print(f"every dependency of {len(crates)} crates is used")
    return 0


if __name__ == "__main__":
    sys.exit(main())
