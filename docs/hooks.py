"""MkDocs hooks of the dab_keras documentation (`hooks:` in docs/mkdocs.yml).

1. Repository files that live outside `docs/pages/` join the site at their repository path, so the
   repository stays the single source: the tutorial notebooks (`tutorials/*.ipynb`, rendered by
   mkdocs-jupyter), the zoo's model cards (`zoo/README.md`) and the benchmark results
   (`benchmarks/RESULTS.md`). Nothing is copied into the working tree.
2. Relative links in those Markdown files point at repository files (`ops.py`, `README.md`, ...). A link
   whose target is not part of the site is rewritten to the file on GitHub, so `--strict` builds stay
   clean and the links still lead somewhere.
3. Notebook pages: the MathJax 2 loader that nbconvert puts into every rendered notebook is removed; the
   site's own MathJax 3 (docs/pages/javascripts/mathjax.js) typesets notebook math as well. Relative links
   in a notebook (to another notebook, to `../zoo/README.md`, ...) are pointed at the page built from
   that file, or else at the file on GitHub.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

import mkdocs.plugins
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

REPO = Path(__file__).resolve().parent.parent
BRANCH = "main"

#: Repository files (glob patterns relative to the repository root) published at the same path.
MIRRORED = ("tutorials/*.ipynb", "zoo/README.md", "benchmarks/RESULTS.md")

_mirrored_markdown: set[str] = set()

# Inline Markdown links and images: [text](target "title") -> the target.
_LINK = re.compile(r"(!?\[[^\]\n]*\]\()(<[^>\n]+>|[^)\s]+)((?:\s+\"[^\"\n]*\")?\))")
_FENCE = re.compile(r"^\s*(```|~~~)")
_NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
# href/src attributes of <a> and <img> elements in rendered notebooks.
_HTML_LINK = re.compile(r'(<(?:a|img)\b[^>]*?\s(href|src)=")([^"]*)(")')


# Runs before mkdocs-jupyter's own `on_files` (priority 0), which turns `.ipynb` files into pages.
@mkdocs.plugins.event_priority(100)
def on_files(files, config):
    _mirrored_markdown.clear()
    for pattern in MIRRORED:
        for path in sorted(REPO.glob(pattern)):
            src_uri = path.relative_to(REPO).as_posix()
            if files.get_file_from_path(src_uri) is not None:
                raise PluginError(
                    f"docs/pages/{src_uri} would shadow the repository's {src_uri}; remove one of them."
                )
            # A regular File whose source folder is the repository root (not a `File.generated` one:
            # mkdocs-jupyter's NotebookFile wrapper only finds the source of files with a `src_dir`).
            files.append(File(src_uri, str(REPO), config.site_dir, config.use_directory_urls))
            if path.suffix == ".md":
                _mirrored_markdown.add(src_uri)
    return files


def on_serve(server, config, builder):
    for folder in ("tutorials", "zoo", "benchmarks"):
        if (REPO / folder).is_dir():
            server.watch(str(REPO / folder))
    return server


def _blob_url(config, path):
    repo_url = (config.repo_url or "").rstrip("/")
    return f"{repo_url}/blob/{BRANCH}/{path}"


def _resolve(target, page_uri):
    """The repository path and `#fragment` a relative link on `page_uri` points at, or `None` for an
    absolute, external or in-page link and for one that leaves the repository."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith(("#", "/")) or not parts.path:
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), parts.path))
    if resolved.startswith(".."):
        return None
    return resolved, (f"#{parts.fragment}" if parts.fragment else "")


def _rewrite_link(target, page_uri, files, config):
    link = _resolve(target[1:-1] if target.startswith("<") else target, page_uri)
    if link is None or files.get_file_from_path(link[0]) is not None:
        return target  # not a repository file (left to MkDocs to report), or part of the site
    resolved, fragment = link
    return _blob_url(config, resolved) + fragment


def on_page_markdown(markdown, page, config, files):
    src_uri = page.file.src_uri
    if src_uri not in _mirrored_markdown:
        return markdown
    out, in_fence = [], False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            line = _LINK.sub(
                lambda m: m.group(1) + _rewrite_link(m.group(2), src_uri, files, config) + m.group(3), line
            )
        out.append(line)
    return "".join(out)


def _notebook_link(target, page, files, config, attribute):
    link = _resolve(target, page.file.src_uri)
    if link is None:
        return target
    resolved, fragment = link
    file = files.get_file_from_path(resolved)
    if file is not None and attribute == "href":
        return get_relative_url(file.url, page.url) + fragment
    if attribute == "src":
        repo = urlsplit(config.repo_url or "").path.strip("/")
        return f"https://raw.githubusercontent.com/{repo}/{BRANCH}/{resolved}"
    return _blob_url(config, resolved) + fragment


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    html = _NBCONVERT_MATHJAX.sub("", html)
    # Relative links in a notebook point at repository paths next to it (`02_....ipynb`,
    # `../zoo/README.md`): send them to the page built from that file, or else to GitHub.
    return _HTML_LINK.sub(
        lambda m: m.group(1) + _notebook_link(m.group(3), page, files, config, m.group(2)) + m.group(4), html
    )
