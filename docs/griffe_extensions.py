"""Griffe extension for the API reference: attaches the top-level `zoo/` folder as `dab_keras.zoo`.

setuptools installs `zoo/` as the subpackage `dab_keras.zoo` (`package-dir` in pyproject.toml). Griffe's
static loader sees the source tree as it is on disk, where `dab_keras/` has no `zoo` folder, so
`::: dab_keras.zoo` would not be found. Once `dab_keras` is loaded, this extension visits the modules of
`zoo/` (statically, nothing is imported) and attaches them to it. Where the zoo already sits inside the
package (a regular, non-editable install), the extension does nothing.

Used by docs/mkdocs.yml: `extensions: [griffe_extensions.py:ZooSubpackage]`.
"""

from __future__ import annotations

from pathlib import Path

import griffe


class ZooSubpackage(griffe.Extension):
    """Loads `<repository>/zoo/*.py` as the members of `dab_keras.zoo`."""

    def __init__(self, package: str = "dab_keras", subpackage: str = "zoo", folder: str = "zoo") -> None:
        super().__init__()
        self.package = package
        self.subpackage = subpackage
        self.folder = folder

    def _find_folder(self, pkg: griffe.Module) -> Path | None:
        filepath = pkg.filepath
        if isinstance(filepath, list):  # a namespace package: not this project's layout
            return None
        # <repository>/dab_keras/__init__.py -> <repository>/zoo/
        candidate = Path(filepath).resolve().parent.parent / self.folder
        return candidate if (candidate / "__init__.py").is_file() else None

    def _visit(
        self, name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader
    ) -> griffe.Module:
        code = path.read_text(encoding="utf-8-sig")
        loader.lines_collection[path] = code.splitlines(keepends=False)
        module = griffe.visit(
            name,
            filepath=path,
            code=code,
            extensions=loader.extensions,
            parent=parent,
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            lines_collection=loader.lines_collection,
            modules_collection=loader.modules_collection,
        )
        parent.set_member(name, module)
        return module

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if pkg.name != self.package or self.subpackage in pkg.members:
            return
        folder = self._find_folder(pkg)
        if folder is None:
            griffe.logger.warning(
                f"{self.package}.{self.subpackage}: no {self.folder}/ folder beside the package"
            )
            return
        sub = self._visit(self.subpackage, folder / "__init__.py", pkg, loader)
        for path in sorted(folder.glob("*.py")):
            if path.name != "__init__.py":
                self._visit(path.stem, path, sub, loader)
        loader.expand_exports(sub)
        loader.expand_wildcards(sub, external=False)
